//! GPT bytes, both ways. [`layout`] places partitions (1 MiB aligned, whole MiB each, a
//! final MiB for the backup table) and [`tables`] encodes the protective MBR, the primary
//! and backup headers and the entry array; [`parse`] reads a primary header and its entry
//! array back, CRC-checked. A table that fails its checks is an error, never trusted:
//! content trust comes from signatures and dm-verity, but a corrupt table must not send
//! the init to the wrong blocks.

use crate::{Guid, ALIGN, SECTOR};

const ALIGN_SECTORS: u64 = ALIGN / SECTOR;
/// Entries in the arrays we write (the minimum the specification allows for 16 KiB).
pub const ENTRIES: usize = 128;
pub const ENTRY_SIZE: usize = 128;
/// Sectors of the partition entry array we write.
pub const ENTRY_SECTORS: u64 = (ENTRIES * ENTRY_SIZE) as u64 / SECTOR;
/// Longest partition name: 36 UTF-16 code units.
pub const NAME_UNITS: usize = 36;

/// One partition to place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub name: String,
    pub type_guid: Guid,
    pub guid: Guid,
    pub attributes: u64,
    /// Content size in bytes; the partition is rounded up to whole MiB.
    pub size: u64,
}

/// Where everything lands, in sectors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// (first LBA, last LBA inclusive) per partition, in order.
    pub parts: Vec<(u64, u64)>,
    pub first_usable: u64,
    pub last_usable: u64,
    /// Total sectors; the backup header is the last one.
    pub sectors: u64,
}

/// Place partitions back to back from 1 MiB, each rounded up to whole MiB, and leave a
/// final MiB for the backup table, so the disk is a whole number of MiB.
pub fn layout(sizes: &[u64]) -> Layout {
    let mut next = ALIGN_SECTORS;
    let mut parts = Vec::new();
    for &s in sizes {
        let n = s.div_ceil(ALIGN).max(1) * ALIGN_SECTORS;
        parts.push((next, next + n - 1));
        next += n;
    }
    let sectors = next + ALIGN_SECTORS;
    Layout {
        parts,
        first_usable: 2 + ENTRY_SECTORS,
        last_usable: sectors - 2 - ENTRY_SECTORS,
        sectors,
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
    #[error("{parts} partitions for a layout of {slots} (at most {ENTRIES})")]
    CountMismatch { parts: usize, slots: usize },
    #[error("partition name {0:?} is over {NAME_UNITS} UTF-16 units")]
    NameTooLong(String),
}

impl GptError {
    pub fn reason(&self) -> &'static str {
        match self {
            GptError::NoSignature => "gpt_no_signature",
            GptError::HeaderCrc => "gpt_header_crc",
            GptError::EntriesCrc => "gpt_entries_crc",
            GptError::Malformed => "gpt_malformed",
            GptError::CountMismatch { .. } => "gpt_count_mismatch",
            GptError::NameTooLong(_) => "gpt_name_too_long",
        }
    }
}

/// The protective MBR (LBA 0): one partition of type 0xEE over the whole disk, no boot
/// code (a BIOS-bootable disk gets GRUB's boot.img written over bytes 0..0x1B8).
fn protective_mbr(sectors: u64) -> [u8; 512] {
    let mut m = [0u8; 512];
    let e = &mut m[446..462];
    e[1..4].copy_from_slice(&[0x00, 0x02, 0x00]); // CHS of LBA 1
    e[4] = 0xee;
    e[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
    e[8..12].copy_from_slice(&1u32.to_le_bytes());
    let n = (sectors - 1).min(u64::from(u32::MAX)) as u32;
    e[12..16].copy_from_slice(&n.to_le_bytes());
    m[510] = 0x55;
    m[511] = 0xaa;
    m
}

fn entry_array(parts: &[Part], l: &Layout) -> Result<Vec<u8>, GptError> {
    if parts.len() > ENTRIES || parts.len() != l.parts.len() {
        return Err(GptError::CountMismatch {
            parts: parts.len(),
            slots: l.parts.len(),
        });
    }
    let mut a = vec![0u8; ENTRIES * ENTRY_SIZE];
    for (i, (p, &(first, last))) in parts.iter().zip(&l.parts).enumerate() {
        let e = &mut a[i * ENTRY_SIZE..(i + 1) * ENTRY_SIZE];
        e[0..16].copy_from_slice(&p.type_guid.to_gpt());
        e[16..32].copy_from_slice(&p.guid.to_gpt());
        e[32..40].copy_from_slice(&first.to_le_bytes());
        e[40..48].copy_from_slice(&last.to_le_bytes());
        e[48..56].copy_from_slice(&p.attributes.to_le_bytes());
        let name: Vec<u16> = p.name.encode_utf16().collect();
        if name.len() > NAME_UNITS {
            return Err(GptError::NameTooLong(p.name.clone()));
        }
        for (j, c) in name.iter().enumerate() {
            e[56 + 2 * j..58 + 2 * j].copy_from_slice(&c.to_le_bytes());
        }
    }
    Ok(a)
}

fn header(l: &Layout, disk: Guid, mine: u64, other: u64, entries_lba: u64, crc: u32) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[0..8].copy_from_slice(b"EFI PART");
    h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes()); // revision 1.0
    h[12..16].copy_from_slice(&92u32.to_le_bytes());
    h[24..32].copy_from_slice(&mine.to_le_bytes());
    h[32..40].copy_from_slice(&other.to_le_bytes());
    h[40..48].copy_from_slice(&l.first_usable.to_le_bytes());
    h[48..56].copy_from_slice(&l.last_usable.to_le_bytes());
    h[56..72].copy_from_slice(&disk.to_gpt());
    h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
    h[80..84].copy_from_slice(&(ENTRIES as u32).to_le_bytes());
    h[84..88].copy_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
    h[88..92].copy_from_slice(&crc.to_le_bytes());
    // The header CRC covers its 92 bytes with the CRC field zero.
    let hc = crc32(&h[..92]);
    h[16..20].copy_from_slice(&hc.to_le_bytes());
    h
}

/// The partition tables: `head` goes at LBA 0 (protective MBR, primary header, entries),
/// `tail` at LBA `sectors - 33` (backup entries, then the backup header last).
pub struct Tables {
    pub head: Vec<u8>,
    pub tail: Vec<u8>,
}

pub fn tables(l: &Layout, disk: Guid, parts: &[Part]) -> Result<Tables, GptError> {
    let entries = entry_array(parts, l)?;
    let crc = crc32(&entries);
    let last = l.sectors - 1;
    let mut head = protective_mbr(l.sectors).to_vec();
    head.extend_from_slice(&header(l, disk, 1, last, 2, crc));
    head.extend_from_slice(&entries);
    let mut tail = entries;
    tail.extend_from_slice(&header(l, disk, last, 1, last - ENTRY_SECTORS, crc));
    Ok(Tables { head, tail })
}

/// A partition read back from a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// 1-based, as the kernel numbers partitions (`vda1`).
    pub number: u32,
    pub type_guid: Guid,
    pub unique_guid: Guid,
    pub first_lba: u64,
    pub last_lba: u64,
    pub name: String,
}

impl Partition {
    pub fn size_bytes(&self) -> u64 {
        (self.last_lba + 1 - self.first_lba) * SECTOR
    }
}

fn u32_at(b: &[u8], o: usize) -> Result<u32, GptError> {
    b.get(o..o + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or(GptError::Malformed)
}

fn u64_at(b: &[u8], o: usize) -> Result<u64, GptError> {
    b.get(o..o + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_le_bytes)
        .ok_or(GptError::Malformed)
}

/// Bytes of the disk that hold the entry array, given the header sector: (offset, length).
pub fn entries_range(header: &[u8]) -> Result<(u64, u64), GptError> {
    let lba = u64_at(header, 72)?;
    let n = u64::from(u32_at(header, 80)?);
    let size = u64::from(u32_at(header, 84)?);
    if !(128..=4096).contains(&size) || n > 1024 || lba > u64::MAX / SECTOR {
        return Err(GptError::Malformed);
    }
    Ok((lba * SECTOR, n * size))
}

/// Parse a header (512 bytes) and its entry array (at least [`entries_range`] bytes).
pub fn parse(header: &[u8], entries: &[u8]) -> Result<Vec<Partition>, GptError> {
    if header.get(..8) != Some(b"EFI PART") {
        return Err(GptError::NoSignature);
    }
    let hsize = u32_at(header, 12)? as usize;
    if !(92..=512).contains(&hsize) || header.len() < hsize {
        return Err(GptError::Malformed);
    }
    let mut h = header[..hsize].to_vec();
    let want = u32_at(&h, 16)?;
    h[16..20].fill(0);
    if crc32(&h) != want {
        return Err(GptError::HeaderCrc);
    }
    let (_, len) = entries_range(header)?;
    let n = u32_at(header, 80)? as usize;
    let esize = u32_at(header, 84)? as usize;
    let entries = entries.get(..len as usize).ok_or(GptError::Malformed)?;
    if crc32(entries) != u32_at(header, 88)? {
        return Err(GptError::EntriesCrc);
    }
    let mut out = Vec::new();
    for (i, e) in entries.chunks_exact(esize).take(n).enumerate() {
        if e[..16].iter().all(|&b| b == 0) {
            continue;
        }
        let guid_at = |o: usize| {
            let mut g = [0u8; 16];
            g.copy_from_slice(&e[o..o + 16]);
            Guid::from_gpt(g)
        };
        let name: Vec<u16> = e[56..128]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&c| c != 0)
            .collect();
        let (first_lba, last_lba) = (u64_at(e, 32)?, u64_at(e, 40)?);
        if last_lba < first_lba {
            return Err(GptError::Malformed);
        }
        out.push(Partition {
            number: i as u32 + 1,
            type_guid: guid_at(0),
            unique_guid: guid_at(16),
            first_lba,
            last_lba,
            name: String::from_utf16_lossy(&name),
        });
    }
    Ok(out)
}

/// CRC-32 (IEEE, reflected), as GPT uses; only headers and 16 KiB arrays go through it.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xedb8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

#[cfg(test)]
mod tests;
