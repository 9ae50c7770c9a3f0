//! `phase-image netboot`: the netboot TFTP root (kernel, initramfs, iPXE menu, GRUB UEFI
//! network loader, site files, a dnsmasq example).

use super::{build, required, Args, Parsed};
use crate::netboot;
use anyhow::Result;
use std::path::PathBuf;

const USAGE: &str = "\
Usage: phase-image netboot --kernel FILE --initramfs FILE -o DIR [OPTIONS]

Write the netboot TFTP root. DIR gets vmlinuz, initramfs.img, boot.ipxe (iPXE menu:
Internet, Local, Private, Debug), site.ipxe, grubnetx64.efi (grub-mkimage x86_64-efi with
efinet, tftp, http; reads /grub/grub.cfg from its TFTP server), grub/grub.cfg,
grub/site.cfg, dnsmasq.conf.example and a README on serving it to BIOS and UEFI PXE
clients. Farm settings (provider URL, default entry, timeout) go in the site files.
  --kernel FILE          the kernel (the release's, so a diskless boot mounts its rootfs
                         without kexec)
  --initramfs FILE       the Phase Boot initramfs
  --cmdline WORDS        kernel words every menu entry starts with
                         (default \"console=tty0 console=ttyS0,115200 panic=10\")
  --grub-efi-dir DIR     GRUB's x86_64-efi module directory (grub-efi-amd64-bin; default
                         /usr/lib/grub/x86_64-efi)
  -o, --out-dir DIR      the TFTP root to write (e.g. out/netboot)";

struct Opts {
    inputs: netboot::Inputs,
    out_dir: PathBuf,
}

fn parse(args: Args) -> Result<Parsed<Opts>, lexopt::Error> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let (mut kernel, mut initramfs, mut out_dir) = (None, None, None);
    let mut cmdline = "console=tty0 console=ttyS0,115200 panic=10".to_string();
    let mut grub_efi_dir = PathBuf::from("/usr/lib/grub/x86_64-efi");
    while let Some(arg) = p.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Parsed::Help),
            Long("kernel") => kernel = Some(PathBuf::from(p.value()?)),
            Long("initramfs") => initramfs = Some(PathBuf::from(p.value()?)),
            Long("cmdline") => cmdline = p.value()?.string()?,
            Long("grub-efi-dir") => grub_efi_dir = PathBuf::from(p.value()?),
            Short('o') | Long("out-dir") => out_dir = Some(PathBuf::from(p.value()?)),
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(Parsed::Run(Opts {
        inputs: netboot::Inputs {
            kernel: required(kernel, "--kernel")?,
            initramfs: required(initramfs, "--initramfs")?,
            cmdline,
            grub_efi_dir,
        },
        out_dir: required(out_dir, "--out-dir")?,
    }))
}

pub fn run(args: Args) -> i32 {
    build("netboot", USAGE, parse(args), make)
}

fn make(o: Opts) -> Result<()> {
    let files = netboot::write(&o.inputs, &o.out_dir)?;
    println!("{}: netboot TFTP root", o.out_dir.display());
    for f in files {
        let size = std::fs::metadata(&f).map(|m| m.len()).unwrap_or(0);
        println!("  {} ({size} bytes)", f.display());
    }
    Ok(())
}
