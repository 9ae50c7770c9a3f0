//! Captured stdout/stderr with a cap. A write that reaches the cap keeps the bytes that fit,
//! marks the stream truncated and stops the job (a trap the executor reports as
//! `output_truncated`), so what the job wrote before is never lost and a flood cannot run on.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};

#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    truncated: bool,
}

/// One output stream of one job (cloned into WASI, read back by the executor).
#[derive(Clone)]
pub struct CappedPipe {
    cap: usize,
    inner: Arc<Mutex<Captured>>,
}

/// The error a full pipe stops the job with (recognised by the executor).
#[derive(Debug, thiserror::Error)]
#[error("output cap reached")]
pub struct OutputCapReached;

impl CappedPipe {
    pub fn new(cap: u64) -> Self {
        CappedPipe {
            cap: usize::try_from(cap).unwrap_or(usize::MAX),
            inner: Arc::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Captured> {
        // A poisoned lock still holds the bytes written so far.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Append what fits; `false` once the cap was reached.
    fn append(&self, data: &[u8]) -> bool {
        let mut c = self.lock();
        let room = self.cap.saturating_sub(c.bytes.len());
        let n = data.len().min(room);
        c.bytes.extend_from_slice(&data[..n]);
        if n < data.len() {
            c.truncated = true;
        }
        !c.truncated
    }

    /// The captured bytes and whether the cap cut them.
    pub fn take(&self) -> (Vec<u8>, bool) {
        let mut c = self.lock();
        (std::mem::take(&mut c.bytes), c.truncated)
    }

    pub fn truncated(&self) -> bool {
        self.lock().truncated
    }
}

impl wasmtime_wasi::cli::IsTerminal for CappedPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for CappedPipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CappedPipe {
    async fn ready(&mut self) {}
}

impl OutputStream for CappedPipe {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        if self.append(&bytes) {
            Ok(())
        } else {
            Err(StreamError::Trap(wasmtime::Error::new(OutputCapReached)))
        }
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        // Always accept a full write: the cap is enforced (and reported) in `write`.
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for CappedPipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.append(buf) {
            Poll::Ready(Ok(buf.len()))
        } else {
            Poll::Ready(Err(std::io::Error::other(OutputCapReached)))
        }
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_what_fits_and_reports_the_cut() {
        let mut p = CappedPipe::new(10);
        assert!(p.write(bytes::Bytes::from_static(b"0123456")).is_ok());
        assert!(p.write(bytes::Bytes::from_static(b"789abc")).is_err());
        assert_eq!(p.take(), (b"0123456789".to_vec(), true));
    }
}
