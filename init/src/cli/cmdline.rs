//! `phase cmdline [FILE]`: parse a kernel command line as the init does and print the
//! resulting configuration and its warnings.

use super::{parsed, Args, Parsed};
use crate::config;
use std::path::PathBuf;

pub const USAGE: &str = "\
Usage: phase cmdline [FILE]

Parse a kernel command line (FILE, default /proc/cmdline; - for stdin) exactly as the init
does, and print the resulting configuration; each warning (unknown phase.* key, bad value)
goes to stderr. The keys are documented in docs/cmdline.md (`phase keys`).";

fn parse(args: Args) -> Result<Parsed<Option<PathBuf>>, lexopt::Error> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let mut file = None;
    while let Some(arg) = p.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Parsed::Help),
            Value(v) if file.is_none() => file = Some(PathBuf::from(v)),
            // `-` is stdin, not an option.
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(Parsed::Run(file))
}

pub fn run(args: Args) -> i32 {
    parsed("cmdline", USAGE, parse(args), |file| show(file.as_deref()))
}

fn show(path: Option<&std::path::Path>) -> i32 {
    use std::io::Read;
    let path = path.unwrap_or(std::path::Path::new("/proc/cmdline"));
    let mut raw = Vec::new();
    let read = if path == std::path::Path::new("-") {
        std::io::stdin().read_to_end(&mut raw).map(|_| ())
    } else {
        std::fs::read(path).map(|b| raw = b)
    };
    if let Err(e) = read {
        eprintln!("phase cmdline: read {}: {e}", path.display());
        return 1;
    }
    let (cfg, warnings) = config::parse(&raw);
    println!("{cfg:#?}");
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    0
}
