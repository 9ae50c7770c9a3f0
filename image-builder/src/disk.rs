//! The disk images. `phase-image disk` always writes the release partitions: signed
//! metadata, the verified rootfs, its dm-verity hash device and an empty ext4 state
//! partition. With `--bootable` the disk boots by itself on BIOS, UEFI x64 and UEFI IA32:
//! GRUB's boot code in the protective MBR, a BIOS boot partition with core.img and a FAT32
//! ESP (loaders, one menu, the release's kernel and initramfs, the trusted root) come
//! first (docs/disk-layout.md). Partition types, GUID rules and the GPT bytes are
//! [`phase_layout`]'s, shared with the init; [`partitions`] and [`boot_partitions`] are
//! PURE, [`write`] gathers the contents and writes them, sparse, into a temp file that is
//! renamed into place. Everything is derived from the inputs: the same inputs give the
//! same disk, byte for byte.

use crate::{esp, grub, menu, verity};
use anyhow::{bail, Context, Result};
use phase_layout::gpt::{self, Layout, Part};
use phase_layout::{derive, part_type, Guid, ALIGN, SECTOR};
use sha2::{Digest, Sha256};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

pub const META_SIZE: u64 = phase_layout::meta::SIZE as u64;
/// The BIOS boot partition: core.img (about 100 KiB) with room for GRUB's growth.
pub const BIOS_BOOT_SIZE: u64 = ALIGN;

/// The four release partitions, in order, for a rootfs of `root_size` bytes and a hash
/// device of `hash_size` bytes (PURE). The root hash names the root and verity partitions.
pub fn partitions(
    root_hash: &[u8; 32],
    root_size: u64,
    hash_size: u64,
    state_size: u64,
) -> Vec<Part> {
    let (root, verity) = derive::root_and_verity(root_hash);
    vec![
        Part {
            name: "phase-meta".into(),
            type_guid: part_type::META,
            guid: derive::guid("meta-guid", &[root_hash]),
            attributes: 0,
            size: META_SIZE,
        },
        Part {
            name: "phase-root".into(),
            type_guid: part_type::ROOT_X86_64,
            guid: root,
            attributes: part_type::ATTR_READ_ONLY,
            size: root_size,
        },
        Part {
            name: "phase-verity".into(),
            type_guid: part_type::ROOT_VERITY_X86_64,
            guid: verity,
            attributes: part_type::ATTR_READ_ONLY,
            size: hash_size,
        },
        Part {
            name: "phase-state".into(),
            type_guid: part_type::STATE,
            guid: derive::guid("state-guid", &[root_hash]),
            attributes: 0,
            size: state_size,
        },
    ]
}

/// The two partitions a bootable disk puts first (PURE): the BIOS boot partition and the
/// ESP of `esp_size` bytes, named after the ESP's content digest.
pub fn boot_partitions(esp_digest: &[u8; 32], esp_size: u64) -> Vec<Part> {
    vec![
        Part {
            name: "phase-bios-boot".into(),
            type_guid: part_type::BIOS_BOOT,
            guid: derive::guid("bios-boot-guid", &[esp_digest]),
            attributes: 0,
            size: BIOS_BOOT_SIZE,
        },
        Part {
            name: "phase-esp".into(),
            type_guid: part_type::ESP,
            guid: derive::guid("esp-guid", &[esp_digest]),
            attributes: 0,
            size: esp_size,
        },
    ]
}

/// The disk GUID: from the root hash, the release metadata and (bootable disks) the
/// ESP's content, so a new release or a new boot chain is a new disk.
pub fn disk_guid(root_hash: &[u8; 32], release_json: &[u8], esp_digest: Option<&[u8; 32]>) -> Guid {
    match esp_digest {
        None => derive::guid("disk-guid", &[root_hash, release_json]),
        Some(e) => derive::guid("disk-guid", &[root_hash, release_json, e]),
    }
}

/// The ext4 UUID of the state partition (stable for a given rootfs).
pub fn state_uuid(root_hash: &[u8; 32]) -> Guid {
    derive::guid("state-uuid", &[root_hash])
}

/// The meta partition (phase_layout::meta): the release metadata in its first slot, the
/// root chain (`N.root.json`, ascending) in the next ones (PURE).
pub fn meta_content(release_json: &[u8], roots: &[(String, Vec<u8>)]) -> Result<Vec<u8>, String> {
    phase_layout::meta::encode(release_json, roots).map_err(|e| e.to_string())
}

/// The release directory's `N.root.json` files, ascending by N; the newest
/// `meta::MAX_ROOTS` when there are more (an anchor older than those cannot walk to the
/// end anyway, whatever the disk carries).
pub fn root_files(release_dir: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut found: Vec<(u64, String)> = Vec::new();
    let entries = std::fs::read_dir(release_dir)
        .with_context(|| format!("reading {}", release_dir.display()))?;
    for e in entries {
        let name = e?.file_name().to_string_lossy().into_owned();
        if let Some(n) = name
            .strip_suffix(".root.json")
            .and_then(|n| n.parse::<u64>().ok())
        {
            found.push((n, name));
        }
    }
    found.sort();
    let skip = found.len().saturating_sub(phase_layout::meta::MAX_ROOTS);
    found
        .into_iter()
        .skip(skip)
        .map(|(_, name)| {
            let p = release_dir.join(&name);
            let b = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
            Ok((name, b))
        })
        .collect()
}

pub struct Inputs {
    pub release_dir: PathBuf,
    pub rootfs: PathBuf,
    pub verity: PathBuf,
    pub state_size_mib: u64,
    /// SOURCE_DATE_EPOCH, for mkfs.ext4's and the ESP's timestamps.
    pub mtime: u32,
    /// Make the disk bootable (BIOS boot partition, ESP, MBR boot code).
    pub boot: Option<BootInputs>,
}

pub struct BootInputs {
    /// The trusted root the initramfs carries, copied to the ESP for operators.
    pub trusted_root: PathBuf,
    /// GRUB's module directories (/usr/lib/grub).
    pub grub_dir: PathBuf,
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

/// An artifact of the release, read from the release directory and checked against the
/// signed size and SHA-256: only signed bytes go onto the ESP.
fn signed_artifact(dir: &Path, name: &str, a: &phase_release::doc::Artifact) -> Result<Vec<u8>> {
    if a.path.is_empty() || a.path.contains('/') || a.path.starts_with('.') {
        bail!("release.json: {name} path {:?} is not a file name", a.path);
    }
    let p = dir.join(&a.path);
    let b = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
    let got = phase_release::hex::encode(Sha256::digest(&b).as_slice());
    if b.len() as u64 != a.size || got != a.sha256 {
        bail!(
            "{}: {} bytes, sha256 {got}; release.json signs {} bytes, sha256 {}",
            p.display(),
            b.len(),
            a.size,
            a.sha256
        );
    }
    Ok(b)
}

/// What a bootable disk adds: the ESP image, core.img for the BIOS boot partition, and
/// GRUB's boot.img for the MBR.
struct BootChain {
    esp: Vec<u8>,
    esp_digest: [u8; 32],
    core: Vec<u8>,
    boot_img: [u8; 512],
}

fn boot_chain(
    b: &BootInputs,
    rel: &phase_release::doc::Release,
    release_dir: &Path,
    release_json: &[u8],
    mtime: u32,
) -> Result<BootChain> {
    let kernel = signed_artifact(release_dir, "kernel", &rel.artifacts.kernel)?;
    let initramfs = signed_artifact(release_dir, "initramfs", &rel.artifacts.initramfs)?;
    let trusted_root = std::fs::read(&b.trusted_root)
        .with_context(|| format!("reading {}", b.trusted_root.display()))?;
    let words = menu::release_words(&rel.cmdline)
        .map_err(|e| anyhow::anyhow!("release.json cmdline: {e}"))?;
    // The ESP's serial, which the loaders' early config searches for, is derived from
    // everything on the ESP but the loaders themselves (they embed it).
    let volume_id = derive::volume_id(
        "esp-volume-id",
        &[
            &Sha256::digest(&kernel),
            &Sha256::digest(&initramfs),
            &Sha256::digest(&trusted_root),
            release_json,
        ],
    );
    let early = menu::early_cfg(volume_id);
    let x64 = grub::mkimage(
        &grub::Platform::EfiX64.module_dir(&b.grub_dir),
        grub::Platform::EfiX64,
        Some(&early),
    )?;
    let ia32 = grub::mkimage(
        &grub::Platform::EfiIa32.module_dir(&b.grub_dir),
        grub::Platform::EfiIa32,
        Some(&early),
    )?;
    let core = grub::mkimage(
        &grub::Platform::Bios.module_dir(&b.grub_dir),
        grub::Platform::Bios,
        Some(&early),
    )?;
    if core.len() as u64 > BIOS_BOOT_SIZE {
        bail!(
            "core.img is {} bytes; the BIOS boot partition holds {BIOS_BOOT_SIZE}",
            core.len()
        );
    }
    let boot_img = grub::boot_img(&b.grub_dir)?;
    let cfg = menu::grub_cfg(&words);
    let env = phase_layout::grubenv::render(&[]).map_err(|e| anyhow::anyhow!("grubenv: {e}"))?;
    let files: Vec<(&str, &[u8])> = vec![
        (menu::BOOTX64, &x64),
        (menu::BOOTIA32, &ia32),
        (menu::GRUB_CFG, cfg.as_bytes()),
        (menu::GRUBENV, &env),
        (menu::TRUSTED_ROOT, &trusted_root),
        (menu::KERNEL, &kernel),
        (menu::INITRAMFS, &initramfs),
    ];
    let mut h = Sha256::new();
    for (path, bytes) in &files {
        h.update(path.as_bytes());
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    h.update(core.as_slice());
    let esp_digest: [u8; 32] = h.finalize().into();
    let size = esp::size_for(files.iter().map(|(_, b)| b.len() as u64).sum());
    let esp = esp::build(size, volume_id, u64::from(mtime), &files)?;
    Ok(BootChain {
        esp,
        esp_digest,
        core,
        boot_img,
    })
}

/// Build the disk at `out` (a temp file renamed into place). The rootfs and hash device
/// are checked against each other first: the hash tree is recomputed from the rootfs with
/// the salt and UUID in its superblock and must match byte for byte.
pub fn write(inp: &Inputs, out: &Path) -> Result<Written> {
    let release_path = inp.release_dir.join(crate::release::RELEASE_FILE);
    let release_json = std::fs::read(&release_path)
        .with_context(|| format!("reading {}", release_path.display()))?;
    let roots = root_files(&inp.release_dir)?;
    let meta = meta_content(&release_json, &roots).map_err(anyhow::Error::msg)?;
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
    let chain = match &inp.boot {
        None => None,
        Some(b) => Some(boot_chain(
            b,
            &rel,
            &inp.release_dir,
            &release_json,
            inp.mtime,
        )?),
    };
    let mut parts = match &chain {
        None => Vec::new(),
        Some(c) => boot_partitions(&c.esp_digest, c.esp.len() as u64),
    };
    parts.extend(partitions(
        &tree.root_hash,
        rootfs.len() as u64,
        hash.len() as u64,
        state_size,
    ));
    let l = gpt::layout(&parts.iter().map(|p| p.size).collect::<Vec<_>>());
    let dg = disk_guid(
        &tree.root_hash,
        &release_json,
        chain.as_ref().map(|c| &c.esp_digest),
    );
    let mut tables = gpt::tables(&l, dg, &parts).map_err(|e| anyhow::anyhow!("{e}"))?;
    let state = make_state_fs(state_size, state_uuid(&tree.root_hash), inp.mtime)?;
    let core = match &chain {
        None => Vec::new(),
        Some(c) => {
            // BIOS: boot.img in the MBR loads core.img from the BIOS boot partition's LBA.
            let s = l.parts[0].0;
            let mut mbr = [0u8; 512];
            mbr.copy_from_slice(&tables.head[..512]);
            tables.head[..512].copy_from_slice(&grub::mbr_with_boot_code(&mbr, &c.boot_img, s));
            grub::place_core(&c.core, s).map_err(anyhow::Error::msg)?
        }
    };
    let mut contents: Vec<&[u8]> = Vec::new();
    if let Some(c) = &chain {
        contents.extend([core.as_slice(), &c.esp]);
    }
    contents.extend([meta.as_slice(), &rootfs, &hash, &state]);

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
    for (&(first, _), content) in l.parts.iter().zip(contents) {
        put(first, content)?;
    }
    put(l.sectors - 1 - gpt::ENTRY_SECTORS, &tables.tail)?;
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
mod tests;
