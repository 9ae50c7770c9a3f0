//! `phase-image verity`: the dm-verity hash tree of a file, as `veritysetup format` would
//! with a salt and UUID derived from the data.

use super::{build, required, Args, Parsed};
use crate::{verity, write_atomic};
use anyhow::{Context, Result};
use std::path::PathBuf;

const USAGE: &str = "\
Usage: phase-image verity DATA -o FILE

Compute the dm-verity hash tree of DATA (a multiple of 4096 bytes), as `veritysetup format`
would with a salt and UUID derived from the data. Writes the hash device to FILE and the
release format's `verity` object to FILE.json; prints the root hash.
  DATA                   the data (e.g. a padded squashfs)
  -o, --output FILE      the hash device to write";

struct Opts {
    data: PathBuf,
    output: PathBuf,
}

fn parse(args: Args) -> Result<Parsed<Opts>, lexopt::Error> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let (mut data, mut output) = (None, None);
    while let Some(arg) = p.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Parsed::Help),
            Short('o') | Long("output") => output = Some(PathBuf::from(p.value()?)),
            Value(v) if data.is_none() => data = Some(PathBuf::from(v)),
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(Parsed::Run(Opts {
        data: required(data, "DATA")?,
        output: required(output, "--output")?,
    }))
}

pub fn run(args: Args) -> i32 {
    build("verity", USAGE, parse(args), make)
}

fn make(o: Opts) -> Result<()> {
    let (data, output) = (o.data, o.output);
    let bytes = std::fs::read(&data).with_context(|| format!("reading {}", data.display()))?;
    let tree = verity::compute(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", data.display()))?;
    let name = output
        .file_name()
        .context("output has no file name")?
        .to_string_lossy()
        .into_owned();
    let mut json = serde_json::to_vec_pretty(&tree.doc(&name))?;
    json.push(b'\n');
    let json_path = output.with_file_name(format!("{name}.json"));
    write_atomic(&output, &tree.hash_device)?;
    write_atomic(&json_path, &json)?;
    println!(
        "{}: {} bytes, {} data blocks\n{}\nroot hash {}",
        output.display(),
        tree.hash_device.len(),
        tree.data_blocks,
        json_path.display(),
        phase_release::hex::encode(&tree.root_hash)
    );
    Ok(())
}
