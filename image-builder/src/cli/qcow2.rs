//! `phase-image qcow2`: a raw disk image converted to qcow2 with qemu-img.

use super::{build, required, Args, Parsed};
use crate::qcow2;
use anyhow::Result;
use std::path::PathBuf;

const USAGE: &str = "\
Usage: phase-image qcow2 IMAGE -o FILE

Convert a raw disk image (out/phase-x86_64.img) to qcow2 (out/phase-x86_64.qcow2) with
qemu-img.
  IMAGE                  the raw disk image
  -o, --output FILE      the qcow2 file to write";

struct Opts {
    image: PathBuf,
    output: PathBuf,
}

fn parse(args: Args) -> Result<Parsed<Opts>, lexopt::Error> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let (mut image, mut output) = (None, None);
    while let Some(arg) = p.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Parsed::Help),
            Short('o') | Long("output") => output = Some(PathBuf::from(p.value()?)),
            Value(v) if image.is_none() => image = Some(PathBuf::from(v)),
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(Parsed::Run(Opts {
        image: required(image, "IMAGE")?,
        output: required(output, "--output")?,
    }))
}

pub fn run(args: Args) -> i32 {
    build("qcow2", USAGE, parse(args), make)
}

fn make(o: Opts) -> Result<()> {
    let n = qcow2::convert(&o.image, &o.output)?;
    println!(
        "{}: {n} bytes (qcow2 of {})",
        o.output.display(),
        o.image.display()
    );
    Ok(())
}
