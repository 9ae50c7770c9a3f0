//! Netboot from `out/netboot/`: a guest with no disk and no `-kernel` PXE-boots through
//! QEMU's user networking (`restrict=on`, its built-in DHCP and TFTP), under SeaBIOS (QEMU's
//! iPXE ROM runs `boot.ipxe`) and OVMF (its PXE client loads `grubnetx64.efi`, which reads
//! `grub/grub.cfg`), and boots the release of a provider on 127.0.0.1 to stage 2.
//!
//! Each test copies the TFTP root and writes the site files an operator would: the provider
//! URL, the menu entry, a short timeout. The generated menus themselves are used unchanged.

use phase_qemu::{artifact, provider, tempdir, Boot, Firmware, Vm};
use std::path::{Path, PathBuf};

/// The kernel words a test adds to the chosen entry: the provider behind guestfwd, and
/// power off once stage 2 is ready.
const ARGS: &str = "phase.provider=http://10.0.2.100:8080/ phase.poweroff=init.ready";

/// A copy of out/netboot whose site files pick `entry` at once and add [`ARGS`].
fn tftp_root(name: &str, entry: &str) -> PathBuf {
    let src = artifact("netboot");
    let dst = tempdir(name);
    copy_tree(&src, &dst);
    std::fs::write(
        dst.join("site.ipxe"),
        format!("#!ipxe\nset phase_args {ARGS}\nset phase_default {entry}\nset phase_timeout 1\n"),
    )
    .unwrap();
    std::fs::write(
        dst.join("grub/site.cfg"),
        format!("set phase_args=\"{ARGS}\"\nset default={entry}\nset timeout=0\n"),
    )
    .unwrap();
    dst
}

fn copy_tree(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), &to).unwrap();
        }
    }
}

fn net_boot(name: &str, firmware: Firmware, bootfile: &str, entry: &str) -> Boot {
    let root = tftp_root(name, entry);
    let (_provider, port) = provider::serve(&artifact("release")).unwrap();
    let b = Vm::net_boot(&root, bootfile)
        .firmware(firmware)
        .user_net_to(port)
        .run()
        .unwrap();
    let _ = std::fs::remove_dir_all(&root);
    b
}

/// Diskless: the release came from the provider, was verified, and its rootfs mounted.
fn assert_netbooted(b: &Boot, mode: &str) {
    b.assert_clean_poweroff();
    // Not init.start: under OVMF it shares a console line with GRUB's "Booting" text.
    b.assert_order(&[
        "net.up",
        "provider.found",
        "release.verified",
        "artifacts.verified",
        "rootfs.verified",
        "rootfs.mounted",
        "stage2.start",
        "init.ready",
    ]);
    assert_eq!(b.expect("provider.found").str("how"), Some("url"));
    // Every network menu entry passes phase.diskless: no wait for a boot medium.
    let w = b.expect("disk.waited");
    assert_eq!(
        (w.fields["bound_ms"].as_u64(), w.str("ended")),
        (Some(0), Some("bound")),
        "{}",
        w.fields
    );
    let ready = b.expect("init.ready");
    assert_eq!(ready.fields["stage"], 2, "{}", b.explain());
    assert_eq!(ready.str("mode"), Some(mode), "{}", b.explain());
}

#[test]
fn bios_ipxe_netboots_the_default_entry_to_stage2() {
    let b = net_boot("netboot-bios", Firmware::Bios, "boot.ipxe", "internet");
    assert_netbooted(&b, "internet");
}

#[test]
fn uefi_grub_netboots_the_local_entry_to_stage2() {
    let b = net_boot("netboot-uefi", Firmware::Uefi, "grubnetx64.efi", "local");
    assert_netbooted(&b, "local");
}
