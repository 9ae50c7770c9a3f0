use super::*;

#[test]
fn root_and_verity_are_named_by_the_root_hash() {
    let rh: [u8; 32] = std::array::from_fn(|i| i as u8);
    let p = partitions(&rh, 1, 1, 1);
    let names: Vec<&str> = p.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        ["phase-meta", "phase-root", "phase-verity", "phase-state"]
    );
    assert_eq!(
        p[1].guid.to_string(),
        "00010203-0405-0607-0809-0a0b0c0d0e0f"
    );
    assert_eq!(
        p[2].guid.to_string(),
        "10111213-1415-1617-1819-1a1b1c1d1e1f"
    );
    assert_eq!(p[0].size, ALIGN);
    // Derived IDs are stable and distinct.
    assert_eq!(disk_guid(&rh, b"a", None), disk_guid(&rh, b"a", None));
    assert_ne!(disk_guid(&rh, b"a", None), disk_guid(&rh, b"b", None));
    assert_ne!(disk_guid(&rh, b"a", None), disk_guid(&rh, b"a", Some(&rh)));
    assert_ne!(p[0].guid, p[3].guid);
    assert_eq!(state_uuid(&rh).0[6] >> 4, 4);
}

#[test]
fn a_bootable_disk_starts_with_bios_boot_then_the_esp() {
    let d = [9u8; 32];
    let b = boot_partitions(&d, 40 << 20);
    assert_eq!(b[0].type_guid, part_type::BIOS_BOOT);
    assert_eq!(b[0].size, ALIGN);
    assert_eq!(b[1].type_guid, part_type::ESP);
    assert_eq!(b[1].size, 40 << 20);
    assert_ne!(b[0].guid, b[1].guid);
    assert_ne!(boot_partitions(&[8u8; 32], 1)[1].guid, b[1].guid);
}

#[test]
fn meta_is_padded_and_bounded() {
    let m = meta_content(b"{\"x\":1}", &[]).unwrap();
    assert_eq!(m.len() as u64, META_SIZE);
    assert_eq!(&m[..7], b"{\"x\":1}");
    assert!(m[7..].iter().all(|&b| b == 0));
    assert!(meta_content(&vec![b' '; META_SIZE as usize + 1], &[]).is_err());
    assert!(meta_content(b"a\0b", &[]).is_err());
    // The root chain follows in the next slots.
    let roots = vec![("2.root.json".to_string(), b"{\"r\":2}".to_vec())];
    let m = meta_content(b"{\"x\":1}", &roots).unwrap();
    let slot = phase_layout::meta::SLOT;
    assert_eq!(&m[slot..slot + 7], b"{\"r\":2}");
    assert_eq!(
        phase_layout::meta::decode(&m).roots,
        vec![&b"{\"r\":2}"[..]]
    );
}
