//! Boot tests of the hybrid image `out/phase-x86_64.img` with no `-kernel`: the firmware
//! (SeaBIOS, OVMF x64, OVMF IA32) loads GRUB from the image, GRUB's menu loads the
//! kernel and initramfs from the ESP, and the init boots the image's verified release.
//! Each test boots its own copy, with the menu choice written into the copy's
//! `boot/grub/grubenv` (entry, no menu wait, and `phase.poweroff=` for the exit status):
//! the same mechanism an operator uses, and it changes nothing else on the image.
//! The default entry boots on all three firmwares; the other entries on SeaBIOS.

use phase_layout::{grubenv, part_type};
use phase_qemu::{artifact, tempdir, Boot, Firmware, Vm};
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

/// Byte range of the ESP, read from the image's own GPT.
fn esp_range(f: &mut std::fs::File) -> (u64, u64) {
    let mut header = vec![0u8; 512];
    f.seek(SeekFrom::Start(512)).unwrap();
    f.read_exact(&mut header).unwrap();
    let (off, len) = phase_layout::gpt::entries_range(&header).unwrap();
    let mut entries = vec![0u8; len as usize];
    f.seek(SeekFrom::Start(off)).unwrap();
    f.read_exact(&mut entries).unwrap();
    let parts = phase_layout::gpt::parse(&header, &entries).unwrap();
    let esp = parts
        .iter()
        .find(|p| p.type_guid == part_type::ESP)
        .expect("the image has an ESP");
    (esp.first_lba * 512, esp.size_bytes())
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

/// A copy of the hybrid image with `entry` chosen, powering off at `until`.
fn image_with(dir: &Path, entry: &str, until: &str) -> PathBuf {
    let img = copy_of(&artifact("phase-x86_64.img"), dir);
    let extra = format!("phase.poweroff={until}");
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
    choose(&img, &[("phase_extra", "phase.poweroff=init.ready")]);
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
    // Private: state in RAM, and the image file is left byte-identical.
    let img = image_with(&dir, "private", "init.ready");
    let before = std::fs::read(&img).unwrap();
    let b = Vm::disk_boot(&img).run().unwrap();
    assert_booted_the_image(&b, "private");
    assert_eq!(b.expect("state.ready").fields["persistent"], false);
    assert!(
        std::fs::read(&img).unwrap() == before,
        "a private boot changed the image"
    );
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
