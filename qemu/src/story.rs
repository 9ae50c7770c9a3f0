//! The `make run` scenario, on the harness the tests use (`phase-run` prints it,
//! `tests/run.rs` asserts it): boot `out/phase-x86_64.img` (release N) by itself under
//! UEFI with a provider of `out/release-next` (N+1) on 127.0.0.1 forwarded in (user
//! networking `restrict=on`, one guestfwd); stage 1 verifies N, finds the provider,
//! verifies N+1 and kexecs into its kernel; stage 2 runs N+1 and its job node; the host
//! submits `hello.wasm` to that node through a second forward (`phase job run`), prints its
//! output and verifies its receipt; the job's `job.done` powers the guest off. The boot
//! is a copy of the image (its state partition records what the run trusted), the menu
//! choice and the extra kernel words are written into the copy's grubenv, as an
//! operator would (docs/usb.md).
//!
//! [`chapters`] is the story as a checklist over the events (pure), [`continuous`]
//! lays the two kernels' clocks end to end for the timeline.

use crate::chart::Chart;
use crate::{artifact, scaled, tempdir, Boot, Event, Firmware, Vm};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// More kernel words (`make run ARGS=...`), after the scenario's own.
    pub kernel_args: Vec<String>,
    pub firmware: Firmware,
    /// No `phase.poweroff=`: the guest keeps running (`make run KEEP=1`).
    pub keep: bool,
    /// Where the boot chart SVG goes.
    pub chart_svg: PathBuf,
    /// Where the host's job receipt goes.
    pub receipt: PathBuf,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            kernel_args: Vec::new(),
            firmware: Firmware::Uefi,
            keep: false,
            chart_svg: crate::out_dir().join("run-boot-chart.svg"),
            receipt: crate::out_dir().join("run-receipt.json"),
        }
    }
}

/// The event the guest powers off after: the end of the story (the node lets the host have
/// the job's answer before it stops).
pub const FINAL_EVENT: &str = "job.done";

/// The guest's job node port (init/src/boot/node.rs) and status endpoint port.
pub const NODE_PORT: u16 = 4001;
pub const STATUS_PORT: u16 = 8090;

/// What the host forwards into the guest (loopback ports on this machine).
#[derive(Debug, Clone, Copy)]
pub struct Forwards {
    pub node: u16,
    /// The status endpoint (`make run KEEP=1`).
    pub status: Option<u16>,
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free loopback port: {e}"))
}

/// The host's job, sent to the guest's node once it is ready.
#[derive(Debug, Clone)]
pub struct Job {
    /// The command, as an operator would type it.
    pub command: String,
    pub exit_code: Option<i32>,
    pub stdout: String,
    /// `phase job run --summary`: verified, node, peer_id, outcome, ms.
    pub summary: serde_json::Value,
    /// `phase receipt verify` of the written receipt, run again on its own.
    pub verdict: serde_json::Value,
    /// Where the receipt (a DSSE envelope) was written.
    pub receipt: PathBuf,
}

impl Job {
    /// Ran, exit 0, and the receipt verified both in the requester and on its own.
    pub fn verified(&self) -> bool {
        self.exit_code == Some(0)
            && self.summary["verified"] == true
            && self.verdict["verified"] == true
    }
}

/// The arguments `hello.wasm` gets, and what it must print (them, reversed).
pub const JOB_ARGS: [&str; 2] = ["phase", "boot"];

/// Where the provider appears inside the guest (the harness's guestfwd).
pub const PROVIDER_URL: &str = "http://10.0.2.100:8080/";

/// A finished run.
#[derive(Debug)]
pub struct Story {
    pub boot: Boot,
    /// The timeline with the new kernel's clock shifted to follow `kexec.start`.
    pub chart: Chart,
    pub chapters: Vec<Chapter>,
    pub svg: PathBuf,
    /// The host's job (none if the node never became ready).
    pub job: Option<Job>,
}

impl Story {
    /// Every chapter happened and the guest powered off cleanly.
    pub fn complete(&self) -> bool {
        self.chapters.iter().all(|c| c.seen.is_some())
            && self.job.as_ref().is_some_and(Job::verified)
            && self.boot.outcome == crate::Outcome::PowerOff
            && self.boot.qemu_status == Some(0)
    }
}

/// One step of the story and the event that shows it (guest ms on the continuous clock).
#[derive(Debug, Clone, PartialEq)]
pub struct Chapter {
    pub what: &'static str,
    pub event: &'static str,
    pub seen: Option<u64>,
}

/// The kernel words of the run: the provider, the final event (unless `keep`), then the
/// caller's.
pub fn kernel_words(extra: &[String], keep: bool) -> String {
    let mut w = vec![format!("phase.provider={PROVIDER_URL}")];
    if !keep {
        w.push(format!("phase.poweroff={FINAL_EVENT}"));
    }
    w.extend(extra.iter().cloned());
    w.join(" ")
}

/// The story as a checklist: each chapter is the first matching event after the chapter it
/// follows (the previous one, except that stage 2's end of boot and its job node, two
/// supervised paths, may come in either order after N+1's rootfs is mounted).
pub fn chapters(events: &[Event], n: u64, next: u64) -> Vec<Chapter> {
    type Check = fn(&Event, u64, u64) -> bool;
    // (what, event, index of the chapter it follows, check)
    let book: [(&'static str, &'static str, Option<usize>, Check); 9] = [
        (
            "stage 1 verifies release N on the image, mounts it",
            "rootfs.mounted",
            None,
            |e, n, _| e.fields["release"] == n,
        ),
        (
            "finds the provider",
            "provider.found",
            Some(0),
            |_, _, _| true,
        ),
        (
            "verifies release N+1's signed metadata",
            "release.verified",
            Some(1),
            |e, _, next| e.fields["version"] == next,
        ),
        (
            "downloads N+1, every artifact checked",
            "artifacts.verified",
            Some(2),
            |e, _, next| e.fields["version"] == next,
        ),
        (
            "kexecs into N+1's kernel",
            "kexec.start",
            Some(3),
            |e, _, next| e.fields["to"] == next,
        ),
        (
            "N+1's kernel verifies the carried rootfs, mounts it",
            "rootfs.mounted",
            Some(4),
            |e, _, next| e.fields["release"] == next,
        ),
        ("stage 2 runs N+1", "init.ready", Some(5), |e, _, _| {
            e.fields["stage"] == 2
        }),
        ("its job node listens", "node.ready", Some(5), |_, _, _| {
            true
        }),
        (
            "runs the host's hello.wasm, answers with a signed receipt",
            "job.done",
            Some(7),
            |e, _, _| e.fields["outcome"] == "exit",
        ),
    ];
    let mut at: Vec<Option<usize>> = Vec::with_capacity(book.len());
    book.iter()
        .map(|(what, event, after, check)| {
            let from = match after {
                None => Some(0),
                Some(a) => at.get(*a).copied().flatten().map(|i| i + 1),
            };
            let found = from.and_then(|from| {
                events[from.min(events.len())..]
                    .iter()
                    .position(|e| e.name == *event && check(e, n, next))
                    .map(|i| from + i)
            });
            at.push(found);
            Chapter {
                what,
                event,
                seen: found.map(|i| events[i].t_ms),
            }
        })
        .collect()
}

/// The events with every kernel's clock laid end to end: after a `kexec.start` the new
/// kernel's CLOCK_BOOTTIME starts again near 0, so its times are shifted by the time of
/// that `kexec.start` (the jump itself, a few hundred ms, is not measured by either clock).
pub fn continuous(events: &[Event]) -> Vec<Event> {
    let mut offset = 0;
    let mut out = Vec::with_capacity(events.len());
    let mut after_kexec = None;
    for e in events {
        let mut e = e.clone();
        if e.name == "init.start" {
            if let Some(t) = after_kexec.take() {
                offset = t;
            }
        }
        e.t_ms += offset;
        if e.name == "kexec.start" {
            after_kexec = Some(e.t_ms);
        }
        out.push(e);
    }
    out
}

/// [`Chart::from_events`] draws the first kernel (boot to `init.start`); add a bar for each
/// kernel started by kexec, from its own clock's `init.start`, placed on the continuous one.
fn with_later_kernels(mut chart: Chart, raw: &[Event], shifted: &[Event]) -> Chart {
    let starts = raw
        .iter()
        .zip(shifted)
        .filter(|(r, _)| r.name == "init.start");
    for (r, s) in starts.skip(1) {
        let at = chart
            .spans
            .iter()
            .position(|sp| sp.start_ms >= s.t_ms)
            .unwrap_or(chart.spans.len());
        chart.spans.insert(
            at,
            crate::chart::Span {
                step: "kernel".into(),
                stage: 0,
                start_ms: s.t_ms.saturating_sub(r.t_ms),
                ms: r.t_ms,
                ok: true,
            },
        );
    }
    chart
}

/// One line for an event as it arrives: time, name, its fields.
pub fn describe(e: &Event) -> String {
    let mut fields = e.fields.clone();
    if let Some(m) = fields.as_object_mut() {
        m.remove("event");
        m.remove("t_ms");
    }
    let mut f = fields.to_string();
    if f.len() > 110 {
        let cut = (0..=107)
            .rev()
            .find(|i| f.is_char_boundary(*i))
            .unwrap_or(0);
        f.truncate(cut);
        f.push_str("...");
    }
    format!("{:>8.3} s  {:<20} {f}", e.t_ms as f64 / 1000.0, e.name)
}

/// The version a signed release directory holds (`release.json`'s `version`).
pub fn release_version(dir: &Path) -> Result<u64, String> {
    let path = dir.join("release.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    v.pointer("/signed/version")
        .or_else(|| v.get("version"))
        .and_then(|v| v.as_u64())
        .ok_or_else(|| format!("{}: no version", path.display()))
}

/// A sparse copy of `src` in `dir`.
fn copy_of(src: &Path, dir: &Path) -> Result<PathBuf, String> {
    let p = dir.join(src.file_name().unwrap_or_default());
    let ok = std::process::Command::new("cp")
        .arg("--sparse=always")
        .arg(src)
        .arg(&p)
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(p)
        .ok_or_else(|| format!("cp {} {}", src.display(), dir.display()))
}

/// Write the menu choice (`vars`, no wait) into the grubenv block of `image`'s ESP.
pub fn choose_menu(image: &Path, vars: &[(&str, &str)]) -> Result<(), String> {
    let fail = |e: &dyn std::fmt::Display| format!("{}: {e}", image.display());
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .map_err(|e| fail(&e))?;
    let mut header = vec![0u8; 512];
    f.seek(SeekFrom::Start(512)).map_err(|e| fail(&e))?;
    f.read_exact(&mut header).map_err(|e| fail(&e))?;
    let (off, len) = phase_layout::gpt::entries_range(&header).map_err(|e| fail(&e))?;
    let mut entries = vec![0u8; len as usize];
    f.seek(SeekFrom::Start(off)).map_err(|e| fail(&e))?;
    f.read_exact(&mut entries).map_err(|e| fail(&e))?;
    let parts = phase_layout::gpt::parse(&header, &entries).map_err(|e| fail(&e))?;
    let esp = parts
        .iter()
        .find(|p| p.type_guid == phase_layout::part_type::ESP)
        .ok_or_else(|| fail(&"no ESP"))?;
    let (start, size) = (esp.first_lba * 512, esp.size_bytes());
    let mut bytes = vec![0u8; size as usize];
    f.seek(SeekFrom::Start(start)).map_err(|e| fail(&e))?;
    f.read_exact(&mut bytes).map_err(|e| fail(&e))?;
    let at = phase_layout::grubenv::find(&bytes).ok_or_else(|| fail(&"no grubenv block"))?;
    let mut all = vec![("timeout", "0")];
    all.extend_from_slice(vars);
    let block = phase_layout::grubenv::render(&all).map_err(|e| fail(&e))?;
    f.seek(SeekFrom::Start(start + at as u64))
        .map_err(|e| fail(&e))?;
    f.write_all(&block).map_err(|e| fail(&e))?;
    f.sync_all().map_err(|e| fail(&e))
}

/// The guest of the run: a copy of the image in `dir`, with the menu choice written in, the
/// provider on `port` forwarded in and the node (and status) ports forwarded out.
pub fn prepare(dir: &Path, o: &Options, port: u16, fwd: Forwards) -> Result<Vm, String> {
    let img = copy_of(&artifact("phase-x86_64.img"), dir)?;
    choose_menu(
        &img,
        &[
            ("default", "internet"),
            ("phase_extra", &kernel_words(&o.kernel_args, o.keep)),
        ],
    )?;
    let mut vm = Vm::disk_boot(&img)
        .firmware(o.firmware)
        .user_net_to(port)
        .hostfwd(fwd.node, NODE_PORT);
    if let Some(status) = fwd.status {
        vm = vm.hostfwd(status, STATUS_PORT);
    }
    Ok(vm
        // UEFI, two kernels and a ~115 MB download under TCG.
        .timeout(Duration::from_secs(360)))
}

/// Run the story; `progress` sees each event as it arrives (already on the continuous
/// clock).
pub fn run(o: &Options, mut progress: impl FnMut(&Event)) -> Result<Story, String> {
    let next_dir = artifact("release-next");
    let (n, next) = (
        release_version(&artifact("release"))?,
        release_version(&next_dir)?,
    );
    let dir = tempdir("run");
    let (_provider, port) =
        crate::provider::serve(&next_dir).map_err(|e| format!("phase provider serve: {e}"))?;
    let (tx, rx) = mpsc::channel();
    let fwd = Forwards {
        node: free_port()?,
        status: None,
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let vm = prepare(&dir, o, port, fwd)?
        .live_events(tx)
        .stop_when(stop.clone());
    let guest = std::thread::spawn(move || vm.run());
    // The live events, shifted as `continuous` does, until the guest ends; once stage 2's
    // node is ready (after the kexec), the host's job.
    let mut seen = Vec::new();
    let mut job = None;
    while let Ok(e) = rx.recv_timeout(scaled(Duration::from_secs(400))) {
        let kexeced = seen.iter().any(|e: &Event| e.name == "kexec.start");
        let ready = (e.name == "node.ready" && kexeced && job.is_none())
            .then(|| e.str("peer_id").map(str::to_string))
            .flatten();
        seen.push(e);
        if let Some(last) = continuous(&seen).pop() {
            progress(&last);
        }
        if let Some(peer_id) = ready {
            let j = submit(&dir, fwd.node, &peer_id, &o.receipt)?;
            if !j.verified() {
                // The guest would wait for a job.done that is not coming.
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            job = Some(j);
        }
    }
    let boot = guest
        .join()
        .map_err(|_| "the guest thread panicked".to_string())?
        .map_err(|e| format!("qemu-system-x86_64: {e}"))?;
    let _ = std::fs::remove_dir_all(&dir);
    let events = continuous(&boot.events);
    let chart = with_later_kernels(Chart::from_events(&events), &boot.events, &events);
    let svg = chart.svg(&format!(
        "make run: release {n} on the image, kexec into {next} (guest ms, kernels end to end)"
    ));
    std::fs::write(&o.chart_svg, svg).map_err(|e| format!("{}: {e}", o.chart_svg.display()))?;
    Ok(Story {
        chapters: chapters(&events, n, next),
        chart,
        svg: o.chart_svg.clone(),
        boot,
        job,
    })
}

/// `phase job run` of `hello.wasm` against the guest's node through the forward, with the
/// receipt written and then verified again on its own with `phase receipt verify`.
pub fn submit(dir: &Path, port: u16, peer_id: &str, receipt: &Path) -> Result<Job, String> {
    let phase = crate::host_phase_node();
    let hello = artifact("jobs/hello.wasm");
    let _ = std::fs::remove_file(receipt);
    let node = format!("/ip4/127.0.0.1/tcp/{port}/p2p/{peer_id}");
    let mut cmd = std::process::Command::new(&phase);
    cmd.args(["job", "run", "--summary", "--node", &node])
        .arg(&hello)
        .arg("--receipt")
        .arg(receipt)
        .arg("--")
        .args(JOB_ARGS)
        .stdin(std::process::Stdio::null());
    let command = format!(
        "out/phase-node job run --node {node} out/jobs/hello.wasm --receipt {} -- {}",
        receipt.display(),
        JOB_ARGS.join(" ")
    );
    let out = cmd
        .output()
        .map_err(|e| format!("{}: {e}", phase.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr);
    let summary = serde_json::from_str(err.lines().last().unwrap_or(""))
        .unwrap_or_else(|_| serde_json::json!({"verified": false, "error": err.trim()}));
    let output = dir.join("job.stdout");
    std::fs::write(&output, &stdout).map_err(|e| format!("{}: {e}", output.display()))?;
    let v = std::process::Command::new(&phase)
        .args(["receipt", "verify"])
        .arg(receipt)
        .arg("--module")
        .arg(&hello)
        .arg("--stdout")
        .arg(&output)
        .arg("--")
        .args(JOB_ARGS)
        .output()
        .map_err(|e| format!("{}: {e}", phase.display()))?;
    let verdict = serde_json::from_slice(&v.stdout).unwrap_or_else(
        |_| serde_json::json!({"verified": false, "error": String::from_utf8_lossy(&v.stderr)}),
    );
    Ok(Job {
        command,
        exit_code: out.status.code(),
        stdout,
        summary,
        verdict,
        receipt: receipt.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(name: &str, t_ms: u64, fields: serde_json::Value) -> Event {
        let mut f = fields;
        f["event"] = name.into();
        f["t_ms"] = t_ms.into();
        Event {
            name: name.into(),
            t_ms,
            fields: f,
        }
    }

    fn upgrade() -> Vec<Event> {
        use serde_json::json;
        vec![
            ev("init.start", 2000, json!({})),
            ev("rootfs.mounted", 3000, json!({"release": 1})),
            ev("provider.found", 4000, json!({})),
            ev("release.verified", 4100, json!({"version": 2})),
            ev("artifacts.verified", 9000, json!({"version": 2})),
            ev("kexec.start", 9500, json!({"to": 2})),
            ev("init.start", 1800, json!({})),
            ev("rootfs.mounted", 2500, json!({"release": 2})),
            ev("node.ready", 2900, json!({"peer_id": "12D3KooW"})),
            ev("init.ready", 3000, json!({"stage": 2})),
            ev("job.done", 4000, json!({"outcome": "exit"})),
        ]
    }

    #[test]
    fn the_new_kernel_clock_follows_kexec_start() {
        let t: Vec<u64> = continuous(&upgrade()).iter().map(|e| e.t_ms).collect();
        assert_eq!(
            t,
            [2000, 3000, 4000, 4100, 9000, 9500, 11300, 12000, 12400, 12500, 13500]
        );
        // No kexec: unchanged.
        let one = &upgrade()[..5];
        assert_eq!(continuous(one), one.to_vec());
    }

    #[test]
    fn the_kexeced_kernel_gets_its_own_bar() {
        let raw = upgrade();
        let shifted = continuous(&raw);
        let chart = with_later_kernels(Chart::from_events(&shifted), &raw, &shifted);
        let kernels: Vec<_> = chart
            .spans
            .iter()
            .filter(|s| s.step == "kernel")
            .map(|s| (s.start_ms, s.ms))
            .collect();
        assert_eq!(kernels, [(0, 2000), (9500, 1800)]);
    }

    #[test]
    fn every_chapter_of_an_upgrade_is_seen_in_order() {
        let c = chapters(&continuous(&upgrade()), 1, 2);
        assert!(c.iter().all(|c| c.seen.is_some()), "{c:?}");
        assert_eq!(c.last().and_then(|c| c.seen), Some(13500));
        // The node may also be ready after stage 2's last step.
        let mut late = upgrade();
        late.swap(8, 9);
        let c = chapters(&continuous(&late), 1, 2);
        assert!(c.iter().all(|c| c.seen.is_some()), "{c:?}");
    }

    #[test]
    fn a_job_before_the_node_is_ready_or_one_that_failed_is_not_the_story() {
        let mut early = upgrade();
        early.swap(8, 10);
        let c = chapters(&continuous(&early), 1, 2);
        assert_eq!(c[8].seen, None, "{c:?}");
        let mut trapped = upgrade();
        trapped[10].fields["outcome"] = "trap".into();
        assert_eq!(chapters(&trapped, 1, 2)[8].seen, None);
    }

    #[test]
    fn a_boot_that_stays_on_n_misses_the_later_chapters() {
        use serde_json::json;
        let stay = vec![
            ev("init.start", 2000, json!({})),
            ev("rootfs.mounted", 3000, json!({"release": 1})),
            ev("provider.found", 4000, json!({})),
            ev("verify.failed", 4100, json!({"reason": "artifact_hash"})),
            ev("init.ready", 5000, json!({"stage": 2})),
        ];
        let c = chapters(&stay, 1, 2);
        let missing: Vec<_> = c
            .iter()
            .filter(|c| c.seen.is_none())
            .map(|c| c.event)
            .collect();
        assert!(missing.contains(&"release.verified"), "{c:?}");
        assert!(missing.contains(&"kexec.start"), "{c:?}");
    }

    #[test]
    fn release_n_plus_1_is_refused_as_n() {
        let mut ev2 = upgrade();
        ev2[3].fields["version"] = 1.into();
        let c = chapters(&ev2, 1, 2);
        assert_eq!(c[2].seen, None);
    }

    #[test]
    fn the_run_words_put_the_callers_last() {
        assert_eq!(
            kernel_words(&["phase.debug".into()], false),
            "phase.provider=http://10.0.2.100:8080/ phase.poweroff=job.done phase.debug"
        );
        assert_eq!(
            kernel_words(&[], true),
            "phase.provider=http://10.0.2.100:8080/"
        );
    }
}
