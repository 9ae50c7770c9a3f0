//! `phase status [ADDR] [--json | --metrics]`: read a node's status endpoint and print it
//! for a person (or the raw JSON / Prometheus text). One request, bounded by [`TIMEOUT`].
//! Dispatched from `cli::COMMANDS`.

use super::report::{self, Report};
use crate::cli::{parsed, Args, Parsed};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

pub const USAGE: &str = "\
Usage: phase status [ADDR] [--json | --metrics]

Read a node's status endpoint and print it for a person: release, kernel, mode, each
supervised task's state, restarts and last error, job counts by outcome, peers, the boot
timeline (docs/status.md). ADDR is HOST:PORT, PORT alone (127.0.0.1:PORT) or HOST alone
(HOST:8090); default 127.0.0.1:8090. Exit 1 if the node does not answer within 5 s.

Options:
    --json       print /status (JSON) as served
    --metrics    print /metrics (Prometheus text)
    -h, --help   print this help";

/// How long connecting and reading may take.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer read.
const MAX_BODY: u64 = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("{addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("{addr}: not an HTTP answer")]
    NotHttp { addr: String },
    #[error("{addr}{path}: HTTP status {status}")]
    Status {
        addr: String,
        path: String,
        status: u16,
    },
    #[error("{addr}/status: {source}")]
    BadReport {
        addr: String,
        source: serde_json::Error,
    },
}

impl StatusError {
    pub fn reason(&self) -> &'static str {
        match self {
            StatusError::Connect { .. } => "connect_failed",
            StatusError::NotHttp { .. } => "not_http",
            StatusError::Status { .. } => "http_status",
            StatusError::BadReport { .. } => "bad_report",
        }
    }
}

/// `ADDR`: `HOST:PORT`, a bare port on loopback, or a host on the status port.
fn target(arg: Option<&str>) -> String {
    match arg {
        None => format!("127.0.0.1:{}", super::STATUS_PORT),
        Some(p) if p.bytes().all(|b| b.is_ascii_digit()) => format!("127.0.0.1:{p}"),
        Some(h) if !h.contains(':') => format!("{h}:{}", super::STATUS_PORT),
        Some(a) => a.to_string(),
    }
}

/// GET `path` from `addr`; the body of a 200 answer.
pub fn get(addr: &str, path: &str) -> Result<String, StatusError> {
    let connect = |source| StatusError::Connect {
        addr: addr.to_string(),
        source,
    };
    let to: SocketAddr = addr
        .to_socket_addrs()
        .map_err(connect)?
        .next()
        .ok_or_else(|| connect(std::io::ErrorKind::NotFound.into()))?;
    let mut s = TcpStream::connect_timeout(&to, TIMEOUT).map_err(connect)?;
    s.set_read_timeout(Some(TIMEOUT)).map_err(connect)?;
    s.set_write_timeout(Some(TIMEOUT)).map_err(connect)?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(connect)?;
    let mut raw = Vec::new();
    s.take(MAX_BODY).read_to_end(&mut raw).map_err(connect)?;
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut resp = httparse::Response::new(&mut headers);
    let not_http = || StatusError::NotHttp {
        addr: addr.to_string(),
    };
    let body_at = match resp.parse(&raw) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return Err(not_http()),
    };
    match resp.code {
        Some(200) => Ok(String::from_utf8_lossy(&raw[body_at..]).into_owned()),
        Some(status) => Err(StatusError::Status {
            addr: addr.to_string(),
            path: path.to_string(),
            status,
        }),
        None => Err(not_http()),
    }
}

/// The node's report.
pub fn fetch(addr: &str) -> Result<Report, StatusError> {
    let body = get(addr, "/status")?;
    serde_json::from_str(&body).map_err(|source| StatusError::BadReport {
        addr: addr.to_string(),
        source,
    })
}

/// What to print: the summary, or one path as served.
struct Options {
    addr: Option<String>,
    raw: Option<&'static str>,
}

fn parse(args: Args) -> Result<Parsed<Options>, lexopt::Error> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let mut o = Options {
        addr: None,
        raw: None,
    };
    while let Some(arg) = p.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Parsed::Help),
            Long("json") if o.raw.is_none() => o.raw = Some("/status"),
            Long("metrics") if o.raw.is_none() => o.raw = Some("/metrics"),
            Value(v) if o.addr.is_none() => o.addr = Some(v.string()?),
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(Parsed::Run(o))
}

pub fn run(args: Args) -> i32 {
    parsed("status", USAGE, parse(args), |o| {
        let addr = target(o.addr.as_deref());
        let result = match o.raw {
            Some(path) => get(&addr, path),
            None => fetch(&addr).map(|r| report::for_person(&r, &addr)),
        };
        match result {
            Ok(text) => {
                print!("{text}");
                0
            }
            Err(e) => {
                eprintln!("phase status: {e} ({})", e.reason());
                1
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let table = [
            (None, "127.0.0.1:8090"),
            (Some("18090"), "127.0.0.1:18090"),
            (Some("10.0.2.15:8090"), "10.0.2.15:8090"),
            (Some("10.0.2.15"), "10.0.2.15:8090"),
            (Some("node.lan:9000"), "node.lan:9000"),
        ];
        for (arg, want) in table {
            assert_eq!(target(arg), want);
        }
    }
}
