//! The provider: serves a release directory over HTTP/1.1 (GET, HEAD, single byte ranges,
//! ETag = the file's SHA-256). Bounded and fair (see [`super::fair`]): connections per
//! client and in all are capped (beyond, an immediate 503), transfers share
//! `max_connections` slots with a reserved share for metadata, a request waits at most
//! `slot_wait` for a slot (then 503), each request head must arrive within
//! `head_timeout`, and a reader is dropped after `idle_timeout` without progress or below
//! `min_send_rate` over a `send_window`. Paths never leave DIR. Request heads are parsed
//! by `httparse`; the rest is small enough to keep here rather than take hyper into every
//! booted node.

use super::fair::{self, Clients};
use super::http::{self, Method, Span};
use crate::fetch::pace::Pace;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

#[derive(Debug, Clone)]
pub struct Config {
    pub root: PathBuf,
    /// Transfer slots every request may use.
    pub max_connections: usize,
    /// Further slots only for files of at most [`fair::SMALL_FILE`] bytes (metadata).
    pub reserved_small: usize,
    /// Connections open at once from one client address.
    pub per_client: usize,
    /// Connections open at once in all (heads being read included).
    pub max_open: usize,
    /// How long a request waits for a free slot before it is answered 503.
    pub slot_wait: Duration,
    pub head_timeout: Duration,
    pub idle_timeout: Duration,
    /// A reader must take at least this many bytes per second over each `send_window`.
    pub min_send_rate: u64,
    pub send_window: Duration,
    /// Files (by name in `root`) whose size and SHA-256 are known in advance.
    pub pinned: HashMap<String, Pinned>,
}

/// A signed artifact this node verified before serving it: served with its signed size
/// and its signed SHA-256 as ETag (never hashed here), and it may be a block device (a
/// disk-booted node's rootfs, read through dm-verity; see [`super::medium`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pinned {
    pub len: u64,
    pub sha256: String,
}

impl Config {
    pub fn new(root: &Path) -> Config {
        Config {
            root: root.to_path_buf(),
            max_connections: 64,
            reserved_small: 16,
            per_client: 8,
            max_open: 256,
            slot_wait: Duration::from_secs(8),
            head_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            min_send_rate: 32 * 1024,
            send_window: Duration::from_secs(10),
            pinned: HashMap::new(),
        }
    }
}

/// The kernel's send buffer per connection: small enough that the send rate seen here is
/// the reader's (a large buffer would hide a slow reader for megabytes), large enough for
/// a LAN at full speed.
const SEND_BUFFER: usize = 256 * 1024;

/// Transfer slots: the shared ones, and the share reserved for small files.
struct Slots {
    any: Arc<Semaphore>,
    small: Arc<Semaphore>,
}

/// SHA-256 per (path, size, mtime), so each file is hashed once while it does not change.
pub type EtagCache = Mutex<HashMap<(PathBuf, u64, SystemTime), String>>;

/// Hash every file directly in `root` now, so the first request for a large artifact is
/// not held up by hashing it (clients treat a silent server as stalled).
pub async fn warm(cfg: &Config) -> Arc<EtagCache> {
    let etags: Arc<EtagCache> = Arc::new(Mutex::new(HashMap::new()));
    if let Ok(dir) = std::fs::read_dir(&cfg.root) {
        for e in dir.flatten() {
            if cfg.pinned.contains_key(&*e.file_name().to_string_lossy()) {
                continue;
            }
            if let Ok(md) = e.metadata() {
                if md.is_file() {
                    let mtime = md.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                    let _ = etag(&e.path(), md.len(), mtime, &etags).await;
                }
            }
        }
    }
    etags
}

/// Serve until the listener fails. Each connection runs in its own task.
pub async fn serve(
    listener: TcpListener,
    cfg: Config,
    etags: Arc<EtagCache>,
) -> std::io::Result<()> {
    let cfg = Arc::new(cfg);
    let slots = Arc::new(Slots {
        any: Arc::new(Semaphore::new(cfg.max_connections)),
        small: Arc::new(Semaphore::new(cfg.reserved_small)),
    });
    let clients = Clients::new(cfg.max_open, cfg.per_client);
    loop {
        // Accept at once, always: a client is answered (served or refused), never left
        // waiting in the backlog.
        let (mut stream, peer) = listener.accept().await?;
        let (cfg, etags, slots) = (cfg.clone(), etags.clone(), slots.clone());
        match clients.enter(peer.ip()) {
            Ok(entry) => {
                tokio::spawn(async move {
                    if let Err(e) = connection(stream, &cfg, &etags, &slots).await {
                        tracing::debug!("provider: {peer}: {e}");
                    }
                    drop(entry);
                });
            }
            Err(why) => {
                tracing::debug!("provider: {peer}: refused ({})", why.reason());
                tokio::spawn(async move {
                    let busy = [("Retry-After", "5".to_string())];
                    let _ = tokio::time::timeout(
                        Duration::from_secs(1),
                        reply(&mut stream, 503, &busy, &cfg),
                    )
                    .await;
                });
            }
        }
    }
}

/// A transfer slot for a file of `len` bytes, waiting at most `slot_wait`.
async fn slot(
    slots: &Slots,
    len: u64,
    wait: Duration,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    let any = slots.any.clone().acquire_owned();
    let got = if len <= fair::SMALL_FILE {
        let small = slots.small.clone().acquire_owned();
        tokio::time::timeout(wait, async {
            tokio::select! {
                p = small => p,
                p = any => p,
            }
        })
        .await
    } else {
        tokio::time::timeout(wait, any).await
    };
    got.ok()?.ok()
}

async fn connection(
    mut s: TcpStream,
    cfg: &Config,
    etags: &EtagCache,
    slots: &Slots,
) -> std::io::Result<()> {
    let head = match tokio::time::timeout(cfg.head_timeout, read_head(&mut s)).await {
        Ok(Ok(Some(h))) => h,
        Ok(Ok(None)) => return reply(&mut s, 431, &[], cfg).await,
        Ok(Err(e)) => return Err(e),
        Err(_) => return reply(&mut s, 408, &[], cfg).await,
    };
    let req = match http::parse_request(&head) {
        Ok(r) => r,
        Err(http::HttpError::HeadTooLarge) => return reply(&mut s, 431, &[], cfg).await,
        Err(http::HttpError::BadRequest) => return reply(&mut s, 400, &[], cfg).await,
    };
    if req.method == Method::Other {
        return reply(&mut s, 405, &[("Allow", "GET, HEAD".into())], cfg).await;
    }
    let Some(path) = http::confine(&cfg.root, &req.path).map(|p| {
        if req.path.ends_with('/') {
            p.join("index.html")
        } else {
            p
        }
    }) else {
        return reply(&mut s, 404, &[], cfg).await;
    };
    let pinned = path
        .strip_prefix(&cfg.root)
        .ok()
        .and_then(|p| p.to_str())
        .and_then(|n| cfg.pinned.get(n));
    let Ok(file) = tokio::fs::File::open(&path).await else {
        return reply(&mut s, 404, &[], cfg).await;
    };
    let md = file.metadata().await?;
    use std::os::unix::fs::FileTypeExt;
    let (len, hex) = match pinned {
        Some(p) if md.is_file() || md.file_type().is_block_device() => (p.len, p.sha256.clone()),
        None if md.is_file() => {
            let mtime = md.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            (md.len(), etag(&path, md.len(), mtime, etags).await?)
        }
        _ => return reply(&mut s, 404, &[], cfg).await,
    };
    let etag = format!("\"{hex}\"");
    if req.if_none_match.as_deref() == Some(etag.as_str()) {
        return reply(&mut s, 304, &[("ETag", etag)], cfg).await;
    }
    let Some(_slot) = slot(slots, len, cfg.slot_wait).await else {
        return reply(&mut s, 503, &[("Retry-After", "5".into())], cfg).await;
    };
    let (status, start, count) = match http::span(req.range.as_deref(), len) {
        Span::Full => (200, 0, len),
        Span::Part { start, end } => (206, start, end - start + 1),
        Span::Unsatisfiable => {
            return reply(
                &mut s,
                416,
                &[("Content-Range", format!("bytes */{len}"))],
                cfg,
            )
            .await;
        }
    };
    let mut headers = vec![
        ("Content-Length", count.to_string()),
        ("Accept-Ranges", "bytes".into()),
        ("ETag", etag),
        ("Content-Type", "application/octet-stream".into()),
    ];
    if status == 206 {
        headers.push((
            "Content-Range",
            format!("bytes {start}-{}/{len}", start + count - 1),
        ));
    }
    write_idle(
        &mut s,
        http::response_head(status, &headers).as_bytes(),
        cfg.idle_timeout,
    )
    .await?;
    if req.method == Method::Head {
        return Ok(());
    }
    let _ = rustix::net::sockopt::set_socket_send_buffer_size(&s, SEND_BUFFER);
    let mut pace = Pace::new(
        cfg.min_send_rate,
        cfg.send_window,
        tokio::time::Instant::now(),
    );
    let sent = send_body(&mut s, file, start, count, &mut pace, cfg.idle_timeout).await;
    if let Ok(Spliced::Refused) = sent {
        tracing::debug!("{}: sendfile(2) refused it; copied", path.display());
    }
    if let Err(e) = sent {
        // Reset rather than close: the bytes still queued for a slow reader are
        // dropped with its slot, not trickled out for another minute.
        let _ = rustix::net::sockopt::set_socket_linger(&s, Some(Duration::ZERO));
        return Err(e);
    }
    s.shutdown().await
}

/// `count` bytes of `file` from `start`: by sendfile(2), or copied through this process
/// where sendfile refuses the source (then [`Spliced::Refused`]).
async fn send_body(
    s: &mut TcpStream,
    file: tokio::fs::File,
    start: u64,
    count: u64,
    pace: &mut Pace,
    idle: Duration,
) -> std::io::Result<Spliced> {
    let file = file.into_std().await;
    let spliced = send_file(s, &file, start, count, pace, idle).await?;
    if let Spliced::Refused = spliced {
        let mut file = tokio::fs::File::from_std(file);
        file.seek(std::io::SeekFrom::Start(start)).await?;
        send_copied(s, &mut file, count, pace, idle).await?;
    }
    Ok(spliced)
}

/// Bytes one blocking-pool job may move (a handoff per chunk, not per socket buffer).
const SENDFILE_CHUNK: usize = 4 << 20;
/// The longest a job waits for room in the socket buffer: a slow reader holds a
/// blocking-pool thread for this long at a time, and a dropped connection frees it soon.
const SENDFILE_WAIT: Duration = Duration::from_secs(1);

/// Send `count` bytes of `file` from `start` with sendfile(2): the kernel hands the
/// page-cache pages to the socket, no copy through this process (the copy through
/// userspace cost about as much CPU as the client's receive, on a machine both share).
/// The calls run on the blocking pool in chunks ([`send_chunk`]), because a block device
/// (a disk-booted node's rootfs) may have to read from disk; each chunk is bounded in time
/// ([`SENDFILE_WAIT`], the idle time, the end of the rate window), and idleness and rate
/// are judged between chunks as in [`write_paced`]. A file that ends early ends the body (the client sees it short and
/// retries).
async fn send_file(
    s: &TcpStream,
    file: &std::fs::File,
    start: u64,
    count: u64,
    pace: &mut Pace,
    idle: Duration,
) -> std::io::Result<Spliced> {
    // Close-on-exec: a child started meanwhile must not inherit the connection.
    let socket = Arc::new(rustix::io::fcntl_dupfd_cloexec(s, 0)?);
    let file = Arc::new(file.try_clone()?);
    let (mut offset, end) = (start, start.saturating_add(count));
    let mut idle_until = tokio::time::Instant::now() + idle;
    while offset < end {
        let until = idle_until
            .min(pace.window_end())
            .min(tokio::time::Instant::now() + SENDFILE_WAIT)
            .into_std();
        let n = usize::try_from(end - offset).map_or(SENDFILE_CHUNK, |n| n.min(SENDFILE_CHUNK));
        let (socket, f) = (socket.clone(), file.clone());
        let chunk = tokio::task::spawn_blocking(move || send_chunk(&socket, &f, offset, n, until))
            .await
            .map_err(std::io::Error::other)?;
        let now = tokio::time::Instant::now();
        match chunk {
            Ok(Chunk { sent, ended }) => {
                offset += sent as u64;
                pace.add(sent);
                if sent > 0 {
                    idle_until = now + idle;
                }
                if ended {
                    return Ok(Spliced::Sent); // the file shrank
                }
            }
            Err(rustix::io::Errno::INVAL) if offset == start => return Ok(Spliced::Refused),
            Err(e) => return Err(e.into()),
        }
        if offset < end && now >= idle_until {
            return Err(stalled());
        }
        pace.judge(now).map_err(too_slow)?;
    }
    Ok(Spliced::Sent)
}

/// What one [`send_chunk`] moved, and whether the file ended before the chunk did.
struct Chunk {
    sent: usize,
    ended: bool,
}

/// sendfile(2) `n` bytes of `file` from `offset` to the (non-blocking) `socket`, waiting
/// for room with poll(2) until `until`: a blocking-pool job. A poll of its own, not
/// tokio's readiness: clearing that from another thread could lose a wakeup. An error
/// after some bytes went out reports them instead; the next call meets it again.
fn send_chunk(
    socket: &rustix::fd::OwnedFd,
    file: &std::fs::File,
    offset: u64,
    n: usize,
    until: std::time::Instant,
) -> Result<Chunk, rustix::io::Errno> {
    use rustix::event::{poll, PollFd, PollFlags};
    use rustix::io::Errno;
    let (mut at, end) = (offset, offset + n as u64);
    let sent = |at: u64| (at - offset) as usize;
    while at < end {
        let left = usize::try_from(end - at).unwrap_or(usize::MAX);
        match rustix::fs::sendfile(socket, file, Some(&mut at), left) {
            Ok(0) => {
                return Ok(Chunk {
                    sent: sent(at),
                    ended: true,
                })
            }
            Ok(_) | Err(Errno::INTR) => {}
            Err(Errno::AGAIN) => {
                let wait = until.saturating_duration_since(std::time::Instant::now());
                let Ok(timeout) = rustix::time::Timespec::try_from(wait) else {
                    break;
                };
                if wait.is_zero() {
                    break;
                }
                let mut fds = [PollFd::new(socket, PollFlags::OUT)];
                match poll(&mut fds, Some(&timeout)) {
                    Ok(_) | Err(Errno::INTR) => {}
                    Err(e) if at == offset => return Err(e),
                    Err(_) => break,
                }
            }
            Err(e) if at == offset => return Err(e),
            Err(_) => break,
        }
    }
    Ok(Chunk {
        sent: sent(at),
        ended: false,
    })
}

/// How [`send_file`] ended without an error.
enum Spliced {
    /// The body went out (or the file ended early).
    Sent,
    /// sendfile(2) refused the source (`EINVAL`) before the first byte: copy instead.
    Refused,
}

/// The body copied through this process, for a source sendfile(2) refuses.
async fn send_copied(
    s: &mut TcpStream,
    file: &mut tokio::fs::File,
    count: u64,
    pace: &mut Pace,
    idle: Duration,
) -> std::io::Result<()> {
    let mut left = count;
    let mut buf = vec![0u8; 64 * 1024];
    while left > 0 {
        let want = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
        let n = file.read(&mut buf[..want]).await?;
        if n == 0 {
            break; // the file shrank; the client sees a short body and retries
        }
        write_paced(s, &buf[..n], pace, idle).await?;
        left -= n as u64;
    }
    Ok(())
}

fn stalled() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, "client stalled")
}

fn too_slow(e: crate::fetch::pace::TooSlow) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!(
            "client took {} bytes in a window, below {}",
            e.bytes, e.min_bytes
        ),
    )
}

/// Write all of `b`, judging the reader's rate as it takes the bytes.
async fn write_paced(
    s: &mut TcpStream,
    mut b: &[u8],
    pace: &mut Pace,
    idle: Duration,
) -> std::io::Result<()> {
    let idle_until = tokio::time::Instant::now() + idle;
    while !b.is_empty() {
        let until = idle_until.min(pace.window_end());
        let wrote = tokio::time::timeout_at(until, s.write(b)).await;
        let now = tokio::time::Instant::now();
        match wrote {
            Ok(Ok(0)) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(Ok(n)) => {
                pace.add(n);
                b = &b[n..];
            }
            Ok(Err(e)) => return Err(e),
            Err(_) if now >= idle_until => return Err(stalled()),
            Err(_) => {}
        }
        pace.judge(now).map_err(too_slow)?;
    }
    Ok(())
}

/// Read until the blank line (bytes after it are ignored: one request per connection);
/// `None` if the head exceeds the limit.
pub(crate) async fn read_head(s: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(1024);
    let mut b = [0u8; 1024];
    loop {
        let n = s.read(&mut b).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&b[..n]);
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            head.truncate(i + 4);
            return Ok(Some(head));
        }
        if head.len() > http::MAX_HEAD {
            return Ok(None);
        }
    }
}

async fn write_idle(s: &mut TcpStream, b: &[u8], idle: Duration) -> std::io::Result<()> {
    tokio::time::timeout(idle, s.write_all(b))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "client stalled"))?
}

async fn reply(
    s: &mut TcpStream,
    status: u16,
    extra: &[(&str, String)],
    cfg: &Config,
) -> std::io::Result<()> {
    let mut headers = vec![("Content-Length", "0".to_string())];
    headers.extend(extra.iter().cloned());
    write_idle(
        s,
        http::response_head(status, &headers).as_bytes(),
        cfg.idle_timeout,
    )
    .await?;
    s.shutdown().await
}

async fn etag(
    path: &Path,
    len: u64,
    mtime: SystemTime,
    cache: &EtagCache,
) -> std::io::Result<String> {
    let key = (path.to_path_buf(), len, mtime);
    if let Some(e) = cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
        return Ok(e);
    }
    let p = path.to_path_buf();
    let hex = tokio::task::spawn_blocking(move || -> std::io::Result<String> {
        use std::io::Read;
        let mut f = std::fs::File::open(&p)?;
        let mut h = Sha256Stream::default();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        Ok(h.hex())
    })
    .await
    .map_err(std::io::Error::other)??;
    if let Ok(mut c) = cache.lock() {
        c.insert(key, hex.clone());
    }
    Ok(hex)
}

/// SHA-256 through the release crate's verifier-free hasher.
#[derive(Default)]
struct Sha256Stream(phase_release::Sha256Hasher);

impl Sha256Stream {
    fn update(&mut self, b: &[u8]) {
        self.0.update(b)
    }
    fn hex(self) -> String {
        phase_release::hex::encode(&self.0.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both ends of a loopback connection: the client's, the server's.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        (client.unwrap(), accepted.unwrap().0)
    }

    fn pace() -> Pace {
        Pace::new(0, Duration::from_secs(5), tokio::time::Instant::now())
    }

    /// The body `send_body` delivers of `path` from `start`, as a client on loopback reads
    /// it, and which way it went.
    async fn served(path: &str, start: u64, count: u64) -> (Vec<u8>, Spliced) {
        let (mut client, mut server) = pair().await;
        let file = tokio::fs::File::open(path).await.unwrap();
        let idle = Duration::from_secs(5);
        let sending = async {
            let spliced = send_body(&mut server, file, start, count, &mut pace(), idle).await;
            server.shutdown().await.unwrap();
            spliced.unwrap()
        };
        let mut got = Vec::new();
        let (spliced, read) = tokio::join!(sending, client.read_to_end(&mut got));
        read.unwrap();
        (got, spliced)
    }

    #[tokio::test]
    async fn a_source_sendfile_refuses_is_copied_from_its_offset() {
        // /proc/self/status has no splice_read: sendfile(2) says EINVAL. Its first line
        // (the process name) stays put while the test runs.
        let path = "/proc/self/status";
        let whole = std::fs::read(path).unwrap();
        let (got, spliced) = served(path, 2, 10).await;
        assert!(
            matches!(spliced, Spliced::Refused),
            "sendfile(2) took {path}: pick a source this kernel refuses, or the copy is untested"
        );
        assert_eq!(got, whole[2..12], "copied body");
    }

    #[tokio::test]
    async fn a_regular_file_goes_by_sendfile_from_its_offset() {
        let path = std::env::temp_dir().join(format!("phase-sendfile-{}", std::process::id()));
        let bytes: Vec<u8> = (0..3 * SENDFILE_CHUNK as u32 / 2)
            .map(|i| (i % 251) as u8)
            .collect();
        std::fs::write(&path, &bytes).unwrap();
        let start = 4097u64;
        let count = (bytes.len() as u64) - start - 3;
        let (got, spliced) = served(path.to_str().unwrap(), start, count).await;
        let _ = std::fs::remove_file(&path);
        assert!(
            matches!(spliced, Spliced::Sent),
            "copied, not sent by sendfile(2)"
        );
        assert!(
            got == bytes[start as usize..][..count as usize],
            "sent body"
        );
    }
}
