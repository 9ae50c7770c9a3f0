//! `phase-image keygen`: an Ed25519 key pair, never overwriting one.

use super::{build, required, Args, Parsed};
use crate::release;
use anyhow::Result;
use std::path::PathBuf;

const USAGE: &str = "\
Usage: phase-image keygen --out-dir DIR --name NAME [--comment TEXT]

Generate an Ed25519 key: DIR/NAME.key (private, mode 0600) and DIR/NAME.pub. Prints the key
ID (SHA-256 of the public key). Never overwrites an existing key. Make real keys on an
offline machine; see docs/keys.md.
  --out-dir DIR          directory for the key files
  --name NAME            base name of the key files
  --comment TEXT         note stored in the private key file (e.g. who holds it)";

struct Opts {
    out_dir: PathBuf,
    name: String,
    comment: String,
}

fn parse(args: Args) -> Result<Parsed<Opts>, lexopt::Error> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let (mut out_dir, mut name, mut comment) = (None, None, String::new());
    while let Some(arg) = p.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Parsed::Help),
            Long("out-dir") => out_dir = Some(PathBuf::from(p.value()?)),
            Long("name") => name = Some(p.value()?.string()?),
            Long("comment") => comment = p.value()?.string()?,
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(Parsed::Run(Opts {
        out_dir: required(out_dir, "--out-dir")?,
        name: required(name, "--name")?,
        comment,
    }))
}

pub fn run(args: Args) -> i32 {
    build("keygen", USAGE, parse(args), make)
}

fn make(o: Opts) -> Result<()> {
    let (k, p, id) = release::keygen(&o.out_dir, &o.name, &o.comment)?;
    println!(
        "private key {} (mode 0600)\npublic key  {}\nkey id      {id}",
        k.display(),
        p.display()
    );
    Ok(())
}
