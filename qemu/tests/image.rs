//! Boot tests of the hybrid image `out/phase-x86_64.img` with no `-kernel`: the firmware
//! (SeaBIOS, OVMF x64, OVMF IA32) loads GRUB from the image, GRUB's menu loads the
//! kernel and initramfs from the ESP, and the init boots the image's verified release.
//! Each test boots its own copy, with the menu choice written into the copy's
//! `boot/grub/grubenv` (entry, no menu wait, and `phase.poweroff=` for the exit status):
//! the same mechanism an operator uses, and it changes nothing else on the image.
//! The default entry boots on all three firmwares; the other entries on SeaBIOS.

use phase_layout::{grubenv, part_type};
use phase_qemu::{artifact, host_phase, tempdir, Boot, Firmware, Vm};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

fn copy_of(src: &Path, dir: &Path) -> PathBuf {
    let p = dir.join(src.file_name().unwrap());
    let st = Command::new("cp")
        .arg("--sparse=always")
        .arg(src)
        .arg(&p)
        .status()
        .unwrap();
    assert!(st.success());
    p
}

/// Byte range of the first partition of type `t`, read from the image's own GPT.
fn partition_range(f: &mut std::fs::File, t: phase_layout::Guid) -> (u64, u64) {
    let mut header = vec![0u8; 512];
    f.seek(SeekFrom::Start(512)).unwrap();
    f.read_exact(&mut header).unwrap();
    let (off, len) = phase_layout::gpt::entries_range(&header).unwrap();
    let mut entries = vec![0u8; len as usize];
    f.seek(SeekFrom::Start(off)).unwrap();
    f.read_exact(&mut entries).unwrap();
    let parts = phase_layout::gpt::parse(&header, &entries).unwrap();
    let p = parts
        .iter()
        .find(|p| p.type_guid == t)
        .unwrap_or_else(|| panic!("the image has no partition of type {t:?}"));
    (p.first_lba * 512, p.size_bytes())
}

/// Byte range of the ESP.
fn esp_range(f: &mut std::fs::File) -> (u64, u64) {
    partition_range(f, part_type::ESP)
}

/// Write the menu choice into `image`'s grubenv: no wait, `vars` besides.
fn choose(image: &Path, vars: &[(&str, &str)]) {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .unwrap();
    let (start, len) = esp_range(&mut f);
    let mut esp = vec![0u8; len as usize];
    f.seek(SeekFrom::Start(start)).unwrap();
    f.read_exact(&mut esp).unwrap();
    let at = grubenv::find(&esp).expect("the ESP holds the menu-choice block");
    let mut all = vec![("timeout", "0")];
    all.extend_from_slice(vars);
    let block = grubenv::render(&all).unwrap();
    f.seek(SeekFrom::Start(start + at as u64)).unwrap();
    f.write_all(&block).unwrap();
    f.sync_all().unwrap();
}

/// Added to every menu entry a test boots, as the harness adds it to `-kernel` boots: under
/// TCG on a loaded host the kernel's IO-APIC timer check can miss its ticks and panic.
const NO_TIMER_CHECK: &str = "no_timer_check";

/// A copy of the hybrid image with `entry` chosen, powering off at `until`.
fn image_with(dir: &Path, entry: &str, until: &str) -> PathBuf {
    let img = copy_of(&artifact("phase-x86_64.img"), dir);
    let extra = format!("phase.poweroff={until} {NO_TIMER_CHECK}");
    choose(&img, &[("default", entry), ("phase_extra", &extra)]);
    img
}

/// The verified release of the image, booted to stage 2 in `mode`.
fn assert_booted_the_image(b: &Boot, mode: &str) {
    b.assert_clean_poweroff();
    b.assert_order(&[
        "init.start",
        "trust.ready",
        "rootfs.verified",
        "rootfs.mounted",
        "stage2.start",
        "init.ready",
    ]);
    assert_eq!(
        b.expect("rootfs.verified").str("method"),
        Some("dm-verity"),
        "{}",
        b.explain()
    );
    let s = b.expect("stage2.start");
    assert_eq!(s.str("exe"), Some("/usr/lib/phase/phase"), "{}", s.fields);
    let r = b.expect("init.ready");
    assert_eq!(r.fields["stage"], 2, "{}", r.fields);
    assert_eq!(r.str("mode"), Some(mode), "{}", r.fields);
    assert!(b.event("verify.failed").is_none(), "{}", b.explain());
}

fn boot_default_entry(fw: Firmware, name: &str) -> Boot {
    let dir = tempdir(name);
    // No `default=`: the menu's own default entry (Internet).
    let img = copy_of(&artifact("phase-x86_64.img"), &dir);
    let extra = format!("phase.poweroff=init.ready {NO_TIMER_CHECK}");
    choose(&img, &[("phase_extra", &extra)]);
    let b = Vm::disk_boot(&img).firmware(fw).run().unwrap();
    let _ = std::fs::remove_dir_all(dir);
    b
}

#[test]
fn hybrid_image_boots_by_itself_under_seabios() {
    let b = boot_default_entry(Firmware::Bios, "img-bios");
    assert_booted_the_image(&b, "internet");
    assert_eq!(b.expect("init.ready").fields["debug"], false);
    let st = b.expect("state.ready");
    assert_eq!(st.fields["persistent"], true, "{}", st.fields);
}

#[test]
fn hybrid_image_boots_by_itself_under_ovmf_x64() {
    let b = boot_default_entry(Firmware::Uefi, "img-uefi");
    assert_booted_the_image(&b, "internet");
}

#[test]
fn hybrid_image_boots_by_itself_under_ovmf_ia32() {
    let b = boot_default_entry(Firmware::UefiIa32, "img-ia32");
    assert_booted_the_image(&b, "internet");
}

#[test]
fn each_menu_entry_boots_its_mode() {
    // Local: persistent state, LAN only.
    let dir = tempdir("img-entries");
    let img = image_with(&dir, "local", "init.ready");
    let b = Vm::disk_boot(&img).run().unwrap();
    assert_booted_the_image(&b, "local");
    assert_eq!(b.expect("state.ready").fields["persistent"], true);
    // Private: state in RAM, and the image file is left byte-identical, even on a larger
    // stick (nothing grows).
    let img = image_with(&dir, "private", "init.ready");
    enlarge(&img);
    let before = sha256(&img);
    let b = Vm::disk_boot(&img).run().unwrap();
    assert_booted_the_image(&b, "private");
    assert_eq!(b.expect("state.ready").fields["persistent"], false);
    assert_eq!(sha256(&img), before, "a private boot changed the image");
    // Debug: internet mode with phase.debug.
    let img = image_with(&dir, "debug", "init.ready");
    let b = Vm::disk_boot(&img).run().unwrap();
    assert_booted_the_image(&b, "internet");
    assert_eq!(
        b.expect("init.ready").fields["debug"],
        true,
        "{}",
        b.explain()
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn qcow2_image_is_the_same_disk_and_boots() {
    // make build's qcow2 holds exactly the raw image's content ...
    let o = Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", "qcow2"])
        .arg(artifact("phase-x86_64.img"))
        .arg(artifact("phase-x86_64.qcow2"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    // ... and phase-image qcow2 of a copy with a menu choice boots as a qcow2 drive.
    let dir = tempdir("img-qcow2");
    let raw = image_with(&dir, "internet", "init.ready");
    let q = dir.join("phase.qcow2");
    let o = Command::new(artifact("phase-image"))
        .arg("qcow2")
        .arg(&raw)
        .arg("-o")
        .arg(&q)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::remove_file(&raw).unwrap();
    let b = Vm::disk_boot(&q).run().unwrap();
    assert_booted_the_image(&b, "internet");
    let _ = std::fs::remove_dir_all(dir);
}

const MIB: u64 = 1 << 20;
/// How much larger the "stick" is than the image.
const EXTRA: u64 = 64 * MIB;

/// Make `p` larger, as `dd` of the image onto a bigger stick leaves it.
fn enlarge(p: &Path) {
    let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
    let len = f.metadata().unwrap().len();
    f.set_len(len + EXTRA).unwrap();
}

/// The phase-state partition as sfdisk reads it: (start, size) in bytes.
fn state_extent(disk: &Path) -> (u64, u64) {
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
        .find(|p| p["name"] == "phase-state")
        .unwrap_or_else(|| panic!("no phase-state partition: {v}"))
        .clone();
    (
        p["start"].as_u64().unwrap() * 512,
        p["size"].as_u64().unwrap() * 512,
    )
}

fn sha256(p: &Path) -> String {
    let o = Command::new("sha256sum").arg(p).output().unwrap();
    assert!(o.status.success(), "sha256sum {}", p.display());
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn tool(cmd: &str, args: &[&str]) -> (bool, String) {
    let o = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e} (run scripts/setup.sh)"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

/// Two boots of one copy of out/phase-x86_64.img made larger, as `dd` onto a bigger stick
/// leaves it:
/// 1. Local entry, on a test LAN: the first boot grows the state partition (`state.grown`),
///    brings the network up in stage 2 and serves its own release (kernel and initramfs
///    read back from the ESP, the rest from the verified partitions), announced by mDNS.
///    The host's `phase fetch` verifies the whole release from it against the TEST root and
///    gets out/release/'s bytes. Then ctrl-alt-del shuts the node down in order.
/// 2. With one byte of the verity partition's superblock padding flipped (dm-verity never
///    reads that block, so the boot is unaffected, but the hash device no longer has its
///    signed SHA-256): nothing to grow, the persistent state kept, a valid GPT and a clean
///    ext4 of the new size, and the node refuses to serve the altered file
///    (`verify.failed` `artifact_hash`, `fallback {step: serve}`).
#[test]
fn a_disk_booted_node_serves_its_release_grows_once_and_keeps_its_state() {
    use phase_qemu::lan::Lan;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{mpsc, Arc};
    use std::time::Duration;
    let mut lan = Lan::new("disk");
    lan.dhcp();
    let img = copy_of(&artifact("phase-x86_64.img"), lan.dir());
    enlarge(&img);
    let (start, before) = state_extent(&img);
    choose(
        &img,
        &[("default", "local"), ("phase_extra", NO_TIMER_CHECK)],
    );
    let tap = lan.tap(0);
    let (tx, rx) = mpsc::channel();
    let (stop, shut) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let vm = Vm::disk_boot(&img)
        .on_lan(&lan, &tap)
        .live_events(tx)
        .stop_when(stop.clone())
        .shutdown_when(shut.clone())
        .timeout(Duration::from_secs(600));
    let node = std::thread::spawn(move || vm.run().unwrap());
    let announced = loop {
        match rx.recv_timeout(phase_qemu::scaled(Duration::from_secs(300))) {
            Ok(e) if e.name == "provider.announced" => break Some(e),
            Ok(e) if e.name == "shutdown" || e.name == "panic" => break None,
            Ok(_) => {}
            Err(_) => break None,
        }
    };
    let Some(announced) = announced else {
        stop.store(true, Ordering::Relaxed);
        let b = node.join().unwrap();
        panic!(
            "the disk-booted node did not announce its release:\n{}",
            b.explain()
        );
    };
    let url = announced.str("url").unwrap().to_string();
    let member = lan.member(3);
    let fetched = lan.dir().join("fetched");
    let o = lan
        .command(&member, host_phase())
        .arg("fetch")
        .arg("--root")
        .arg(artifact("trusted-root.json"))
        .args(["--provider", &url, "--out"])
        .arg(&fetched)
        .output()
        .unwrap();
    shut.store(true, Ordering::Relaxed);
    let a = node.join().unwrap();
    assert!(
        o.status.success(),
        "phase fetch from {url}: {}{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
        a.explain()
    );
    for f in [
        "release.json",
        "vmlinuz",
        "initramfs.img",
        "rootfs.squashfs",
        "rootfs.verity",
    ] {
        assert_eq!(
            sha256(&fetched.join(f)),
            sha256(&artifact("release").join(f)),
            "{f} served by the disk-booted node"
        );
    }
    let _ = std::fs::remove_dir_all(&fetched);
    // The first boot: the verified release from the disk, grown, served, shut down in order.
    a.assert_no_kernel_panic();
    a.assert_order(&[
        "state.grown",
        "rootfs.mounted",
        "stage2.start",
        "net.up",
        "provider.announced",
        "shutdown",
    ]);
    assert_eq!(a.expect("rootfs.verified").str("method"), Some("dm-verity"));
    let g = a.expect("state.grown");
    assert_eq!(
        (g.fields["old"].as_u64(), g.fields["new"].as_u64()),
        (Some(before), Some(before + EXTRA)),
        "{}",
        g.fields
    );
    assert_eq!(a.expect("shutdown").str("reason"), Some("ctrl_alt_del"));
    assert!(
        a.event("verify.failed").is_none()
            && a.event("task.failed").is_none()
            && a.event("panic").is_none(),
        "{}",
        a.explain()
    );

    // The second boot, the verity partition's unused first block altered.
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img)
        .unwrap();
    let (verity, _) = partition_range(&mut f, part_type::ROOT_VERITY_X86_64);
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(verity + 600)).unwrap();
    f.read_exact(&mut b).unwrap();
    f.seek(SeekFrom::Start(verity + 600)).unwrap();
    f.write_all(&[b[0] ^ 0x01]).unwrap();
    f.sync_all().unwrap();
    drop(f);
    let extra = format!("phase.poweroff=init.ready {NO_TIMER_CHECK}");
    choose(&img, &[("default", "local"), ("phase_extra", &extra)]);
    let b2 = Vm::disk_boot(&img).run().unwrap();
    b2.assert_clean_poweroff();
    b2.assert_order(&["rootfs.mounted", "stage2.start", "init.ready"]);
    let r = b2.expect("init.ready");
    assert_eq!(
        (r.fields["stage"].as_u64(), r.str("mode")),
        (Some(2), Some("local")),
        "{}",
        r.fields
    );
    assert!(b2.event("state.grown").is_none(), "{}", b2.explain());
    let st = b2.expect("state.ready");
    assert_eq!(st.fields["persistent"], true, "{}", st.fields);
    let v = b2
        .all("verify.failed")
        .into_iter()
        .find(|e| e.str("reason") == Some("artifact_hash"))
        .unwrap_or_else(|| panic!("the altered hash device is refused:\n{}", b2.explain()));
    assert!(
        v.str("artifact").is_some_and(|a| a.starts_with("/dev/vda")),
        "{}",
        v.fields
    );
    assert!(
        b2.all("fallback")
            .iter()
            .any(|f| f.str("step") == Some("serve") && f.str("reason") == Some("artifact_hash")),
        "{}",
        b2.explain()
    );
    assert!(b2.event("provider.announced").is_none(), "{}", b2.explain());
    // Read back by third parties: the backup GPT at the new end, a clean ext4 of the new size.
    let (ok, out) = tool("sfdisk", &["--verify", img.to_str().unwrap()]);
    assert!(
        ok && out.contains("No errors detected"),
        "sfdisk --verify: {out}"
    );
    assert_eq!(state_extent(&img), (start, before + EXTRA));
    let part = lan.dir().join("state.ext4");
    let (ok, out) = tool(
        "dd",
        &[
            &format!("if={}", img.display()),
            &format!("of={}", part.display()),
            "bs=1M",
            &format!("skip={}", start / MIB),
            &format!("count={}", (before + EXTRA) / MIB),
        ],
    );
    assert!(ok, "{out}");
    let (ok, out) = tool("e2fsck", &["-fn", part.to_str().unwrap()]);
    assert!(ok, "e2fsck after two boots: {out}");
}
