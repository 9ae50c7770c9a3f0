//! `phase fetch`: the stage-1 release client, run on a host. Same code, same events.

use super::release::{choose, download, MetaOutcome};
use super::{Limits, Url};
use crate::cli::Parsed;
use crate::events::{Event, EventLog};
use std::path::PathBuf;
use std::time::Duration;

pub const USAGE: &str = "\
Usage: phase fetch --root ROOT.json --provider URL [--provider URL...] --out DIR [OPTIONS]

Choose the newest release the providers serve that verifies against ROOT (signatures,
threshold, expiry, arch, channel, floor), and download its artifacts into DIR, each checked
while it streams: against its signed SHA-256, the rootfs by its dm-verity tree on every CPU
(the stage-1 client, on a host). Prints the same PHASE-EVENT lines as the init
(release.verified, artifacts.verified or fallback).
  --channel NAME             release channel (default stable)
  --floor N                  refuse releases older than version N (default 0)
  --idle-secs S              leave a provider silent for S seconds (default 10)
  --min-rate BYTES_PER_S     leave a provider slower than this (default 32768) ...
  --rate-window-secs S       ... over any window of S seconds (default 10)
  --total-secs S             bound on the whole download
  --metadata-secs S          bound on all metadata requests together (stage 1: 60)
A provider left is replaced by the next, which resumes with Range (docs/network.md).";

struct Opts {
    root: PathBuf,
    providers: Vec<Url>,
    out: PathBuf,
    channel: String,
    floor: u64,
    limits: Limits,
    metadata: Option<Duration>,
}

fn parse(args: crate::cli::Args) -> Result<Parsed<Opts>, lexopt::Error> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let (mut root, mut providers, mut out) = (None, Vec::new(), None);
    let (mut channel, mut floor) = ("stable".to_string(), 0u64);
    let mut limits = Limits::default();
    let mut metadata = None;
    while let Some(arg) = p.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Parsed::Help),
            Long("root") => root = Some(PathBuf::from(p.value()?)),
            Long("provider") => providers.push(p.value()?.parse_with(Url::parse)?),
            Long("out") => out = Some(PathBuf::from(p.value()?)),
            Long("channel") => channel = p.value()?.string()?,
            Long("floor") => floor = p.value()?.parse()?,
            Long("idle-secs") => limits.idle = secs(&mut p)?,
            Long("total-secs") => limits.total = secs(&mut p)?,
            Long("metadata-secs") => metadata = Some(secs(&mut p)?),
            Long("rate-window-secs") => {
                limits.rate_window = Some(secs(&mut p)?)
                    .filter(|s| !s.is_zero())
                    .ok_or("--rate-window-secs must be positive")?
            }
            Long("min-rate") => limits.min_rate = p.value()?.parse()?,
            _ => return Err(arg.unexpected()),
        }
    }
    let root = root.ok_or("needs --root ROOT.json")?;
    let out = out.ok_or("needs --out DIR")?;
    if providers.is_empty() {
        return Err("needs at least one --provider URL".into());
    }
    Ok(Parsed::Run(Opts {
        root,
        providers,
        out,
        channel,
        floor,
        limits,
        metadata,
    }))
}

fn secs(p: &mut lexopt::Parser) -> Result<Duration, lexopt::Error> {
    use lexopt::ValueExt;
    Ok(Duration::from_secs(p.value()?.parse()?))
}

pub fn run(args: crate::cli::Args) -> i32 {
    crate::cli::parsed("fetch", USAGE, parse(args), |o| {
        crate::log::init();
        run_with(o)
    })
}

fn run_with(o: Opts) -> i32 {
    let Opts {
        root: root_path,
        providers,
        out,
        channel,
        floor,
        mut limits,
        metadata,
    } = o;
    let root = match std::fs::read(&root_path)
        .map_err(|e| e.to_string())
        .and_then(|b| {
            phase_release::verify::verify_root_self(&b).map_err(|e| format!("{}: {e}", e.reason()))
        }) {
        Ok(v) => v.doc,
        Err(e) => {
            eprintln!("phase fetch: {}: {e}", root_path.display());
            return 1;
        }
    };
    if let Err(e) = std::fs::create_dir_all(&out) {
        eprintln!("phase fetch: {}: {e}", out.display());
        return 1;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let policy = phase_release::verify::Policy {
        arch: std::env::consts::ARCH.into(),
        channel,
        now,
        floor,
        trusted: None,
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("phase fetch: {e}");
            return 1;
        }
    };
    let events = EventLog::new();
    limits.metadata_until = metadata.map(|d| tokio::time::Instant::now() + d);
    rt.block_on(async { fetch(&events, &providers, &root, &policy, &limits, &out).await })
}

/// Choose, announce, download: the events are the same the init emits in stage 1.
pub async fn fetch(
    events: &EventLog,
    providers: &[Url],
    root: &phase_release::doc::Root,
    policy: &phase_release::verify::Policy,
    limits: &Limits,
    out: &std::path::Path,
) -> i32 {
    let mut on_meta = |u: &Url, o: &MetaOutcome| super::report::metadata(events, u, "url", o);
    let mut chain = phase_release::chain::RootChain::anchor(root.clone());
    let Some(choice) = choose(providers, &mut chain, policy, limits, &mut on_meta).await else {
        events.emit(Event::Fallback {
            step: "fetch".into(),
            reason: "no_verified_release".into(),
        });
        return 1;
    };
    events.emit(Event::ReleaseVerified {
        version: choice.release.version,
        channel: choice.release.channel.clone(),
        providers: choice.providers.iter().map(|p| p.to_string()).collect(),
    });
    let mut bar = super::report::Progress::new();
    let mut progress = |name: &str, done: u64, total: u64| bar.update(name, done, total);
    let mut on_artifact = |name: &str, r: &super::release::ArtifactResult| {
        let (Ok(rep) | Err((rep, _))) = r;
        super::report::failures(events, name, rep);
    };
    match download(&choice, out, limits, &mut on_artifact, &mut progress).await {
        Ok(bytes) => {
            events.emit(Event::ArtifactsVerified {
                version: choice.release.version,
                bytes,
            });
            0
        }
        Err(e) => {
            events.emit(Event::Fallback {
                step: "fetch".into(),
                reason: e.reason().into(),
            });
            1
        }
    }
}
