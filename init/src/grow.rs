//! Growing the boot stick (PURE): a disk image `dd`ed onto a larger stick keeps its backup
//! GPT where the image ended and its state partition at the image's size. [`plan`] decides
//! from the primary GPT and the device's size whether to grow, and returns the new tables:
//! the backup entries and header at the end of the device, the primary header with the new
//! last usable LBA, and the state partition (which must be the last one) extended to the
//! last whole MiB. A disk whose state partition already ends there gets `None`: growing
//! happens once. The writes and ioctls live in `sys/blkdev.rs`; `boot/grow.rs` composes.

use phase_layout::gpt::{self, GptError};
use phase_layout::{Guid, ALIGN, SECTOR};

/// The state partition ends on a 1 MiB boundary, like every partition the builder makes.
const ALIGN_SECTORS: u64 = ALIGN / SECTOR;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrowError {
    #[error("GPT: {0}")]
    Gpt(#[from] GptError),
    #[error("no phase-state partition in the GPT")]
    NoState,
    #[error("partition {after} lies after the state partition; not growing")]
    StateNotLast { after: u32 },
}

impl GrowError {
    pub fn reason(&self) -> &'static str {
        match self {
            GrowError::Gpt(_) => "gpt_invalid",
            GrowError::NoState => "no_state_partition",
            GrowError::StateNotLast { .. } => "state_not_last",
        }
    }
}

/// What to write, and the partition's old and new extent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grow {
    /// The state partition's number (1-based, as the kernel numbers them).
    pub number: u32,
    pub first_lba: u64,
    pub old_last: u64,
    pub new_last: u64,
    /// The primary header sector (LBA 1).
    pub primary_header: Vec<u8>,
    /// The new entry array, written at `entries_lba` and at `backup_entries_lba`.
    pub entries: Vec<u8>,
    pub entries_lba: u64,
    pub backup_entries_lba: u64,
    /// The backup header sector, written at the device's last LBA.
    pub backup_header: Vec<u8>,
    pub backup_lba: u64,
    /// Where the old backup header was (now inside the state partition): cleared.
    pub old_backup_lba: u64,
}

impl Grow {
    pub fn old_bytes(&self) -> u64 {
        (self.old_last + 1 - self.first_lba) * SECTOR
    }
    pub fn new_bytes(&self) -> u64 {
        (self.new_last + 1 - self.first_lba) * SECTOR
    }
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

fn put(b: &mut [u8], o: usize, v: &[u8]) {
    b[o..o + v.len()].copy_from_slice(v);
}

/// Decide, from the primary header (LBA 1), its entry array and the device's size in
/// sectors, whether the state partition (type `state_type`) can grow; `None` if not.
pub fn plan(
    header: &[u8],
    entries: &[u8],
    device_sectors: u64,
    state_type: Guid,
) -> Result<Option<Grow>, GrowError> {
    let parts = gpt::parse(header, entries)?;
    let (_, entries_len) = gpt::entries_range(header)?;
    let state = parts
        .iter()
        .find(|p| p.type_guid == state_type)
        .ok_or(GrowError::NoState)?;
    if let Some(p) = parts.iter().find(|p| p.last_lba > state.last_lba) {
        return Err(GrowError::StateNotLast { after: p.number });
    }
    let entry_sectors = entries_len.div_ceil(SECTOR);
    let old_backup = u64_at(header, 32);
    let old_last_usable = u64_at(header, 48);
    let Some(last_usable) = device_sectors.checked_sub(2 + entry_sectors) else {
        return Ok(None);
    };
    let new_last = ((last_usable + 1) / ALIGN_SECTORS) * ALIGN_SECTORS - 1;
    if new_last <= state.last_lba || last_usable < old_last_usable {
        return Ok(None);
    }
    let backup_lba = device_sectors - 1;
    let backup_entries_lba = backup_lba - entry_sectors;

    let mut new_entries = entries[..entries_len as usize].to_vec();
    let esize = u32::from_le_bytes([header[84], header[85], header[86], header[87]]) as usize;
    let slot = (state.number as usize - 1) * esize;
    put(&mut new_entries, slot + 40, &new_last.to_le_bytes());
    let entries_crc = gpt::crc32(&new_entries);

    let hsize = u32::from_le_bytes([header[12], header[13], header[14], header[15]]) as usize;
    let seal = |mut h: Vec<u8>| {
        put(&mut h, 88, &entries_crc.to_le_bytes());
        put(&mut h, 16, &[0; 4]);
        let crc = gpt::crc32(&h[..hsize]);
        put(&mut h, 16, &crc.to_le_bytes());
        h
    };
    let mut primary = header[..512.min(header.len())].to_vec();
    primary.resize(512, 0);
    put(&mut primary, 32, &backup_lba.to_le_bytes());
    put(&mut primary, 48, &last_usable.to_le_bytes());
    let mut backup = primary.clone();
    put(&mut backup, 24, &backup_lba.to_le_bytes());
    put(&mut backup, 32, &1u64.to_le_bytes());
    put(&mut backup, 72, &backup_entries_lba.to_le_bytes());
    Ok(Some(Grow {
        number: state.number,
        first_lba: state.first_lba,
        old_last: state.last_lba,
        new_last,
        primary_header: seal(primary),
        entries: new_entries,
        entries_lba: u64_at(header, 72),
        backup_entries_lba,
        backup_header: seal(backup),
        backup_lba,
        old_backup_lba: old_backup,
    }))
}

/// The protective MBR (LBA 0) covering the grown device: its 0xEE entry's size becomes
/// `device_sectors - 1` (capped at 2^32 - 1). `None` if LBA 0 has no protective entry first
/// (a hybrid MBR is left as it is).
pub fn protective_mbr(mbr: &[u8], device_sectors: u64) -> Option<Vec<u8>> {
    let e = 446;
    if mbr.len() != 512 || mbr[510..512] != [0x55, 0xaa] || mbr[e + 4] != 0xee {
        return None;
    }
    let size = u32::try_from(device_sectors.saturating_sub(1)).unwrap_or(u32::MAX);
    let mut m = mbr.to_vec();
    put(&mut m, e + 12, &size.to_le_bytes());
    Some(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use phase_layout::part_type;

    const STATE: Guid = part_type::STATE;
    const MIB: u64 = ALIGN_SECTORS;

    /// A GPT like the builder's: partitions back to back from 1 MiB, a final MiB for the
    /// backup table. Returns (primary header, entries, disk sectors).
    fn disk(types: &[(Guid, u64)]) -> (Vec<u8>, Vec<u8>, u64) {
        let mut entries = vec![0u8; 128 * 128];
        let mut next = MIB;
        for (i, (t, mib)) in types.iter().enumerate() {
            let e = &mut entries[i * 128..(i + 1) * 128];
            put(e, 0, &t.to_gpt());
            put(e, 16, &[i as u8 + 1; 16]);
            put(e, 32, &next.to_le_bytes());
            put(e, 40, &(next + mib * MIB - 1).to_le_bytes());
            next += mib * MIB;
        }
        let sectors = next + MIB;
        let mut h = vec![0u8; 512];
        put(&mut h, 0, b"EFI PART");
        put(&mut h, 8, &0x0001_0000u32.to_le_bytes());
        put(&mut h, 12, &92u32.to_le_bytes());
        put(&mut h, 24, &1u64.to_le_bytes());
        put(&mut h, 32, &(sectors - 1).to_le_bytes());
        put(&mut h, 40, &34u64.to_le_bytes());
        put(&mut h, 48, &(sectors - 34).to_le_bytes());
        put(&mut h, 72, &2u64.to_le_bytes());
        put(&mut h, 80, &128u32.to_le_bytes());
        put(&mut h, 84, &128u32.to_le_bytes());
        put(&mut h, 88, &gpt::crc32(&entries).to_le_bytes());
        let crc = gpt::crc32(&h[..92]);
        put(&mut h, 16, &crc.to_le_bytes());
        (h, entries, sectors)
    }

    const LAYOUT: [(Guid, u64); 4] = [
        (part_type::META, 1),
        (part_type::ROOT_X86_64, 10),
        (part_type::ROOT_VERITY_X86_64, 1),
        (part_type::STATE, 64),
    ];

    #[test]
    fn a_larger_device_grows_the_last_state_partition_and_moves_the_backup() {
        let (h, e, sectors) = disk(&LAYOUT);
        let device = sectors + 100 * MIB + 7; // not a whole MiB larger
        let g = plan(&h, &e, device, STATE).unwrap().unwrap();
        assert_eq!(g.number, 4);
        assert_eq!((g.old_bytes(), g.new_bytes()), (64 << 20, (64 + 100) << 20));
        assert_eq!(g.backup_lba, device - 1);
        assert_eq!(g.backup_entries_lba, device - 33);
        assert_eq!(g.old_backup_lba, sectors - 1);
        assert!(g.new_last <= device - 34);
        // Both new tables parse, CRCs and all, and agree.
        let parts = gpt::parse(&g.primary_header, &g.entries).unwrap();
        assert_eq!(parts[3].last_lba, g.new_last);
        assert_eq!(gpt::parse(&g.backup_header, &g.entries).unwrap(), parts);
        assert_eq!(u64_at(&g.backup_header, 24), device - 1);
        assert_eq!(u64_at(&g.backup_header, 72), device - 33);
        assert_eq!(u64_at(&g.primary_header, 32), device - 1);
        // The other partitions did not move.
        let before = gpt::parse(&h, &e).unwrap();
        assert_eq!(parts[..3], before[..3]);
    }

    #[test]
    fn after_growing_the_next_boot_does_nothing() {
        let (h, e, sectors) = disk(&LAYOUT);
        let device = sectors + 100 * MIB;
        let g = plan(&h, &e, device, STATE).unwrap().unwrap();
        assert_eq!(plan(&g.primary_header, &g.entries, device, STATE), Ok(None));
    }

    #[test]
    fn the_same_size_a_smaller_or_a_barely_larger_device_does_nothing() {
        let (h, e, sectors) = disk(&LAYOUT);
        for device in [sectors, sectors + 32, sectors - MIB] {
            assert_eq!(plan(&h, &e, device, STATE), Ok(None), "{device}");
        }
    }

    #[test]
    fn the_protective_mbr_covers_the_grown_device() {
        let mut mbr = vec![0u8; 512];
        mbr[446 + 4] = 0xee;
        put(&mut mbr, 446 + 8, &1u32.to_le_bytes());
        put(&mut mbr, 446 + 12, &999u32.to_le_bytes());
        mbr[510] = 0x55;
        mbr[511] = 0xaa;
        let m = protective_mbr(&mbr, 5000).unwrap();
        assert_eq!(&m[446 + 12..446 + 16], &4999u32.to_le_bytes());
        assert_eq!(m[..446 + 12], mbr[..446 + 12]);
        let huge = protective_mbr(&mbr, 1 << 40).unwrap();
        assert_eq!(&huge[446 + 12..446 + 16], &u32::MAX.to_le_bytes());
        mbr[446 + 4] = 0x83; // not protective: left alone
        assert_eq!(protective_mbr(&mbr, 5000), None);
    }

    #[test]
    fn refusals_are_named() {
        let (h, e, sectors) = disk(&[(part_type::STATE, 8), (part_type::ROOT_X86_64, 8)]);
        let r = plan(&h, &e, sectors * 2, STATE).unwrap_err();
        assert_eq!(r.reason(), "state_not_last");
        let (h, e, sectors) = disk(&LAYOUT[..3]);
        assert_eq!(
            plan(&h, &e, sectors * 2, STATE).unwrap_err().reason(),
            "no_state_partition"
        );
        let (mut h, e, sectors) = disk(&LAYOUT);
        h[50] ^= 1;
        assert_eq!(
            plan(&h, &e, sectors * 2, STATE).unwrap_err().reason(),
            "gpt_invalid"
        );
    }
}
