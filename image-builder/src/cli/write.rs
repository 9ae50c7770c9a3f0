//! `phase-image write`: an image written to a whole disk (a USB stick), then read back and
//! compared, after refusing every disk it must not touch.

use super::{failed, required, Args, Parsed, PROGRAM};
use crate::write;
use std::path::PathBuf;

const USAGE: &str = "\
Usage: phase-image write IMAGE DEVICE [--yes]

Write an image to a whole disk (a USB stick), then read it back and compare SHA-256.
Refuses (exit 1, `write refused: <reason>: <detail>`) a path that is not a block device, a
partition, a disk holding the running system, a disk any of whose partitions is mounted,
swap or held by device-mapper, and a disk smaller than the image. Shows the model, size and
partitions it will overwrite and asks you to type `yes` (or pass --yes). Needs write access
to DEVICE (usually root).
  IMAGE                  the image (e.g. out/phase-x86_64.img)
  DEVICE                 the whole disk, e.g. /dev/sdb
  --yes                  do not ask";

struct Opts {
    image: PathBuf,
    device: PathBuf,
    yes: bool,
}

fn parse(args: Args) -> Result<Parsed<Opts>, lexopt::Error> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let (mut image, mut device, mut yes) = (None, None, false);
    while let Some(arg) = p.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Parsed::Help),
            Long("yes") => yes = true,
            Value(v) if image.is_none() => image = Some(PathBuf::from(v)),
            Value(v) if device.is_none() => device = Some(PathBuf::from(v)),
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(Parsed::Run(Opts {
        image: required(image, "IMAGE")?,
        device: required(device, "DEVICE")?,
        yes,
    }))
}

pub fn run(args: Args) -> i32 {
    PROGRAM.parsed("write", USAGE, parse(args), |o| {
        match write::run(&o.image, &o.device, o.yes) {
            Ok(()) => 0,
            Err(e) => match e.downcast_ref::<write::Refusal>() {
                Some(r) => {
                    eprintln!("write refused: {}: {r}", r.reason());
                    1
                }
                None => failed(e),
            },
        }
    })
}
