//! The machine-readable boot timeline: `PHASE-EVENT {"event":"<name>","t_ms":<ms>,...}`.
//!
//! Event names are spelled only here. [`Event::line`] is pure; [`EventLog`] is the one writer
//! (console, then `/dev/kmsg`) and also notices when the `phase.poweroff=` event has been
//! written, so the boot runner can power off right after it. It also keeps the timeline
//! (the first [`TIMELINE_MAX`] events) and counts `job.done` by outcome for the status
//! endpoint.

use serde::Serialize;
use std::io::Write;
use std::sync::Mutex;
use tokio::sync::mpsc::UnboundedSender;

/// Every milestone and failure the init reports. Variant fields become JSON fields.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event")]
pub enum Event {
    #[serde(rename = "init.start")]
    InitStart { version: String, pid: i32 },
    /// One group of modules was loaded (`local` first; `network` when the network step
    /// waits for it); `ms` is each module's load time.
    #[serde(rename = "modules.loaded")]
    ModulesLoaded {
        group: String,
        loaded: Vec<String>,
        already: Vec<String>,
        builtin: Vec<String>,
        missing: Vec<String>,
        failed: Vec<String>,
        ms: std::collections::BTreeMap<String, u64>,
        /// PCI functions held back from binding until the group that drives them (local).
        held: Vec<String>,
        /// Held PCI functions this group bound before loading its modules.
        bound: Vec<String>,
        /// When the group began binding and loading, and when it was done (ms since kernel
        /// start, the clock of `t_ms`); `t_ms` is when a step waited for it.
        from_ms: u64,
        to_ms: u64,
        /// `left_off_not_enforced`: the kernel does not enforce module signatures, so the
        /// init left them off and the kernel did not hash the modules (`kmod_sig`);
        /// `checked`: it enforces them; `checked_unsigned_refused`: it refused a module
        /// without one (lockdown), and every module since went signed.
        signatures: &'static str,
    },
    /// The trust anchor in the initramfs verified.
    #[serde(rename = "trust.ready")]
    TrustReady {
        root_version: u64,
        root_expired: bool,
        release_keys: u64,
        release_threshold: u64,
        release_floor: u64,
        /// The machine's wall clock (unix seconds) as the kernel set it from the RTC.
        rtc: u64,
        /// The time expiry is judged at: the RTC, never before the build time.
        clock: u64,
    },
    /// Something that must verify did not; `artifact` names it.
    #[serde(rename = "verify.failed")]
    VerifyFailed {
        artifact: String,
        reason: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        provider: Option<String>,
    },
    /// The background scrub read a block of the verified rootfs that dm-verity refused:
    /// `verify.failed` with `source: scrub` and the block's byte `offset` in `device`
    /// (its own variant so the boot-time `verify.failed` keeps its fields).
    #[serde(rename = "verify.failed")]
    ScrubFailed {
        artifact: String,
        reason: String,
        source: String,
        device: String,
        offset: u64,
    },
    /// Stage 2 read the whole verified rootfs once (`phase.scrub`): `bytes` in `ms`;
    /// `bad_blocks` that failed verification; `decision`: `keep_serving` or
    /// `stop_serving` (the node keeps running either way).
    #[serde(rename = "rootfs.scrubbed")]
    RootfsScrubbed {
        device: String,
        bytes: u64,
        ms: u64,
        bad_blocks: u64,
        decision: String,
    },
    /// An interface is configured.
    #[serde(rename = "net.up")]
    NetUp {
        iface: String,
        addr: String,
        method: String,
        router: Option<String>,
    },
    /// A DHCP lease was extended.
    #[serde(rename = "net.renewed")]
    NetRenewed {
        iface: String,
        addr: String,
        lease_secs: u32,
    },
    /// One discovery method finished: how many candidates it found and rejected.
    #[serde(rename = "discovery.done")]
    DiscoveryDone {
        how: String,
        found: usize,
        rejected: usize,
        ms: u64,
    },
    /// A node announces the release it serves (and withdraws it at shutdown).
    #[serde(rename = "provider.announced")]
    ProviderAnnounced {
        how: String,
        url: String,
        version: u64,
    },
    /// At shutdown, before the services stop: the announcement is withdrawn (mDNS
    /// goodbye sent; the DHT node closed, its record no longer refreshed).
    #[serde(rename = "provider.withdrawn")]
    ProviderWithdrawn { how: String },
    /// A provider answered with metadata that verified.
    #[serde(rename = "provider.found")]
    ProviderFound {
        url: String,
        how: String,
        version: u64,
    },
    /// The release chosen among the providers' verified metadata.
    #[serde(rename = "release.verified")]
    ReleaseVerified {
        version: u64,
        channel: String,
        providers: Vec<String>,
    },
    /// Every artifact of the chosen release arrived and verified.
    #[serde(rename = "artifacts.verified")]
    ArtifactsVerified { version: u64, bytes: u64 },
    /// The rootfs is verified: by dm-verity (block by block as read) or by a full SHA-256.
    #[serde(rename = "rootfs.verified")]
    RootfsVerified {
        method: String,
        device: String,
        root_hash: String,
    },
    /// The local step's wait for a boot medium ended: `medium` is the first disk with a
    /// phase partition table, or null once `bound_ms` passed with none (`ended`: `found`,
    /// `bound`, or `no_uevents` when the uevent socket could not be opened and only the
    /// disks already there were looked at). `uevents` counts the disks announced meanwhile.
    #[serde(rename = "disk.waited")]
    DiskWaited {
        bound_ms: u64,
        ms: u64,
        ended: String,
        medium: Option<String>,
        uevents: u32,
    },
    /// First boot on a larger stick: the state partition now fills the device (backup GPT
    /// moved to its end, ext4 grown online); sizes in bytes.
    #[serde(rename = "state.grown")]
    StateGrown { device: String, old: u64, new: u64 },
    /// `/var/lib/phase` is mounted: the persistent partition, or tmpfs.
    #[serde(rename = "state.ready")]
    StateReady { persistent: bool, device: String },
    /// The boot medium's state partition is missing or does not mount: the trusted state
    /// lives in RAM for this boot.
    #[serde(rename = "state.unavailable")]
    StateUnavailable { device: String, reason: String },
    /// The overlay over the verified rootfs is mounted and ready to switch into.
    #[serde(rename = "rootfs.mounted")]
    RootfsMounted { device: String, release: u64 },
    /// PID 1 runs from the rootfs.
    #[serde(rename = "stage2.start")]
    Stage2Start {
        pid: i32,
        exe: String,
        os: String,
        motd: String,
        root_fs: String,
        /// The running kernel's release string (uname -r).
        kernel: String,
        /// The version of the release whose rootfs this is (from the handover).
        release: Option<u64>,
        /// The address stage 1 configured or carried across a kexec (CIDR), if any.
        addr: Option<String>,
        /// How many DHT bootstrap peers stage 1 handed over.
        bootstrap_peers: usize,
    },
    /// Stage 1 staged a verified release's kernel and is about to reboot into it.
    #[serde(rename = "kexec.start")]
    KexecStart {
        /// The release mounted before (a local one), if any.
        from: Option<u64>,
        to: u64,
        from_kernel: String,
        to_kernel: String,
        /// Bytes of the carry archive appended to the new initramfs.
        carried_bytes: u64,
        cmdline: String,
    },
    #[serde(rename = "init.ready")]
    /// `debug`: `phase.debug` was given (the boot menu's Debug entry sets it).
    InitReady {
        mode: String,
        stage: u8,
        debug: bool,
    },
    /// A supervised task ended badly; `restart_in_ms` is absent when it is not restarted.
    #[serde(rename = "task.failed")]
    TaskFailed {
        task: String,
        reason: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        restart_in_ms: Option<u64>,
    },
    #[serde(rename = "task.done")]
    TaskDone { task: String, runs: u32 },
    /// A supervised task's next run started after a failure (or a success, for `Forever`).
    #[serde(rename = "task.restarted")]
    TaskRestarted { task: String, restarts: u32 },
    /// At shutdown, in reverse start order: the task was stopped (`ms` it took).
    #[serde(rename = "task.stopped")]
    TaskStopped { task: String, ms: u64 },
    #[serde(rename = "panic")]
    Panic { thread: String, message: String },
    #[serde(rename = "selftest.child")]
    SelftestChild {
        args: String,
        exit_code: Option<i32>,
        signal: Option<i32>,
    },
    #[serde(rename = "selftest.orphans")]
    SelftestOrphans {
        spawned: u32,
        reaped: u64,
        zombies: u32,
    },
    #[serde(rename = "fallback")]
    Fallback { step: String, reason: String },
    /// A provider failed mid-way and the next one takes over.
    #[serde(rename = "provider.failover")]
    ProviderFailover {
        artifact: String,
        provider: String,
        reason: String,
        /// Time spent on that provider's attempt.
        ms: u64,
    },
    /// A diskless boot's whole fetch failed and is tried again after `delay_ms`.
    #[serde(rename = "fetch.retry")]
    FetchRetry {
        attempt: u32,
        reason: String,
        delay_ms: u64,
    },
    /// The node's libp2p host listens and has joined (or tried to join) the network.
    // Emitted by the job node (feature `executor`; the initramfs's build has no node).
    #[cfg_attr(not(feature = "executor"), allow(dead_code))]
    #[serde(rename = "node.ready")]
    NodeReady {
        peer_id: String,
        /// Listen addresses, each ending in `/p2p/<peer id>`.
        listen: Vec<String>,
        /// Peers in the routing table once bootstrap finished (0 without bootstrap peers).
        peers: usize,
    },
    /// A job request was admitted and its job starts on the executor.
    #[cfg_attr(not(feature = "executor"), allow(dead_code))]
    #[serde(rename = "job.start")]
    JobStart { job_id: String, requester: String },
    /// A job request was answered: run (`outcome` is the receipt's outcome kind) or refused
    /// (`outcome` is `refused`, `reason` says why).
    #[cfg_attr(not(feature = "executor"), allow(dead_code))]
    #[serde(rename = "job.done")]
    JobDone {
        job_id: String,
        outcome: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// Requester's public key (hex).
        #[serde(skip_serializing_if = "Option::is_none")]
        requester: Option<String>,
        /// From the request's arrival to the response.
        ms: u64,
    },
    #[serde(rename = "shutdown")]
    Shutdown { action: String, reason: String },
    /// The boot runner finished a step (the step started `ms` before this event's `t_ms`);
    /// `ok` is false when the step failed and the boot went on without it.
    #[serde(rename = "step.done")]
    StepDone {
        step: String,
        stage: u8,
        ms: u64,
        ok: bool,
    },
}

impl Event {
    /// The event's name, as it appears after `"event":`.
    pub fn name(&self) -> &'static str {
        match self {
            Event::InitStart { .. } => "init.start",
            Event::ModulesLoaded { .. } => "modules.loaded",
            Event::TrustReady { .. } => "trust.ready",
            Event::VerifyFailed { .. } => "verify.failed",
            Event::ScrubFailed { .. } => "verify.failed",
            Event::RootfsScrubbed { .. } => "rootfs.scrubbed",
            Event::ProviderFound { .. } => "provider.found",
            Event::DiscoveryDone { .. } => "discovery.done",
            Event::ProviderAnnounced { .. } => "provider.announced",
            Event::ProviderWithdrawn { .. } => "provider.withdrawn",
            Event::NetUp { .. } => "net.up",
            Event::NetRenewed { .. } => "net.renewed",
            Event::ReleaseVerified { .. } => "release.verified",
            Event::ArtifactsVerified { .. } => "artifacts.verified",
            Event::RootfsVerified { .. } => "rootfs.verified",
            Event::DiskWaited { .. } => "disk.waited",
            Event::StateGrown { .. } => "state.grown",
            Event::StateReady { .. } => "state.ready",
            Event::StateUnavailable { .. } => "state.unavailable",
            Event::RootfsMounted { .. } => "rootfs.mounted",
            Event::Stage2Start { .. } => "stage2.start",
            Event::KexecStart { .. } => "kexec.start",
            Event::InitReady { .. } => "init.ready",
            Event::TaskFailed { .. } => "task.failed",
            Event::TaskDone { .. } => "task.done",
            Event::TaskRestarted { .. } => "task.restarted",
            Event::TaskStopped { .. } => "task.stopped",
            Event::Panic { .. } => "panic",
            Event::SelftestChild { .. } => "selftest.child",
            Event::SelftestOrphans { .. } => "selftest.orphans",
            Event::Fallback { .. } => "fallback",
            Event::ProviderFailover { .. } => "provider.failover",
            Event::FetchRetry { .. } => "fetch.retry",
            Event::NodeReady { .. } => "node.ready",
            Event::JobStart { .. } => "job.start",
            Event::JobDone { .. } => "job.done",
            Event::Shutdown { .. } => "shutdown",
            Event::StepDone { .. } => "step.done",
        }
    }

    /// The console line, without a trailing newline. `event` and `t_ms` come first, then the
    /// variant's fields in key order (stable, so lines diff cleanly).
    pub fn line(&self, t_ms: u64) -> String {
        let mut s = format!(
            "PHASE-EVENT {{\"event\":\"{}\",\"t_ms\":{}",
            self.name(),
            t_ms
        );
        if let Ok(serde_json::Value::Object(map)) = serde_json::to_value(self) {
            for (k, v) in map.iter().filter(|(k, _)| k.as_str() != "event") {
                // Keys are our own field names; values are serialised JSON (escaped).
                s.push_str(&format!(",\"{k}\":{v}"));
            }
        }
        s.push('}');
        s
    }
}

/// Why the system is going down; sent to the boot runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownRequest {
    /// `phase.poweroff=EVENT` was reached.
    PoweroffAfterEvent,
    /// SIGTERM.
    Terminate,
    /// SIGINT (ctrl-alt-del once CAD is off).
    CtrlAltDel,
}

/// Events kept for the status endpoint's timeline; later ones are only counted.
pub const TIMELINE_MAX: usize = 512;

/// The one writer of events.
pub struct EventLog {
    inner: Mutex<Inner>,
}

struct Inner {
    kmsg: Option<std::fs::File>,
    poweroff_after: Option<String>,
    emitted: Vec<&'static str>,
    shutdown: Option<UnboundedSender<ShutdownRequest>>,
    timeline: Vec<serde_json::Value>,
    omitted: u64,
    jobs: std::collections::BTreeMap<String, u64>,
}

/// What the status endpoint reads back from the log.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recorded {
    /// The first [`TIMELINE_MAX`] events, each `{"event":..,"t_ms":..,fields}`.
    pub timeline: Vec<serde_json::Value>,
    /// Events after those.
    pub omitted: u64,
    /// `job.done` events by `outcome`.
    pub jobs: std::collections::BTreeMap<String, u64>,
}

impl EventLog {
    pub fn new() -> Self {
        EventLog {
            inner: Mutex::new(Inner {
                kmsg: None,
                poweroff_after: None,
                emitted: Vec::new(),
                shutdown: None,
                timeline: Vec::new(),
                omitted: 0,
                jobs: Default::default(),
            }),
        }
    }

    /// Also copy events to `/dev/kmsg` from now on (after devtmpfs is mounted).
    pub fn attach_kmsg(&self, kmsg: std::fs::File) {
        if let Ok(mut g) = self.inner.lock() {
            g.kmsg = Some(kmsg);
        }
    }

    /// Arm `phase.poweroff=EVENT`. If EVENT was already written, the request goes out now.
    pub fn arm_poweroff(&self, event: Option<String>, tx: UnboundedSender<ShutdownRequest>) {
        if let Ok(mut g) = self.inner.lock() {
            if let Some(e) = &event {
                if g.emitted.iter().any(|n| n == e) {
                    let _ = tx.send(ShutdownRequest::PoweroffAfterEvent);
                }
            }
            g.poweroff_after = event;
            g.shutdown = Some(tx);
        }
    }

    /// Write one event stamped now.
    pub fn emit(&self, event: Event) {
        self.emit_at(event, crate::sys::clock::boottime_ms())
    }

    /// Write one event with a given timestamp (for `init.start`, stamped at entry).
    pub fn emit_at(&self, event: Event, t_ms: u64) {
        let line = event.line(t_ms);
        // A poisoned lock still holds usable state: an event must never be lost to a panic.
        let mut g = match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
        if let Some(k) = g.kmsg.as_mut() {
            // Facility user, level debug: recorded in the kernel log without being echoed
            // to the console a second time.
            let _ = k.write_all(format!("<15>{line}\n").as_bytes());
        }
        g.emitted.push(event.name());
        let mut value = serde_json::to_value(&event).unwrap_or_default();
        if event.name() == "job.done" {
            let outcome = value["outcome"].as_str().unwrap_or("unknown").to_string();
            *g.jobs.entry(outcome).or_default() += 1;
        }
        if g.timeline.len() < TIMELINE_MAX {
            if let serde_json::Value::Object(map) = &mut value {
                map.insert("t_ms".into(), t_ms.into());
            }
            g.timeline.push(value);
        } else {
            g.omitted += 1;
        }
        if g.poweroff_after.as_deref() == Some(event.name()) {
            if let Some(tx) = &g.shutdown {
                let _ = tx.send(ShutdownRequest::PoweroffAfterEvent);
            }
        }
    }
}

impl EventLog {
    /// The timeline and job counts so far.
    pub fn recorded(&self) -> Recorded {
        let g = match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        Recorded {
            timeline: g.timeline.clone(),
            omitted: g.omitted,
            jobs: g.jobs.clone(),
        }
    }
}

impl Default for EventLog {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_format() {
        let cases = [
            (
                Event::InitStart {
                    version: "0.1.0".into(),
                    pid: 1,
                },
                2034,
                r#"PHASE-EVENT {"event":"init.start","t_ms":2034,"pid":1,"version":"0.1.0"}"#,
            ),
            (
                Event::InitReady {
                    mode: "private".into(),
                    stage: 1,
                    debug: false,
                },
                0,
                r#"PHASE-EVENT {"event":"init.ready","t_ms":0,"debug":false,"mode":"private","stage":1}"#,
            ),
            (
                Event::TaskFailed {
                    task: "x".into(),
                    reason: "panic: \"boom\"\n".into(),
                    restart_in_ms: None,
                },
                5,
                r#"PHASE-EVENT {"event":"task.failed","t_ms":5,"reason":"panic: \"boom\"\n","task":"x"}"#,
            ),
        ];
        for (ev, t, want) in cases {
            assert_eq!(ev.line(t), want);
            // Every line is one line of valid JSON after the prefix.
            let json = ev.line(t);
            let v: serde_json::Value =
                serde_json::from_str(json.strip_prefix("PHASE-EVENT ").unwrap()).unwrap();
            assert_eq!(v["event"], ev.name());
            assert!(!json.contains('\n'));
        }
    }

    #[test]
    fn names_match_serde_tags() {
        let all = [
            Event::ModulesLoaded {
                group: "local".into(),
                loaded: vec![],
                already: vec![],
                builtin: vec![],
                missing: vec![],
                failed: vec![],
                ms: Default::default(),
                held: vec![],
                bound: vec![],
                from_ms: 0,
                to_ms: 0,
                signatures: "checked",
            },
            Event::TaskDone {
                task: "t".into(),
                runs: 1,
            },
            Event::TaskRestarted {
                task: "t".into(),
                restarts: 1,
            },
            Event::TaskStopped {
                task: "t".into(),
                ms: 1,
            },
            Event::Panic {
                thread: "main".into(),
                message: "m".into(),
            },
            Event::SelftestChild {
                args: "a".into(),
                exit_code: Some(1),
                signal: None,
            },
            Event::SelftestOrphans {
                spawned: 1,
                reaped: 1,
                zombies: 0,
            },
            Event::Fallback {
                step: "s".into(),
                reason: "r".into(),
            },
            Event::TrustReady {
                root_version: 1,
                root_expired: false,
                release_keys: 2,
                release_threshold: 2,
                release_floor: 1,
                rtc: 0,
                clock: 1,
            },
            Event::VerifyFailed {
                artifact: "a".into(),
                reason: "r".into(),
                provider: None,
            },
            Event::ScrubFailed {
                artifact: "rootfs".into(),
                reason: "verity_mismatch".into(),
                source: "scrub".into(),
                device: "/dev/dm-0".into(),
                offset: 4096,
            },
            Event::RootfsScrubbed {
                device: "/dev/dm-0".into(),
                bytes: 8192,
                ms: 3,
                bad_blocks: 0,
                decision: "keep_serving".into(),
            },
            Event::ProviderFound {
                url: "u".into(),
                how: "url".into(),
                version: 1,
            },
            Event::ReleaseVerified {
                version: 1,
                channel: "stable".into(),
                providers: vec![],
            },
            Event::ArtifactsVerified {
                version: 1,
                bytes: 1,
            },
            Event::ProviderFailover {
                artifact: "a".into(),
                provider: "p".into(),
                reason: "r".into(),
                ms: 1,
            },
            Event::FetchRetry {
                attempt: 1,
                reason: "r".into(),
                delay_ms: 5000,
            },
            Event::Shutdown {
                action: "poweroff".into(),
                reason: "r".into(),
            },
            Event::DiscoveryDone {
                how: "mdns".into(),
                found: 1,
                rejected: 0,
                ms: 3,
            },
            Event::ProviderAnnounced {
                how: "mdns".into(),
                url: "u".into(),
                version: 1,
            },
            Event::ProviderWithdrawn { how: "dht".into() },
            Event::DiskWaited {
                bound_ms: 1000,
                ms: 1001,
                ended: "bound".into(),
                medium: None,
                uevents: 0,
            },
            Event::StepDone {
                step: "local".into(),
                stage: 1,
                ms: 12,
                ok: true,
            },
            Event::NodeReady {
                peer_id: "12D3Koo".into(),
                listen: vec![],
                peers: 0,
            },
            Event::JobStart {
                job_id: "j".into(),
                requester: "ab".into(),
            },
            Event::JobDone {
                job_id: "j".into(),
                outcome: "refused".into(),
                reason: Some("not_allowed".into()),
                requester: None,
                ms: 1,
            },
        ];
        for ev in all {
            let v = serde_json::to_value(&ev).unwrap();
            assert_eq!(v["event"], ev.name());
        }
    }

    #[test]
    fn poweroff_request_after_named_event() {
        let log = EventLog::new();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        log.arm_poweroff(Some("init.ready".into()), tx);
        log.emit_at(
            Event::Fallback {
                step: "a".into(),
                reason: "b".into(),
            },
            1,
        );
        assert!(rx.try_recv().is_err());
        log.emit_at(
            Event::InitReady {
                mode: "internet".into(),
                stage: 1,
                debug: false,
            },
            2,
        );
        assert_eq!(rx.try_recv(), Ok(ShutdownRequest::PoweroffAfterEvent));
        // Armed after the event already happened: fires at once.
        let (tx2, mut rx2) = tokio::sync::mpsc::unbounded_channel();
        log.arm_poweroff(Some("fallback".into()), tx2);
        assert_eq!(rx2.try_recv(), Ok(ShutdownRequest::PoweroffAfterEvent));
    }

    /// docs/events.md has one row per event name and no other: the names are read from
    /// [`Event::name`]'s match (exhaustive, so every variant is in it), the rows from the
    /// event table's first column.
    #[test]
    fn docs_events_md_lists_every_event_once() {
        let src = include_str!("events.rs");
        let body = src
            .split_once("pub fn name(&self)")
            .and_then(|(_, rest)| rest.split_once("\n    }\n"))
            .map(|(body, _)| body)
            .unwrap_or("");
        let mut names: Vec<&str> = body
            .lines()
            .filter_map(|l| l.split_once("=> \"")?.1.split_once('"'))
            .map(|(name, _)| name)
            .collect();
        names.sort();
        names.dedup();
        let doc = include_str!("../../docs/events.md");
        let mut rows: Vec<&str> = doc
            .lines()
            .skip_while(|l| !l.starts_with("| event |"))
            .take_while(|l| l.starts_with('|'))
            .filter_map(|l| l.strip_prefix("| `")?.split_once("` |"))
            .map(|(name, _)| name)
            .collect();
        rows.sort();
        assert!(names.len() >= 30, "{names:?}");
        assert_eq!(rows, names, "docs/events.md rows vs Event::name");
    }
}
