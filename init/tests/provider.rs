//! `phase provider serve DIR` on loopback: GET, HEAD, ranges (single, open-ended, suffix,
//! unsatisfiable), ETag = SHA-256, paths confined to DIR, bounded request heads.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Server {
    child: Child,
    addr: String,
    dir: std::path::PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_file(self.dir.join("../phase-provider-secret"));
    }
}

fn server(name: &str) -> Server {
    server_with(name, 0, &[])
}

/// A provider of a directory with `blob` (100 000 bytes), `sub/x.json` and, if `big_mib`
/// is not 0, `big` of that many MiB; `args` go to `phase provider serve`.
fn server_with(name: &str, big_mib: usize, args: &[&str]) -> Server {
    let dir = std::env::temp_dir().join(format!("phase-provider-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(dir.join("blob"), &data).unwrap();
    std::fs::write(dir.join("sub/x.json"), b"{}").unwrap();
    std::fs::write(dir.join("../phase-provider-secret"), b"secret").unwrap();
    if big_mib > 0 {
        std::fs::write(dir.join("big"), vec![7u8; big_mib << 20]).unwrap();
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_phase"))
        .args(["provider", "serve"])
        .arg(&dir)
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .split("http://")
        .nth(1)
        .unwrap()
        .trim()
        .trim_end_matches('/')
        .to_string();
    Server { child, addr, dir }
}

/// One request; returns (status, headers lowercased, body).
fn req(addr: &str, raw: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(raw.as_bytes()).unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let end = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&all[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, all[end + 4..].to_vec())
}

fn header<'a>(h: &'a [(String, String)], k: &str) -> Option<&'a str> {
    h.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

fn get(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n")
}

#[test]
fn serves_files_ranges_and_etags() {
    let s = server("basic");
    let data = std::fs::read(s.dir.join("blob")).unwrap();
    let (st, h, body) = req(&s.addr, &get("/blob", ""));
    assert_eq!(st, 200);
    assert_eq!(body, data);
    assert_eq!(header(&h, "content-length"), Some("100000"));
    assert_eq!(header(&h, "accept-ranges"), Some("bytes"));
    // ETag is the SHA-256 of the file.
    let sha = Command::new("sha256sum")
        .arg(s.dir.join("blob"))
        .output()
        .unwrap();
    let sha = String::from_utf8_lossy(&sha.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    assert_eq!(header(&h, "etag"), Some(format!("\"{sha}\"").as_str()));
    let (st, _, _) = req(
        &s.addr,
        &get("/blob", &format!("If-None-Match: \"{sha}\"\r\n")),
    );
    assert_eq!(st, 304);

    let (st, h, body) = req(&s.addr, "HEAD /blob HTTP/1.1\r\n\r\n");
    assert_eq!((st, body.len()), (200, 0));
    assert_eq!(header(&h, "content-length"), Some("100000"));

    for (range, start, end) in [
        ("bytes=10-19", 10, 19),
        ("bytes=99990-", 99990, 99999),
        ("bytes=-5", 99995, 99999),
        ("bytes=99000-200000", 99000, 99999),
    ] {
        let (st, h, body) = req(&s.addr, &get("/blob", &format!("Range: {range}\r\n")));
        assert_eq!(st, 206, "{range}");
        assert_eq!(body, &data[start..=end], "{range}");
        assert_eq!(
            header(&h, "content-range"),
            Some(format!("bytes {start}-{end}/100000").as_str())
        );
    }
    let (st, h, body) = req(&s.addr, &get("/blob", "Range: bytes=100000-\r\n"));
    assert_eq!((st, body.len()), (416, 0));
    assert_eq!(header(&h, "content-range"), Some("bytes */100000"));
    // Several ranges: the whole file (allowed by RFC 9110), never an error.
    let (st, _, body) = req(&s.addr, &get("/blob", "Range: bytes=0-1,5-6\r\n"));
    assert_eq!((st, body.len()), (200, 100000));
}

#[test]
fn refuses_what_it_should() {
    let s = server("refuse");
    assert_eq!(req(&s.addr, &get("/sub/x.json", "")).0, 200);
    for escape in [
        "/../phase-provider-secret",
        "/sub/../../phase-provider-secret",
        "/%2e%2e/phase-provider-secret",
        "/sub%2f..%2f..%2fphase-provider-secret",
    ] {
        let (st, _, body) = req(&s.addr, &get(escape, ""));
        assert_eq!(st, 404, "{escape}");
        assert!(!String::from_utf8_lossy(&body).contains("secret"));
    }
    assert_eq!(req(&s.addr, &get("/nope", "")).0, 404);
    assert_eq!(req(&s.addr, &get("/sub", "")).0, 404);
    assert_eq!(req(&s.addr, "POST /blob HTTP/1.1\r\n\r\n").0, 405);
    assert_eq!(req(&s.addr, "GARBAGE\r\n\r\n").0, 400);
    let huge = format!("GET /blob HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(10_000));
    assert_eq!(req(&s.addr, &huge).0, 431);
}

/// A TCP connection to `dst` from the loopback address `src` (each its own "client"),
/// with a small receive buffer so that reading slowly is slow at once.
fn connect_from(src: std::net::Ipv4Addr, dst: &str) -> TcpStream {
    use rustix::net::{bind, connect, socket, sockopt, AddressFamily, SocketType};
    let fd = socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
    sockopt::set_socket_recv_buffer_size(&fd, 4096).unwrap();
    bind(&fd, &std::net::SocketAddrV4::new(src, 0)).unwrap();
    let dst: std::net::SocketAddrV4 = dst.parse().unwrap();
    connect(&fd, &dst).unwrap();
    TcpStream::from(fd)
}

/// What a slow reader saw: its response status, then how many body bytes it took before
/// the provider closed.
enum Seen {
    Status(u16),
    Closed(usize),
}

/// A reader like `curl --limit-rate 10k`: asks for `big` from `src`, reports the status,
/// then takes 1 KiB every 100 ms until the provider closes, and reports that.
fn slow_reader(src: std::net::Ipv4Addr, dst: &str, tx: std::sync::mpsc::Sender<Seen>) {
    let mut s = connect_from(src, dst);
    s.write_all(get("/big", "").as_bytes()).unwrap();
    std::thread::spawn(move || {
        s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        let (mut buf, mut got, mut head) = ([0u8; 1024], 0, Vec::new());
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) if head.len() < 12 => {
                    head.extend_from_slice(&buf[..n]);
                    if head.len() >= 12 {
                        let st = String::from_utf8_lossy(&head[9..12]).parse().unwrap_or(0);
                        let _ = tx.send(Seen::Status(st));
                    }
                }
                Ok(n) => got += n,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = tx.send(Seen::Closed(got));
    });
}

/// A whole request from `src`: (status, body length).
fn fetch_from(src: std::net::Ipv4Addr, dst: &str, path: &str) -> (u16, usize) {
    let mut s = connect_from(src, dst);
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(get(path, "").as_bytes()).unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let end = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let status = String::from_utf8_lossy(&all[9..12]).parse().unwrap();
    (status, all.len() - end - 4)
}

fn statuses(rx: &std::sync::mpsc::Receiver<Seen>, n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    while out.len() < n {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Seen::Status(st)) => out.push(st),
            Ok(Seen::Closed(_)) => {}
            Err(e) => panic!("{e}: {} of {n} answered", out.len()),
        }
    }
    out.sort();
    out
}

/// One misbehaving peer opens 64 slow transfers (the issue's `curl --limit-rate 10k`):
/// it gets its per-client share (8) and an immediate 503 for the rest; a 65th client and
/// a metadata request from other addresses are served in full.
#[test]
fn one_slow_peer_cannot_take_every_slot() {
    let s = server_with("fair1", 32, &[]);
    let peer = std::net::Ipv4Addr::new(127, 0, 0, 2);
    let (tx, rx) = std::sync::mpsc::channel();
    for _ in 0..64 {
        slow_reader(peer, &s.addr, tx.clone());
    }
    let (st, len) = fetch_from(std::net::Ipv4Addr::new(127, 0, 0, 3), &s.addr, "/big");
    assert_eq!((st, len), (200, 32 << 20));
    let (st, len) = fetch_from(
        std::net::Ipv4Addr::new(127, 0, 0, 4),
        &s.addr,
        "/sub/x.json",
    );
    assert_eq!((st, len), (200, 2));
    let mut want = vec![200u16; 8];
    want.extend([503; 56]);
    assert_eq!(statuses(&rx, 64), want);
}

/// 64 slow readers from 64 addresses take every transfer slot: a metadata request is
/// still answered at once (the reserved share), and a 65th transfer is served once the
/// slow readers fall below the minimum send rate (here over 2 s windows) and are dropped.
#[test]
fn slow_readers_are_dropped_and_metadata_keeps_its_share() {
    let s = server_with("fair2", 32, &["--send-window-secs", "2"]);
    let (tx, rx) = std::sync::mpsc::channel();
    for i in 1..=64 {
        slow_reader(std::net::Ipv4Addr::new(127, 0, 1, i), &s.addr, tx.clone());
    }
    assert_eq!(statuses(&rx, 64), vec![200u16; 64]);
    let (st, len) = fetch_from(
        std::net::Ipv4Addr::new(127, 0, 0, 5),
        &s.addr,
        "/sub/x.json",
    );
    assert_eq!((st, len), (200, 2), "metadata while every slot is taken");
    let (st, len) = fetch_from(std::net::Ipv4Addr::new(127, 0, 0, 6), &s.addr, "/big");
    assert_eq!((st, len), (200, 32 << 20), "the 65th transfer");
    // Every slow reader was dropped long before it could have read 32 MiB.
    let mut closed = 0;
    while closed < 64 {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Seen::Closed(got)) => {
                assert!(got < 32 << 20);
                closed += 1;
            }
            Ok(Seen::Status(_)) => {}
            Err(e) => panic!("{e}: {closed} of 64 slow readers dropped"),
        }
    }
}
