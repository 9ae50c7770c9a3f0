//! `phase-image root`: a signed root document (version 1), or the next one (rotation).

use super::{base_time, build, required, Args, Parsed};
use crate::release;
use anyhow::Result;
use std::path::PathBuf;

const USAGE: &str = "\
Usage: phase-image root --root-key PUB... --release-key PUB... --sign KEY... -o FILE [OPTIONS]

Create a signed root document (version 1), or rotate: --previous gives the next version. A
rotation must be signed by a threshold of the previous root's root keys and of the new root
keys; the new root is verified before it is written.
  --root-key PUB         public key (.pub) allowed to sign roots (repeatable; at least one)
  --root-threshold N     root signatures needed (default 1)
  --release-key PUB      public key (.pub) allowed to sign releases (repeatable; at least one)
  --release-threshold N  release signatures needed (default 1)
  --expires-in-days N    expiry, days after SOURCE_DATE_EPOCH (or now if unset; default 365)
  --previous FILE        the current root, when rotating
  --sign KEY             private key (.key) to sign with (repeatable; at least one)
  -o, --output FILE      the root document to write";

struct Opts {
    root_keys: Vec<PathBuf>,
    root_threshold: u64,
    release_keys: Vec<PathBuf>,
    release_threshold: u64,
    expires_in_days: u64,
    previous: Option<PathBuf>,
    sign: Vec<PathBuf>,
    output: PathBuf,
}

fn parse(args: Args) -> Result<Parsed<Opts>, lexopt::Error> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let (mut root_keys, mut release_keys, mut sign) = (Vec::new(), Vec::new(), Vec::new());
    let (mut root_threshold, mut release_threshold, mut expires_in_days) = (1, 1, 365);
    let (mut previous, mut output) = (None, None);
    while let Some(arg) = p.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Parsed::Help),
            Long("root-key") => root_keys.push(PathBuf::from(p.value()?)),
            Long("root-threshold") => root_threshold = p.value()?.parse()?,
            Long("release-key") => release_keys.push(PathBuf::from(p.value()?)),
            Long("release-threshold") => release_threshold = p.value()?.parse()?,
            Long("expires-in-days") => expires_in_days = p.value()?.parse()?,
            Long("previous") => previous = Some(PathBuf::from(p.value()?)),
            Long("sign") => sign.push(PathBuf::from(p.value()?)),
            Short('o') | Long("output") => output = Some(PathBuf::from(p.value()?)),
            _ => return Err(arg.unexpected()),
        }
    }
    let some = |v: Vec<PathBuf>, name| required(Some(v).filter(|v| !v.is_empty()), name);
    Ok(Parsed::Run(Opts {
        root_keys: some(root_keys, "--root-key")?,
        root_threshold,
        release_keys: some(release_keys, "--release-key")?,
        release_threshold,
        expires_in_days,
        previous,
        sign: some(sign, "--sign")?,
        output: required(output, "--output")?,
    }))
}

pub fn run(args: Args) -> i32 {
    build("root", USAGE, parse(args), make)
}

fn make(o: Opts) -> Result<()> {
    let args = release::RootArgs {
        root_keys: o.root_keys,
        root_threshold: o.root_threshold,
        release_keys: o.release_keys,
        release_threshold: o.release_threshold,
        expires: base_time()? + o.expires_in_days * 86_400,
        previous: o.previous,
        sign: o.sign,
        output: o.output,
    };
    let v = release::root(&args)?;
    println!("{}: root version {v}", args.output.display());
    Ok(())
}
