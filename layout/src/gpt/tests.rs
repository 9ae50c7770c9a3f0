use super::*;
use crate::part_type;

const MIB: u64 = ALIGN_SECTORS;

#[test]
fn crc32_known_value() {
    assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
}

#[test]
fn partitions_are_mib_aligned_and_leave_room_for_the_backup() {
    let l = layout(&[ALIGN, 3 * ALIGN + 1, 4096, 64 * ALIGN]);
    assert_eq!(
        l.parts,
        [
            (MIB, 2 * MIB - 1),
            (2 * MIB, 6 * MIB - 1),
            (6 * MIB, 7 * MIB - 1),
            (7 * MIB, 71 * MIB - 1)
        ]
    );
    assert_eq!(l.sectors, 72 * MIB);
    assert_eq!(l.first_usable, 34);
    assert_eq!(l.last_usable, 72 * MIB - 34);
    for (first, last) in &l.parts {
        assert_eq!(first % MIB, 0);
        assert_eq!((last + 1) % MIB, 0);
        assert!(*first >= l.first_usable && *last <= l.last_usable);
    }
    // An empty partition still gets its MiB.
    assert_eq!(layout(&[0]).parts, [(MIB, 2 * MIB - 1)]);
}

fn sample() -> (Layout, Vec<Part>, Tables) {
    let parts = vec![
        Part {
            name: "phase-meta".into(),
            type_guid: part_type::META,
            guid: Guid([0xaa; 16]),
            attributes: 0,
            size: ALIGN,
        },
        Part {
            name: "phase-root".into(),
            type_guid: part_type::ROOT_X86_64,
            guid: Guid::from_text("01091119-2129-3139-4149-515961697179"),
            attributes: part_type::ATTR_READ_ONLY,
            size: 5 * ALIGN,
        },
    ];
    let l = layout(&parts.iter().map(|p| p.size).collect::<Vec<_>>());
    let t = tables(&l, Guid([7; 16]), &parts).unwrap();
    (l, parts, t)
}

#[test]
fn tables_have_valid_headers_and_checksums() {
    let (l, parts, t) = sample();
    assert_eq!(t.head.len(), 34 * 512);
    assert_eq!(t.tail.len(), 33 * 512);
    assert_eq!(&t.head[510..512], &[0x55, 0xaa]);
    assert_eq!(t.head[446 + 4], 0xee);
    let primary = &t.head[512..1024];
    let backup = &t.tail[32 * 512..];
    for (h, mine, other, entries) in [
        (primary, 1, l.sectors - 1, 2),
        (backup, l.sectors - 1, 1, l.sectors - 33),
    ] {
        assert_eq!(&h[..8], b"EFI PART");
        assert_eq!(u64_at(h, 24).unwrap(), mine);
        assert_eq!(u64_at(h, 32).unwrap(), other);
        assert_eq!(u64_at(h, 72).unwrap(), entries);
        let mut z = h[..92].to_vec();
        z[16..20].fill(0);
        assert_eq!(u32_at(h, 16).unwrap(), crc32(&z));
        assert_eq!(u32_at(h, 88).unwrap(), crc32(&t.head[1024..]));
        assert!(h[92..].iter().all(|&b| b == 0));
    }
    assert_eq!(&t.head[1024..], &t.tail[..32 * 512]);
    let e = &t.head[1024 + 128..1024 + 256];
    assert_eq!(u64_at(e, 48).unwrap(), part_type::ATTR_READ_ONLY);
    assert_eq!(
        &e[56..76],
        "phase-root"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect::<Vec<_>>()
    );
    assert!(t.head[1024 + 2 * 128..].iter().all(|&b| b == 0));
    // Encode then parse gives the partitions back, from either copy.
    for (h, e) in [(primary, &t.head[1024..]), (backup, &t.tail[..32 * 512])] {
        let (_, len) = entries_range(h).unwrap();
        assert_eq!(len, 128 * 128);
        let got = parse(h, e).unwrap();
        assert_eq!(got.len(), 2);
        for (i, (g, p)) in got.iter().zip(&parts).enumerate() {
            assert_eq!(g.number, i as u32 + 1);
            assert_eq!((g.type_guid, g.unique_guid), (p.type_guid, p.guid));
            assert_eq!((g.first_lba, g.last_lba), l.parts[i]);
            assert_eq!(g.name, p.name);
        }
        assert_eq!(got[1].size_bytes(), 5 * ALIGN);
    }
}

#[test]
fn bad_inputs_are_named() {
    let (l, mut parts, _) = sample();
    assert_eq!(
        tables(&l, Guid([0; 16]), &parts[..1])
            .err()
            .map(|e| e.reason()),
        Some("gpt_count_mismatch")
    );
    parts[0].name = "x".repeat(37);
    assert_eq!(
        tables(&l, Guid([0; 16]), &parts).err().map(|e| e.reason()),
        Some("gpt_name_too_long")
    );
}

#[test]
fn corrupt_tables_are_rejected() {
    let (_, _, t) = sample();
    let (h, e) = (&t.head[512..1024], &t.head[1024..]);
    let mut bad_h = h.to_vec();
    bad_h[36] ^= 1; // inside the 92-byte header
    assert_eq!(parse(&bad_h, e), Err(GptError::HeaderCrc));
    let mut bad_e = e.to_vec();
    bad_e[40] ^= 1;
    assert_eq!(parse(h, &bad_e), Err(GptError::EntriesCrc));
    assert_eq!(parse(&[0u8; 512], e), Err(GptError::NoSignature));
    assert!(parse(&h[..40], e).is_err());
    assert_eq!(parse(h, &e[..100]), Err(GptError::Malformed));
    // An entry whose last LBA is before its first: malformed even with good CRCs.
    let mut e2 = e.to_vec();
    e2[40..48].copy_from_slice(&1u64.to_le_bytes());
    let mut h2 = h.to_vec();
    h2[88..92].copy_from_slice(&crc32(&e2).to_le_bytes());
    h2[16..20].fill(0);
    let c = crc32(&h2[..92]);
    h2[16..20].copy_from_slice(&c.to_le_bytes());
    assert_eq!(parse(&h2, &e2), Err(GptError::Malformed));
}
