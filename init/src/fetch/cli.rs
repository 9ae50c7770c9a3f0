//! `phase fetch`: the stage-1 release client, run on a host. Same code, same events.

use super::release::{choose, download, MetaOutcome};
use super::{Limits, Url};
use crate::events::{Event, EventLog};
use std::path::PathBuf;
use std::time::Duration;

pub const USAGE: &str =
    "usage: phase fetch --root ROOT.json --provider URL [--provider URL...] --out DIR
                   [--channel NAME] [--floor N] [--idle-secs S] [--total-secs S]
                   [--min-rate BYTES_PER_S] [--rate-window-secs S] [--metadata-secs S]
A provider that sends nothing for --idle-secs (10), or fewer than --min-rate (32768)
bytes per second over any --rate-window-secs (10) window, is left for the next one.
--metadata-secs bounds all metadata requests together (stage 1 uses 60 s).";

pub fn run(args: &[String]) -> i32 {
    let (mut root, mut providers, mut out, mut channel, mut floor) =
        (None, Vec::new(), None, "stable".to_string(), 0u64);
    let mut limits = Limits::default();
    let mut metadata = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it.next();
        let secs = |v: Option<&String>| {
            v.and_then(|s| s.parse::<u64>().ok())
                .map(Duration::from_secs)
        };
        match (a.as_str(), v) {
            ("--root", Some(v)) => root = Some(PathBuf::from(v)),
            ("--provider", Some(v)) => match Url::parse(v) {
                Ok(u) => providers.push(u),
                Err(e) => {
                    eprintln!("phase fetch: {v}: {e}");
                    return 2;
                }
            },
            ("--out", Some(v)) => out = Some(PathBuf::from(v)),
            ("--channel", Some(v)) => channel = v.clone(),
            ("--floor", Some(v)) => floor = v.parse().unwrap_or(u64::MAX),
            ("--idle-secs", v) if secs(v).is_some() => limits.idle = secs(v).unwrap_or(limits.idle),
            ("--total-secs", v) if secs(v).is_some() => {
                limits.total = secs(v).unwrap_or(limits.total)
            }
            ("--rate-window-secs", v) if secs(v).is_some_and(|s| !s.is_zero()) => {
                limits.rate_window = secs(v).unwrap_or(limits.rate_window)
            }
            ("--metadata-secs", v) if secs(v).is_some() => {
                metadata = secs(v);
            }
            ("--min-rate", Some(v)) if v.parse::<u64>().is_ok() => {
                limits.min_rate = v.parse().unwrap_or(limits.min_rate)
            }
            _ => {
                eprintln!("{USAGE}");
                return 2;
            }
        }
    }
    let (Some(root_path), Some(out), false) = (root, out, providers.is_empty()) else {
        eprintln!("{USAGE}");
        return 2;
    };
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
