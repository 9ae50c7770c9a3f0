//! `phase-vm`: boot `out/vmlinuz` + `out/initramfs.img` interactively on this terminal,
//! with the same QEMU command line the tests use. Quit QEMU with Ctrl-A then X.
//!
//! Usage: phase-vm [--uefi] [--no-disk] [KERNEL-ARGS...]
//! `out/rootfs-disk.img` is attached when it exists (its state partition keeps what the
//! system writes between runs, except in phase.mode=private).

use phase_qemu::{accel, Firmware, Vm};
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!(
            "phase-vm [--uefi] [--no-disk] [KERNEL-ARGS...]\n\nBoots out/vmlinuz + out/initramfs.img in QEMU on this \
             terminal (serial console), with out/rootfs-disk.img attached unless --no-disk. Extra words \
             go on the kernel command line, e.g. phase.mode=private. Quit with Ctrl-A X, or let \
             phase.poweroff=EVENT end it."
        );
        return ExitCode::SUCCESS;
    }
    let uefi = args.iter().any(|a| a == "--uefi");
    let no_disk = args.iter().any(|a| a == "--no-disk");
    args.retain(|a| a != "--uefi" && a != "--no-disk");
    let mut vm = Vm::default_artifacts().append(&args.join(" "));
    let disk = phase_qemu::out_dir().join("rootfs-disk.img");
    if !no_disk && disk.exists() {
        vm = vm.disk(&disk);
    }
    if uefi {
        vm = vm.firmware(Firmware::Uefi);
    }
    let accel = accel();
    let mut cmd = vm.command(accel);
    cmd.args(["-serial", "mon:stdio"]);
    eprintln!("phase-vm: {:?} (quit: Ctrl-A X)", accel);
    match cmd.status() {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        Ok(s) => {
            eprintln!("phase-vm: qemu exited with {s}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("phase-vm: cannot start qemu-system-x86_64: {e}");
            ExitCode::FAILURE
        }
    }
}
