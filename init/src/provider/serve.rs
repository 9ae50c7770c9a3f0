//! The provider: serves a release directory over HTTP/1.1 (GET, HEAD, single byte ranges,
//! ETag = the file's SHA-256). Bounded: at most `max_connections` at once (others wait in
//! the kernel's backlog), each request head must arrive within `head_timeout`, and a
//! stalled reader is dropped after `idle_timeout` without progress. Paths never leave DIR.
//! Hand-written rather than hyper: it also runs inside every booted node, where size counts.

use super::http::{self, Method, Span};
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
    pub max_connections: usize,
    pub head_timeout: Duration,
    pub idle_timeout: Duration,
}

impl Config {
    pub fn new(root: &Path) -> Config {
        Config {
            root: root.to_path_buf(),
            max_connections: 64,
            head_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
        }
    }
}

/// SHA-256 per (path, size, mtime), so each file is hashed once while it does not change.
pub type EtagCache = Mutex<HashMap<(PathBuf, u64, SystemTime), String>>;

/// Hash every file directly in `root` now, so the first request for a large artifact is
/// not held up by hashing it (clients treat a silent server as stalled).
pub async fn warm(cfg: &Config) -> Arc<EtagCache> {
    let etags: Arc<EtagCache> = Arc::new(Mutex::new(HashMap::new()));
    if let Ok(dir) = std::fs::read_dir(&cfg.root) {
        for e in dir.flatten() {
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
    let slots = Arc::new(Semaphore::new(cfg.max_connections));
    loop {
        // Wait for a free slot before accepting: excess clients queue in the backlog.
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return Ok(());
        };
        let (stream, peer) = listener.accept().await?;
        let (cfg, etags) = (cfg.clone(), etags.clone());
        tokio::spawn(async move {
            if let Err(e) = connection(stream, &cfg, &etags).await {
                tracing::debug!("provider: {peer}: {e}");
            }
            drop(permit);
        });
    }
}

async fn connection(mut s: TcpStream, cfg: &Config, etags: &EtagCache) -> std::io::Result<()> {
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
    let Ok(mut file) = tokio::fs::File::open(&path).await else {
        return reply(&mut s, 404, &[], cfg).await;
    };
    let md = file.metadata().await?;
    if !md.is_file() {
        return reply(&mut s, 404, &[], cfg).await;
    }
    let len = md.len();
    let etag = format!(
        "\"{}\"",
        etag(
            &path,
            len,
            md.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            etags
        )
        .await?
    );
    if req.if_none_match.as_deref() == Some(etag.as_str()) {
        return reply(&mut s, 304, &[("ETag", etag)], cfg).await;
    }
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
    file.seek(std::io::SeekFrom::Start(start)).await?;
    let mut left = count;
    let mut buf = vec![0u8; 256 * 1024];
    while left > 0 {
        let want = buf.len().min(left as usize);
        let n = file.read(&mut buf[..want]).await?;
        if n == 0 {
            break; // the file shrank; the client sees a short body and retries
        }
        write_idle(&mut s, &buf[..n], cfg.idle_timeout).await?;
        left -= n as u64;
    }
    s.shutdown().await
}

/// Read until the blank line; `None` if the head exceeds the limit.
async fn read_head(s: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(1024);
    let mut b = [0u8; 1024];
    loop {
        let n = s.read(&mut b).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&b[..n]);
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            head.truncate(i);
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
