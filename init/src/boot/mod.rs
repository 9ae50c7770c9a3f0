//! The boot sequence, in the order the machine runs it.
//!
//! [`STAGE1`] is the declared list of steps; [`run`] is the one runner that times them, logs
//! `step X (i/n): done`, emits `step.done {step, stage, ms, ok}` (the boot chart's data), turns a failed step into a `fallback` event, and checks for a
//! shutdown request between steps. Steps only compose: pure modules decide, `sys` acts,
//! `events` reports.

mod carry;
mod cmdline;
pub(crate) mod discover;
mod early;
mod fetch;
mod grow;
mod handoff;
mod initcheck;
mod local;
mod medium;
mod modules;
pub mod network;
mod node;
mod scrub;
mod serve;
mod services;
mod status;
mod trust;

use crate::config::Config;
use crate::events::{Event, EventLog, ShutdownRequest};
use crate::supervise::Supervisor;
use crate::sys::power::PowerAction;
use crate::sys::reap::Children;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// One step of a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Pseudo filesystems, kmsg; emits `init.start`.
    Early,
    /// Read and parse `/proc/cmdline`; arm `phase.poweroff`.
    Cmdline,
    /// Load the initramfs's kernel modules; emits `modules.loaded`.
    Modules,
    /// The trust anchor baked into the initramfs; emits `trust.ready` or `verify.failed`.
    Trust,
    /// The initramfs's bootstrap list; after a kexec (`phase.stage=2`): re-verify the
    /// release carried in the initramfs and mount its rootfs, take the carried network;
    /// emits `rootfs.verified`, `rootfs.mounted`.
    Carry,
    /// A local release on a boot medium: verified rootfs, overlay, state; emits
    /// `rootfs.verified`, `state.ready`, `rootfs.mounted`.
    Local,
    /// Without a local release (and not in private mode without a provider URL): links
    /// up, DHCP or `ip=`; emits `net.up`.
    Network,
    /// Without a local release: fetch and verify a release from the providers (the
    /// command line's, else discovered on the LAN / in the DHT), and mount its rootfs
    /// from RAM when its kernel is the running one (diskless boot).
    Fetch,
    /// Switch root into the verified rootfs and exec its init for stage 2.
    Handoff,
    /// First step of stage 2 (in the rootfs): emits `stage2.start`.
    Stage2Start,
    /// Signals, the reaper, the supervisor.
    Services,
    /// Stage 2: serve this node's release and announce it (not in private mode).
    Serve,
    /// Stage 2: the job node (libp2p host + executor), supervised task `node`; emits
    /// `node.ready`.
    Node,
    /// Stage 2: the status endpoint (`phase.status=`), supervised task `status`.
    Status,
    /// Stage 2: read the whole verity device once in the background (`phase.scrub`).
    Scrub,
    /// Fault drills asked for with `phase.selftest=`.
    Selftest,
    /// Emits `init.ready`.
    Ready,
}

impl Step {
    pub fn name(self) -> &'static str {
        match self {
            Step::Early => "early",
            Step::Cmdline => "cmdline",
            Step::Modules => "modules",
            Step::Trust => "trust",
            Step::Carry => "carry",
            Step::Local => "local",
            Step::Network => "network",
            Step::Fetch => "fetch",
            Step::Handoff => "handoff",
            Step::Stage2Start => "stage2",
            Step::Services => "services",
            Step::Serve => "serve",
            Step::Node => "node",
            Step::Status => "status",
            Step::Scrub => "scrub",
            Step::Selftest => "selftest",
            Step::Ready => "ready",
        }
    }
}

/// Stage 1 (the initramfs), in order. Handoff does not return when a verified rootfs was
/// mounted; otherwise the initramfs goes on serving.
pub const STAGE1: &[Step] = &[
    Step::Early,
    Step::Cmdline,
    Step::Modules,
    Step::Trust,
    Step::Carry,
    Step::Local,
    Step::Network,
    Step::Fetch,
    Step::Handoff,
    Step::Services,
    Step::Selftest,
    Step::Ready,
];

/// Stage 2 (PID 1 exec'd from the verified rootfs), in order.
pub const STAGE2: &[Step] = &[
    Step::Stage2Start,
    Step::Cmdline,
    Step::Services,
    Step::Serve,
    Step::Node,
    Step::Status,
    Step::Scrub,
    Step::Selftest,
    Step::Ready,
];

/// Withdrawing an announcement at shutdown (goodbye packets, DHT node closed).
pub type Withdraw = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// How long stopping the services may take at shutdown.
const STOP_BOUND: Duration = Duration::from_secs(3);
/// Seconds shown before a deliberate reboot after a fatal error.
const REBOOT_COUNTDOWN_S: u64 = 5;

/// A step's failure: a stable reason for the `fallback` event and a message for the log.
#[derive(Debug)]
pub struct StepError {
    pub reason: &'static str,
    pub message: String,
}

/// State the steps share, filled in as the boot goes.
pub struct Boot {
    pub t0_ms: u64,
    pub events: Arc<EventLog>,
    pub config: Config,
    pub children: Arc<Children>,
    pub supervisor: Supervisor,
    /// What the trust step verified; `None` if the trust anchor is unusable.
    pub trust: Option<trust::Trust>,
    /// The verified release whose rootfs is assembled at `local::NEW_ROOT` (by the local,
    /// carry or fetch step); the handoff switches root into it.
    pub root: Option<crate::kexec::decide::Offer>,
    /// The read of that root's stage-2 init, joined by the handoff (`initcheck`).
    pub init_check: Option<initcheck::InitCheck>,
    /// The configured interface, if the network step ran (in stage 2: the carried one).
    pub net: Option<network::Up>,
    /// After a kexec: the interface the previous kernel configured, for the network step.
    pub carried_net: Option<crate::handover::Net>,
    /// DHT bootstrap peers: the initramfs's list (plus the carried one after a kexec);
    /// in stage 2 the carried list.
    pub bootstrap: Vec<String>,
    /// Which stage this process runs (from its argv; `config.stage` is the command line's).
    pub stage: crate::config::Stage,
    /// Announcements to withdraw at shutdown (what, how), run before services stop.
    pub withdraw: Vec<(String, Withdraw)>,
    /// Work to let finish at shutdown, after the withdrawals and before services stop
    /// (the job node's answers in flight).
    pub drain: Vec<(String, Withdraw)>,
    /// Modules still loading in the background (see `modules::settle`).
    pub modules: modules::Pending,
    /// The node's libp2p peers, as the status endpoint shows them.
    pub peers: crate::status::server::Peers,
    /// The DHT announcement the serve step asks the node step to make through its host.
    #[cfg(feature = "executor")]
    pub dht_ad: Option<serve::DhtAd>,
    shutdown_tx: UnboundedSender<ShutdownRequest>,
    shutdown_rx: UnboundedReceiver<ShutdownRequest>,
}

/// Whether a step needs the tokio runtime (PURE). Stage 1 up to the mounted root never
/// awaits: those steps run before the runtime is built, which costs ~11 ms of a TCG boot
/// (docs/bench.md) that the root need not wait for.
pub fn needs_runtime(step: Step) -> bool {
    !matches!(
        step,
        Step::Early | Step::Cmdline | Step::Modules | Step::Trust | Step::Carry | Step::Local
    )
}

impl Boot {
    /// A step that never awaits ([`needs_runtime`] is false), run here and now.
    fn step_now(&mut self, step: Step) -> Option<Result<(), StepError>> {
        Some(match step {
            Step::Early => early::run(self),
            Step::Cmdline => cmdline::run(self),
            Step::Modules => modules::run(self),
            Step::Trust => trust::run(self),
            Step::Carry => carry::run(self),
            Step::Local => {
                let r = local::run(self);
                modules::after_root(self);
                r
            }
            _ => return None,
        })
    }

    async fn step(&mut self, step: Step) -> Result<(), StepError> {
        if let Some(r) = self.step_now(step) {
            return r;
        }
        match step {
            Step::Early
            | Step::Cmdline
            | Step::Modules
            | Step::Trust
            | Step::Carry
            | Step::Local => Ok(()), // ran in step_now
            Step::Network => network::run(self).await,
            Step::Fetch => fetch::run(self).await,
            Step::Handoff => handoff::run(self),
            Step::Stage2Start => early::stage2(self),
            Step::Services => services::run(self),
            Step::Serve => serve::run(self).await,
            Step::Node => node::run(self),
            Step::Status => status::run(self),
            Step::Scrub => scrub::run(self),
            Step::Selftest => crate::selftest::run(self).await,
            Step::Ready => {
                modules::settle_all(self);
                self.events.emit(Event::InitReady {
                    mode: self.config.mode.as_str().to_string(),
                    stage: self.stage.number(),
                    debug: self.config.debug,
                });
                Ok(())
            }
        }
    }
}

/// Run a stage (`STAGE1`, or `STAGE2` after the handoff exec'd us from the rootfs), then
/// serve until asked to shut down. Returns what to do with the machine, or why the tokio
/// runtime could not be built. The steps before the first that [`needs_runtime`] run
/// first, without it.
pub fn run(
    t0_ms: u64,
    events: Arc<EventLog>,
    stage: crate::config::Stage,
) -> std::io::Result<PowerAction> {
    let (shutdown_tx, shutdown_rx) = unbounded_channel();
    let mut boot = Boot {
        t0_ms,
        supervisor: Supervisor::new(events.clone()),
        events,
        config: Config::default(),
        children: Arc::new(Children::new()),
        trust: None,
        root: None,
        init_check: None,
        net: None,
        carried_net: None,
        bootstrap: Vec::new(),
        stage,
        withdraw: Vec::new(),
        drain: Vec::new(),
        modules: modules::Pending::default(),
        peers: Default::default(),
        #[cfg(feature = "executor")]
        dht_ad: None,
        shutdown_tx,
        shutdown_rx,
    };
    let steps = match stage {
        crate::config::Stage::One => STAGE1,
        crate::config::Stage::Two => STAGE2,
    };
    let n = steps.len();
    let before_runtime = steps.iter().take_while(|s| !needs_runtime(**s)).count();
    let mut asked = None;
    for (i, step) in steps[..before_runtime].iter().enumerate() {
        let started = crate::sys::clock::boottime_ms();
        let result = boot.step_now(*step).unwrap_or(Ok(()));
        boot.step_done(*step, i, n, started, result);
        if let Ok(req) = boot.shutdown_rx.try_recv() {
            asked = Some(req);
            break;
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(rt.block_on(async move {
        if let Some(req) = asked {
            return shutdown(&mut boot, req).await;
        }
        for (i, step) in steps.iter().enumerate().skip(before_runtime) {
            let started = crate::sys::clock::boottime_ms();
            let result = boot.step(*step).await;
            boot.step_done(*step, i, n, started, result);
            if let Ok(req) = boot.shutdown_rx.try_recv() {
                return shutdown(&mut boot, req).await;
            }
        }
        let req = match boot.shutdown_rx.recv().await {
            Some(req) => req,
            // Unreachable while `boot` holds a sender; power off rather than spin.
            None => ShutdownRequest::Terminate,
        };
        shutdown(&mut boot, req).await
    }))
}

impl Boot {
    /// After step `i` of `n`: `step.done` (before the step's own fallback and before the
    /// poweroff check, so a boot chart always has the step that ended the boot), the log
    /// line, and a failed step's `fallback`.
    fn step_done(
        &self,
        step: Step,
        i: usize,
        n: usize,
        started: u64,
        result: Result<(), StepError>,
    ) {
        let ms = crate::sys::clock::boottime_ms().saturating_sub(started);
        self.events.emit(Event::StepDone {
            step: step.name().to_string(),
            stage: self.stage.number(),
            ms,
            ok: result.is_ok(),
        });
        match result {
            Ok(()) => tracing::info!("step {} ({}/{n}): done, {ms} ms", step.name(), i + 1),
            Err(e) => {
                // Every step so far degrades rather than stops the boot: log why, go on.
                tracing::warn!(
                    "step {} ({}/{n}): {}; continuing",
                    step.name(),
                    i + 1,
                    e.message
                );
                self.events.emit(Event::Fallback {
                    step: step.name().to_string(),
                    reason: e.reason.to_string(),
                });
            }
        }
    }
}

/// Stop services in order, then hand back the power action.
async fn shutdown(boot: &mut Boot, req: ShutdownRequest) -> PowerAction {
    let (action, reason) = match req {
        ShutdownRequest::PoweroffAfterEvent => (PowerAction::PowerOff, "phase.poweroff"),
        ShutdownRequest::Terminate => (PowerAction::PowerOff, "sigterm"),
        ShutdownRequest::CtrlAltDel => (PowerAction::Reboot, "ctrl_alt_del"),
    };
    // Peers must stop being sent here before the provider goes away.
    for (what, w) in boot.withdraw.drain(..) {
        if tokio::time::timeout(STOP_BOUND, w).await.is_err() {
            tracing::warn!("withdrawing the {what} announcement took over {STOP_BOUND:?}");
        }
        boot.events.emit(Event::ProviderWithdrawn { how: what });
    }
    for (what, d) in boot.drain.drain(..) {
        if tokio::time::timeout(STOP_BOUND, d).await.is_err() {
            tracing::warn!("the {what} task's work in flight took over {STOP_BOUND:?}");
        }
    }
    tracing::info!("shutting down ({reason}): stopping services");
    boot.supervisor.stop(STOP_BOUND).await;
    // State first: it is the only writable disk mount.
    rustix::fs::sync();
    for state in ["/var/lib/phase", "/sysroot/var/lib/phase"] {
        let _ = rustix::mount::unmount(state, rustix::mount::UnmountFlags::empty());
    }
    boot.events.emit(Event::Shutdown {
        action: action.as_str().to_string(),
        reason: reason.to_string(),
    });
    action
}

/// After a fatal error: say so, count down, reboot. Used when the boot sequence panicked or
/// could not start.
pub fn deliberate_reboot(events: &EventLog, why: &str) -> PowerAction {
    tracing::error!("{why}: rebooting in {REBOOT_COUNTDOWN_S} s");
    for left in (1..=REBOOT_COUNTDOWN_S).rev() {
        tracing::error!("rebooting in {left} s");
        std::thread::sleep(Duration::from_secs(1));
    }
    events.emit(Event::Shutdown {
        action: PowerAction::Reboot.as_str().to_string(),
        reason: "panic".to_string(),
    });
    PowerAction::Reboot
}

/// Log every panic as an event. Panics in supervised tasks are then handled by the
/// supervisor; a panic of the boot sequence itself reaches `main`, which reboots.
pub fn install_panic_hook(events: Arc<EventLog>) {
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current()
            .name()
            .unwrap_or("unnamed")
            .to_string();
        let payload = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic payload".to_string());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        tracing::error!("panic in thread {thread}: {payload}{at}");
        events.emit(Event::Panic {
            thread,
            message: format!("{payload}{at}"),
        });
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage1_order() {
        assert_eq!(
            STAGE1.iter().map(|s| s.name()).collect::<Vec<_>>(),
            [
                "early", "cmdline", "modules", "trust", "carry", "local", "network", "fetch",
                "handoff", "services", "selftest", "ready"
            ]
        );
        assert_eq!(
            STAGE2.iter().map(|s| s.name()).collect::<Vec<_>>(),
            [
                "stage2", "cmdline", "services", "serve", "node", "status", "scrub", "selftest",
                "ready"
            ]
        );
    }

    #[test]
    fn stage1_mounts_its_root_before_the_runtime_is_built() {
        let before: Vec<_> = STAGE1
            .iter()
            .take_while(|s| !needs_runtime(**s))
            .map(|s| s.name())
            .collect();
        assert_eq!(
            before,
            ["early", "cmdline", "modules", "trust", "carry", "local"]
        );
        // Stage 2 starts services at once: the runtime comes first.
        assert!(needs_runtime(STAGE2[0]));
    }
}
