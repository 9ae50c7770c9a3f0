//! `phase-image rootfs`: the root filesystem, a zstd squashfs with its dm-verity hash tree.

use super::{build, required, source_date_epoch, Args, Parsed};
use crate::{initramfs, squashfs};
use anyhow::{Context, Result};
use std::path::PathBuf;

const USAGE: &str = "\
Usage: phase-image rootfs --init FILE --modules-dir DIR --initramfs-modules FILE --version V -o FILE [OPTIONS]

Build the root filesystem: a zstd squashfs with a dm-verity hash tree. It holds every file
under --tree, /etc/os-release, the init at /usr/lib/phase/phase, the kernel modules the
initramfs does not carry (with modules.dep and modules.builtin) and the mount points.
Writes OUTPUT (padded to 4096 bytes), the hash device beside it (OUTPUT's stem + .verity)
and its metadata (stem + .verity.json, the release format's `verity` object).
Deterministic: owner root, every mtime SOURCE_DATE_EPOCH (or 0).
  --init FILE                the static `phase` binary, installed as /usr/lib/phase/phase
  --modules-dir DIR          an unpacked /lib/modules/<release> directory of the target kernel
  --initramfs-modules FILE   the initramfs module list (initramfs/modules.txt): those modules
                             and their dependencies stay out of the rootfs
  --tree DIR                 copied into the image as it is (files 0644, or 0755 if
                             executable; default rootfs)
  --version V                version for /etc/os-release (VERSION_ID)
  --progress-every N         print progress every N files (default 500)
  -o, --output FILE          the image to write (e.g. out/rootfs.squashfs)";

struct Opts {
    init: PathBuf,
    modules_dir: PathBuf,
    tree: PathBuf,
    version: String,
    initramfs_modules: PathBuf,
    progress_every: usize,
    output: PathBuf,
}

fn parse(args: Args) -> Result<Parsed<Opts>, lexopt::Error> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let (mut init, mut modules_dir, mut initramfs_modules) = (None, None, None);
    let (mut tree, mut version, mut output) = (PathBuf::from("rootfs"), None, None);
    let mut progress_every = 500;
    while let Some(arg) = p.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Parsed::Help),
            Long("init") => init = Some(PathBuf::from(p.value()?)),
            Long("modules-dir") => modules_dir = Some(PathBuf::from(p.value()?)),
            Long("initramfs-modules") => initramfs_modules = Some(PathBuf::from(p.value()?)),
            Long("tree") => tree = PathBuf::from(p.value()?),
            Long("version") => version = Some(p.value()?.string()?),
            Long("progress-every") => progress_every = p.value()?.parse()?,
            Short('o') | Long("output") => output = Some(PathBuf::from(p.value()?)),
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(Parsed::Run(Opts {
        init: required(init, "--init")?,
        modules_dir: required(modules_dir, "--modules-dir")?,
        tree,
        version: required(version, "--version")?,
        initramfs_modules: required(initramfs_modules, "--initramfs-modules")?,
        progress_every,
        output: required(output, "--output")?,
    }))
}

pub fn run(args: Args) -> i32 {
    build("rootfs", USAGE, parse(args), make)
}

fn make(o: Opts) -> Result<()> {
    let start = std::time::Instant::now();
    let list = std::fs::read_to_string(&o.initramfs_modules)
        .with_context(|| format!("reading {}", o.initramfs_modules.display()))?;
    let inputs = squashfs::Inputs {
        init: o.init,
        modules_dir: o.modules_dir,
        initramfs_modules: initramfs::parse_module_list(&list),
        tree: o.tree,
        version: o.version,
        mtime: source_date_epoch()?,
    };
    let w = squashfs::write(&inputs, &o.output, o.progress_every)?;
    for m in &w.report.deps_missing {
        eprintln!("phase-image: warning: module dependency {m} is in neither image");
    }
    println!(
        "{}: {} bytes ({} data blocks), {} entries, {} modules; {} dependencies left to the initramfs",
        o.output.display(),
        w.image_bytes,
        w.verity.data_blocks,
        w.report.entries,
        w.report.modules,
        w.report.deps_in_initramfs.len()
    );
    println!(
        "{}: {} bytes\n{}\nroot hash {}\nbuilt in {:.1} s",
        w.hash.display(),
        w.verity.hash_size,
        w.json.display(),
        w.verity.root_hash,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
