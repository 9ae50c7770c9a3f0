//! Stage 2: read the whole dm-verity device under the rootfs once, in the background
//! (`phase.scrub`), on a blocking thread at nice 19 and idle I/O priority, paced to the
//! configured rate (the pure loop is `crate::scrub`). Reports `rootfs.scrubbed`; each
//! refused block is found, the first one reported as `verify.failed` (`source: scrub`);
//! then the pure decision: with bad blocks the node stops serving and announcing its
//! release (the `SERVING_TASKS`, stopped for good) and keeps running.

use super::{Boot, StepError};
use crate::config::Scrub;
use crate::events::{Event, EventLog};
use crate::scrub::{self, Decision, ScrubError, Target};
use crate::supervise::{task, RestartPolicy};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

pub fn run(boot: &mut Boot) -> Result<(), StepError> {
    let Scrub::MibPerSec(mib) = boot.config.scrub else {
        tracing::info!("phase.scrub=off: the rootfs is not scrubbed");
        return Ok(());
    };
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let device = match scrub::target(&mounts, scrub::LOWER) {
        Target::Verity(d) => d,
        Target::Skip(why) => {
            tracing::info!("no rootfs scrub: {why}");
            return Ok(());
        }
    };
    let serving: Vec<_> = super::serve::SERVING_TASKS
        .iter()
        .filter_map(|t| boot.supervisor.abort_handle(t))
        .collect();
    let events = boot.events.clone();
    let rate = u64::from(mib) << 20;
    boot.supervisor
        .spawn("scrub", RestartPolicy::UntilSuccess, move || {
            let (device, events, serving) = (device.clone(), events.clone(), serving.clone());
            task(async move {
                // Dropped when the task is stopped (shutdown): the thread then stops too.
                let cancel = Cancel(Arc::new(AtomicBool::new(false)));
                let flag = cancel.0.clone();
                let ev = events.clone();
                let dev = device.clone();
                let pass = tokio::task::spawn_blocking(move || one_pass(&dev, rate, &flag, &ev));
                let outcome = pass.await.map_err(|e| format!("scrub thread: {e}"))?;
                drop(cancel);
                match outcome {
                    Ok((report, ms)) => {
                        let decision = scrub::decide(&report);
                        if decision == Decision::StopServing {
                            tracing::error!(
                                "{device}: {} block(s) failed verification; this node stops serving its release",
                                report.bad_blocks
                            );
                            for h in &serving {
                                h.abort();
                            }
                        }
                        events.emit(Event::RootfsScrubbed {
                            device: device.clone(),
                            bytes: report.bytes,
                            ms,
                            bad_blocks: report.bad_blocks,
                            decision: decision.as_str().into(),
                        });
                    }
                    Err(ScrubError::Cancelled { .. }) => {}
                    Err(e) => {
                        // The device could not be read at all: no verdict on its blocks.
                        tracing::warn!("{e}; the rootfs was not scrubbed");
                        events.emit(Event::Fallback {
                            step: "scrub".into(),
                            reason: e.reason().into(),
                        });
                    }
                }
                Ok(())
            })
        });
    Ok(())
}

/// Sets the flag when dropped.
struct Cancel(Arc<AtomicBool>);

impl Drop for Cancel {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// One paced pass over `device` on this (blocking) thread; `(report, ms)`.
fn one_pass(
    device: &str,
    rate: u64,
    cancel: &AtomicBool,
    events: &EventLog,
) -> Result<(scrub::Report, u64), ScrubError> {
    if let Err(e) = crate::sys::direct::background_thread() {
        tracing::warn!("scrub thread priority: {e}; scrubbing at normal priority");
    }
    let open_err = |e: rustix::io::Errno| ScrubError::Open {
        device: device.to_string(),
        source: e.into(),
    };
    let mut dev = crate::sys::direct::DirectReader::open(device, scrub::CHUNK).map_err(open_err)?;
    let size = dev.size().map_err(open_err)?;
    let started = Instant::now();
    let mut reported = false;
    let report = scrub::scrub(
        device,
        &mut dev,
        size,
        rate,
        cancel,
        || started.elapsed(),
        std::thread::sleep,
        |offset| {
            // The first one only: a worn medium may refuse thousands (the count is in
            // `rootfs.scrubbed`).
            if !std::mem::replace(&mut reported, true) {
                events.emit(Event::ScrubFailed {
                    artifact: "rootfs".into(),
                    reason: "verity_mismatch".into(),
                    source: "scrub".into(),
                    device: device.to_string(),
                    offset,
                });
            }
        },
    )?;
    Ok((report, started.elapsed().as_millis() as u64))
}
