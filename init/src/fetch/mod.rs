//! Verified fetch: release metadata and artifacts from HTTP providers, every byte checked
//! as it arrives (size and SHA-256, on a verify thread fed by the connection: [`pipeline`]),
//! resumed with Range after a stall or error, failed over to the next provider, and bounded
//! in time. Nothing fetched is used unless it verified.
//!
//! Each provider must keep up a minimum rate over each window ([`pace`]), not only send a
//! byte before the idle timeout, so a peer that dribbles costs one window at most.
//!
//! Failover rule ([`artifact`]): in the first pass each provider continues where the last
//! one stopped (the running hash carries over) when it errors, stalls or is too slow. A
//! body that ends short, or a finished artifact that does not match, makes the bytes
//! suspect: the provider that sent a short body is struck off for the artifact, and one
//! that sent all of a mismatching artifact is struck off and named in `verify.failed`.
//! Then every provider still standing gets a full, solo attempt from byte 0, so that a
//! provider is only ever named for bytes it sent alone: an honest one is never blamed.

pub mod backoff;
pub mod cli;
pub mod pace;
pub mod pipeline;
pub mod release;
pub mod report;
pub mod response;
pub mod url;

use pace::Pace;
use phase_release::doc::Artifact;
use phase_release::verify::TrustError;
use pipeline::{Check, Pipeline, Sink};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
pub use url::Url;

/// Largest response head read from a provider.
const MAX_HEAD: usize = 16 * 1024;

/// Time and rate bounds for one fetch.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub connect: Duration,
    /// No byte for this long: the provider is stalled.
    pub idle: Duration,
    /// At least this many bytes per second over each `rate_window`, from the request on.
    pub min_rate: u64,
    pub rate_window: Duration,
    /// The whole operation (all providers, all retries).
    pub total: Duration,
    /// One deadline for every metadata file ([`small`]) fetched with these limits: stage 1
    /// bounds discovery plus metadata as a whole with it, however many providers answer.
    pub metadata_until: Option<Instant>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connect: Duration::from_secs(5),
            idle: Duration::from_secs(10),
            min_rate: 32 * 1024,
            rate_window: Duration::from_secs(10),
            total: Duration::from_secs(600),
            metadata_until: None,
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
    #[error("{url}: {bytes} bytes in {secs} s, below the minimum of {min_bytes}")]
    TooSlow {
        url: String,
        bytes: u64,
        min_bytes: u64,
        secs: u64,
    },
    #[error("{url}: body ended at {got} of {want} bytes")]
    ShortBody { url: String, got: u64, want: u64 },
    #[error("{url}: {msg}")]
    Io { url: String, msg: String },
    /// Writing what arrived failed (RAM or local disk): no provider is to blame.
    #[error("{artifact}: {msg}")]
    Output { artifact: String, msg: String },
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
            FetchError::TooSlow { .. } => "too_slow",
            FetchError::ShortBody { .. } => "short_body",
            FetchError::Io { .. } => "io_error",
            FetchError::Output { .. } => "output_failed",
            FetchError::Protocol { .. } => "protocol_error",
            FetchError::Verify { err, .. } => err.reason(),
            FetchError::Deadline => "deadline",
            FetchError::Exhausted(_) => "all_providers_failed",
        }
    }
}

/// One connection to a provider, judged for idleness and rate on every read.
struct Conn<'a> {
    s: TcpStream,
    pace: Pace,
    limits: &'a Limits,
    deadline: Instant,
    url: &'a str,
}

impl Conn<'_> {
    async fn read_some(&mut self, buf: &mut [u8]) -> Result<usize, FetchError> {
        let idle_until = Instant::now() + self.limits.idle;
        loop {
            let until = idle_until.min(self.pace.window_end()).min(self.deadline);
            let read = tokio::time::timeout_at(until, self.s.read(buf)).await;
            let now = Instant::now();
            if let Ok(r) = read {
                let n = r.map_err(|e| FetchError::Io {
                    url: self.url.to_string(),
                    msg: e.to_string(),
                })?;
                self.pace.add(n);
                self.judge(now)?;
                return Ok(n);
            }
            if now >= self.deadline {
                return Err(FetchError::Deadline);
            }
            self.judge(now)?;
            if now >= idle_until {
                return Err(FetchError::Stalled {
                    url: self.url.to_string(),
                    secs: self.limits.idle.as_secs(),
                });
            }
        }
    }

    /// A window below the minimum rate is `TooSlow`; one with no byte at all is a stall.
    fn judge(&mut self, now: Instant) -> Result<(), FetchError> {
        let secs = self.limits.rate_window.as_secs();
        let url = self.url.to_string();
        self.pace.judge(now).map_err(|e| match e.bytes {
            0 => FetchError::Stalled { url, secs },
            bytes => FetchError::TooSlow {
                url,
                bytes,
                min_bytes: e.min_bytes,
                secs,
            },
        })
    }
}

/// `GET base/file` from `offset`, handing body bytes to `sink` until `want` bytes arrived.
/// A body that ends before `want` bytes (or before its Content-Length) is `ShortBody`.
/// Servers that ignore Range (200 with the whole file) are handled by skipping what we
/// already have. Returns the bytes delivered to `sink`.
pub async fn get(
    url: &Url,
    file: &str,
    offset: u64,
    want: Option<u64>,
    limits: &Limits,
    deadline: Instant,
    sink: &mut impl Sink,
) -> Result<u64, FetchError> {
    let u = url.to_string() + file;
    let connect = tokio::time::timeout(limits.connect, TcpStream::connect(url.authority()));
    let s = match tokio::time::timeout_at(deadline, connect).await {
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
    let req = url
        .request(file, offset)
        .map_err(|e| FetchError::Protocol {
            url: u.clone(),
            msg: e.to_string(),
        })?;
    let pace = Pace::new(limits.min_rate, limits.rate_window, Instant::now());
    let mut c = Conn {
        s,
        pace,
        limits,
        deadline,
        url: &u,
    };
    c.s.write_all(req.as_bytes())
        .await
        .map_err(|e| FetchError::Io {
            url: u.clone(),
            msg: e.to_string(),
        })?;
    let mut buf = vec![0u8; MAX_HEAD];
    let mut head = Vec::new();
    let (h, body_start) = loop {
        let n = c.read_some(&mut buf).await?;
        if n == 0 {
            return Err(FetchError::Protocol {
                url: u,
                msg: "connection closed before the response head".into(),
            });
        }
        head.extend_from_slice(&buf[..n]);
        match response::parse(&head) {
            Ok(response::Parsed::Done(h, at)) => break (h, head.split_off(at)),
            Ok(response::Parsed::Partial) if head.len() <= MAX_HEAD => {}
            Ok(response::Parsed::Partial) => {
                return Err(FetchError::Protocol {
                    url: u,
                    msg: "response head too large".into(),
                })
            }
            Err(e) => {
                return Err(FetchError::Protocol {
                    url: u,
                    msg: e.to_string(),
                })
            }
        }
    };
    if h.chunked {
        return Err(FetchError::Protocol {
            url: u,
            msg: "chunked responses are not supported".into(),
        });
    }
    let skip = match (h.status, h.range_start) {
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
    let mut body = Body {
        skip,
        want,
        delivered: 0,
    };
    let body_len = h.content_length;
    let mut got = body_start.len() as u64;
    let range = body.next(body_start.len());
    sink.take(body_start, range)
        .map_err(|err| FetchError::Verify {
            url: u.clone(),
            err,
        })?;
    if body.complete() {
        return Ok(body.delivered);
    }
    loop {
        if body_len.is_some_and(|l| got >= l) {
            break;
        }
        let mut buf = sink.buffer().await;
        if buf.is_empty() {
            buf = vec![0u8; MAX_HEAD]; // an empty buffer would read as the end of the body
        }
        // Fill the buffer before handing it over (a read returns what the socket holds,
        // often a fraction of it): one handoff, and one wakeup per hashing thread, per
        // buffer instead of per read. Stop at the end of what the body still owes.
        let owed = body.owed().saturating_add(body.skip);
        let mut filled = 0usize;
        let mut ended = false;
        let mut failed = None;
        while filled < buf.len() {
            match c.read_some(&mut buf[filled..]).await {
                Ok(0) => {
                    ended = true;
                    break;
                }
                Ok(n) => {
                    filled += n;
                    got += n as u64;
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
            if filled as u64 >= owed || body_len.is_some_and(|l| got >= l) {
                break;
            }
        }
        // What arrived before an error still counts: the next attempt resumes after it.
        let range = body.next(filled);
        sink.take(buf, range).map_err(|err| FetchError::Verify {
            url: u.clone(),
            err,
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        if ended || body.complete() {
            break;
        }
    }
    if body.complete() {
        return Ok(body.delivered);
    }
    match (want, body_len) {
        (Some(w), _) if body.delivered < w => Err(FetchError::ShortBody {
            url: u,
            got: offset + body.delivered,
            want: offset + w,
        }),
        (None, Some(l)) if got < l => Err(FetchError::ShortBody {
            url: u,
            got,
            want: l,
        }),
        _ => Ok(body.delivered),
    }
}

/// Which received bytes belong to the caller: the first `skip` are dropped (a server that
/// ignored Range), and nothing past `want`.
struct Body {
    skip: u64,
    want: Option<u64>,
    delivered: u64,
}

impl Body {
    /// The part of the next `n` received bytes (at the start of a buffer) to deliver.
    fn next(&mut self, n: usize) -> std::ops::Range<usize> {
        let from = self.skip.min(n as u64) as usize;
        self.skip -= from as u64;
        let mut to = n;
        if let Some(w) = self.want {
            let left = w.saturating_sub(self.delivered);
            to = to.min(from.saturating_add(usize::try_from(left).unwrap_or(usize::MAX)));
        }
        self.delivered += (to - from) as u64;
        from..to
    }

    /// Bytes still to deliver (`u64::MAX`: up to the end of the body).
    fn owed(&self) -> u64 {
        self.want
            .map_or(u64::MAX, |w| w.saturating_sub(self.delivered))
    }

    fn complete(&self) -> bool {
        self.want.is_some_and(|w| self.delivered >= w)
    }
}

/// Fetch a small file (metadata) whole, at most `cap` bytes.
pub async fn small(
    url: &Url,
    file: &str,
    cap: usize,
    limits: &Limits,
) -> Result<Vec<u8>, FetchError> {
    let mut deadline = Instant::now() + limits.total.min(limits.idle * 3);
    if let Some(until) = limits.metadata_until {
        deadline = deadline.min(until);
    }
    let mut sink = pipeline::Collect::new(cap);
    get(url, file, 0, None, limits, deadline, &mut sink).await?;
    Ok(sink.out)
}

/// A provider left on the way to an artifact.
#[derive(Debug)]
pub struct Failure {
    pub provider: String,
    pub error: FetchError,
    /// Time spent on that provider's attempt.
    pub ms: u64,
}

/// What happened on the way to a verified artifact, for events and logs.
#[derive(Debug, Default)]
pub struct Report {
    /// Providers that failed, in order.
    pub failures: Vec<Failure>,
    /// The provider(s) that delivered the verified bytes.
    pub from: Vec<String>,
}

impl Report {
    /// Whether `p` failed at any point (it goes last for the next artifact).
    pub fn failed(&self, p: &Url) -> bool {
        let p = p.to_string();
        self.failures.iter().any(|f| f.provider == p)
    }
}

/// Download `artifact` into `out`, verified, from `providers` in order (see the module
/// docs for the failover rule). At most one shared pass plus one solo attempt per provider.
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
    // Out for this artifact: struck off (short or mismatching body) or failed in transport.
    let mut out_of = vec![false; providers.len()];
    let mut job = Attempt {
        name,
        artifact,
        out,
        limits,
        deadline,
        progress,
    };

    // The shared pass: each provider continues where the last one stopped.
    let mut pipe = match job.reset() {
        Ok(v) => v,
        Err(e) => return Err((report, e)),
    };
    let (mut offset, mut contributors, mut suspect) = (0u64, Vec::new(), false);
    for (i, p) in providers.iter().enumerate() {
        let started = Instant::now();
        let (res, wrote) = job.run(p, offset, &mut pipe).await;
        offset += wrote;
        if wrote > 0 {
            contributors.push(i);
        }
        match res {
            Ok(()) => break,
            Err(FetchError::Deadline) => return Err((report, FetchError::Deadline)),
            Err(e @ FetchError::Output { .. }) => return Err((report, e)),
            Err(e) => {
                out_of[i] = true;
                suspect |= matches!(e, FetchError::ShortBody { .. } | FetchError::Verify { .. });
                report.failures.push(failure(p, e, started));
                if suspect {
                    break;
                }
            }
        }
    }
    let verdict = match pipe.finish().await {
        Ok(v) => v,
        Err(e) => return Err((report, e)),
    };
    if offset == artifact.size && !suspect {
        match verdict {
            Ok(()) => {
                report.from = contributors
                    .iter()
                    .map(|&i| providers[i].to_string())
                    .collect();
                return Ok(job.done(report));
            }
            Err(err) => {
                // Only a provider that sent every byte alone can be named.
                if let [i] = contributors[..] {
                    out_of[i] = true;
                    let url = providers[i].to_string();
                    report.failures.push(Failure {
                        provider: url.clone(),
                        error: FetchError::Verify { url, err },
                        ms: 0,
                    });
                }
                suspect = true;
            }
        }
    }
    if !suspect {
        return Err((report, FetchError::Exhausted(name.to_string())));
    }

    // Suspect bytes: every provider still standing, alone, from byte 0.
    for (i, p) in providers.iter().enumerate() {
        if out_of[i] {
            continue;
        }
        let mut pipe = match job.reset() {
            Ok(v) => v,
            Err(e) => return Err((report, e)),
        };
        let started = Instant::now();
        let (res, _) = job.run(p, 0, &mut pipe).await;
        let verdict = match pipe.finish().await {
            Ok(v) => v,
            Err(e) => return Err((report, e)),
        };
        let res = res.and_then(|()| {
            verdict.map_err(|err| FetchError::Verify {
                url: p.to_string(),
                err,
            })
        });
        match res {
            Ok(()) => {
                report.from = vec![p.to_string()];
                return Ok(job.done(report));
            }
            Err(FetchError::Deadline) => return Err((report, FetchError::Deadline)),
            Err(e @ FetchError::Output { .. }) => return Err((report, e)),
            Err(e) => report.failures.push(failure(p, e, started)),
        }
    }
    Err((report, FetchError::Exhausted(name.to_string())))
}

fn failure(p: &Url, error: FetchError, started: Instant) -> Failure {
    Failure {
        provider: p.to_string(),
        error,
        ms: started.elapsed().as_millis() as u64,
    }
}

/// What every attempt at one artifact shares: the output file and the bounds.
struct Attempt<'a> {
    name: &'a str,
    artifact: &'a Artifact,
    out: &'a mut std::fs::File,
    limits: &'a Limits,
    deadline: Instant,
    progress: &'a mut (dyn FnMut(u64, u64) + Send),
}

impl Attempt<'_> {
    /// An empty output and a fresh check on its own worker.
    fn reset(&mut self) -> Result<Pipeline, FetchError> {
        if self.out.set_len(0).is_err() || std::io::Seek::rewind(self.out).is_err() {
            return Err(FetchError::Output {
                artifact: self.name.to_string(),
                msg: "cannot be reset".into(),
            });
        }
        let check =
            Check::for_artifact(self.name, self.artifact).map_err(|err| FetchError::Verify {
                url: String::new(),
                err,
            })?;
        Pipeline::start(self.name, check, self.out)
    }

    /// Fetch from `offset` to the end from `p` through `pipe` (hashed and written by its
    /// worker). Returns the outcome and the bytes the worker took (which count even when
    /// the attempt failed).
    async fn run(
        &mut self,
        p: &Url,
        offset: u64,
        pipe: &mut Pipeline,
    ) -> (Result<(), FetchError>, u64) {
        let mut written = 0u64;
        let (progress, size) = (&mut *self.progress, self.artifact.size);
        let mut report = |done: u64| progress(offset + done, size);
        let res = {
            let mut sink = pipe.sink(&mut written, &mut report);
            get(
                p,
                &self.artifact.path,
                offset,
                Some(size.saturating_sub(offset)),
                self.limits,
                self.deadline,
                &mut sink,
            )
            .await
        };
        if let Err(e) = pipe.settle().await {
            return (Err(e), written);
        }
        (res.map(|_| ()), written)
    }

    fn done(&mut self, report: Report) -> Report {
        let _ = std::io::Write::flush(self.out);
        report
    }
}

#[cfg(test)]
mod tests {
    use super::pipeline::{Sink, BUFFER_BYTES};
    use super::{get, Body, Limits, Url};
    use phase_release::verify::TrustError;
    use std::io::{Read, Write};
    use std::ops::Range;

    /// A sink that records the length of each range handed over.
    struct Handoffs(Vec<usize>);

    impl Sink for Handoffs {
        async fn buffer(&mut self) -> Vec<u8> {
            vec![0u8; BUFFER_BYTES]
        }
        fn take(&mut self, _buf: Vec<u8>, range: Range<usize>) -> Result<(), TrustError> {
            self.0.push(range.len());
            Ok(())
        }
    }

    /// A body written in 16 KiB pieces (each its own segment: the reads see fractions of a
    /// buffer) on a connection the server keeps open: every buffer between the head's
    /// leftover and the last goes over full, and the fetch ends at Content-Length instead
    /// of waiting for more (it would stall out otherwise).
    #[test]
    fn a_body_arrives_in_full_buffers_and_ends_at_its_length() {
        let len = 3 * BUFFER_BYTES + 5;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.set_nodelay(true).unwrap();
            let mut head = Vec::new();
            let mut b = [0u8; 1024];
            while !head.ends_with(b"\r\n\r\n") {
                let n = s.read(&mut b).unwrap();
                assert!(n > 0, "request cut short");
                head.extend_from_slice(&b[..n]);
            }
            write!(s, "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n").unwrap();
            let piece = vec![7u8; 16 * 1024];
            let mut left = len;
            while left > 0 {
                let n = left.min(piece.len());
                s.write_all(&piece[..n]).unwrap();
                left -= n;
            }
            // Held open until the client closes: only the length says the body ended.
            let _ = s.read(&mut b);
        });
        let url = Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
        let limits = Limits::default();
        let mut sink = Handoffs(Vec::new());
        let got = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let deadline = tokio::time::Instant::now() + limits.total;
                get(&url, "body", 0, None, &limits, deadline, &mut sink).await
            });
        assert_eq!(got.map_err(|e| e.reason()), Ok(len as u64));
        server.join().unwrap();
        let h = &sink.0;
        assert_eq!(h.iter().sum::<usize>(), len, "{h:?}");
        assert!(h.len() >= 3, "{h:?}");
        assert!(
            h[1..h.len() - 1].iter().all(|&n| n == BUFFER_BYTES),
            "{h:?}"
        );
    }

    /// (what, skip, want, reads, the range delivered of each read)
    type Case = (
        &'static str,
        u64,
        Option<u64>,
        &'static [usize],
        &'static [(usize, usize)],
    );

    #[test]
    fn body_ranges_skip_what_we_have_and_stop_at_want() {
        let cases: &[Case] = &[
            ("all of it", 0, None, &[10, 20], &[(0, 10), (0, 20)]),
            (
                "up to want",
                0,
                Some(25),
                &[10, 20, 5],
                &[(0, 10), (0, 15), (0, 0)],
            ),
            (
                "Range ignored",
                15,
                Some(10),
                &[10, 20],
                &[(10, 10), (5, 15)],
            ),
            (
                "skip past a read",
                30,
                None,
                &[10, 10, 20],
                &[(10, 10), (10, 10), (10, 20)],
            ),
            ("nothing wanted", 0, Some(0), &[8], &[(0, 0)]),
        ];
        for (what, skip, want, reads, ranges) in cases {
            let mut b = Body {
                skip: *skip,
                want: *want,
                delivered: 0,
            };
            let got: Vec<(usize, usize)> = reads
                .iter()
                .map(|&n| {
                    let r = b.next(n);
                    (r.start, r.end)
                })
                .collect();
            assert_eq!(got, *ranges, "{what}");
            let sum: usize = ranges.iter().map(|(a, z)| z - a).sum();
            assert_eq!(b.delivered, sum as u64, "{what}");
        }
    }
}
