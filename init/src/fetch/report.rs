//! Turning what the fetch saw into events and progress lines: one place for both the boot
//! step and `phase fetch`, so both report the same names.

use super::release::MetaOutcome;
use super::{FetchError, Report, Url};
use crate::events::{Event, EventLog};

/// `provider.found`, or why not: `fallback` (transport) or `verify.failed` (metadata).
pub fn metadata(events: &EventLog, u: &Url, how: &str, o: &MetaOutcome) {
    events.emit(match o {
        MetaOutcome::Verified { version } => Event::ProviderFound {
            url: u.to_string(),
            how: how.into(),
            version: *version,
        },
        MetaOutcome::Failed(e) => Event::Fallback {
            step: format!("provider {u}"),
            reason: e.reason().into(),
        },
        MetaOutcome::Rejected(e) => Event::VerifyFailed {
            artifact: "release.json".into(),
            reason: e.reason().into(),
            provider: Some(u.to_string()),
        },
        MetaOutcome::RootRejected { version, err } => Event::VerifyFailed {
            artifact: format!("{version}.root.json"),
            reason: err.reason().into(),
            provider: Some(u.to_string()),
        },
    })
}

/// One event per provider that failed on the way to `artifact`.
pub fn failures(events: &EventLog, artifact: &str, rep: &Report) {
    for f in &rep.failures {
        events.emit(match &f.error {
            FetchError::Verify { err, .. } => Event::VerifyFailed {
                artifact: artifact.into(),
                reason: err.reason().into(),
                provider: Some(f.provider.clone()),
            },
            other => Event::ProviderFailover {
                artifact: artifact.into(),
                provider: f.provider.clone(),
                reason: other.reason().into(),
                ms: f.ms,
            },
        })
    }
}

/// Console progress: a line per artifact each time it crosses another 10%, with the rate.
pub struct Progress {
    started: std::time::Instant,
    last: std::collections::HashMap<String, u64>,
}

impl Progress {
    pub fn new() -> Self {
        Progress {
            started: std::time::Instant::now(),
            last: Default::default(),
        }
    }

    pub fn update(&mut self, name: &str, done: u64, total: u64) {
        let pct = (done * 100).checked_div(total).unwrap_or(100);
        if self.last.insert(name.to_string(), pct / 10) != Some(pct / 10) {
            let rate = done as f64 / self.started.elapsed().as_secs_f64().max(0.001) / 1048576.0;
            tracing::info!("fetch {name}: {pct}% of {total} bytes, {rate:.1} MiB/s");
        }
    }
}
