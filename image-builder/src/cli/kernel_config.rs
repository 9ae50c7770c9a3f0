//! `phase-image kernel-config`: a kernel .config checked against the options Phase Boot
//! requires.

use super::{build, required, Args, Parsed};
use crate::kconfig;
use anyhow::{bail, Context, Result};
use std::path::PathBuf;

const USAGE: &str = "\
Usage: phase-image kernel-config --config FILE --required FILE

Check a kernel .config against the options Phase Boot requires: each unmet one on stderr,
exit 1 if any.
  --config FILE          the kernel's config (e.g. /boot/config-<release>)
  --required FILE        the requirement list (kernel-config/required.txt)";

struct Opts {
    config: PathBuf,
    required: PathBuf,
}

fn parse(args: Args) -> Result<Parsed<Opts>, lexopt::Error> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let (mut config, mut req) = (None, None);
    while let Some(arg) = p.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Parsed::Help),
            Long("config") => config = Some(PathBuf::from(p.value()?)),
            Long("required") => req = Some(PathBuf::from(p.value()?)),
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(Parsed::Run(Opts {
        config: required(config, "--config")?,
        required: required(req, "--required")?,
    }))
}

pub fn run(args: Args) -> i32 {
    build("kernel-config", USAGE, parse(args), check)
}

fn check(o: Opts) -> Result<()> {
    let (config, required) = (o.config, o.required);
    let req = kconfig::parse_required(
        &std::fs::read_to_string(&required)
            .with_context(|| format!("reading {}", required.display()))?,
    )
    .map_err(|e| anyhow::anyhow!("{}: {e}", required.display()))?;
    let cfg = kconfig::parse_config(
        &std::fs::read_to_string(&config)
            .with_context(|| format!("reading {}", config.display()))?,
    );
    let unmet = kconfig::check(&req, &cfg);
    for u in &unmet {
        eprintln!("{}: {u}", config.display());
    }
    if unmet.is_empty() {
        println!(
            "{}: all {} required options present",
            config.display(),
            req.len()
        );
        Ok(())
    } else {
        bail!("{} of {} required options unmet", unmet.len(), req.len())
    }
}
