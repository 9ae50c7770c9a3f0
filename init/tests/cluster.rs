//! Five `phase node` processes on loopback (unique ports: each listens on port 0 and reports
//! its address in `node.ready`): they join one DHT through the first; a job submitted with
//! `phase job run --node` runs and its receipt verifies (in the requester, and again with
//! `phase receipt verify` against the node's peer id); a node with an allowlist refuses an
//! unknown requester with `not_allowed` and runs the allowed one's job; a node killed mid-job
//! makes the requester fail over to the next node within a stated bound; a job submitted
//! with `phase job run --discover` (no address given) runs on the one node whose signed
//! capability record offers the memory it needs, and a node stopped with SIGTERM is then
//! found withdrawn (no free slot). Uses the example jobs in out/jobs (`make build`).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The harness's one timeout multiplier.
fn scale() -> u32 {
    std::env::var("PHASE_TIMEOUT_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|s| *s >= 1)
        .unwrap_or(1)
}

/// The failover bound: from the kill of the node running the job to the requester's verified
/// answer from the next node, beyond the job's own run there (its timeout). Detecting the
/// death is immediate (the kernel closes the connection); the rest is dialling the next
/// node, sending the module and compiling it (unoptimised build here).
fn failover_bound() -> Duration {
    Duration::from_secs(15) * scale()
}

fn jobs(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../out/jobs")
        .join(format!("{name}.wasm"))
}

/// One `phase node` process; its PHASE-EVENT lines arrive on a channel.
struct Node {
    child: Child,
    events: mpsc::Receiver<serde_json::Value>,
    addr: String,
    peers: u64,
}

impl Node {
    fn start(dir: &Path, name: &str, extra: &[&str]) -> Node {
        let state = dir.join(name);
        let mut args = vec![
            "node",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--state-dir",
            state.to_str().unwrap(),
            "--workers",
            "1",
        ];
        args.extend_from_slice(extra);
        let mut child = Command::new(env!("CARGO_BIN_EXE_phase"))
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(json) = line.strip_prefix("PHASE-EVENT ") {
                    if let Ok(v) = serde_json::from_str(json) {
                        let _ = tx.send(v);
                    }
                }
            }
        });
        let mut n = Node {
            child,
            events: rx,
            addr: String::new(),
            peers: 0,
        };
        let ready = n.wait("node.ready");
        n.addr = ready["listen"][0].as_str().unwrap().to_string();
        n.peers = ready["peers"].as_u64().unwrap();
        assert!(
            n.addr.ends_with(ready["peer_id"].as_str().unwrap()),
            "{ready}"
        );
        n
    }

    /// The next event called `name` (bounded wait).
    fn wait(&self, name: &str) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(60) * scale();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(v) if v["event"] == name => return v,
                Ok(_) => {}
                Err(_) => panic!("no {name} event within the bound"),
            }
        }
    }

    fn peer_id(&self) -> &str {
        self.addr.rsplit('/').next().unwrap()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `phase job run --summary ARGS` with stdin; (output, summary line).
fn submit(args: &[&str], stdin: &[u8]) -> (Output, serde_json::Value) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_phase"))
        .args(["job", "run", "--summary"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let summary = serde_json::from_str(err.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{e}: {err}"));
    (out, summary)
}

#[test]
fn five_nodes_run_verify_refuse_and_fail_over() {
    let t0 = Instant::now();
    let dir = std::env::temp_dir().join(format!("phase-cluster-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let hello = jobs("hello");
    let hello = hello.to_str().unwrap();

    // Four nodes join through the first. Node 3 admits jobs of up to 512 MiB, the others of
    // up to 256 MiB (the default), and runs one job at a time where the others run two: a
    // ranking that ignored memory would put it last.
    let n0 = Node::start(&dir, "n0", &["--workers", "2"]);
    assert_eq!(n0.peers, 0);
    let mut nodes = vec![n0];
    for i in 1..4 {
        let boot = nodes[0].addr.clone();
        let mut extra = vec!["--bootstrap", boot.as_str()];
        extra.extend(if i == 3 {
            ["--max-memory-mib", "512"]
        } else {
            ["--workers", "2"]
        });
        let n = Node::start(&dir, &format!("n{i}"), &extra);
        assert!(n.peers >= 1, "n{i} joined no one");
        nodes.push(n);
    }

    // A job on node 1: output, exit code, a receipt verified by the requester.
    let allowed_key = dir.join("allowed.key");
    let receipt = dir.join("r.json");
    let (out, s) = submit(
        &[
            "--node",
            &nodes[1].addr,
            "--key",
            allowed_key.to_str().unwrap(),
            "--receipt",
            receipt.to_str().unwrap(),
            "--job-id",
            "first",
            hello,
            "--",
            "a",
            "b",
        ],
        b"hello over the network\n",
    );
    assert_eq!(out.status.code(), Some(0), "{s}");
    assert_eq!(s["verified"], true, "{s}");
    assert_eq!(s["node"], nodes[1].addr.as_str());
    assert_eq!(s["attempts"], serde_json::json!([]));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!stdout.is_empty());
    let done = nodes[1].wait("job.done");
    assert_eq!(done["job_id"], "first");
    assert_eq!(done["outcome"], "exit");
    assert_eq!(done["requester"], s["requester"]);
    // The receipt verifies on its own, signed by node 1's key.
    std::fs::write(dir.join("stdin"), b"hello over the network\n").unwrap();
    std::fs::write(dir.join("stdout"), stdout.as_bytes()).unwrap();
    let v = Command::new(env!("CARGO_BIN_EXE_phase"))
        .args([
            "receipt",
            "verify",
            receipt.to_str().unwrap(),
            "--module",
            hello,
        ])
        .args(["--stdin", dir.join("stdin").to_str().unwrap()])
        .args(["--stdout", dir.join("stdout").to_str().unwrap()])
        .args(["--", "a", "b"])
        .output()
        .unwrap();
    let verdict: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
    assert_eq!(verdict["verified"], true, "{verdict}");
    assert_eq!(verdict["peer_id"], nodes[1].peer_id());
    assert_eq!(verdict["job_id"], "first");

    // Node 4 admits only the first requester's key; it finds the others through node 0.
    let allowed = s["requester"].as_str().unwrap().to_string();
    let policy = dir.join("allowlist.json");
    std::fs::write(
        &policy,
        format!(r#"{{"admission":{{"mode":"allowlist","keys":["{allowed}"]}}}}"#),
    )
    .unwrap();
    let boot = nodes[0].addr.clone();
    let n4 = Node::start(
        &dir,
        "n4",
        &["--bootstrap", &boot, "--config", policy.to_str().unwrap()],
    );
    assert!(n4.peers >= 3, "n4 found {} peers through n0", n4.peers);
    nodes.push(n4);
    let (out, s) = submit(&["--node", &nodes[4].addr, hello], b"");
    assert_eq!(out.status.code(), Some(1), "{s}");
    assert_eq!(s["verified"], false);
    assert_eq!(s["attempts"][0]["reason"], "not_allowed", "{s}");
    let done = nodes[4].wait("job.done");
    assert_eq!(done["outcome"], "refused");
    assert_eq!(done["reason"], "not_allowed");
    let (out, s) = submit(
        &[
            "--node",
            &nodes[4].addr,
            "--key",
            allowed_key.to_str().unwrap(),
            hello,
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{s}");
    assert_eq!(s["verified"], true);

    // Discovery: a job that needs 400 MiB, submitted with no address but the DHT's entry
    // point, runs on node 3 (the only node whose capability record offers that much); the
    // others' records are found, verified, and passed over for their memory.
    let boot = nodes[0].addr.clone();
    let (out, s) = submit(
        &[
            "--discover",
            "--bootstrap",
            &boot,
            "--memory-bytes",
            &(400u64 << 20).to_string(),
            "--job-id",
            "found",
            hello,
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{s}");
    assert_eq!(s["verified"], true, "{s}");
    assert_eq!(s["node"], nodes[3].addr.as_str(), "{s}");
    assert_eq!(s["attempts"], serde_json::json!([]), "{s}");
    let d = &s["discovered"];
    assert_eq!(d["fit"].as_array().map(Vec::len), Some(1), "{s}");
    assert_eq!(d["fit"][0]["memory_mib"], 512, "{s}");
    let passed = d["passed"].as_array().unwrap();
    assert!(
        passed.iter().all(|p| p["reason"] == "too_little_memory"),
        "{s}"
    );
    // Every node but the one that fits was found and passed over (records are published as
    // each node joins; node 4 joined last, before the allowlist jobs).
    assert_eq!(passed.len(), 4, "{s}");
    assert_eq!(d["providers"], 5, "{s}");
    assert_eq!(nodes[3].wait("job.done")["job_id"], "found");

    // A node that stops (SIGTERM) withdraws its record: it is found with no free slot, and
    // the job goes elsewhere.
    let status = Command::new("kill")
        .args(["-TERM", &nodes[1].child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(nodes[1].child.wait().unwrap().code(), Some(0));
    let (out, s) = submit(&["--discover", "--bootstrap", &boot, hello], b"");
    assert_eq!(out.status.code(), Some(0), "{s}");
    assert_ne!(s["node"], nodes[1].addr.as_str(), "{s}");
    let d = &s["discovered"];
    let fit: Vec<&str> = d["fit"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["addr"].as_str())
        .collect();
    assert!(!fit.contains(&nodes[1].addr.as_str()), "{s}");
    // Node 1 is passed over; so may node 3 be, if the record it signed while running the
    // last job is still the newest (free slots are re-published at most every 2 s).
    let passed = d["passed"].as_array().unwrap();
    assert!(passed.iter().all(|p| p["reason"] == "no_free_slot"), "{s}");
    assert_eq!(fit.len() + passed.len(), 5, "{s}");
    // Its events are consumed here, so later waits see only what comes later.
    let ran = nodes.iter().find(|n| s["node"] == n.addr.as_str()).unwrap();
    assert_eq!(ran.wait("job.done")["outcome"], "exit");

    // Failover: a job that runs until its 2 s deadline goes to node 2, which is killed once the
    // job started; node 3 runs it (outcome timeout: exit status 125) and its receipt verifies.
    let spin = jobs("spin");
    let requester = Command::new(env!("CARGO_BIN_EXE_phase"))
        .args([
            "job",
            "run",
            "--summary",
            "--timeout-ms",
            "2000",
            "--fuel",
            "100000000000",
        ])
        .args(["--node", &nodes[2].addr, "--node", &nodes[3].addr])
        .arg(&spin)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = nodes[2].wait("job.start");
    assert_eq!(started["job_id"], "job");
    nodes[2].child.kill().unwrap();
    let killed = Instant::now();
    let out = requester.wait_with_output().unwrap();
    let after_kill = killed.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    let s: serde_json::Value = serde_json::from_str(err.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{e}: {err}"));
    assert_eq!(out.status.code(), Some(125), "{s}");
    assert_eq!(s["verified"], true, "{s}");
    assert_eq!(s["node"], nodes[3].addr.as_str(), "{s}");
    assert_eq!(s["outcome"]["kind"], "timeout", "{s}");
    assert_eq!(s["attempts"][0]["node"], nodes[2].addr.as_str(), "{s}");
    assert_eq!(s["attempts"][0]["reason"], "connection_closed", "{s}");
    let bound = Duration::from_millis(2000) + failover_bound();
    assert!(
        after_kill <= bound,
        "failover took {after_kill:?} after the kill (bound {bound:?})"
    );
    eprintln!(
        "cluster test: {:?}; failover answered {after_kill:?} after the kill",
        t0.elapsed()
    );
    drop(nodes);
    let _ = std::fs::remove_dir_all(&dir);
}
