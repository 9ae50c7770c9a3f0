//! Boot tests of the verified rootfs: out/vmlinuz + out/initramfs.img with
//! out/rootfs-disk.img attached (a copy per test: the state partition is writable).

use phase_qemu::{artifact, out_dir, tempdir, Boot, Firmware, Vm};
use std::path::{Path, PathBuf};
use std::process::Command;

fn disk_copy(dir: &Path) -> PathBuf {
    let p = dir.join("disk.img");
    let st = Command::new("cp")
        .args(["--sparse=always"])
        .arg(artifact("rootfs-disk.img"))
        .arg(&p)
        .status()
        .unwrap();
    assert!(st.success());
    p
}

fn sha256(p: &Path) -> String {
    let o = Command::new("sha256sum").arg(p).output().unwrap();
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Byte offset of the partition named `name` (sfdisk reads our GPT: a third-party check).
fn partition_offset(disk: &Path, name: &str) -> u64 {
    let o = Command::new("sfdisk")
        .arg("--json")
        .arg(disk)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let p = v["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no partition {name}: {v}"));
    p["start"].as_u64().unwrap() * 512
}

/// Flip the lowest bit of the byte at `at` in `disk`, in place.
fn flip_byte(disk: &Path, at: u64) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(disk)
        .unwrap();
    let mut byte = [0u8; 1];
    f.seek(SeekFrom::Start(at)).unwrap();
    f.read_exact(&mut byte).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&[byte[0] ^ 0x01]).unwrap();
}

/// Boot out/vmlinuz + out/initramfs.img with `disk` attached, to init.ready.
fn boot_disk(disk: &Path) -> Boot {
    Vm::default_artifacts()
        .disk(disk)
        .append("phase.poweroff=init.ready")
        .run()
        .unwrap()
}

fn assert_stage2(b: &Boot) {
    let s = b.expect("stage2.start");
    assert_eq!(s.fields["pid"], 1, "PID 1 is still phase: {}", s.fields);
    assert_eq!(s.str("exe"), Some("/usr/lib/phase/phase"), "{}", s.fields);
    assert_eq!(s.str("root_fs"), Some("overlay"), "{}", s.fields);
    assert!(
        s.str("os").unwrap_or("").starts_with("Phase Boot"),
        "{}",
        s.fields
    );
    // /etc/motd comes from the repository's rootfs/ directory.
    let motd =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../rootfs/etc/motd"))
            .unwrap();
    assert_eq!(s.str("motd"), motd.lines().next(), "{}", s.fields);
    assert_eq!(b.expect("init.ready").fields["stage"], 2);
}

#[test]
fn boots_verified_rootfs_with_persistent_state() {
    let dir = tempdir("boot");
    let disk = disk_copy(&dir);
    // On until the background scrub has read the whole rootfs (unpaced here).
    let b = Vm::default_artifacts()
        .disk(&disk)
        .append("phase.scrub=1024 phase.poweroff=rootfs.scrubbed")
        .run()
        .unwrap();
    b.assert_clean_poweroff();
    let s = b.expect("rootfs.scrubbed");
    let size = std::fs::metadata(artifact("rootfs.squashfs"))
        .unwrap()
        .len();
    assert_eq!(s.fields["bytes"], size, "{}", s.fields);
    assert_eq!(s.fields["bad_blocks"], 0, "{}", s.fields);
    assert_eq!(s.str("decision"), Some("keep_serving"), "{}", s.fields);
    assert_eq!(
        s.str("device"),
        b.expect("rootfs.verified").str("device"),
        "the dm-verity device is what is scrubbed"
    );
    b.assert_order(&[
        "init.start",
        "trust.ready",
        "rootfs.verified",
        "state.ready",
        "rootfs.mounted",
        "stage2.start",
        "init.ready",
    ]);
    let v = b.expect("rootfs.verified");
    assert_eq!(v.str("method"), Some("dm-verity"), "{}", v.fields);
    let w = b.expect("disk.waited");
    assert_eq!(
        (w.str("ended"), w.str("medium")),
        (Some("found"), Some("vda")),
        "{}",
        w.fields
    );
    let st = b.expect("state.ready");
    assert_eq!(st.fields["persistent"], true, "{}", st.fields);
    assert_stage2(&b);
    assert!(
        b.event("verify.failed").is_none() && b.event("fallback").is_none(),
        "{}",
        b.explain()
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn flipped_byte_in_rootfs_is_caught_and_boot_falls_back() {
    let dir = tempdir("flip");
    let disk = disk_copy(&dir);
    let at = partition_offset(&disk, "phase-root") + 100;
    flip_byte(&disk, at);
    let b = boot_disk(&disk);
    b.assert_clean_poweroff();
    let f = b.expect("verify.failed");
    assert_eq!(f.str("artifact"), Some("rootfs"), "{}", f.fields);
    assert_eq!(f.str("reason"), Some("verity_mismatch"), "{}", f.fields);
    let fb = b.expect("fallback");
    assert_eq!(fb.str("step"), Some("local"));
    // Documented fallback: the initramfs keeps serving (stage 1).
    assert!(b.event("rootfs.mounted").is_none() && b.event("stage2.start").is_none());
    assert_eq!(b.expect("init.ready").fields["stage"], 1);
    let _ = std::fs::remove_dir_all(dir);
}

/// Where the stage-2 init's data blocks lie in the squashfs: (first byte, length).
fn init_blocks(squashfs: &Path) -> (u64, u64) {
    use backhand::{InnerNode, SquashfsFileReader};
    let f = std::io::BufReader::new(std::fs::File::open(squashfs).unwrap());
    let fs = backhand::FilesystemReader::from_reader(f).unwrap();
    let node = fs
        .files()
        .find(|n| n.fullpath == Path::new("/usr/lib/phase/phase"))
        .expect("the rootfs holds /usr/lib/phase/phase");
    let InnerNode::File(file) = &node.inner else {
        panic!("/usr/lib/phase/phase is not a file")
    };
    let (start, sizes) = match file {
        SquashfsFileReader::Basic(b) => (u64::from(b.blocks_start), &b.block_sizes),
        SquashfsFileReader::Extended(e) => (e.blocks_start, &e.block_sizes),
    };
    (start, sizes.iter().map(|s| u64::from(s.size())).sum())
}

/// A byte flipped inside the stage-2 init: the root mounts (dm-verity checks only what is
/// read), the init is read whole in the background, and the handoff refuses it, so the
/// boot stays on the initramfs.
#[test]
fn flipped_byte_in_the_stage2_init_keeps_the_boot_on_the_initramfs() {
    let dir = tempdir("initflip");
    let disk = disk_copy(&dir);
    let (start, len) = init_blocks(&artifact("rootfs.squashfs"));
    assert!(len > 1 << 20, "the init's blocks: {len} bytes");
    let at = partition_offset(&disk, "phase-root") + start + len / 2;
    flip_byte(&disk, at);
    let b = boot_disk(&disk);
    b.assert_clean_poweroff();
    b.assert_order(&["rootfs.mounted", "verify.failed", "fallback", "init.ready"]);
    let f = b.expect("verify.failed");
    assert_eq!(
        (f.str("artifact"), f.str("reason")),
        (Some("/usr/lib/phase/phase"), Some("verity_mismatch")),
        "{}",
        f.fields
    );
    let fb = b.expect("fallback");
    assert_eq!(fb.str("step"), Some("handoff"), "{}", fb.fields);
    assert!(b.event("stage2.start").is_none(), "{}", b.explain());
    assert_eq!(b.expect("init.ready").fields["stage"], 1);
    let _ = std::fs::remove_dir_all(dir);
}

/// A byte flipped in the middle of the squashfs (kernel modules that are not in the
/// initramfs: never read while booting) passes boot, dm-verity checking only what is read;
/// the background scrub reads every block past the page cache and finds it.
#[test]
fn scrub_finds_a_block_boot_never_read_and_the_node_keeps_running() {
    let dir = tempdir("scrub");
    let disk = disk_copy(&dir);
    let size = std::fs::metadata(artifact("rootfs.squashfs"))
        .unwrap()
        .len();
    let in_rootfs = size / 2 + 100;
    let at = partition_offset(&disk, "phase-root") + in_rootfs;
    flip_byte(&disk, at);
    let b = Vm::default_artifacts()
        .disk(&disk)
        .append("phase.scrub=64 phase.poweroff=rootfs.scrubbed")
        .run()
        .unwrap();
    // Boot was not disturbed: stage 2 on the verified rootfs, no fallback.
    b.assert_order(&[
        "rootfs.mounted",
        "stage2.start",
        "verify.failed",
        "rootfs.scrubbed",
    ]);
    assert!(b.event("fallback").is_none(), "{}", b.explain());
    let f = b.expect("verify.failed");
    assert_eq!(
        (f.str("source"), f.str("artifact"), f.str("reason")),
        (Some("scrub"), Some("rootfs"), Some("verity_mismatch")),
        "{}",
        f.fields
    );
    assert_eq!(f.fields["offset"], in_rootfs / 4096 * 4096, "{}", f.fields);
    let s = b.expect("rootfs.scrubbed");
    assert_eq!(s.fields["bad_blocks"], 1, "{}", s.fields);
    assert_eq!(s.fields["bytes"], size, "{}", s.fields);
    assert_eq!(s.str("decision"), Some("stop_serving"), "{}", s.fields);
    // The node kept running: it powered off in order, on request, after the verdict.
    b.assert_clean_poweroff();
    assert_eq!(b.expect("shutdown").str("reason"), Some("phase.poweroff"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn private_mode_writes_nothing_to_disk() {
    let dir = tempdir("private");
    let disk = disk_copy(&dir);
    let before = sha256(&disk);
    let b = Vm::default_artifacts()
        .firmware(Firmware::Uefi)
        .disk(&disk)
        .append("phase.mode=private phase.poweroff=init.ready")
        .run()
        .unwrap();
    b.assert_clean_poweroff();
    assert_stage2(&b);
    let st = b.expect("state.ready");
    assert_eq!(
        (st.fields["persistent"].as_bool(), st.str("device")),
        (Some(false), Some("tmpfs"))
    );
    assert_eq!(
        sha256(&disk),
        before,
        "a private boot changed the disk image"
    );
    // Nor does it load the state partition's filesystems (ext4 would only compete for
    // the CPU with the local step).
    assert!(
        b.all("modules.loaded")
            .iter()
            .all(|m| m.str("group") != Some("state")),
        "{}",
        b.explain()
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Without dm-verity in the kernel, the rootfs is copied to RAM and hashed whole against
/// the signed SHA-256 before it is mounted.
#[test]
fn without_dm_verity_the_image_is_checked_by_its_tree_on_every_core() {
    let dir = tempdir("noverity");
    let disk = disk_copy(&dir);
    let list: String = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../initramfs/modules.txt"),
    )
    .unwrap()
    .lines()
    .filter(|l| !l.starts_with("dm_"))
    .map(|l| format!("{l}\n"))
    .collect();
    std::fs::write(dir.join("modules.txt"), list).unwrap();
    let release = std::fs::read_to_string(artifact("kernel.version"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("release=").map(str::to_string))
        .unwrap();
    let initrd = dir.join("initramfs.img");
    let st = Command::new(artifact("phase-image"))
        .args(["initramfs", "--release-floor", "1", "--init"])
        .arg(artifact("phase"))
        .arg("--modules-dir")
        .arg(out_dir().join("../build/kernel/lib/modules").join(&release))
        .arg("--modules-list")
        .arg(dir.join("modules.txt"))
        .arg("--file")
        .arg(format!(
            "etc/phase/trusted-root.json={}",
            artifact("trusted-root.json").display()
        ))
        .arg("-o")
        .arg(&initrd)
        .status()
        .unwrap();
    assert!(st.success());
    let b = Vm::new(&artifact("vmlinuz"), &initrd)
        .disk(&disk)
        .append("phase.poweroff=init.ready")
        .run()
        .unwrap();
    b.assert_clean_poweroff();
    let v = b.expect("rootfs.verified");
    assert_eq!(v.str("method"), Some("verity-tree"), "{}", v.fields);
    assert_stage2(&b);
    // One flipped byte deep in the image: the tree check names it, nothing is mounted.
    let at = partition_offset(&disk, "phase-root") + 50 * 1024 * 1024 + 4097;
    flip_byte(&disk, at);
    let b = Vm::new(&artifact("vmlinuz"), &initrd)
        .disk(&disk)
        .append("phase.mode=private phase.poweroff=init.ready")
        .run()
        .unwrap();
    b.assert_clean_poweroff();
    let f = b.expect("verify.failed");
    assert_eq!(
        (f.str("artifact"), f.str("reason")),
        (Some("rootfs"), Some("verity_mismatch")),
        "{}",
        f.fields
    );
    assert!(b.event("rootfs.mounted").is_none() && b.event("stage2.start").is_none());
    let _ = std::fs::remove_dir_all(dir);
}

fn phase_image(args: &[&str]) {
    let o = Command::new(artifact("phase-image"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn partition_range(disk: &Path, name: &str) -> (u64, u64) {
    let o = Command::new("sfdisk")
        .arg("--json")
        .arg(disk)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let p = v["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap()
        .clone();
    (
        p["start"].as_u64().unwrap() * 512,
        p["size"].as_u64().unwrap() * 512,
    )
}

/// Rollback protection persists: a machine that booted release 2 records it on its state
/// partition, and then refuses release 1 from the same partition, even though release 1 is
/// validly signed.
#[test]
fn trusted_state_on_disk_refuses_rollback() {
    let dir = tempdir("rollback");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let keys = Path::new(env!("CARGO_MANIFEST_DIR")).join("../keys/test");
    let rel2 = dir.join("rel2");
    let (root, kernel, initrd, rootfs, verity) = (
        s(&artifact("trusted-root.json")),
        s(&artifact("vmlinuz")),
        s(&artifact("initramfs.img")),
        s(&artifact("rootfs.squashfs")),
        s(&artifact("rootfs.verity.json")),
    );
    phase_image(&[
        "release",
        "--root",
        &root,
        "--version",
        "2",
        // As the TEST release of `make build`: it must not lapse while the commit lives.
        "--expires-in-days",
        "36500",
        "--kernel",
        &kernel,
        "--initramfs",
        &initrd,
        "--rootfs",
        &rootfs,
        "--rootfs-verity",
        &verity,
        "--sign",
        &s(&keys.join("TEST-release-1.key")),
        "--sign",
        &s(&keys.join("TEST-release-2.key")),
        "--out-dir",
        &s(&rel2),
    ]);
    let disk2 = dir.join("disk2.img");
    phase_image(&[
        "disk",
        "--release-dir",
        &s(&rel2),
        "--rootfs",
        &rootfs,
        "--verity",
        &s(&artifact("rootfs.verity")),
        "-o",
        &s(&disk2),
    ]);
    let b = boot_disk(&disk2);
    b.assert_clean_poweroff();
    assert_eq!(
        b.expect("rootfs.mounted").fields["release"],
        2,
        "{}",
        b.explain()
    );
    assert_eq!(b.expect("state.ready").fields["persistent"], true);

    // Same machine, same state partition, now offered release 1.
    let disk1 = disk_copy(&dir);
    let (from, len) = partition_range(&disk2, "phase-state");
    let (to, len1) = partition_range(&disk1, "phase-state");
    assert_eq!(len, len1);
    let state = std::fs::read(&disk2).unwrap()[from as usize..(from + len) as usize].to_vec();
    let mut d1 = std::fs::read(&disk1).unwrap();
    d1[to as usize..(to + len) as usize].copy_from_slice(&state);
    std::fs::write(&disk1, d1).unwrap();
    let b = boot_disk(&disk1);
    b.assert_clean_poweroff();
    let f = b.expect("verify.failed");
    assert_eq!(f.str("reason"), Some("rollback"), "{}", f.fields);
    assert!(b.event("rootfs.mounted").is_none());
    assert_eq!(b.expect("init.ready").fields["stage"], 1);
    let _ = std::fs::remove_dir_all(dir);
}

/// The number of the partition named `name` (from sfdisk's node name, e.g. `disk.img4`).
fn partition_number(disk: &Path, name: &str) -> String {
    let o = Command::new("sfdisk")
        .arg("--json")
        .arg(disk)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let node = v["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no partition {name}: {v}"))["node"]
        .as_str()
        .unwrap()
        .to_string();
    node.chars()
        .rev()
        .take_while(|c| c.is_ascii_digit())
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect()
}

/// A disk whose state partition was removed from the GPT, and one whose state partition
/// has no filesystem left: each boot names the loss (`state.unavailable` with the
/// reason), keeps the trusted state in RAM and still boots its verified release.
#[test]
fn removed_or_broken_state_partition_is_named_and_the_release_still_boots() {
    let dir = tempdir("nostate");
    let removed = disk_copy(&dir);
    let n = partition_number(&removed, "phase-state");
    let st = Command::new("sfdisk")
        .args(["--quiet", "--delete"])
        .arg(&removed)
        .arg(&n)
        .status()
        .unwrap();
    assert!(st.success());
    let wiped_dir = dir.join("wiped");
    std::fs::create_dir_all(&wiped_dir).unwrap();
    let wiped = disk_copy(&wiped_dir);
    let at = partition_offset(&wiped, "phase-state");
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&wiped)
            .unwrap();
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(&[0u8; 8192]).unwrap();
    }
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| boot_disk(&removed));
        let b = s.spawn(|| boot_disk(&wiped));
        (a.join().unwrap(), b.join().unwrap())
    });
    for (b, reason) in [(a, "no_state_partition"), (b, "mount_failed")] {
        b.assert_clean_poweroff();
        let u = b.expect("state.unavailable");
        assert_eq!(u.str("reason"), Some(reason), "{}", u.fields);
        b.assert_order(&[
            "rootfs.verified",
            "state.unavailable",
            "state.ready",
            "rootfs.mounted",
        ]);
        let st = b.expect("state.ready");
        assert_eq!(st.fields["persistent"], false, "{}", st.fields);
        assert!(b.event("verify.failed").is_none(), "{}", b.explain());
        assert_stage2(&b);
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// The root chain on the meta partition: root 2 (signed by the TEST root key) revokes both
/// TEST release keys for one new key. A disk whose release directory carries `2.root.json`
/// boots a release signed by the new key (the initramfs anchor alone would refuse it:
/// `unknown_key`), and a disk carrying the same chain with a release signed by the revoked
/// keys is refused, although the initramfs anchor alone would accept it.
#[test]
fn root_chain_on_the_meta_partition_is_walked_at_boot() {
    let dir = tempdir("metachain");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let keys = Path::new(env!("CARGO_MANIFEST_DIR")).join("../keys/test");
    let key = |n: &str| s(&keys.join(n));
    phase_image(&["keygen", "--out-dir", &s(&dir), "--name", "new-release"]);
    let root2 = dir.join("2.root.json");
    phase_image(&[
        "root",
        "--previous",
        &s(&artifact("trusted-root.json")),
        "--root-key",
        &key("TEST-root-1.pub"),
        "--release-key",
        &s(&dir.join("new-release.pub")),
        "--expires-in-days",
        "36500",
        "--sign",
        &key("TEST-root-1.key"),
        "-o",
        &s(&root2),
    ]);
    let (kernel, initrd, rootfs, verity) = (
        s(&artifact("vmlinuz")),
        s(&artifact("initramfs.img")),
        s(&artifact("rootfs.squashfs")),
        s(&artifact("rootfs.verity.json")),
    );
    // A disk with release `version` signed by `signers`, its directory carrying root 2.
    let disk = |name: &str, version: &str, signers: &[String]| {
        let rel = dir.join(format!("rel-{name}"));
        let mut args = vec![
            "release".to_string(),
            "--root".into(),
            s(&root2),
            "--root-history".into(),
            s(&artifact("trusted-root.json")),
            "--version".into(),
            version.into(),
            "--expires-in-days".into(),
            "36500".into(),
            "--kernel".into(),
            kernel.clone(),
            "--initramfs".into(),
            initrd.clone(),
            "--rootfs".into(),
            rootfs.clone(),
            "--rootfs-verity".into(),
            verity.clone(),
            "--out-dir".into(),
            s(&rel),
        ];
        for k in signers {
            args.extend(["--sign".to_string(), k.clone()]);
        }
        // (The builder signs with whatever keys it is given; the init judges them.)
        phase_image(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let img = dir.join(format!("{name}.img"));
        phase_image(&[
            "disk",
            "--release-dir",
            &s(&rel),
            "--rootfs",
            &rootfs,
            "--verity",
            &s(&artifact("rootfs.verity")),
            "-o",
            &s(&img),
        ]);
        img
    };
    let rotated = disk("rotated", "2", &[s(&dir.join("new-release.key"))]);
    let b = boot_disk(&rotated);
    b.assert_clean_poweroff();
    assert!(b.event("verify.failed").is_none(), "{}", b.explain());
    assert_eq!(
        b.expect("rootfs.mounted").fields["release"],
        2,
        "{}",
        b.explain()
    );
    assert_eq!(b.expect("init.ready").fields["stage"], 2);

    let revoked = disk(
        "revoked",
        "3",
        &[key("TEST-release-1.key"), key("TEST-release-2.key")],
    );
    let b = boot_disk(&revoked);
    b.assert_clean_poweroff();
    let f = b.expect("verify.failed");
    assert_eq!(f.str("reason"), Some("unknown_key"), "{}", f.fields);
    assert!(b.event("rootfs.mounted").is_none(), "{}", b.explain());
    assert_eq!(b.expect("init.ready").fields["stage"], 1);
    let _ = std::fs::remove_dir_all(dir);
}
