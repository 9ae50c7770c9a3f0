//! `phase discover`: browse the LAN (mDNS, DNS-SD `_phase-boot._tcp`) for providers of a
//! channel and arch, with the init's bounds; one JSON line per candidate.

use super::{parsed, Args, Parsed};
use std::time::Duration;

pub const USAGE: &str = "\
Usage: phase discover [--channel C] [--arch A] [--timeout-ms N] [--settle-ms M]

Browse the LAN (mDNS) for providers of channel C (default stable) and arch A (default this
machine's) for at most N ms (default 3000), and at most M ms after the first answer
(default 400, as the init); print one JSON line per candidate ({url, how, version}) and
per skipped answer ({skipped, reason}). Exit 1 if none (docs/discovery.md).";

struct Opts {
    channel: String,
    arch: String,
    bounds: crate::discover::mdns::Bounds,
}

fn parse(args: Args) -> Result<Parsed<Opts>, lexopt::Error> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let mut o = Opts {
        channel: "stable".into(),
        arch: std::env::consts::ARCH.into(),
        bounds: crate::discover::mdns::Bounds::default(),
    };
    while let Some(arg) = p.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Parsed::Help),
            Long("channel") => o.channel = p.value()?.string()?,
            Long("arch") => o.arch = p.value()?.string()?,
            Long("timeout-ms") => o.bounds.total = Duration::from_millis(p.value()?.parse()?),
            Long("settle-ms") => o.bounds.settle = Duration::from_millis(p.value()?.parse()?),
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(Parsed::Run(o))
}

pub fn run(args: Args) -> i32 {
    parsed("discover", USAGE, parse(args), browse)
}

fn browse(o: Opts) -> i32 {
    let (channel, arch) = (&o.channel, &o.arch);
    match crate::discover::mdns::browse(channel, arch, o.bounds) {
        Ok(b) => {
            for (name, reason) in &b.skipped {
                println!("{}", serde_json::json!({"skipped": name, "reason": reason}));
            }
            for c in &b.found {
                println!(
                    "{}",
                    serde_json::json!({"url": c.url, "how": c.how.name(), "version": c.advertised})
                );
            }
            if b.found.is_empty() {
                eprintln!("phase discover: no provider for {channel}/{arch} on the LAN");
                1
            } else {
                0
            }
        }
        Err(e) => {
            eprintln!("phase discover: {e}");
            1
        }
    }
}
