//! `phase-image disk` end to end on small inputs: a signed release whose rootfs carries a
//! dm-verity tree, then the GPT disk, read back by util-linux's `sfdisk --json` and
//! e2fsprogs' `dumpe2fs` (both installed by scripts/setup.sh; missing tools fail the test).

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::{ok, run, s, tmp};

fn tool(cmd: &str, args: &[&str]) -> String {
    let o = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e} (run scripts/setup.sh)"));
    assert!(
        o.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The textual UUID whose bytes, in order, are `b` (what sfdisk prints, uppercase).
fn uuid_of(b: &[u8]) -> String {
    let h: String = b.iter().map(|x| format!("{x:02X}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// A release directory whose rootfs (fake bytes, 300 blocks) carries its verity tree.
fn inputs(d: &Path) -> (PathBuf, PathBuf, PathBuf, String) {
    ok(&["keygen", "--out-dir", s(d), "--name", "k"]);
    let (k, p) = (d.join("k.key"), d.join("k.pub"));
    let root = d.join("root.json");
    ok(&[
        "root",
        "--root-key",
        s(&p),
        "--release-key",
        s(&p),
        "--sign",
        s(&k),
        "-o",
        s(&root),
    ]);
    std::fs::write(d.join("vmlinuz"), b"kernel").unwrap();
    std::fs::write(d.join("initramfs.img"), b"initramfs").unwrap();
    let img = d.join("rootfs.squashfs");
    let data: Vec<u8> = (0..300 * 4096u32)
        .map(|i| (i % 247) as u8 ^ (i >> 12) as u8)
        .collect();
    std::fs::write(&img, &data).unwrap();
    let hash = d.join("rootfs.verity");
    let out = ok(&["verity", s(&img), "-o", s(&hash)]);
    let root_hash = out
        .lines()
        .find_map(|l| l.strip_prefix("root hash "))
        .unwrap()
        .to_string();
    let rel = d.join("rel");
    ok(&[
        "release",
        "--root",
        s(&root),
        "--version",
        "3",
        "--kernel",
        s(&d.join("vmlinuz")),
        "--initramfs",
        s(&d.join("initramfs.img")),
        "--rootfs",
        s(&img),
        "--rootfs-verity",
        s(&d.join("rootfs.verity.json")),
        "--sign",
        s(&k),
        "--out-dir",
        s(&rel),
    ]);
    (rel, img, hash, root_hash)
}

#[test]
fn disk_has_the_four_partitions_named_by_the_root_hash() {
    let d = tmp("layout");
    let (rel, img, hash, root_hash) = inputs(&d);
    let disk = d.join("disk.img");
    ok(&[
        "disk",
        "--release-dir",
        s(&rel),
        "--rootfs",
        s(&img),
        "--verity",
        s(&hash),
        "--state-size-mib",
        "16",
        "-o",
        s(&disk),
    ]);

    let t: serde_json::Value =
        serde_json::from_str(&tool("sfdisk", &["--json", s(&disk)])).unwrap();
    let t = &t["partitiontable"];
    assert_eq!(t["label"], "gpt");
    assert_eq!(t["sectorsize"], 512);
    let rh: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&root_hash[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let parts = t["partitions"].as_array().unwrap();
    let want = [
        ("phase-meta", "5B4C9D1E-7A3F-4E2B-9C61-0D8F2A6B7E10", None),
        (
            "phase-root",
            "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709",
            Some(uuid_of(&rh[..16])),
        ),
        (
            "phase-verity",
            "2C7357ED-EBD2-46D9-AEC1-23D437EC2BF5",
            Some(uuid_of(&rh[16..])),
        ),
        ("phase-state", "4D21B016-B534-45C2-A9FB-5C16E091FD2D", None),
    ];
    assert_eq!(parts.len(), want.len());
    let mut end = 0;
    for (p, (name, ty, uuid)) in parts.iter().zip(&want) {
        assert_eq!(p["name"], *name);
        assert_eq!(p["type"], *ty);
        if let Some(u) = uuid {
            assert_eq!(p["uuid"].as_str().unwrap(), u, "{name}");
        }
        let (start, size) = (p["start"].as_u64().unwrap(), p["size"].as_u64().unwrap());
        assert_eq!(start % 2048, 0, "{name} not 1 MiB aligned");
        assert_eq!(size % 2048, 0, "{name} not whole MiB");
        assert!(start >= end, "{name} overlaps");
        end = start + size;
    }
    assert!(end <= t["lastlba"].as_u64().unwrap() + 1);
    tool("sfdisk", &["--verify", s(&disk)]);

    // Each partition holds what it should.
    let bytes = std::fs::read(&disk).unwrap();
    let region = |i: usize| {
        let (start, size) = (
            parts[i]["start"].as_u64().unwrap(),
            parts[i]["size"].as_u64().unwrap(),
        );
        &bytes[(start * 512) as usize..((start + size) * 512) as usize]
    };
    // The meta partition: release.json in slot 0, the release's N.root.json files after it.
    let release = std::fs::read(rel.join("release.json")).unwrap();
    let meta = phase_layout::meta::decode(region(0));
    assert_eq!(meta.release, &release[..]);
    let root1 = std::fs::read(rel.join("1.root.json")).unwrap();
    assert_eq!(meta.roots, vec![&root1[..]]);
    let slot = phase_layout::meta::SLOT;
    assert!(region(0)[release.len()..slot].iter().all(|&b| b == 0));
    assert!(region(0)[slot + root1.len()..].iter().all(|&b| b == 0));
    let rootfs = std::fs::read(&img).unwrap();
    assert_eq!(&region(1)[..rootfs.len()], &rootfs[..]);
    let tree = std::fs::read(&hash).unwrap();
    assert_eq!(&region(2)[..tree.len()], &tree[..]);
    let state = d.join("state.img");
    std::fs::write(&state, region(3)).unwrap();
    let sb = tool("dumpe2fs", &["-h", s(&state)]);
    assert!(
        sb.lines()
            .any(|l| l.starts_with("Filesystem volume name:") && l.ends_with(" phase-state")),
        "{sb}"
    );

    // Same inputs, same disk.
    let again = d.join("again.img");
    ok(&[
        "disk",
        "--release-dir",
        s(&rel),
        "--rootfs",
        s(&img),
        "--verity",
        s(&hash),
        "--state-size-mib",
        "16",
        "-o",
        s(&again),
    ]);
    assert!(
        std::fs::read(&again).unwrap() == bytes,
        "two disks from the same inputs differ"
    );
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn disk_refuses_a_hash_device_of_other_data() {
    let d = tmp("mismatch");
    let (rel, img, _, _) = inputs(&d);
    let other = d.join("other.img");
    std::fs::write(&other, vec![7u8; 300 * 4096]).unwrap();
    ok(&["verity", s(&other), "-o", s(&d.join("other.verity"))]);
    let o = run(&[
        "disk",
        "--release-dir",
        s(&rel),
        "--rootfs",
        s(&img),
        "--verity",
        s(&d.join("other.verity")),
        "-o",
        s(&d.join("disk.img")),
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("does not match the data"));
    assert!(!d.join("disk.img").exists());
    // A consistent rootfs/tree pair that is not the one the release names.
    let o = run(&[
        "disk",
        "--release-dir",
        s(&rel),
        "--rootfs",
        s(&other),
        "--verity",
        s(&d.join("other.verity")),
        "-o",
        s(&d.join("disk.img")),
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("names root hash"));
    let _ = std::fs::remove_dir_all(d);
}

fn bootable(rel: &Path, img: &Path, hash: &Path, root: &Path, out: &Path) -> std::process::Output {
    run(&[
        "disk",
        "--bootable",
        "--trusted-root",
        s(root),
        "--release-dir",
        s(rel),
        "--rootfs",
        s(img),
        "--verity",
        s(hash),
        "--state-size-mib",
        "16",
        "-o",
        s(out),
    ])
}

#[test]
fn bootable_disk_has_the_boot_chain_and_is_reproducible() {
    let d = tmp("bootable");
    let (rel, img, hash, _) = inputs(&d);
    let root = d.join("root.json");
    let disk = d.join("a.img");
    let o = bootable(&rel, &img, &hash, &root, &disk);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let t: serde_json::Value =
        serde_json::from_str(&tool("sfdisk", &["--json", s(&disk)])).unwrap();
    let parts = t["partitiontable"]["partitions"].as_array().unwrap();
    let names: Vec<&str> = parts.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "phase-bios-boot",
            "phase-esp",
            "phase-meta",
            "phase-root",
            "phase-verity",
            "phase-state"
        ]
    );
    assert_eq!(parts[0]["type"], "21686148-6449-6E6F-744E-656564454649");
    assert_eq!(parts[1]["type"], "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
    tool("sfdisk", &["--verify", s(&disk)]);
    let bytes = std::fs::read(&disk).unwrap();
    // MBR: GRUB's boot code pointing at core.img, the protective entry kept.
    let s0 = parts[0]["start"].as_u64().unwrap();
    let boot_img = std::fs::read("/usr/lib/grub/i386-pc/boot.img").unwrap();
    assert_eq!(&bytes[..0x5c], &boot_img[..0x5c]);
    assert_eq!(&bytes[0x5c..0x64], &s0.to_le_bytes());
    assert_eq!(bytes[446 + 4], 0xee);
    assert_eq!(&bytes[510..512], &[0x55, 0xaa]);
    // core.img's blocklist starts right after its first sector.
    let core = &bytes[(s0 * 512) as usize..];
    assert_eq!(&core[0x1f4..0x1fc], &(s0 + 1).to_le_bytes());
    // The ESP is FAT32 (a third-party reader: file(1)) labelled PHASE-ESP, and holds the
    // signed kernel and initramfs, both loaders and the menu.
    let (es, en) = (
        parts[1]["start"].as_u64().unwrap() as usize * 512,
        parts[1]["size"].as_u64().unwrap() as usize * 512,
    );
    let esp = d.join("esp.img");
    std::fs::write(&esp, &bytes[es..es + en]).unwrap();
    let kind = tool("file", &["-b", s(&esp)]);
    assert!(
        kind.contains("FAT (32 bit)") && kind.contains("PHASE-ESP"),
        "{kind}"
    );
    let read = |path: &str| -> Vec<u8> {
        use std::io::Read;
        let fs = fatfs::FileSystem::new(
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&esp)
                .unwrap(),
            fatfs::FsOptions::new(),
        )
        .unwrap();
        let mut v = Vec::new();
        fs.root_dir()
            .open_file(path)
            .unwrap()
            .read_to_end(&mut v)
            .unwrap();
        v
    };
    assert_eq!(read("boot/vmlinuz"), b"kernel");
    assert_eq!(read("boot/initramfs.img"), b"initramfs");
    assert_eq!(
        read("phase/trusted-root.json"),
        std::fs::read(&root).unwrap()
    );
    assert!(read("EFI/BOOT/BOOTX64.EFI").starts_with(b"MZ"));
    assert!(read("EFI/BOOT/BOOTIA32.EFI").starts_with(b"MZ"));
    let cfg = String::from_utf8(read("boot/grub/grub.cfg")).unwrap();
    for id in ["internet", "local", "private", "debug"] {
        assert!(cfg.contains(&format!("--id {id} {{")), "{cfg}");
    }
    assert!(phase_layout::grubenv::find(&bytes[es..es + en]).is_some());

    // Same inputs, same bytes.
    let again = d.join("b.img");
    let o = bootable(&rel, &img, &hash, &root, &again);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        std::fs::read(&again).unwrap() == bytes,
        "two bootable disks from the same inputs differ"
    );
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn bootable_disk_refuses_a_kernel_the_release_does_not_sign() {
    let d = tmp("unsigned-kernel");
    let (rel, img, hash, _) = inputs(&d);
    std::fs::write(rel.join("vmlinuz"), b"kernel, but not the one signed").unwrap();
    let out = d.join("disk.img");
    let o = bootable(&rel, &img, &hash, &d.join("root.json"), &out);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("release.json signs"), "{err}");
    assert!(!out.exists());
    let _ = std::fs::remove_dir_all(d);
}
