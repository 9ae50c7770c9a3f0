//! Gathering a disk's release: built from a real FAT volume (written with `fatfs`), a
//! padded verity partition and a rootfs file; every way a source can differ from what
//! `release.json` signs is refused and leaves nothing to serve.

use super::*;
use phase_release::doc::{Artifacts, Verity};
use std::path::PathBuf;

const KERNEL: &[u8] = b"a kernel, as signed";
const INITRAMFS: &[u8] = b"an initramfs, as signed";
const HASH_TREE: &[u8] = b"superblock and hash tree";

fn artifact(path: &str, data: &[u8]) -> Artifact {
    Artifact {
        path: path.into(),
        size: data.len() as u64,
        sha256: phase_release::hex::encode(&phase_release::sha256(data)),
        verity: None,
    }
}

fn release() -> Release {
    let mut rootfs = artifact("rootfs.squashfs", b"rootfs bytes");
    rootfs.verity = Some(Verity {
        hash_path: "rootfs.verity".into(),
        hash_size: HASH_TREE.len() as u64,
        hash_sha256: phase_release::hex::encode(&phase_release::sha256(HASH_TREE)),
        root_hash: "00".repeat(32),
        salt: "11".repeat(32),
        data_blocks: 1,
        data_block_size: 4096,
        hash_block_size: 4096,
        algorithm: "sha256".into(),
    });
    Release {
        doc_type: "release".into(),
        spec_version: 1,
        version: 7,
        channel: "stable".into(),
        arch: "x86_64".into(),
        expires: u64::MAX,
        cmdline: "quiet".into(),
        artifacts: Artifacts {
            kernel: artifact("vmlinuz", KERNEL),
            initramfs: artifact("initramfs.img", INITRAMFS),
            rootfs: Some(rootfs),
        },
    }
}

/// A FAT volume holding `files`.
fn fat(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut disk = std::io::Cursor::new(vec![0u8; 4 << 20]);
    fatfs::format_volume(&mut disk, fatfs::FormatVolumeOptions::new()).unwrap();
    {
        let fs = fatfs::FileSystem::new(&mut disk, fatfs::FsOptions::new()).unwrap();
        fs.root_dir().create_dir("boot").unwrap();
        for (path, bytes) in files {
            fs.root_dir()
                .create_file(path)
                .unwrap()
                .write_all(bytes)
                .unwrap();
        }
        fs.unmount().unwrap();
    }
    disk.into_inner()
}

struct Disk {
    dir: PathBuf,
}

impl Disk {
    /// The sources of a disk with `kernel` on its ESP and `tree` on its verity partition.
    fn new(tag: &str, kernel: &[u8], tree: &[u8]) -> Disk {
        let dir = std::env::temp_dir().join(format!("phase-medium-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("esp"),
            fat(&[
                (phase_layout::esp::KERNEL, kernel),
                (phase_layout::esp::INITRAMFS, INITRAMFS),
            ]),
        )
        .unwrap();
        // The partition is larger than the hash device: zeros follow.
        let mut part = tree.to_vec();
        part.resize(1 << 16, 0);
        std::fs::write(dir.join("verity"), part).unwrap();
        std::fs::write(dir.join("rootfs-device"), b"rootfs bytes").unwrap();
        Disk { dir }
    }
    fn gather(&self) -> Result<u64, GatherError> {
        let rel = release();
        let chain = vec![(2u64, b"{\"root\": 2}".to_vec())];
        let esp = self.dir.join("esp");
        let verity = self.dir.join("verity");
        let rootfs = self.dir.join("rootfs-device");
        let src = Sources {
            release_json: b"{\"signed\": \"as verified\"}",
            release: &rel,
            chain: &chain,
            esp: &esp,
            verity: &verity,
            rootfs: &rootfs,
        };
        gather(&src, &self.out())
    }
    fn out(&self) -> PathBuf {
        self.dir.join("served")
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn the_whole_release_is_gathered_verified() {
    let d = Disk::new("good", KERNEL, HASH_TREE);
    let esp_before = std::fs::read(d.dir.join("esp")).unwrap();
    let copied = d.gather().unwrap();
    assert_eq!(
        copied,
        (KERNEL.len() + INITRAMFS.len() + HASH_TREE.len()) as u64
    );
    let out = d.out();
    assert_eq!(std::fs::read(out.join("vmlinuz")).unwrap(), KERNEL);
    assert_eq!(std::fs::read(out.join("initramfs.img")).unwrap(), INITRAMFS);
    assert_eq!(std::fs::read(out.join("rootfs.verity")).unwrap(), HASH_TREE);
    assert_eq!(
        std::fs::read_link(out.join("rootfs.squashfs")).unwrap(),
        d.dir.join("rootfs-device")
    );
    assert_eq!(
        std::fs::read(out.join("release.json")).unwrap(),
        b"{\"signed\": \"as verified\"}"
    );
    assert_eq!(
        std::fs::read(out.join("2.root.json")).unwrap(),
        b"{\"root\": 2}"
    );
    // The ESP was only read.
    assert_eq!(std::fs::read(d.dir.join("esp")).unwrap(), esp_before);
}

#[test]
fn what_the_release_does_not_sign_is_never_gathered() {
    let mut flipped = KERNEL.to_vec();
    flipped[0] ^= 1;
    let mut longer = KERNEL.to_vec();
    longer.push(b'!');
    let mut tree = HASH_TREE.to_vec();
    tree[3] ^= 1;
    for (tag, kernel, tree, reason, artifact) in [
        (
            "kflip",
            &flipped[..],
            HASH_TREE,
            "artifact_hash",
            Some("esp:boot/vmlinuz"),
        ),
        (
            "klong",
            &longer[..],
            HASH_TREE,
            "artifact_too_long",
            Some("esp:boot/vmlinuz"),
        ),
        (
            "kshort",
            &KERNEL[1..],
            HASH_TREE,
            "artifact_size",
            Some("esp:boot/vmlinuz"),
        ),
        ("vflip", KERNEL, &tree[..], "artifact_hash", Some("verity")),
    ] {
        let d = Disk::new(tag, kernel, tree);
        let e = d.gather().unwrap_err();
        assert_eq!(e.reason(), reason, "{tag}: {e}");
        assert_eq!(
            e.artifact().map(|a| a.rsplit('/').next().unwrap_or(a)),
            artifact.map(|a| a.rsplit('/').next().unwrap_or(a)),
            "{tag}: {e}"
        );
        // Nothing half-gathered is left to serve.
        assert!(!d.out().exists(), "{tag}");
    }
}

#[test]
fn a_missing_esp_file_or_no_fat_is_named() {
    let d = Disk::new("noesp", KERNEL, HASH_TREE);
    std::fs::write(
        d.dir.join("esp"),
        fat(&[(phase_layout::esp::KERNEL, KERNEL)]),
    )
    .unwrap();
    assert_eq!(d.gather().unwrap_err().reason(), "esp_file_missing");
    std::fs::write(d.dir.join("esp"), vec![0u8; 1 << 16]).unwrap();
    assert_eq!(d.gather().unwrap_err().reason(), "esp_unreadable");
    assert!(!d.out().exists());
}
