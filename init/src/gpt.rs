//! GPT partition tables (PURE): find partitions by type and unique GUID, which is how the
//! init finds its release metadata, rootfs and verity data on a boot medium
//! (docs/disk-layout.md). Headers and the entry array are CRC-checked; a table that fails
//! is ignored rather than trusted (content trust comes from signatures and dm-verity, but a
//! corrupt table should not send us to the wrong blocks).

pub const SECTOR: u64 = 512;

/// Partition type GUIDs (textual, lowercase).
pub const TYPE_META: &str = "5b4c9d1e-7a3f-4e2b-9c61-0d8f2a6b7e10";
pub const TYPE_ROOT: &str = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709";
pub const TYPE_VERITY: &str = "2c7357ed-ebd2-46d9-aec1-23d437ec2bf5";
pub const TYPE_STATE: &str = "4d21b016-b534-45c2-a9fb-5c16e091fd2d";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// 1-based, as the kernel numbers partitions (`vda1`).
    pub number: u32,
    pub type_guid: String,
    pub unique_guid: String,
    pub first_lba: u64,
    pub last_lba: u64,
    pub name: String,
}

impl Partition {
    pub fn size_bytes(&self) -> u64 {
        (self.last_lba + 1 - self.first_lba) * SECTOR
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GptError {
    #[error("no GPT signature")]
    NoSignature,
    #[error("GPT header CRC mismatch")]
    HeaderCrc,
    #[error("GPT entry array CRC mismatch")]
    EntriesCrc,
    #[error("GPT header fields out of range")]
    Malformed,
}

/// Bytes of the disk that hold the entry array, given the header sector: (offset, length).
pub fn entries_range(header: &[u8]) -> Result<(u64, u64), GptError> {
    let h = header.get(..92).ok_or(GptError::Malformed)?;
    let lba = u64::from_le_bytes(h[72..80].try_into().map_err(|_| GptError::Malformed)?);
    let n = u32::from_le_bytes(h[80..84].try_into().map_err(|_| GptError::Malformed)?) as u64;
    let size = u32::from_le_bytes(h[84..88].try_into().map_err(|_| GptError::Malformed)?) as u64;
    if !(128..=4096).contains(&size) || n > 1024 {
        return Err(GptError::Malformed);
    }
    Ok((lba * SECTOR, n * size))
}

/// Parse the primary header (LBA 1, 512 bytes) and its entry array.
pub fn parse(header: &[u8], entries: &[u8]) -> Result<Vec<Partition>, GptError> {
    if header.get(..8) != Some(b"EFI PART") {
        return Err(GptError::NoSignature);
    }
    let hsize =
        u32::from_le_bytes(header[12..16].try_into().map_err(|_| GptError::Malformed)?) as usize;
    if !(92..=512).contains(&hsize) || header.len() < hsize {
        return Err(GptError::Malformed);
    }
    let mut h = header[..hsize].to_vec();
    let want = u32::from_le_bytes(h[16..20].try_into().map_err(|_| GptError::Malformed)?);
    h[16..20].fill(0);
    if crc32(&h) != want {
        return Err(GptError::HeaderCrc);
    }
    let (_, len) = entries_range(header)?;
    let n = u32::from_le_bytes(header[80..84].try_into().map_err(|_| GptError::Malformed)?);
    let esize =
        u32::from_le_bytes(header[84..88].try_into().map_err(|_| GptError::Malformed)?) as usize;
    let entries = entries.get(..len as usize).ok_or(GptError::Malformed)?;
    let ecrc = u32::from_le_bytes(header[88..92].try_into().map_err(|_| GptError::Malformed)?);
    if crc32(entries) != ecrc {
        return Err(GptError::EntriesCrc);
    }
    let mut out = Vec::new();
    for i in 0..n as usize {
        let e = &entries[i * esize..(i + 1) * esize];
        if e[..16].iter().all(|&b| b == 0) {
            continue;
        }
        let lba = |o: usize| u64::from_le_bytes(e[o..o + 8].try_into().unwrap_or([0; 8]));
        let name: Vec<u16> = e[56..128]
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&c| c != 0)
            .collect();
        let (first_lba, last_lba) = (lba(32), lba(40));
        if last_lba < first_lba {
            return Err(GptError::Malformed);
        }
        out.push(Partition {
            number: i as u32 + 1,
            type_guid: guid(&e[0..16]),
            unique_guid: guid(&e[16..32]),
            first_lba,
            last_lba,
            name: String::from_utf16_lossy(&name),
        });
    }
    Ok(out)
}

/// The textual form of an on-disk GUID (first three fields little-endian).
pub fn guid(b: &[u8]) -> String {
    format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]
    )
}

/// The textual UUID made of 16 bytes in order (systemd's convention for partitions named
/// after a verity root hash).
pub fn uuid_from_bytes(b: &[u8]) -> String {
    let h: String = b.iter().take(16).map(|x| format!("{x:02x}")).collect();
    if h.len() != 32 {
        return String::new();
    }
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// CRC-32 (IEEE, reflected), as GPT uses.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xedb8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encode a textual GUID the way GPT stores it (the inverse of `guid`).
    fn guid_bytes(s: &str) -> [u8; 16] {
        let h: Vec<u8> = s
            .replace('-', "")
            .as_bytes()
            .chunks(2)
            .map(|c| u8::from_str_radix(std::str::from_utf8(c).unwrap(), 16).unwrap())
            .collect();
        let mut b = [0u8; 16];
        b[..4].copy_from_slice(&[h[3], h[2], h[1], h[0]]);
        b[4..6].copy_from_slice(&[h[5], h[4]]);
        b[6..8].copy_from_slice(&[h[7], h[6]]);
        b[8..].copy_from_slice(&h[8..16]);
        b
    }

    fn table(parts: &[(&str, &str, u64, u64, &str)]) -> (Vec<u8>, Vec<u8>) {
        let mut entries = vec![0u8; 128 * 128];
        for (i, (t, u, first, last, name)) in parts.iter().enumerate() {
            let e = &mut entries[i * 128..(i + 1) * 128];
            e[..16].copy_from_slice(&guid_bytes(t));
            e[16..32].copy_from_slice(&guid_bytes(u));
            e[32..40].copy_from_slice(&first.to_le_bytes());
            e[40..48].copy_from_slice(&last.to_le_bytes());
            for (j, c) in name.encode_utf16().enumerate() {
                e[56 + 2 * j..58 + 2 * j].copy_from_slice(&c.to_le_bytes());
            }
        }
        let mut h = vec![0u8; 512];
        h[..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[72..80].copy_from_slice(&2u64.to_le_bytes());
        h[80..84].copy_from_slice(&128u32.to_le_bytes());
        h[84..88].copy_from_slice(&128u32.to_le_bytes());
        h[88..92].copy_from_slice(&crc32(&entries).to_le_bytes());
        let c = crc32(&h[..92]);
        h[16..20].copy_from_slice(&c.to_le_bytes());
        (h, entries)
    }

    #[test]
    fn crc32_known_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn finds_partitions_by_type_and_guid() {
        let root_uuid = uuid_from_bytes(&[0xab; 16]);
        let (h, e) = table(&[
            (
                TYPE_META,
                "11111111-2222-3333-4444-555555555555",
                2048,
                4095,
                "phase-meta",
            ),
            (TYPE_ROOT, &root_uuid, 4096, 8191, "phase-root"),
        ]);
        assert_eq!(entries_range(&h).unwrap(), (1024, 128 * 128));
        let parts = parse(&h, &e).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].type_guid, TYPE_META);
        assert_eq!(parts[0].name, "phase-meta");
        assert_eq!(parts[1].number, 2);
        assert_eq!(parts[1].unique_guid, root_uuid);
        assert_eq!(parts[1].size_bytes(), 4096 * 512);
    }

    #[test]
    fn corrupt_tables_are_rejected() {
        let (h, e) = table(&[(TYPE_ROOT, TYPE_ROOT, 34, 100, "r")]);
        let mut bad_h = h.clone();
        bad_h[100 - 64] ^= 1; // inside the 92-byte header
        assert_eq!(parse(&bad_h, &e), Err(GptError::HeaderCrc));
        let mut bad_e = e.clone();
        bad_e[40] ^= 1;
        assert_eq!(parse(&h, &bad_e), Err(GptError::EntriesCrc));
        assert_eq!(parse(&[0u8; 512], &e), Err(GptError::NoSignature));
        assert!(parse(&h[..40], &e).is_err());
    }

    #[test]
    fn uuid_text() {
        let b: Vec<u8> = (0u8..16).collect();
        assert_eq!(uuid_from_bytes(&b), "00010203-0405-0607-0809-0a0b0c0d0e0f");
        assert_eq!(
            guid(&guid_bytes("00010203-0405-0607-0809-0a0b0c0d0e0f")),
            "00010203-0405-0607-0809-0a0b0c0d0e0f"
        );
    }
}
