//! The job node in a booted guest (stage 2, diskless from a provider on 127.0.0.1, QEMU user
//! networking with `restrict=on`, forwards to 127.0.0.1 only): the host submits a WASM job
//! to the guest's libp2p host through a `hostfwd` and verifies the receipt; a drill kills the
//! node task and the supervisor restarts it; `phase status` through a second forward shows
//! the restart; the job's `job.done` powers the guest off (`phase.poweroff=job.done`), its
//! answer delivered first, the tasks stopped in reverse start order.

use phase_qemu::{artifact, host_phase, host_phase_node, provider, scaled, tempdir, Event, Vm};
use std::net::TcpListener;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

/// The node's libp2p port in the guest (init/src/boot/node.rs).
const NODE_PORT: u16 = 4001;
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

/// The `node.ready` after the node task's restart, if seen yet.
fn ready_after_restart(seen: &[Event]) -> Option<&Event> {
    let restarted = seen
        .iter()
        .position(|e| e.name == "task.restarted" && e.str("task") == Some("node"))?;
    seen[restarted..].iter().find(|e| e.name == "node.ready")
}

/// `out/phase status ARGS…` on this host.
fn phase_status(args: &[&str]) -> String {
    let out = Command::new(host_phase())
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

/// Boot; the drill kills the `node` task once it runs; its restart emits `node.ready`;
/// `phase status` shows the node task restarted once, killed; the host's `phase job run`
/// sends `hello.wasm` to the restarted node through the forward and gets its output and a
/// receipt verified against the dialled peer id, though the guest powers off on that job's
/// `job.done`; `phase receipt verify` checks the written receipt again (and refuses it for
/// other output); the tasks stopped in reverse start order.
#[test]
fn guest_node_runs_a_job_from_the_host_after_its_task_is_killed_and_restarted() {
    let dir = tempdir("node");
    let (_provider, port) = provider::serve(&artifact("release")).expect("provider");
    let (node_port, status_port) = (free_port(), free_port());
    let (events_tx, events) = mpsc::channel();
    // Local mode: the node joins no DHT (the TEST bootstrap peer is not reachable from
    // QEMU's restricted network), so node.ready comes without a bootstrap wait.
    let vm = Vm::default_artifacts()
        .user_net_to(port)
        .hostfwd(node_port, NODE_PORT)
        .hostfwd(status_port, STATUS_PORT)
        .append(
            "phase.provider=http://10.0.2.100:8080/ phase.diskless phase.mode=local \
             phase.selftest=kill-node phase.poweroff=job.done",
        )
        .timeout(Duration::from_secs(300))
        .live_events(events_tx);
    let guest = std::thread::spawn(move || vm.run());

    let mut seen = Vec::new();
    wait_until(&events, &mut seen, |seen| {
        ready_after_restart(seen).is_some()
            && seen
                .iter()
                .any(|e| e.name == "init.ready" && e.fields["stage"] == 2)
    });
    let ready = ready_after_restart(&seen).expect("node.ready").clone();
    let peer_id = ready.str("peer_id").expect("peer_id").to_string();
    let listen = ready.fields["listen"].as_array().expect("listen addresses");
    assert!(
        listen
            .iter()
            .filter_map(|a| a.as_str())
            .any(|a| a.ends_with(&format!("/tcp/{NODE_PORT}/p2p/{peer_id}"))),
        "{}",
        ready.fields
    );

    // The operator's view through the status forward: the node task restarted once.
    let at = format!("127.0.0.1:{status_port}");
    let json: serde_json::Value =
        serde_json::from_str(&phase_status(&[&at, "--json"])).expect("status is JSON");
    let node_task = json["tasks"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["task"] == "node"))
        .unwrap_or_else(|| panic!("no task node in {json:#}"))
        .clone();
    assert_eq!(
        (
            &node_task["state"],
            &node_task["restarts"],
            &node_task["last_error"]
        ),
        (&"running".into(), &1.into(), &"killed".into()),
        "{json:#}"
    );
    // Started order, as the endpoint lists it: stopped in reverse at the poweroff.
    let started: Vec<String> = json["tasks"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter(|t| t["state"] != "done")
                .filter_map(|t| t["task"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let person = phase_status(&[&at]);
    assert!(
        person.lines().any(|l| l.trim_start().starts_with("node ")
            && l.contains(" running ")
            && l.ends_with("killed")),
        "{person}"
    );

    // The job, through the forward.
    let node = format!("/ip4/127.0.0.1/tcp/{node_port}/p2p/{peer_id}");
    let hello = artifact("jobs/hello.wasm");
    let receipt = dir.join("receipt.json");
    let run = Command::new(host_phase_node())
        .args([
            "job",
            "run",
            "--summary",
            "--job-id",
            "from-host",
            "--node",
            &node,
        ])
        .arg(&hello)
        .arg("--receipt")
        .arg(&receipt)
        .args(["--", "phase", "boot"])
        .output()
        .expect("out/phase-node runs");
    let err = String::from_utf8_lossy(&run.stderr);
    let summary: serde_json::Value = serde_json::from_str(err.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{e}: {err}"));
    assert_eq!(run.status.code(), Some(0), "{summary}");
    assert_eq!(String::from_utf8_lossy(&run.stdout), "toob esahp\n");
    assert_eq!(
        (
            &summary["verified"],
            &summary["peer_id"],
            &summary["outcome"]
        ),
        (
            &true.into(),
            &peer_id.clone().into(),
            &serde_json::json!({"kind": "exit", "code": 0})
        ),
        "{summary}"
    );

    // The written receipt verifies on its own, and not for another output.
    let verify = |stdout: &[u8]| {
        let out = dir.join("stdout");
        std::fs::write(&out, stdout).unwrap();
        let v = Command::new(host_phase_node())
            .args(["receipt", "verify"])
            .arg(&receipt)
            .arg("--module")
            .arg(&hello)
            .arg("--stdout")
            .arg(&out)
            .args(["--", "phase", "boot"])
            .output()
            .expect("out/phase-node runs");
        let verdict: serde_json::Value = serde_json::from_slice(&v.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&v.stdout)));
        (v.status.code(), verdict)
    };
    let (code, verdict) = verify(b"toob esahp\n");
    assert_eq!(code, Some(0), "{verdict}");
    assert_eq!(
        (
            &verdict["verified"],
            &verdict["peer_id"],
            &verdict["job_id"]
        ),
        (&true.into(), &peer_id.clone().into(), &"from-host".into()),
        "{verdict}"
    );
    let (code, verdict) = verify(b"something else\n");
    assert_eq!(
        (code, &verdict["verified"]),
        (Some(1), &false.into()),
        "{verdict}"
    );

    // The guest powered off on the job's job.done, in order.
    let b = guest.join().expect("guest thread").expect("qemu runs");
    b.assert_clean_poweroff();
    let done = b
        .all("job.done")
        .into_iter()
        .find(|e| e.str("job_id") == Some("from-host"))
        .unwrap_or_else(|| panic!("no job.done\n{}", b.explain()));
    assert_eq!(done.str("outcome"), Some("exit"), "{}", done.fields);
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
    let mut want = started;
    want.reverse();
    assert_eq!(stopped, want, "{}", b.explain());
    assert_eq!(
        b.expect("shutdown").str("reason"),
        Some("phase.poweroff"),
        "{}",
        b.explain()
    );
    b.assert_no_kernel_panic();
    let _ = std::fs::remove_dir_all(dir);
}
