//! EFFECT: the status endpoint's HTTP loop (GET/HEAD `/status` or `/`: JSON; `/metrics`:
//! Prometheus text). Small and bounded: at most [`MAX_OPEN`] connections at once (more are
//! closed at once), a request head within [`HEAD_TIMEOUT`], the answer written within
//! [`WRITE_TIMEOUT`], one request per connection. Heads are parsed by the provider's
//! `httparse` code.

use super::report::{self, Node};
use crate::events::EventLog;
use crate::provider::http::{self, Method};
use crate::supervise::health;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

pub const MAX_OPEN: usize = 16;
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// The peers of the node's libp2p host, kept current by the node task.
pub type Peers = Arc<Mutex<Vec<String>>>;

/// Where a report's parts come from.
pub struct Sources {
    pub events: Arc<EventLog>,
    pub health: health::Table,
    pub peers: Peers,
    pub mode: String,
    pub stage: u8,
    pub kernel: String,
}

impl Sources {
    pub fn report(&self) -> report::Report {
        let peers = match self.peers.lock() {
            Ok(p) => p.clone(),
            Err(p) => p.into_inner().clone(),
        };
        report::build(
            Node {
                version: env!("CARGO_PKG_VERSION").to_string(),
                kernel: self.kernel.clone(),
                mode: self.mode.clone(),
                stage: self.stage,
                uptime_ms: crate::sys::clock::boottime_ms(),
                peers,
            },
            self.health.snapshot(),
            self.events.recorded(),
        )
    }
}

/// Serve until the task is stopped; an accept error ends the run (the supervisor restarts
/// it).
pub async fn serve(listener: TcpListener, src: Arc<Sources>) -> Result<(), String> {
    let open = Arc::new(Semaphore::new(MAX_OPEN));
    loop {
        let (conn, peer) = listener
            .accept()
            .await
            .map_err(|e| format!("accept: {e}"))?;
        let Ok(permit) = open.clone().try_acquire_owned() else {
            continue; // dropped: too many at once
        };
        let src = src.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(conn, &src).await {
                tracing::debug!("status request from {peer}: {e}");
            }
            drop(permit);
        });
    }
}

async fn answer(mut conn: TcpStream, src: &Sources) -> std::io::Result<()> {
    let head = tokio::time::timeout(HEAD_TIMEOUT, crate::provider::serve::read_head(&mut conn))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "request head"))??;
    let (status, kind, body) = match head.as_deref().map(http::parse_request) {
        None | Some(Err(http::HttpError::HeadTooLarge)) => (431, "text/plain", String::new()),
        Some(Err(http::HttpError::BadRequest)) => (400, "text/plain", String::new()),
        Some(Ok(r)) if r.method == Method::Other => (405, "text/plain", String::new()),
        Some(Ok(r)) => route(&r.path, src),
    };
    let mut out = http::response_head(
        status,
        &[
            ("Content-Type", kind.to_string()),
            ("Content-Length", body.len().to_string()),
        ],
    )
    .into_bytes();
    if !matches!(head.as_deref().map(http::parse_request), Some(Ok(r)) if r.method == Method::Head)
    {
        out.extend_from_slice(body.as_bytes());
    }
    tokio::time::timeout(WRITE_TIMEOUT, conn.write_all(&out))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "write"))?
}

/// The body for a GET of `path`: (status, content type, body).
fn route(path: &str, src: &Sources) -> (u16, &'static str, String) {
    match path {
        "/" | "/status" => match serde_json::to_string_pretty(&src.report()) {
            Ok(json) => (200, "application/json", json + "\n"),
            Err(e) => (500, "text/plain", format!("{e}\n")),
        },
        "/metrics" => (
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            report::metrics(&src.report()),
        ),
        _ => (404, "text/plain", "try /status or /metrics\n".to_string()),
    }
}
