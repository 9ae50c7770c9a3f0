//! `phase dht` on loopback: ten nodes chained to the first, one provider announcing, and a
//! lookup with an ephemeral key that finds it (and nothing under another channel).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Every process we started; killed (and reaped) whatever happens to the test.
struct Procs {
    children: Vec<Child>,
    dir: std::path::PathBuf,
}

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
        }
        for c in &mut self.children {
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Procs {
    /// Start `phase ARGS` and return its first stdout line, parsed (bounded wait).
    fn start(&mut self, args: &[&str]) -> serde_json::Value {
        let mut child = Command::new(env!("CARGO_BIN_EXE_phase"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        self.children.push(child);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(out).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("phase {args:?} printed nothing within 60 s"));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("phase {args:?}: {e}: {line:?}"))
    }

    fn key(&self, name: &str) -> String {
        self.dir
            .join(format!("{name}.key"))
            .to_string_lossy()
            .into_owned()
    }
}

fn phase(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_phase"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn lines(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect()
}

#[test]
fn ten_nodes_one_provider_found_by_lookup() {
    let t0 = std::time::Instant::now();
    let dir = std::env::temp_dir().join(format!("phase-dht-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut p = Procs {
        children: Vec::new(),
        dir,
    };
    let local = "/ip4/127.0.0.1/tcp/0";

    let k0 = p.key("node0");
    let first = p.start(&[
        "dht",
        "node",
        "--key",
        &k0,
        "--create-key",
        "--listen",
        local,
    ]);
    let boot = first["listen"][0].as_str().unwrap().to_string();
    let peer0 = first["peer_id"].as_str().unwrap().to_string();
    assert!(boot.ends_with(&format!("/p2p/{peer0}")), "{first}");
    // peer-id reads the same key file.
    let out = phase(&["dht", "peer-id", "--key", &k0]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), peer0);

    for i in 1..10 {
        let k = p.key(&format!("node{i}"));
        let n = p.start(&[
            "dht",
            "node",
            "--key",
            &k,
            "--create-key",
            "--listen",
            local,
            "--bootstrap",
            &boot,
        ]);
        assert_ne!(n["peer_id"], first["peer_id"]);
    }

    let kp = p.key("provider");
    let announced = p.start(&[
        "dht",
        "announce",
        "--key",
        &kp,
        "--create-key",
        "--url",
        "http://192.0.2.8:8080/",
        "--version",
        "42",
        "--ttl",
        "600",
        "--listen",
        local,
        "--bootstrap",
        &boot,
    ]);
    let node = announced["announced"]["node"].as_str().unwrap().to_string();

    // The lookup uses a bootstrap list file, as the initramfs carries one.
    let list = p.dir.join("bootstrap");
    std::fs::write(&list, format!("# test network\n{boot}\n")).unwrap();
    let list = list.to_string_lossy().into_owned();
    let out = phase(&[
        "dht",
        "lookup",
        "--bootstrap-file",
        &list,
        "--timeout-ms",
        "5000",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let found: Vec<_> = lines(&out)
        .into_iter()
        .filter_map(|l| l.get("found").cloned())
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["url"], "http://192.0.2.8:8080/");
    assert_eq!(found[0]["version"], 42);
    assert_eq!(found[0]["channel"], "stable");
    assert_eq!(found[0]["node"], node.as_str());

    // Nothing under another channel: exit 1.
    let out = phase(&[
        "dht",
        "lookup",
        "--channel",
        "nightly",
        "--bootstrap",
        &boot,
        "--timeout-ms",
        "5000",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let l = lines(&out);
    assert_eq!(l.len(), 1, "{l:?}");
    assert_eq!(l[0]["summary"]["found"], 0, "{l:?}");

    // Usage errors are exit 2.
    assert_eq!(phase(&["dht", "lookup"]).status.code(), Some(2));
    assert_eq!(phase(&["dht", "frobnicate"]).status.code(), Some(2));
    eprintln!("dht CLI test took {:?}", t0.elapsed());
}
