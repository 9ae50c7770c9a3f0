//! `phase-image sign`: one more signature on a root or release file, in place.

use super::{build, required, Args, Parsed};
use crate::release;
use anyhow::Result;
use std::path::PathBuf;

const USAGE: &str = "\
Usage: phase-image sign --key KEY FILE

Add a signature to a root or release file in place (thresholds held by several people).
  --key KEY              the private key (.key) to sign with
  FILE                   the root or release.json to sign";

struct Opts {
    key: PathBuf,
    file: PathBuf,
}

fn parse(args: Args) -> Result<Parsed<Opts>, lexopt::Error> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let (mut key, mut file) = (None, None);
    while let Some(arg) = p.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Parsed::Help),
            Long("key") => key = Some(PathBuf::from(p.value()?)),
            Value(v) if file.is_none() => file = Some(PathBuf::from(v)),
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(Parsed::Run(Opts {
        key: required(key, "--key")?,
        file: required(file, "FILE")?,
    }))
}

pub fn run(args: Args) -> i32 {
    build("sign", USAGE, parse(args), make)
}

fn make(o: Opts) -> Result<()> {
    let id = release::sign(&o.key, &o.file)?;
    println!("{}: signed by {id}", o.file.display());
    Ok(())
}
