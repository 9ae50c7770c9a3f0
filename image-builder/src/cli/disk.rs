//! `phase-image disk`: the GPT disk image (release metadata, rootfs, hash device, empty
//! state), bootable on BIOS and UEFI with `--bootable`.

use super::{build, required, source_date_epoch, Args, Parsed};
use crate::{disk, grub};
use anyhow::Result;
use std::path::PathBuf;

const USAGE: &str = "\
Usage: phase-image disk --release-dir DIR --rootfs FILE --verity FILE -o FILE [OPTIONS]

Build the GPT disk image: partitions phase-meta (release.json and the root chain),
phase-root (the rootfs), phase-verity (its hash device) and phase-state (empty ext4), 1 MiB
aligned; see docs/disk-layout.md. The hash device is checked against the rootfs first; the
root and verity partitions' GUIDs are the halves of the root hash. Needs mkfs.ext4
(e2fsprogs), runs rootless. Deterministic: every GUID derived from the inputs, ext4 times
SOURCE_DATE_EPOCH.
  --release-dir DIR      release directory; its release.json goes into phase-meta
  --rootfs FILE          the rootfs image (out/rootfs.squashfs)
  --verity FILE          its dm-verity hash device (out/rootfs.verity)
  --state-size-mib N     size of the phase-state partition, MiB (default 64)
  --bootable             make the disk boot by itself on BIOS, UEFI x64 and UEFI IA32: GRUB
                         boot code in the MBR, a BIOS boot partition and a FAT32 ESP first,
                         holding the loaders, the menu (Internet, Local, Private, Debug), the
                         release's kernel and initramfs (checked against release.json) and
                         the trusted root. Needs grub-mkimage and GRUB's i386-pc, x86_64-efi
                         and i386-efi modules (scripts/setup.sh); needs --trusted-root
  --trusted-root FILE    the trusted root to copy onto the ESP (with --bootable)
  --grub-dir DIR         GRUB's module directories (default /usr/lib/grub)
  -o, --output FILE      the disk image to write";

struct Opts {
    release_dir: PathBuf,
    rootfs: PathBuf,
    verity: PathBuf,
    state_size_mib: u64,
    boot: Option<disk::BootInputs>,
    output: PathBuf,
}

fn parse(args: Args) -> Result<Parsed<Opts>, lexopt::Error> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let (mut release_dir, mut rootfs, mut verity, mut output) = (None, None, None, None);
    let (mut state_size_mib, mut bootable, mut trusted_root) = (64, false, None);
    let mut grub_dir = PathBuf::from(grub::DEFAULT_DIR);
    while let Some(arg) = p.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Parsed::Help),
            Long("release-dir") => release_dir = Some(PathBuf::from(p.value()?)),
            Long("rootfs") => rootfs = Some(PathBuf::from(p.value()?)),
            Long("verity") => verity = Some(PathBuf::from(p.value()?)),
            Long("state-size-mib") => state_size_mib = p.value()?.parse()?,
            Long("bootable") => bootable = true,
            Long("trusted-root") => trusted_root = Some(PathBuf::from(p.value()?)),
            Long("grub-dir") => grub_dir = PathBuf::from(p.value()?),
            Short('o') | Long("output") => output = Some(PathBuf::from(p.value()?)),
            _ => return Err(arg.unexpected()),
        }
    }
    let boot = match (bootable, trusted_root) {
        (true, Some(trusted_root)) => Some(disk::BootInputs {
            trusted_root,
            grub_dir,
        }),
        (true, None) => return Err("--bootable needs --trusted-root".into()),
        (false, _) => None,
    };
    Ok(Parsed::Run(Opts {
        release_dir: required(release_dir, "--release-dir")?,
        rootfs: required(rootfs, "--rootfs")?,
        verity: required(verity, "--verity")?,
        state_size_mib,
        boot,
        output: required(output, "--output")?,
    }))
}

pub fn run(args: Args) -> i32 {
    build("disk", USAGE, parse(args), make)
}

fn make(o: Opts) -> Result<()> {
    let inputs = disk::Inputs {
        release_dir: o.release_dir,
        rootfs: o.rootfs,
        verity: o.verity,
        state_size_mib: o.state_size_mib,
        mtime: source_date_epoch()?,
        boot: o.boot,
    };
    let w = disk::write(&inputs, &o.output)?;
    println!(
        "{}: {} bytes, disk GUID {}",
        o.output.display(),
        w.layout.sectors * phase_layout::SECTOR,
        w.disk_guid
    );
    for (p, (first, last)) in w.parts.iter().zip(&w.layout.parts) {
        println!(
            "  {:<12} LBA {first:>8}..{last:<8} {:>6} MiB  type {}  guid {}",
            p.name,
            ((last + 1 - first) * phase_layout::SECTOR) >> 20,
            p.type_guid,
            p.guid
        );
    }
    println!("root hash {}", phase_release::hex::encode(&w.root_hash));
    Ok(())
}
