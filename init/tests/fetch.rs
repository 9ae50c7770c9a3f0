//! The stage-1 release client (`phase fetch`) against three providers, each in a network
//! namespace this test creates (veth pairs to the test's own namespace, addresses in
//! 10.213.0.0/16 that exist only here): one honest, one serving a tampered kernel, one that
//! stalls mid-transfer. The client must end with the honest bytes, report `verify.failed`
//! for the tampered provider and fail over from the staller. Needs root and iproute2.
//! Further providers: one that truncates, one that dribbles, six silent ones, and one on
//! loopback that checks the artifacts are fetched at once after the first.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn top() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn sh(args: &[&str]) {
    let st = Command::new(args[0]).args(&args[1..]).status().unwrap();
    assert!(st.success(), "{args:?}");
}

/// A namespace with a veth pair: host side 10.213.K.1, namespace side 10.213.K.2.
struct Netns {
    name: String,
    host_if: String,
}

impl Netns {
    fn new(k: u8) -> Netns {
        let id = std::process::id() % 10000;
        let name = format!("phase-f{id}-{k}");
        let (host_if, ns_if) = (format!("pf{id}h{k}"), format!("pf{id}n{k}"));
        let _ = Command::new("ip").args(["netns", "del", &name]).status();
        sh(&["ip", "netns", "add", &name]);
        sh(&[
            "ip", "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ]);
        sh(&["ip", "link", "set", &ns_if, "netns", &name]);
        sh(&[
            "ip",
            "addr",
            "add",
            &format!("10.213.{k}.1/30"),
            "dev",
            &host_if,
        ]);
        sh(&["ip", "link", "set", &host_if, "up"]);
        sh(&[
            "ip",
            "-n",
            &name,
            "addr",
            "add",
            &format!("10.213.{k}.2/30"),
            "dev",
            &ns_if,
        ]);
        sh(&["ip", "-n", &name, "link", "set", &ns_if, "up"]);
        sh(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        Netns { name, host_if }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve_in(ns: &Netns, dir: &Path, addr: &str) -> Killed {
    let c = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            env!("CARGO_BIN_EXE_phase"),
            "provider",
            "serve",
        ])
        .arg(dir)
        .args(["--listen", addr])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Killed(c)
}

/// How a hostile provider treats artifacts (metadata it always serves honestly, so that
/// the client picks it for the artifacts).
#[derive(Clone, Copy)]
enum Hostile {
    /// Sends the first half, then holds the connection open and sends nothing more.
    Stall,
    /// Sends a corrupted first half with the full Content-Length, then closes.
    Truncate,
    /// Sends the response, head included, one byte every 2 s (never idle for 10 s).
    Dribble,
}

fn hostile_in(ns: &Netns, dir: PathBuf, addr: &'static str, how: Hostile) {
    let netns = std::fs::File::open(format!("/var/run/netns/{}", ns.name)).unwrap();
    std::thread::spawn(move || {
        rustix::thread::move_into_link_name_space(
            std::os::fd::AsFd::as_fd(&netns),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .unwrap();
        let l = TcpListener::bind(addr).unwrap();
        for s in l.incoming().flatten() {
            let dir = dir.clone();
            std::thread::spawn(move || {
                let mut s = s;
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = req
                    .split(' ')
                    .nth(1)
                    .unwrap_or("/")
                    .trim_start_matches('/')
                    .to_string();
                let Ok(data) = std::fs::read(dir.join(&path)) else {
                    let _ = s.write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                    return;
                };
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    data.len()
                );
                if path.ends_with(".json") {
                    let _ = s.write_all(head.as_bytes());
                    let _ = s.write_all(&data);
                    return;
                }
                let half = &data[..data.len() / 2];
                match how {
                    Hostile::Stall => {
                        let _ = s.write_all(head.as_bytes());
                        let _ = s.write_all(half);
                        std::thread::sleep(Duration::from_secs(120));
                    }
                    Hostile::Truncate => {
                        let bad: Vec<u8> = half.iter().map(|b| b ^ 0x5a).collect();
                        let _ = s.write_all(head.as_bytes());
                        let _ = s.write_all(&bad);
                    }
                    Hostile::Dribble => {
                        for b in head.as_bytes().iter().chain(half) {
                            if s.write_all(&[*b]).is_err() {
                                return;
                            }
                            std::thread::sleep(Duration::from_secs(2));
                        }
                    }
                }
            });
        }
    });
}

fn events(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .filter_map(|l| l.strip_prefix("PHASE-EVENT "))
        .map(|j| serde_json::from_str(j).unwrap())
        .collect()
}

#[test]
fn honest_wins_tampered_is_named_staller_is_left() {
    let release = top().join("out/release");
    let root = top().join("out/trusted-root.json");
    assert!(
        release.join("release.json").exists(),
        "run `make build` first"
    );
    let work = std::env::temp_dir().join(format!("phase-fetch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let tampered = work.join("tampered");
    std::fs::create_dir_all(&tampered).unwrap();
    for e in std::fs::read_dir(&release).unwrap().flatten() {
        std::fs::copy(e.path(), tampered.join(e.file_name())).unwrap();
    }
    let mut k = std::fs::read(tampered.join("vmlinuz")).unwrap();
    let mid = k.len() / 2;
    k[mid] ^= 0xff;
    std::fs::write(tampered.join("vmlinuz"), k).unwrap();
    // The rootfs is checked by its verity tree as it streams: one flipped byte is named too.
    let mut r = std::fs::read(tampered.join("rootfs.squashfs")).unwrap();
    let at = r.len() / 4 * 3 + 5;
    r[at] ^= 0x01;
    std::fs::write(tampered.join("rootfs.squashfs"), r).unwrap();

    let (a, b, c) = (Netns::new(1), Netns::new(2), Netns::new(3));
    let _honest = serve_in(&a, &release, "10.213.1.2:8080");
    let _bad = serve_in(&b, &tampered, "10.213.2.2:8080");
    hostile_in(&c, release.clone(), "10.213.3.2:8080", Hostile::Stall);
    std::thread::sleep(Duration::from_millis(500));

    let out_dir = work.join("got");
    let out = Command::new(env!("CARGO_BIN_EXE_phase"))
        .args(["fetch", "--root"])
        .arg(&root)
        .args([
            "--provider",
            "http://10.213.2.2:8080/",
            "--provider",
            "http://10.213.3.2:8080/",
            "--provider",
            "http://10.213.1.2:8080/",
        ])
        .args(["--idle-secs", "2", "--total-secs", "120", "--out"])
        .arg(&out_dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ev = events(&text);
    let find = |name: &str, f: &dyn Fn(&serde_json::Value) -> bool| {
        ev.iter().any(|e| e["event"] == name && f(e))
    };
    assert_eq!(
        ev.iter().filter(|e| e["event"] == "provider.found").count(),
        3,
        "{text}"
    );
    assert!(
        find("verify.failed", &|e| e["provider"]
            == "http://10.213.2.2:8080/"
            && e["artifact"] == "kernel"
            && e["reason"] == "artifact_hash"),
        "{text}"
    );
    assert!(
        find("verify.failed", &|e| e["provider"]
            == "http://10.213.2.2:8080/"
            && e["artifact"] == "rootfs"
            && e["reason"] == "verity_mismatch"),
        "{text}"
    );
    assert!(
        find("provider.failover", &|e| e["provider"]
            == "http://10.213.3.2:8080/"
            && e["reason"] == "stalled"),
        "{text}"
    );
    assert!(find("artifacts.verified", &|e| e["version"] == 1), "{text}");
    // The bytes on disk are the honest ones.
    for f in [
        "vmlinuz",
        "initramfs.img",
        "rootfs.squashfs",
        "rootfs.verity",
    ] {
        assert_eq!(
            std::fs::read(out_dir.join(f)).unwrap(),
            std::fs::read(release.join(f)).unwrap(),
            "{f}"
        );
    }
    let _ = std::fs::remove_dir_all(&work);
}

/// `phase fetch` from `providers` (in that order) into a fresh directory; returns whether
/// it succeeded, its events and its output (for failure messages).
fn fetch(tag: &str, providers: &[&str], extra: &[&str]) -> (bool, Vec<serde_json::Value>, String) {
    let work = std::env::temp_dir().join(format!("phase-fetch-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_phase"));
    cmd.args(["fetch", "--root"])
        .arg(top().join("out/trusted-root.json"));
    for p in providers {
        cmd.args(["--provider", p]);
    }
    let out = cmd.args(extra).arg("--out").arg(&work).output().unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let release = top().join("out/release");
    let same = [
        "vmlinuz",
        "initramfs.img",
        "rootfs.squashfs",
        "rootfs.verity",
    ]
    .iter()
    .all(|f| std::fs::read(work.join(f)).ok() == std::fs::read(release.join(f)).ok());
    let _ = std::fs::remove_dir_all(&work);
    (out.status.success() && same, events(&text), text)
}

/// No `verify.failed` and no failover may name `honest`.
fn honest_is_never_blamed(ev: &[serde_json::Value], honest: &str, text: &str) {
    let blamed: Vec<_> = ev
        .iter()
        .filter(|e| {
            (e["event"] == "verify.failed" || e["event"] == "provider.failover")
                && e["provider"] == honest
        })
        .collect();
    assert!(blamed.is_empty(), "{blamed:?}\n{text}");
}

/// A provider that sends a short, corrupt body and closes, listed before an honest one (as
/// a huge advertised version would sort it): it is struck off for the artifact, the honest
/// one gets a full solo attempt, and only the truncator is named.
#[test]
fn truncating_provider_is_struck_and_the_honest_one_wins() {
    let release = top().join("out/release");
    assert!(
        release.join("release.json").exists(),
        "run `make build` first"
    );
    let (a, b) = (Netns::new(4), Netns::new(5));
    let _honest = serve_in(&a, &release, "10.213.4.2:8080");
    hostile_in(&b, release.clone(), "10.213.5.2:8080", Hostile::Truncate);
    std::thread::sleep(Duration::from_millis(500));
    let (bad, good) = ("http://10.213.5.2:8080/", "http://10.213.4.2:8080/");
    let (ok, ev, text) = fetch("trunc", &[bad, good], &[]);
    assert!(ok, "{text}");
    honest_is_never_blamed(&ev, good, &text);
    assert!(
        ev.iter().any(|e| e["event"] == "provider.failover"
            && e["provider"] == bad
            && e["reason"] == "short_body"),
        "{text}"
    );
    // Struck off once, it goes last: later artifacts do not wait for it again.
    let struck = ev
        .iter()
        .filter(|e| e["event"] == "provider.failover" && e["provider"] == bad)
        .count();
    assert_eq!(struck, 1, "{text}");
}

/// A provider that sends one byte every 2 s (never idle long enough for the idle timeout)
/// is left after one rate window (3 s here, `--rate-window-secs`), and the honest one
/// delivers. The bound, read from the event's `ms`: one window plus 1 s.
#[test]
fn dribbling_provider_is_left_within_one_rate_window() {
    let release = top().join("out/release");
    assert!(
        release.join("release.json").exists(),
        "run `make build` first"
    );
    let (a, b) = (Netns::new(6), Netns::new(7));
    let _honest = serve_in(&a, &release, "10.213.6.2:8080");
    hostile_in(&b, release.clone(), "10.213.7.2:8080", Hostile::Dribble);
    std::thread::sleep(Duration::from_millis(500));
    let (bad, good) = ("http://10.213.7.2:8080/", "http://10.213.6.2:8080/");
    let (ok, ev, text) = fetch("dribble", &[bad, good], &["--rate-window-secs", "3"]);
    assert!(ok, "{text}");
    honest_is_never_blamed(&ev, good, &text);
    let left: Vec<_> = ev
        .iter()
        .filter(|e| e["event"] == "provider.failover" && e["provider"] == bad)
        .collect();
    assert_eq!(left.len(), 1, "{text}");
    assert_eq!(left[0]["reason"], "too_slow", "{text}");
    let ms = left[0]["ms"].as_u64().unwrap();
    assert!(
        ms <= 3_000 + 1_000,
        "the dribbler held the fetch {ms} ms\n{text}"
    );
}

/// Six providers that accept and never answer, listed before an honest one (as a DHT
/// flood of high advertised versions would sort them), with one 30 s bound on all the
/// metadata (`--metadata-secs`): the providers are asked at once, so each silent one
/// costs its own idle bound (10 s per request) and not the sum, and the honest release is
/// chosen and fetched.
#[test]
fn silent_providers_first_cost_one_bound_not_one_each() {
    let release = top().join("out/release");
    assert!(
        release.join("release.json").exists(),
        "run `make build` first"
    );
    let a = Netns::new(8);
    let _honest = serve_in(&a, &release, "10.213.8.2:8080");
    let mut held = Vec::new();
    let mut urls = Vec::new();
    for _ in 0..6 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        urls.push(format!("http://{}/", l.local_addr().unwrap()));
        held.push(std::thread::spawn(move || {
            let mut open = Vec::new();
            for s in l.incoming().flatten() {
                open.push(s); // accept, read nothing, say nothing
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(500));
    let good = "http://10.213.8.2:8080/";
    let mut providers: Vec<&str> = urls.iter().map(String::as_str).collect();
    providers.push(good);
    let (ok, ev, text) = fetch("silent", &providers, &["--metadata-secs", "30"]);
    assert!(ok, "{text}");
    assert!(
        ev.iter()
            .any(|e| e["event"] == "provider.found" && e["url"] == good),
        "{text}"
    );
}

/// What the gated provider of [`artifacts_download_at_once_after_the_first`] saw.
#[derive(Default)]
struct Gate {
    /// Artifact requests open now, and the most ever open at once.
    open: usize,
    most: usize,
    /// Artifact requests in arrival order, with how many were open when each arrived.
    order: Vec<(String, usize)>,
}

/// One provider on loopback that serves metadata at once but holds every artifact response
/// except the smallest (`rootfs.verity`) until three artifact requests are open together
/// (or 5 s passed, so a client that fetches one at a time still ends): the client must ask
/// for the smallest artifact first and alone, then for the other three at once.
#[test]
fn artifacts_download_at_once_after_the_first() {
    use std::sync::{Arc, Condvar, Mutex};
    let release = top().join("out/release");
    assert!(
        release.join("release.json").exists(),
        "run `make build` first"
    );
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", l.local_addr().unwrap());
    let gate = Arc::new((Mutex::new(Gate::default()), Condvar::new()));
    let seen = gate.clone();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let (release, gate) = (release.clone(), gate.clone());
            std::thread::spawn(move || {
                let mut s = s;
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = req.split(' ').nth(1).unwrap_or("/").trim_start_matches('/');
                let Ok(data) = std::fs::read(release.join(path)) else {
                    let _ = s.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
                    return;
                };
                let artifact = !path.ends_with(".json");
                if artifact {
                    let (m, cv) = &*gate;
                    let mut g = m.lock().unwrap();
                    g.open += 1;
                    g.most = g.most.max(g.open);
                    let open = g.open;
                    g.order.push((path.to_string(), open));
                    cv.notify_all();
                    if path != "rootfs.verity" {
                        let _ = cv
                            .wait_timeout_while(g, Duration::from_secs(5), |g| g.most < 3)
                            .unwrap();
                    }
                }
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    data.len()
                );
                let _ = s.write_all(head.as_bytes());
                let _ = s.write_all(&data);
                if artifact {
                    gate.0.lock().unwrap().open -= 1;
                }
            });
        }
    });
    let (ok, _ev, text) = fetch("gate", &[&url], &[]);
    assert!(ok, "{text}");
    let g = seen.0.lock().unwrap();
    assert_eq!(
        g.order.first(),
        Some(&("rootfs.verity".to_string(), 1)),
        "{:?}",
        g.order
    );
    assert_eq!(g.order.len(), 4, "{:?}", g.order);
    assert_eq!(g.most, 3, "{:?}", g.order);
}
