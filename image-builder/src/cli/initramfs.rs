//! `phase-image initramfs`: the initramfs (/init, kernel modules with their dependencies,
//! extra files), deterministic.

use super::{build, required, source_date_epoch, Args, Parsed};
use crate::initramfs;
use anyhow::{bail, Context, Result};
use std::path::PathBuf;

const USAGE: &str = "\
Usage: phase-image initramfs --init FILE --modules-dir DIR --modules-list FILE -o FILE [OPTIONS]

Build the initramfs: /init, the listed kernel modules with their dependencies, extra files.
Deterministic: entries sorted, owner root, every mtime SOURCE_DATE_EPOCH (or 0).
  --init FILE            the static `phase` binary to install as /init
  --modules-dir DIR      an unpacked /lib/modules/<release> directory of the target kernel
  --modules-list FILE    the modules to load at boot, one per line (initramfs/modules.txt)
  --file DEST=SRC        an extra file (DEST is the path inside the initramfs; repeatable)
  --release-floor N      lowest release version this initramfs will accept (written to
                         /etc/phase/release-floor; default 0)
  --strict               fail if a listed module is neither in the kernel tree nor built in
  --compress HOW         lz4 (default: the legacy frame the kernel reads, `lz4 -l -9`, the
                         fastest to unpack within 4 MiB), gzip or none
  -o, --output FILE      the initramfs to write";

struct Opts {
    init: PathBuf,
    modules_dir: PathBuf,
    modules_list: PathBuf,
    files: Vec<(String, PathBuf)>,
    release_floor: u64,
    strict: bool,
    compression: initramfs::Compression,
    output: PathBuf,
}

fn parse(args: Args) -> Result<Parsed<Opts>, lexopt::Error> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let (mut init, mut modules_dir, mut modules_list, mut output) = (None, None, None, None);
    let (mut files, mut release_floor, mut strict) = (Vec::new(), 0, false);
    let mut compression = initramfs::Compression::Lz4;
    while let Some(arg) = p.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Parsed::Help),
            Long("init") => init = Some(PathBuf::from(p.value()?)),
            Long("modules-dir") => modules_dir = Some(PathBuf::from(p.value()?)),
            Long("modules-list") => modules_list = Some(PathBuf::from(p.value()?)),
            Long("file") => {
                let f = p.value()?.string()?;
                let (dest, src) = f
                    .split_once('=')
                    .ok_or_else(|| format!("--file {f:?}: expected DEST=SRC"))?;
                files.push((dest.to_string(), PathBuf::from(src)));
            }
            Long("release-floor") => release_floor = p.value()?.parse()?,
            Long("strict") => strict = true,
            Long("compress") => {
                let v = p.value()?.string()?;
                compression = initramfs::Compression::parse(&v)
                    .ok_or_else(|| format!("--compress {v:?}: expected lz4, gzip or none"))?;
            }
            Short('o') | Long("output") => output = Some(PathBuf::from(p.value()?)),
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(Parsed::Run(Opts {
        init: required(init, "--init")?,
        modules_dir: required(modules_dir, "--modules-dir")?,
        modules_list: required(modules_list, "--modules-list")?,
        files,
        release_floor,
        strict,
        compression,
        output: required(output, "--output")?,
    }))
}

pub fn run(args: Args) -> i32 {
    build("initramfs", USAGE, parse(args), make)
}

fn make(o: Opts) -> Result<()> {
    let list = std::fs::read_to_string(&o.modules_list)
        .with_context(|| format!("reading {}", o.modules_list.display()))?;
    let inputs = initramfs::Inputs {
        init: o.init,
        modules_dir: o.modules_dir,
        wanted: initramfs::parse_module_list(&list),
        files: o.files,
        release_floor: o.release_floor,
        mtime: source_date_epoch()?,
        compression: o.compression,
    };
    let r = initramfs::write(&inputs, &o.output)?;
    for m in &r.missing {
        eprintln!("phase-image: warning: module {m} is neither in the kernel tree nor built in");
    }
    if o.strict && !r.missing.is_empty() {
        bail!("missing modules: {}", r.missing.join(", "));
    }
    let size = std::fs::metadata(&o.output)?.len();
    println!(
        "{}: {} entries, {} modules ({} built in), cpio {} bytes, compressed {} bytes",
        o.output.display(),
        r.entries,
        r.modules,
        r.builtin.len(),
        r.cpio_bytes,
        size
    );
    Ok(())
}
