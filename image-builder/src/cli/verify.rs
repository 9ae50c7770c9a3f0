//! `phase-image verify`: a release directory checked against a trusted root, as the init
//! checks it.

use super::{failed, now, required, Args, Parsed, PROGRAM};
use crate::release;
use std::path::PathBuf;

const USAGE: &str = "\
Usage: phase-image verify --root FILE DIR [OPTIONS]

Verify a release directory (release.json, N.root.json, artifacts) against a trusted root:
exit 0, or 1 with one line `verify failed: <reason>: <detail>`.
  --root FILE            the trusted root (e.g. out/trusted-root.json)
  --arch ARCH            default x86_64
  --channel NAME         default stable
  --now SECONDS          time to check expiry against, unix seconds (default: now)
  --floor N              lowest acceptable release version (default 0)";

struct Opts {
    root: PathBuf,
    dir: PathBuf,
    arch: String,
    channel: String,
    now: Option<u64>,
    floor: u64,
}

fn parse(args: Args) -> Result<Parsed<Opts>, lexopt::Error> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let (mut root, mut dir, mut now, mut floor) = (None, None, None, 0);
    let (mut arch, mut channel) = ("x86_64".to_string(), "stable".to_string());
    while let Some(arg) = p.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Parsed::Help),
            Long("root") => root = Some(PathBuf::from(p.value()?)),
            Long("arch") => arch = p.value()?.string()?,
            Long("channel") => channel = p.value()?.string()?,
            Long("now") => now = Some(p.value()?.parse()?),
            Long("floor") => floor = p.value()?.parse()?,
            Value(v) if dir.is_none() => dir = Some(PathBuf::from(v)),
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(Parsed::Run(Opts {
        root: required(root, "--root")?,
        dir: required(dir, "DIR")?,
        arch,
        channel,
        now,
        floor,
    }))
}

pub fn run(args: Args) -> i32 {
    PROGRAM.parsed("verify", USAGE, parse(args), verify)
}

fn verify(o: Opts) -> i32 {
    let now = match o.now.map_or_else(now, Ok) {
        Ok(n) => n,
        Err(e) => return failed(e),
    };
    match release::verify_dir(&release::VerifyArgs {
        root: o.root,
        dir: o.dir,
        arch: o.arch,
        channel: o.channel,
        now,
        floor: o.floor,
    }) {
        Ok(msg) => {
            println!("{msg}");
            0
        }
        Err(r) => {
            eprintln!("verify failed: {}: {}", r.reason, r.message);
            1
        }
    }
}
