//! `phase-image release`: a signed release directory any static HTTP server can serve.

use super::{base_time, build, required, Args, Parsed};
use crate::release;
use anyhow::Result;
use std::path::PathBuf;

const USAGE: &str = "\
Usage: phase-image release --root FILE --version N --kernel FILE --initramfs FILE --out-dir DIR [OPTIONS]

Write a signed release into DIR: copies and hashes the artifacts, writes release.json signed
with each --sign key, root.json and N.root.json for each root given (for clients walking
the chain).
  --root FILE            the root the release keys come from
  --root-history FILE    an earlier root, so clients that trust it can walk the chain
                         (repeatable)
  --version N            release version (monotonic)
  --channel NAME         default stable
  --arch ARCH            default x86_64
  --cmdline WORDS        kernel command line the release boots with (default empty)
  --expires-in-days N    expiry, days after SOURCE_DATE_EPOCH (or now if unset; default 90)
  --kernel FILE          the kernel
  --initramfs FILE       the initramfs
  --rootfs FILE          the root filesystem image (e.g. out/rootfs.squashfs)
  --rootfs-verity FILE   the rootfs's dm-verity metadata (e.g. out/rootfs.verity.json): the
                         rootfs artifact then carries its root hash, and the hash device
                         (named in it, beside it) is checked against the rootfs and copied
                         into DIR; needs --rootfs
  --sign KEY             private key (.key) to sign with (repeatable; or add more later with
                         `phase-image sign`)
  --out-dir DIR          the release directory to write";

struct Opts {
    root: PathBuf,
    root_history: Vec<PathBuf>,
    version: u64,
    channel: String,
    arch: String,
    cmdline: String,
    expires_in_days: u64,
    kernel: PathBuf,
    initramfs: PathBuf,
    rootfs: Option<PathBuf>,
    rootfs_verity: Option<PathBuf>,
    sign: Vec<PathBuf>,
    out_dir: PathBuf,
}

fn parse(args: Args) -> Result<Parsed<Opts>, lexopt::Error> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let (mut root, mut root_history, mut version) = (None, Vec::new(), None);
    let (mut channel, mut arch) = ("stable".to_string(), "x86_64".to_string());
    let (mut cmdline, mut expires_in_days) = (String::new(), 90);
    let (mut kernel, mut initramfs, mut rootfs, mut rootfs_verity) = (None, None, None, None);
    let (mut sign, mut out_dir) = (Vec::new(), None);
    while let Some(arg) = p.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Parsed::Help),
            Long("root") => root = Some(PathBuf::from(p.value()?)),
            Long("root-history") => root_history.push(PathBuf::from(p.value()?)),
            Long("version") => version = Some(p.value()?.parse()?),
            Long("channel") => channel = p.value()?.string()?,
            Long("arch") => arch = p.value()?.string()?,
            Long("cmdline") => cmdline = p.value()?.string()?,
            Long("expires-in-days") => expires_in_days = p.value()?.parse()?,
            Long("kernel") => kernel = Some(PathBuf::from(p.value()?)),
            Long("initramfs") => initramfs = Some(PathBuf::from(p.value()?)),
            Long("rootfs") => rootfs = Some(PathBuf::from(p.value()?)),
            Long("rootfs-verity") => rootfs_verity = Some(PathBuf::from(p.value()?)),
            Long("sign") => sign.push(PathBuf::from(p.value()?)),
            Long("out-dir") => out_dir = Some(PathBuf::from(p.value()?)),
            _ => return Err(arg.unexpected()),
        }
    }
    if rootfs_verity.is_some() && rootfs.is_none() {
        return Err("--rootfs-verity needs --rootfs".into());
    }
    Ok(Parsed::Run(Opts {
        root: required(root, "--root")?,
        root_history,
        version: required(version, "--version")?,
        channel,
        arch,
        cmdline,
        expires_in_days,
        kernel: required(kernel, "--kernel")?,
        initramfs: required(initramfs, "--initramfs")?,
        rootfs,
        rootfs_verity,
        sign,
        out_dir: required(out_dir, "--out-dir")?,
    }))
}

pub fn run(args: Args) -> i32 {
    build("release", USAGE, parse(args), make)
}

fn make(o: Opts) -> Result<()> {
    let lines = release::release(&release::ReleaseArgs {
        root: o.root,
        root_history: o.root_history,
        version: o.version,
        channel: o.channel,
        arch: o.arch,
        cmdline: o.cmdline,
        expires: base_time()? + o.expires_in_days * 86_400,
        kernel: o.kernel,
        initramfs: o.initramfs,
        rootfs: o.rootfs,
        rootfs_verity: o.rootfs_verity,
        sign: o.sign,
        out_dir: o.out_dir.clone(),
    })?;
    println!("{}: release {}", o.out_dir.display(), o.version);
    for l in lines {
        println!("  {l}");
    }
    Ok(())
}
