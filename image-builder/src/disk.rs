//! The disk image: a GPT disk (protective MBR, primary and backup headers, 1 MiB aligned
//! partitions) holding the signed release metadata, the verified rootfs, its dm-verity hash
//! device and an empty ext4 state partition. The layout and the table bytes are PURE
//! ([`layout`], [`gpt`]); [`write`] copies the contents in and runs `mkfs.ext4` once.
//!
//! Root and verity partitions follow systemd's discoverable partitions: their type GUIDs
//! are the x86-64 root and root-verity types, and their unique GUIDs are the first and last
//! 16 bytes of the verity root hash, so the pair can be found from the hash alone.
//! Everything is derived from the inputs: the same inputs give the same disk.

use crate::verity;
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

pub const SECTOR: u64 = 512;
/// Partition alignment and granularity: 1 MiB.
pub const ALIGN: u64 = 1 << 20;
const ALIGN_SECTORS: u64 = ALIGN / SECTOR;
const ENTRIES: usize = 128;
const ENTRY_SIZE: usize = 128;
/// Sectors of the partition entry array (128 entries of 128 bytes).
const ENTRY_SECTORS: u64 = (ENTRIES * ENTRY_SIZE) as u64 / SECTOR;

/// A GUID as 16 bytes in textual order (`00112233-4455-...` is bytes 00 11 22 33 ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    pub fn parse(s: &str) -> Result<Guid, String> {
        let hex: String = s.chars().filter(|&c| c != '-').collect();
        let groups: Vec<usize> = s.split('-').map(str::len).collect();
        match phase_release::hex::decode::<16>(&hex.to_ascii_lowercase()) {
            Some(b) if groups == [8, 4, 4, 4, 12] => Ok(Guid(b)),
            _ => Err(format!("not a GUID: {s:?}")),
        }
    }

    /// GPT's on-disk encoding: the first three fields little endian, the rest as is.
    pub fn to_gpt(self) -> [u8; 16] {
        let b = self.0;
        let mut o = b;
        o[0..4].copy_from_slice(&[b[3], b[2], b[1], b[0]]);
        o[4..6].copy_from_slice(&[b[5], b[4]]);
        o[6..8].copy_from_slice(&[b[7], b[6]]);
        o
    }

    #[cfg(test)]
    pub fn from_gpt(o: [u8; 16]) -> Guid {
        // The swap is its own inverse.
        Guid(Guid(o).to_gpt())
    }
}

impl std::fmt::Display for Guid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let h = phase_release::hex::encode(&self.0);
        write!(
            f,
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }
}

fn guid(s: &str) -> Guid {
    // Only called on the constants below, which the tests parse.
    Guid::parse(s).unwrap_or(Guid([0; 16]))
}

pub const META_TYPE: &str = "5b4c9d1e-7a3f-4e2b-9c61-0d8f2a6b7e10";
/// systemd: root partition, x86-64.
pub const ROOT_TYPE: &str = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709";
/// systemd: root verity partition, x86-64.
pub const VERITY_TYPE: &str = "2c7357ed-ebd2-46d9-aec1-23d437ec2bf5";
/// systemd: /var.
pub const STATE_TYPE: &str = "4d21b016-b534-45c2-a9fb-5c16e091fd2d";
/// GPT attribute bit 60: read-only (systemd mounts such partitions read-only).
pub const READ_ONLY: u64 = 1 << 60;
pub const META_SIZE: u64 = ALIGN;

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
/// final MiB for the backup table, so the disk is a whole number of MiB (PURE).
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

/// The protective MBR (LBA 0): one partition of type 0xEE over the whole disk.
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

fn entry_array(parts: &[Part], l: &Layout) -> Result<Vec<u8>, String> {
    if parts.len() > ENTRIES || parts.len() != l.parts.len() {
        return Err("partition count does not match the layout".into());
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
        if name.len() > 36 {
            return Err(format!(
                "partition name {:?} is over 36 UTF-16 units",
                p.name
            ));
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
    let hc = crc32fast::hash(&h[..92]);
    h[16..20].copy_from_slice(&hc.to_le_bytes());
    h
}

/// The partition tables (PURE): `head` goes at LBA 0 (protective MBR, primary header,
/// entries), `tail` at LBA `sectors - 33` (backup entries, then the backup header last).
pub struct Tables {
    pub head: Vec<u8>,
    pub tail: Vec<u8>,
}

pub fn gpt(l: &Layout, disk: Guid, parts: &[Part]) -> Result<Tables, String> {
    let entries = entry_array(parts, l)?;
    let crc = crc32fast::hash(&entries);
    let last = l.sectors - 1;
    let mut head = protective_mbr(l.sectors).to_vec();
    head.extend_from_slice(&header(l, disk, 1, last, 2, crc));
    head.extend_from_slice(&entries);
    let mut tail = entries;
    tail.extend_from_slice(&header(l, disk, last, 1, last - ENTRY_SECTORS, crc));
    Ok(Tables { head, tail })
}

fn derive(tag: &str, parts: &[&[u8]]) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(format!("phase-boot/{tag}\n").as_bytes());
    for p in parts {
        h.update(p);
    }
    let d: [u8; 32] = h.finalize().into();
    let mut u = [0u8; 16];
    u.copy_from_slice(&d[..16]);
    verity::set_v4_bits(&mut u);
    u
}

/// The four partitions, in order, for a rootfs of `root_size` bytes and a hash device of
/// `hash_size` bytes (PURE). The root hash names the root and verity partitions.
pub fn partitions(
    root_hash: &[u8; 32],
    root_size: u64,
    hash_size: u64,
    state_size: u64,
) -> Vec<Part> {
    let mut first = [0u8; 16];
    let mut last = [0u8; 16];
    first.copy_from_slice(&root_hash[..16]);
    last.copy_from_slice(&root_hash[16..]);
    vec![
        Part {
            name: "phase-meta".into(),
            type_guid: guid(META_TYPE),
            guid: Guid(derive("meta-guid", &[root_hash])),
            attributes: 0,
            size: META_SIZE,
        },
        Part {
            name: "phase-root".into(),
            type_guid: guid(ROOT_TYPE),
            guid: Guid(first),
            attributes: READ_ONLY,
            size: root_size,
        },
        Part {
            name: "phase-verity".into(),
            type_guid: guid(VERITY_TYPE),
            guid: Guid(last),
            attributes: READ_ONLY,
            size: hash_size,
        },
        Part {
            name: "phase-state".into(),
            type_guid: guid(STATE_TYPE),
            guid: Guid(derive("state-guid", &[root_hash])),
            attributes: 0,
            size: state_size,
        },
    ]
}

/// The disk GUID: from the root hash and the release metadata, so a new release is a new disk.
pub fn disk_guid(root_hash: &[u8; 32], release_json: &[u8]) -> Guid {
    Guid(derive("disk-guid", &[root_hash, release_json]))
}

/// The ext4 UUID of the state partition (stable for a given rootfs).
pub fn state_uuid(root_hash: &[u8; 32]) -> Guid {
    Guid(derive("state-uuid", &[root_hash]))
}

/// The release metadata zero padded to the meta partition (the init trims trailing NULs).
pub fn meta_content(release_json: &[u8]) -> Result<Vec<u8>, String> {
    if release_json.len() as u64 > META_SIZE {
        return Err(format!(
            "release.json is {} bytes; the meta partition holds {META_SIZE}",
            release_json.len()
        ));
    }
    if release_json.contains(&0) {
        return Err("release.json contains a NUL byte".into());
    }
    let mut v = release_json.to_vec();
    v.resize(META_SIZE as usize, 0);
    Ok(v)
}

pub struct Inputs {
    pub release_dir: PathBuf,
    pub rootfs: PathBuf,
    pub verity: PathBuf,
    pub state_size_mib: u64,
    /// SOURCE_DATE_EPOCH, for mkfs.ext4's timestamps.
    pub mtime: u32,
}

pub struct Written {
    pub layout: Layout,
    pub parts: Vec<Part>,
    pub disk_guid: Guid,
    pub root_hash: [u8; 32],
}

/// An empty ext4 filesystem of `size` bytes, made rootless by `mkfs.ext4` in a temp dir.
/// Timestamps are E2FSPROGS_FAKE_TIME, UUID and directory hash seed fixed: reproducible.
/// 4 KiB blocks and 256-byte inodes even on a small partition (mke2fs would pick 1 KiB
/// blocks and 128-byte inodes, which cannot store dates past 2038).
pub fn make_state_fs(size: u64, uuid: Guid, mtime: u32) -> Result<Vec<u8>> {
    let dir = std::env::temp_dir().join(format!("phase-state-{}-{}", std::process::id(), uuid));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("empty"))?;
    let img = dir.join("state.ext4");
    let out = std::process::Command::new("mkfs.ext4")
        .env("E2FSPROGS_FAKE_TIME", mtime.to_string())
        .args([
            "-q",
            "-F",
            "-L",
            "phase-state",
            "-b",
            "4096",
            "-I",
            "256",
            "-U",
        ])
        .arg(uuid.to_string())
        .arg("-E")
        .arg(format!("root_owner=0:0,hash_seed={uuid}"))
        .arg("-d")
        .arg(dir.join("empty"))
        .arg(&img)
        .arg(format!("{}k", size / 1024))
        .output();
    let result = match out {
        Err(e) => Err(anyhow::anyhow!(
            "running mkfs.ext4: {e} (install e2fsprogs: scripts/setup.sh)"
        )),
        Ok(o) if !o.status.success() => Err(anyhow::anyhow!(
            "mkfs.ext4 failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Ok(_) => std::fs::read(&img).context("reading the state filesystem"),
    };
    let _ = std::fs::remove_dir_all(&dir);
    let fs = result?;
    if fs.len() as u64 != size {
        bail!("mkfs.ext4 made {} bytes, wanted {size}", fs.len());
    }
    Ok(fs)
}

/// Build the disk at `out` (a temp file renamed into place). The rootfs and hash device
/// are checked against each other first: the hash tree is recomputed from the rootfs with
/// the salt and UUID in its superblock and must match byte for byte.
pub fn write(inp: &Inputs, out: &Path) -> Result<Written> {
    let release_path = inp.release_dir.join(crate::release::RELEASE_FILE);
    let release_json = std::fs::read(&release_path)
        .with_context(|| format!("reading {}", release_path.display()))?;
    let meta = meta_content(&release_json).map_err(anyhow::Error::msg)?;
    let rootfs =
        std::fs::read(&inp.rootfs).with_context(|| format!("reading {}", inp.rootfs.display()))?;
    let hash =
        std::fs::read(&inp.verity).with_context(|| format!("reading {}", inp.verity.display()))?;
    let tree = verity::verify(&rootfs, &hash).map_err(|e| {
        anyhow::anyhow!("{} vs {}: {e}", inp.verity.display(), inp.rootfs.display())
    })?;
    // A release that names a rootfs tree must name this one, or the init would refuse it.
    let env: phase_release::doc::Envelope = serde_json::from_slice(&release_json)
        .with_context(|| format!("{}: not a release envelope", release_path.display()))?;
    let rel: phase_release::doc::Release = serde_json::from_value(env.signed)
        .with_context(|| format!("{}: not a release", release_path.display()))?;
    if let Some(v) = rel
        .artifacts
        .rootfs
        .as_ref()
        .and_then(|r| r.verity.as_ref())
    {
        let ours = phase_release::hex::encode(&tree.root_hash);
        if v.root_hash != ours {
            bail!(
                "{} names root hash {}, but {} has {ours}",
                release_path.display(),
                v.root_hash,
                inp.rootfs.display()
            );
        }
    }
    let state_size = inp
        .state_size_mib
        .checked_mul(ALIGN)
        .filter(|&s| s >= 8 * ALIGN)
        .context("--state-size-mib must be at least 8")?;
    let parts = partitions(
        &tree.root_hash,
        rootfs.len() as u64,
        hash.len() as u64,
        state_size,
    );
    let l = layout(&parts.iter().map(|p| p.size).collect::<Vec<_>>());
    let dg = disk_guid(&tree.root_hash, &release_json);
    let tables = gpt(&l, dg, &parts).map_err(anyhow::Error::msg)?;
    let state = make_state_fs(state_size, state_uuid(&tree.root_hash), inp.mtime)?;

    let tmp = crate::temp_beside(out)?;
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    // Sized first, then only non-zero 64 KiB chunks written: gaps and the empty parts of
    // the state filesystem stay holes in the file.
    f.set_len(l.sectors * SECTOR)?;
    let mut put = |lba: u64, bytes: &[u8]| -> std::io::Result<()> {
        for (i, chunk) in bytes.chunks(64 * 1024).enumerate() {
            if chunk.iter().any(|&b| b != 0) {
                f.seek(SeekFrom::Start(lba * SECTOR + (i * 64 * 1024) as u64))?;
                f.write_all(chunk)?;
            }
        }
        Ok(())
    };
    put(0, &tables.head)?;
    for (&(first, _), content) in l.parts.iter().zip([&meta, &rootfs, &hash, &state]) {
        put(first, content)?;
    }
    put(l.sectors - 1 - ENTRY_SECTORS, &tables.tail)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, out).with_context(|| format!("renaming onto {}", out.display()))?;
    Ok(Written {
        layout: l,
        parts,
        disk_guid: dg,
        root_hash: tree.root_hash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = ALIGN_SECTORS;

    #[test]
    fn guid_text_and_gpt_encoding() {
        let g = Guid::parse("4f68bce3-e8cd-4db1-96e7-fbcaf984b709").unwrap();
        assert_eq!(g.to_string(), "4f68bce3-e8cd-4db1-96e7-fbcaf984b709");
        assert_eq!(
            g.to_gpt(),
            [
                0xe3, 0xbc, 0x68, 0x4f, 0xcd, 0xe8, 0xb1, 0x4d, 0x96, 0xe7, 0xfb, 0xca, 0xf9, 0x84,
                0xb7, 0x09
            ]
        );
        assert_eq!(Guid::from_gpt(g.to_gpt()), g);
        for t in [META_TYPE, ROOT_TYPE, VERITY_TYPE, STATE_TYPE] {
            assert_eq!(Guid::parse(t).unwrap().to_string(), t);
        }
        assert!(Guid::parse("4f68bce3e8cd4db196e7fbcaf984b709").is_err());
        assert!(Guid::parse("4f68bce3-e8cd-4db1-96e7-fbcaf984b70").is_err());
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

    fn tables() -> (Layout, Vec<Part>, Tables) {
        let mut rh = [0u8; 32];
        for (i, b) in rh.iter_mut().enumerate() {
            *b = i as u8 * 8 + 1;
        }
        let parts = partitions(&rh, 5 * ALIGN, 8192, 8 * ALIGN);
        let l = layout(&parts.iter().map(|p| p.size).collect::<Vec<_>>());
        let t = gpt(&l, disk_guid(&rh, b"{}"), &parts).unwrap();
        (l, parts, t)
    }

    #[test]
    fn tables_have_valid_headers_and_checksums() {
        let (l, parts, t) = tables();
        assert_eq!(t.head.len(), 34 * 512);
        assert_eq!(t.tail.len(), 33 * 512);
        assert_eq!(&t.head[510..512], &[0x55, 0xaa]);
        assert_eq!(t.head[446 + 4], 0xee);
        let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        let u32_at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        let primary = &t.head[512..1024];
        let backup = &t.tail[32 * 512..];
        for (h, mine, other, entries) in [
            (primary, 1, l.sectors - 1, 2),
            (backup, l.sectors - 1, 1, l.sectors - 33),
        ] {
            assert_eq!(&h[..8], b"EFI PART");
            assert_eq!(u64_at(h, 24), mine);
            assert_eq!(u64_at(h, 32), other);
            assert_eq!(u64_at(h, 72), entries);
            let mut z = h[..92].to_vec();
            z[16..20].fill(0);
            assert_eq!(u32_at(h, 16), crc32fast::hash(&z));
            assert_eq!(u32_at(h, 88), crc32fast::hash(&t.head[1024..]));
            assert!(h[92..].iter().all(|&b| b == 0));
        }
        assert_eq!(&t.head[1024..], &t.tail[..32 * 512]);
        // The entries: types and GUIDs round-trip, names are UTF-16LE.
        let e = &t.head[1024 + 128..1024 + 256];
        assert_eq!(
            Guid::from_gpt(e[..16].try_into().unwrap()),
            parts[1].type_guid
        );
        assert_eq!(
            Guid::from_gpt(e[16..32].try_into().unwrap()).to_string(),
            "01091119-2129-3139-4149-515961697179"
        );
        assert_eq!(u64_at(e, 32), l.parts[1].0);
        assert_eq!(u64_at(e, 48), READ_ONLY);
        assert_eq!(
            &e[56..76],
            "phase-root"
                .encode_utf16()
                .flat_map(u16::to_le_bytes)
                .collect::<Vec<_>>()
        );
        assert!(t.head[1024 + 4 * 128..].iter().all(|&b| b == 0));
    }

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
        assert_eq!(disk_guid(&rh, b"a"), disk_guid(&rh, b"a"));
        assert_ne!(disk_guid(&rh, b"a"), disk_guid(&rh, b"b"));
        assert_ne!(p[0].guid, p[3].guid);
        assert_eq!(state_uuid(&rh).0[6] >> 4, 4);
    }

    #[test]
    fn meta_is_padded_and_bounded() {
        let m = meta_content(b"{\"x\":1}").unwrap();
        assert_eq!(m.len() as u64, META_SIZE);
        assert_eq!(&m[..7], b"{\"x\":1}");
        assert!(m[7..].iter().all(|&b| b == 0));
        assert!(meta_content(&vec![b' '; META_SIZE as usize + 1]).is_err());
        assert!(meta_content(b"a\0b").is_err());
    }
}
