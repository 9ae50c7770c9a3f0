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
    let dir = std::env::temp_dir().join(format!("phase-provider-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(dir.join("blob"), &data).unwrap();
    std::fs::write(dir.join("sub/x.json"), b"{}").unwrap();
    std::fs::write(dir.join("../phase-provider-secret"), b"secret").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_phase"))
        .args(["provider", "serve"])
        .arg(&dir)
        .args(["--listen", "127.0.0.1:0"])
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
