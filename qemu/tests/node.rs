//! The node in a booted guest (stage 2, diskless from a provider on 127.0.0.1, QEMU user
//! networking with `restrict=on`, forwards to 127.0.0.1 only): its supervised tasks and
//! the status endpoint an operator reads with `phase status`.

use phase_qemu::{artifact, provider, scaled, Event, Outcome, Vm};
use std::net::TcpListener;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

/// The status endpoint's port in the guest (init/src/status/mod.rs).
const STATUS_PORT: u16 = 8090;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Collect events until `done` holds for those seen; panics with them at the bound.
fn wait_until(rx: &mpsc::Receiver<Event>, seen: &mut Vec<Event>, done: impl Fn(&[Event]) -> bool) {
    let deadline = std::time::Instant::now() + scaled(Duration::from_secs(240));
    while !done(seen) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(e) => seen.push(e),
            Err(_) => panic!(
                "events not seen; got:\n{}",
                seen.iter()
                    .filter(|e| e.name != "step.done" && e.name != "modules.loaded")
                    .map(|e| format!("{} {}", e.name, e.fields))
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
        }
    }
}

/// `out/phase status ARGS…` on this host.
fn phase_status(args: &[&str]) -> String {
    let out = Command::new(artifact("phase"))
        .arg("status")
        .args(args)
        .output()
        .expect("out/phase runs");
    assert!(
        out.status.success(),
        "phase status {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A drill kills the guest's `status` task: the supervisor restarts it (`task.failed`
/// `killed`, `task.restarted`), and `phase status` through the forward shows the restart,
/// the release, the kernel and the boot timeline; `/metrics` counts it. Ctrl-alt-del then
/// stops the tasks in reverse start order and reboots.
#[test]
fn status_shows_a_killed_task_restarted_and_tasks_stop_in_reverse_order() {
    let (_provider, port) = provider::serve(&artifact("release")).expect("provider");
    let host_port = free_port();
    let (events_tx, events) = mpsc::channel();
    let (monitor, monitor_rx) = mpsc::channel();
    let vm = Vm::default_artifacts()
        .user_net_to(port)
        .hostfwd(host_port, STATUS_PORT)
        .append("phase.provider=http://10.0.2.100:8080/ phase.diskless phase.selftest=kill-status")
        .timeout(Duration::from_secs(300))
        .live_events(events_tx)
        .monitor_from(monitor_rx);
    let guest = std::thread::spawn(move || vm.run());

    let mut seen = Vec::new();
    wait_until(&events, &mut seen, |seen| {
        seen.iter()
            .any(|e| e.name == "task.restarted" && e.str("task") == Some("status"))
            && seen
                .iter()
                .any(|e| e.name == "init.ready" && e.fields["stage"] == 2)
    });
    let at = format!("127.0.0.1:{host_port}");
    // The restarted task listens again right after task.restarted; the forward connects
    // at once, so one request is enough.
    let json: serde_json::Value =
        serde_json::from_str(&phase_status(&[&at, "--json"])).expect("status is JSON");
    let task = |name: &str| {
        json["tasks"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["task"] == name))
            .unwrap_or_else(|| panic!("no task {name} in {json:#}"))
            .clone()
    };
    let status = task("status");
    assert_eq!(
        (&status["state"], &status["restarts"], &status["last_error"]),
        (&"running".into(), &1.into(), &"killed".into()),
        "{json:#}"
    );
    assert_eq!(task("signals")["restarts"], 0);
    let stage2 = seen
        .iter()
        .find(|e| e.name == "stage2.start")
        .expect("stage2.start");
    assert_eq!(json["release"], stage2.fields["release"], "{json:#}");
    assert_eq!(json["kernel"], stage2.fields["kernel"]);
    assert_eq!(
        (&json["mode"], &json["stage"]),
        (&"internet".into(), &2.into())
    );
    let timeline: Vec<&str> = json["timeline"]
        .as_array()
        .map(|t| t.iter().filter_map(|e| e["event"].as_str()).collect())
        .unwrap_or_default();
    for e in [
        "stage2.start",
        "task.failed",
        "task.restarted",
        "init.ready",
    ] {
        assert!(timeline.contains(&e), "{e} not in {timeline:?}");
    }
    // For a person, and as Prometheus text.
    let person = phase_status(&[&at]);
    assert!(
        person.lines().any(|l| l.trim_start().starts_with("status ")
            && l.contains(" running ")
            && l.ends_with("killed")),
        "{person}"
    );
    let metrics = phase_status(&[&at, "--metrics"]);
    assert!(
        metrics.contains("phase_task_restarts_total{task=\"status\"} 1\n"),
        "{metrics}"
    );

    // Started order, as the endpoint lists it: stopped in reverse at ctrl-alt-del.
    let started: Vec<String> = json["tasks"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter(|t| t["state"] != "done")
                .filter_map(|t| t["task"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    monitor
        .send("sendkey ctrl-alt-delete".into())
        .expect("guest still running");
    let b = guest.join().expect("guest thread").expect("qemu runs");
    assert_eq!(b.outcome, Outcome::Reboot, "{}", b.explain());
    let ready = b
        .events
        .iter()
        .rposition(|e| e.name == "init.ready")
        .expect("init.ready");
    let stopped: Vec<String> = b.events[ready..]
        .iter()
        .filter(|e| e.name == "task.stopped")
        .filter_map(|e| e.str("task").map(str::to_string))
        .collect();
    let mut want = started.clone();
    want.reverse();
    assert_eq!(stopped, want, "{}", b.explain());
    let s = b.expect("shutdown");
    assert_eq!(s.str("reason"), Some("ctrl_alt_del"), "{}", b.explain());
    b.assert_no_kernel_panic();
}
