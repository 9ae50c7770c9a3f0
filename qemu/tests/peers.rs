//! Job nodes on a LAN that exists only here (docs/testing.md): two `phase node` processes in
//! their own network namespaces, given no bootstrap list, find each other by mDNS
//! (`_phase-node._tcp`) and form one DHT; a requester joining through one of them finds the
//! other's capability record; a requester given no address at all finds a node by mDNS and
//! runs a job there, its receipt verified. Needs root and iproute2 (installed by `make test`).

use phase_qemu::lan::{wait_for_line, Lan};
use phase_qemu::{artifact, scaled};
use std::process::Stdio;
use std::time::Duration;

/// `phase-node node` in namespace `ns` on every address (so mDNS is on): its LAN address
/// from `node.ready`.
fn job_node(lan: &mut Lan, ns: &str, name: &str, extra: &[&str]) -> String {
    let state = lan.dir().join(name);
    let mut c = lan
        .command(ns, artifact("phase-node"))
        .args(["node", "--listen", "/ip4/0.0.0.0/tcp/4001", "--state-dir"])
        .arg(&state)
        .args(["--workers", "1"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = c.stdout.take().unwrap();
    lan.keep(c);
    let line =
        wait_for_line(out, "\"node.ready\"", scaled(Duration::from_secs(30))).expect("node.ready");
    let ready: serde_json::Value =
        serde_json::from_str(line.strip_prefix("PHASE-EVENT ").unwrap()).unwrap();
    assert_eq!(ready["peers"], 0, "no bootstrap list: {ready}");
    ready["listen"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .find(|a| a.starts_with("/ip4/10.216.0."))
        .unwrap_or_else(|| panic!("no LAN address: {ready}"))
        .to_string()
}

/// `phase-node job run --discover --summary ARGS hello.wasm` in `ns`: (exit code, summary).
fn discover_job(lan: &Lan, ns: &str, args: &[&str]) -> (Option<i32>, serde_json::Value) {
    let out = lan
        .command(ns, artifact("phase-node"))
        .args(["job", "run", "--discover", "--summary"])
        .args(args)
        .arg(artifact("jobs/hello.wasm"))
        .args(["--", "a", "b"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let summary = serde_json::from_str(err.lines().last().unwrap_or(""))
        .unwrap_or_else(|_| serde_json::json!({ "stderr": err }));
    (out.status.code(), summary)
}

/// Try until the job ran or the bound passed (the nodes see each other within a few mDNS
/// answers, and publish their records at once when a peer comes): the last answer.
fn discover_until(lan: &Lan, ns: &str, args: &[&str]) -> (Option<i32>, serde_json::Value) {
    let deadline = std::time::Instant::now() + scaled(Duration::from_secs(30));
    loop {
        let last = discover_job(lan, ns, args);
        if last.0 == Some(0) || std::time::Instant::now() > deadline {
            return last;
        }
        // Not there yet: ask again shortly (each attempt is a whole requester process).
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn job_nodes_and_requesters_find_each_other_by_mdns() {
    let mut lan = Lan::new("pe");
    let (a, b, requester) = (lan.member(2), lan.member(3), lan.member(4));
    let node_a = job_node(&mut lan, &a, "a", &[]);
    // Only node B admits jobs of 512 MiB.
    let node_b = job_node(&mut lan, &b, "b", &["--max-memory-mib", "512"]);

    // Joining through A finds B's record: A and B found each other on the LAN.
    let (code, s) = discover_until(
        &lan,
        &requester,
        &["--bootstrap", &node_a, "--need", "memory=512"],
    );
    assert_eq!(code, Some(0), "{s}");
    assert_eq!(s["verified"], true, "{s}");
    assert_eq!(s["node"], node_b.as_str(), "{s}");
    assert_eq!(
        s["discovered"]["passed"][0]["reason"], "too_little_memory",
        "{s}"
    );

    // No address at all: the requester finds a node by mDNS and joins through it.
    let (code, s) = discover_until(&lan, &requester, &["--need", "memory=512"]);
    assert_eq!(code, Some(0), "{s}");
    assert_eq!(s["verified"], true, "{s}");
    assert_eq!(s["node"], node_b.as_str(), "{s}");
}
