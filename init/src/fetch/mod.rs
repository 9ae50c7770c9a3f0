//! Verified fetch: release metadata and artifacts from HTTP providers, every byte checked
//! as it arrives (size and SHA-256), resumed with Range after a stall or error, failed over
//! to the next provider, and bounded in time. Nothing fetched is used unless it verified.
//!
//! Failover rule: a provider that errors or stalls is left and the next one continues from
//! the same offset (the running hash carries over). If the finished artifact does not
//! match, the one provider that sent all of it is struck off; if several sent parts, each
//! is then tried alone from the start. Either way `verify.failed` names the provider.

pub mod cli;
pub mod release;
pub mod report;
pub mod response;
pub mod url;

use phase_release::doc::Artifact;
use phase_release::stream::ArtifactVerifier;
use phase_release::verify::TrustError;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
pub use url::Url;

/// Time bounds for one fetch.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub connect: Duration,
    /// No byte for this long: the provider is stalled.
    pub idle: Duration,
    /// The whole operation (all providers, all retries).
    pub total: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connect: Duration::from_secs(5),
            idle: Duration::from_secs(10),
            total: Duration::from_secs(600),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url}: connect: {msg}")]
    Connect { url: String, msg: String },
    #[error("{url}: HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: no data for {secs} s")]
    Stalled { url: String, secs: u64 },
    #[error("{url}: {msg}")]
    Io { url: String, msg: String },
    #[error("{url}: {msg}")]
    Protocol { url: String, msg: String },
    #[error("{url}: {err}")]
    Verify { url: String, err: TrustError },
    #[error("deadline passed")]
    Deadline,
    #[error("no provider delivered {0}")]
    Exhausted(String),
}

impl FetchError {
    /// Stable snake_case reason for events.
    pub fn reason(&self) -> &'static str {
        match self {
            FetchError::Connect { .. } => "connect_failed",
            FetchError::Status { .. } => "http_status",
            FetchError::Stalled { .. } => "stalled",
            FetchError::Io { .. } => "io_error",
            FetchError::Protocol { .. } => "protocol_error",
            FetchError::Verify { err, .. } => err.reason(),
            FetchError::Deadline => "deadline",
            FetchError::Exhausted(_) => "all_providers_failed",
        }
    }
}

/// `GET base/file` from `offset`, feeding body bytes to `sink` until `want` bytes arrived
/// or the body ends. Servers that ignore Range (200 with the whole file) are handled by
/// skipping what we already have. Returns the bytes delivered to `sink`.
pub async fn get(
    url: &Url,
    file: &str,
    offset: u64,
    want: Option<u64>,
    limits: &Limits,
    deadline: Instant,
    sink: &mut (dyn FnMut(&[u8]) -> Result<(), TrustError> + Send),
) -> Result<u64, FetchError> {
    let u = url.to_string() + file;
    let io = |e: std::io::Error| FetchError::Io {
        url: u.clone(),
        msg: e.to_string(),
    };
    let connect = tokio::time::timeout(limits.connect, TcpStream::connect(url.authority()));
    let mut s = match tokio::time::timeout_at(deadline, connect).await {
        Err(_) => return Err(FetchError::Deadline),
        Ok(Err(_)) => {
            return Err(FetchError::Connect {
                url: u,
                msg: format!("no answer within {:?}", limits.connect),
            })
        }
        Ok(Ok(Err(e))) => {
            return Err(FetchError::Connect {
                url: u,
                msg: e.to_string(),
            })
        }
        Ok(Ok(Ok(s))) => s,
    };
    let range = if offset > 0 {
        format!("Range: bytes={offset}-\r\n")
    } else {
        String::new()
    };
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: phase/{}\r\n{range}Connection: close\r\n\r\n",
        url.target(file),
        url.authority(),
        env!("CARGO_PKG_VERSION")
    );
    s.write_all(req.as_bytes()).await.map_err(io)?;
    let mut buf = vec![0u8; 1024 * 1024];
    let mut head = Vec::new();
    let mut body_start;
    loop {
        let n = read_some(&mut s, &mut buf, limits, deadline, &u).await?;
        if n == 0 {
            return Err(FetchError::Protocol {
                url: u,
                msg: "connection closed before the response head".into(),
            });
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            body_start = head.split_off(i + 4);
            head.truncate(i);
            break;
        }
        if head.len() > 16 * 1024 {
            return Err(FetchError::Protocol {
                url: u,
                msg: "response head too large".into(),
            });
        }
    }
    let h = response::parse(&head).ok_or_else(|| FetchError::Protocol {
        url: u.clone(),
        msg: "malformed response".into(),
    })?;
    if h.chunked {
        return Err(FetchError::Protocol {
            url: u,
            msg: "chunked responses are not supported".into(),
        });
    }
    let mut skip = match (h.status, h.range_start) {
        (206, Some(start)) if start == offset => 0,
        (206, _) => {
            return Err(FetchError::Protocol {
                url: u,
                msg: "Content-Range does not match the request".into(),
            })
        }
        (200, _) => offset, // Range ignored: drop what we already have
        (status, _) => return Err(FetchError::Status { url: u, status }),
    };
    let body_len = h.content_length;
    let (mut got, mut delivered) = (0u64, 0u64);
    let mut feed =
        |chunk: &[u8], skip: &mut u64, delivered: &mut u64| -> Result<bool, FetchError> {
            let from = (*skip).min(chunk.len() as u64) as usize;
            *skip -= from as u64;
            let mut rest = &chunk[from..];
            if let Some(w) = want {
                let left = w.saturating_sub(*delivered) as usize;
                rest = &rest[..rest.len().min(left)];
            }
            if !rest.is_empty() {
                sink(rest).map_err(|err| FetchError::Verify {
                    url: u.clone(),
                    err,
                })?;
                *delivered += rest.len() as u64;
            }
            Ok(want.is_some_and(|w| *delivered >= w))
        };
    got += body_start.len() as u64;
    if feed(&body_start, &mut skip, &mut delivered)? {
        return Ok(delivered);
    }
    body_start.clear();
    loop {
        if body_len.is_some_and(|l| got >= l) {
            break;
        }
        let n = read_some(&mut s, &mut buf, limits, deadline, &u).await?;
        if n == 0 {
            break;
        }
        got += n as u64;
        if feed(&buf[..n], &mut skip, &mut delivered)? {
            break;
        }
    }
    Ok(delivered)
}

async fn read_some(
    s: &mut TcpStream,
    buf: &mut [u8],
    limits: &Limits,
    deadline: Instant,
    u: &str,
) -> Result<usize, FetchError> {
    match tokio::time::timeout_at(deadline, tokio::time::timeout(limits.idle, s.read(buf))).await {
        Err(_) => Err(FetchError::Deadline),
        Ok(Err(_)) => Err(FetchError::Stalled {
            url: u.to_string(),
            secs: limits.idle.as_secs(),
        }),
        Ok(Ok(r)) => r.map_err(|e| FetchError::Io {
            url: u.to_string(),
            msg: e.to_string(),
        }),
    }
}

/// Fetch a small file (metadata) whole, at most `cap` bytes.
pub async fn small(
    url: &Url,
    file: &str,
    cap: usize,
    limits: &Limits,
) -> Result<Vec<u8>, FetchError> {
    let deadline = Instant::now() + limits.total.min(limits.idle * 3);
    let mut out = Vec::new();
    let mut sink = |c: &[u8]| {
        if out.len() + c.len() > cap {
            return Err(TrustError::Oversized {
                size: out.len() + c.len(),
                max: cap,
            });
        }
        out.extend_from_slice(c);
        Ok(())
    };
    get(url, file, 0, None, limits, deadline, &mut sink).await?;
    Ok(out)
}

/// What happened on the way to a verified artifact, for events and logs.
#[derive(Debug, Default)]
pub struct Report {
    /// Providers that failed, with the error.
    pub failures: Vec<(String, FetchError)>,
    /// The provider(s) that delivered the verified bytes.
    pub from: Vec<String>,
}

/// Download `artifact` into `out`, verified, from `providers` in order.
pub async fn artifact(
    name: &str,
    artifact: &Artifact,
    providers: &[Url],
    out: &mut std::fs::File,
    limits: &Limits,
    progress: &mut (dyn FnMut(u64, u64) + Send),
) -> Result<Report, (Report, FetchError)> {
    let deadline = Instant::now() + limits.total;
    let mut report = Report::default();
    let mut candidates: Vec<Url> = providers.to_vec();
    let mut alone = false;
    while !candidates.is_empty() {
        if Instant::now() >= deadline {
            return Err((report, FetchError::Deadline));
        }
        let mut verifier = match ArtifactVerifier::new(name, artifact) {
            Ok(v) => v,
            Err(err) => {
                return Err((
                    report,
                    FetchError::Verify {
                        url: String::new(),
                        err,
                    },
                ))
            }
        };
        if out.set_len(0).is_err() || std::io::Seek::rewind(out).is_err() {
            return Err((
                report,
                FetchError::Io {
                    url: String::new(),
                    msg: "cannot reset output".into(),
                },
            ));
        }
        let mut contributors: Vec<usize> = Vec::new();
        let mut offset = 0u64;
        for (i, p) in candidates.iter().enumerate() {
            if alone && offset > 0 {
                break;
            }
            let before = offset;
            let mut written = 0u64;
            let mut write_failed = None;
            let res = {
                // Each chunk is hashed, then written at once (the file is in RAM or on
                // local disk); the hash state carries over to the next provider.
                let mut sink = |c: &[u8]| -> Result<(), TrustError> {
                    verifier.update(c)?;
                    if let Err(e) = std::io::Write::write_all(out, c) {
                        write_failed = Some(e.to_string());
                    }
                    written += c.len() as u64;
                    progress(before + written, artifact.size);
                    Ok(())
                };
                get(
                    p,
                    &artifact.path,
                    offset,
                    Some(artifact.size - offset),
                    limits,
                    deadline,
                    &mut sink,
                )
                .await
            };
            if let Some(msg) = write_failed {
                return Err((
                    report,
                    FetchError::Io {
                        url: p.to_string(),
                        msg,
                    },
                ));
            }
            offset += written;
            if offset > before {
                contributors.push(i);
            }
            match res {
                Ok(_) if offset == artifact.size => break,
                Ok(_) => report.failures.push((
                    p.to_string(),
                    FetchError::Protocol {
                        url: p.to_string(),
                        msg: format!("body ended at {offset} of {} bytes", artifact.size),
                    },
                )),
                Err(FetchError::Deadline) => return Err((report, FetchError::Deadline)),
                Err(e) => report.failures.push((p.to_string(), e)),
            }
        }
        if offset == artifact.size {
            match verifier.finish() {
                Ok(()) => {
                    report.from = contributors
                        .iter()
                        .map(|&i| candidates[i].to_string())
                        .collect();
                    let _ = std::io::Write::flush(out);
                    return Ok(report);
                }
                Err(err) => {
                    for &i in &contributors {
                        report.failures.push((
                            candidates[i].to_string(),
                            FetchError::Verify {
                                url: candidates[i].to_string(),
                                err: err.clone(),
                            },
                        ));
                    }
                    if contributors.len() == 1 {
                        candidates.remove(contributors[0]);
                    } else {
                        alone = true;
                    }
                    continue;
                }
            }
        }
        // Every candidate failed before the end: drop the ones that sent nothing.
        let keep: Vec<Url> = contributors
            .iter()
            .map(|&i| candidates[i].clone())
            .collect();
        if keep.is_empty() || keep.len() == candidates.len() && alone {
            break;
        }
        candidates = keep;
        alone = true;
    }
    Err((report, FetchError::Exhausted(name.to_string())))
}
