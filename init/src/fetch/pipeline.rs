//! The receive/verify pipeline: a connection reads the body into buffers from a small
//! pool and hands each filled buffer (not a copy) to one worker thread, which feeds it to
//! the artifact's verifier (size bound and SHA-256) and writes it to the output, then
//! returns the buffer. Reading the next bytes and hashing the last ones overlap, so
//! verification does not slow the download on a machine with a second core; with a
//! single-threaded runtime (PID 1) hashing never holds up the timers either.
//!
//! The worker keeps its verifier across providers (a failover continues the running hash),
//! and [`Pipeline::settle`] waits until it has processed everything handed over, so the
//! byte count an attempt reports is exactly what was hashed and written.

use super::FetchError;
use phase_release::stream::ArtifactVerifier;
use phase_release::verify::TrustError;
use std::io::Write;
use std::ops::Range;
use std::sync::mpsc;
use tokio::sync::{mpsc as amsc, oneshot};

/// Where a body's bytes go: [`super::get`] reads into [`Sink::buffer`] and hands each
/// buffer back with the range of it that belongs to the body.
pub trait Sink: Send {
    /// A buffer to read into (its whole length may be filled).
    fn buffer(&mut self) -> impl std::future::Future<Output = Vec<u8>> + Send;
    /// `buf[range]` are the next bytes of the body (the range may be empty).
    fn take(&mut self, buf: Vec<u8>, range: Range<usize>) -> Result<(), TrustError>;
}

/// Buffers in flight per pipeline, and their size: enough to keep the worker busy while
/// the connection fills the next, small enough for several artifacts at once in RAM.
pub const BUFFERS: usize = 4;
pub const BUFFER_BYTES: usize = 1024 * 1024;

/// What the worker is left with when the pipeline ends.
struct Done {
    verifier: ArtifactVerifier,
    /// The first verifier error (more bytes than declared), if any.
    rejected: Option<TrustError>,
}

/// One artifact's verify-and-write worker and its buffer pool.
pub struct Pipeline {
    name: String,
    to_worker: Option<mpsc::Sender<(Vec<u8>, Range<usize>)>>,
    back: amsc::UnboundedReceiver<Vec<u8>>,
    free: Vec<Vec<u8>>,
    /// Buffers with the worker.
    lent: usize,
    done: Option<oneshot::Receiver<Done>>,
    /// The first failed write to the output (RAM or local disk).
    write_failed: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

impl Pipeline {
    /// Start a worker that verifies with `verifier` and writes to `out` (at its current
    /// position).
    pub fn start(
        name: &str,
        verifier: ArtifactVerifier,
        out: &std::fs::File,
    ) -> Result<Pipeline, FetchError> {
        let output = |msg: String| FetchError::Output {
            artifact: name.to_string(),
            msg,
        };
        let mut out = out.try_clone().map_err(|e| output(e.to_string()))?;
        let (to_worker, from_reader) = mpsc::channel::<(Vec<u8>, Range<usize>)>();
        let (give_back, back) = amsc::unbounded_channel();
        let (report, done) = oneshot::channel();
        let write_failed = std::sync::Arc::new(std::sync::Mutex::new(None));
        let failed = write_failed.clone();
        let mut verifier = verifier;
        std::thread::Builder::new()
            .name(format!("verify {name}"))
            .spawn(move || {
                let mut rejected = None;
                for (buf, range) in from_reader {
                    let bytes = buf.get(range).unwrap_or_default();
                    if rejected.is_none() {
                        if let Err(e) = verifier.update(bytes) {
                            rejected = Some(e);
                        }
                    }
                    if let Err(e) = out.write_all(bytes) {
                        if let Ok(mut f) = failed.lock() {
                            f.get_or_insert(e.to_string());
                        }
                    }
                    // The reader may be gone (its attempt ended): nothing to return to.
                    let _ = give_back.send(buf);
                }
                let _ = report.send(Done { verifier, rejected });
            })
            .map_err(|e| output(format!("cannot start the verify thread: {e}")))?;
        Ok(Pipeline {
            name: name.to_string(),
            to_worker: Some(to_worker),
            back,
            free: Vec::new(),
            lent: 0,
            done: Some(done),
            write_failed,
        })
    }

    /// Wait until the worker has processed every buffer handed to it; then say whether
    /// a write failed.
    pub async fn settle(&mut self) -> Result<(), FetchError> {
        while self.lent > 0 {
            match self.back.recv().await {
                Some(b) => {
                    self.lent -= 1;
                    self.keep(b);
                }
                None => break, // the worker ended (it cannot, while we hold its sender)
            }
        }
        let failed = self.write_failed.lock().ok().and_then(|f| f.clone());
        match failed {
            Some(msg) => Err(FetchError::Output {
                artifact: self.name.clone(),
                msg,
            }),
            None => Ok(()),
        }
    }

    /// Stop the worker. Outer error: the output failed; inner: the verifier's verdict on
    /// everything handed over (the whole artifact, or not).
    pub async fn finish(mut self) -> Result<Result<(), TrustError>, FetchError> {
        self.settle().await?;
        self.to_worker = None;
        let lost = FetchError::Output {
            artifact: self.name.clone(),
            msg: "the verify thread ended early".into(),
        };
        let done = match self.done.take() {
            Some(d) => d.await.map_err(|_| lost)?,
            None => return Err(lost),
        };
        if let Some(e) = done.rejected {
            return Ok(Err(e));
        }
        Ok(done.verifier.finish())
    }

    /// Back into the pool; not the leftover of a response head, which is only as long as
    /// its bytes.
    fn keep(&mut self, buf: Vec<u8>) {
        if buf.len() == BUFFER_BYTES {
            self.free.push(buf);
        }
    }

    /// A sink for one attempt; `delivered` counts the bytes handed to the worker.
    pub fn sink<'a>(
        &'a mut self,
        delivered: &'a mut u64,
        progress: &'a mut (dyn FnMut(u64) + Send),
    ) -> PipeSink<'a> {
        PipeSink {
            pipe: self,
            delivered,
            progress,
        }
    }
}

/// [`Sink`] into a [`Pipeline`].
pub struct PipeSink<'a> {
    pipe: &'a mut Pipeline,
    delivered: &'a mut u64,
    progress: &'a mut (dyn FnMut(u64) + Send),
}

impl Sink for PipeSink<'_> {
    async fn buffer(&mut self) -> Vec<u8> {
        let p = &mut *self.pipe;
        loop {
            if let Some(b) = p.free.pop() {
                return b;
            }
            if p.lent < BUFFERS {
                return vec![0u8; BUFFER_BYTES];
            }
            match p.back.recv().await {
                Some(b) => {
                    p.lent -= 1;
                    p.keep(b);
                }
                // Unreachable while the worker holds its sender; a fresh buffer keeps going.
                None => return vec![0u8; BUFFER_BYTES],
            }
        }
    }

    fn take(&mut self, buf: Vec<u8>, range: Range<usize>) -> Result<(), TrustError> {
        if range.is_empty() {
            self.pipe.keep(buf);
            return Ok(());
        }
        let n = range.len() as u64;
        match self.pipe.to_worker.as_ref().map(|t| t.send((buf, range))) {
            Some(Ok(())) => self.pipe.lent += 1,
            // The worker is gone: `finish` reports it; the bytes are not counted.
            _ => return Ok(()),
        }
        *self.delivered += n;
        (self.progress)(*self.delivered);
        Ok(())
    }
}

const COLLECT_BUFFER: usize = 64 * 1024;

/// [`Sink`] that collects a small body in memory, at most `cap` bytes.
pub struct Collect {
    pub out: Vec<u8>,
    pub cap: usize,
    spare: Option<Vec<u8>>,
}

impl Collect {
    pub fn new(cap: usize) -> Collect {
        Collect {
            out: Vec::new(),
            cap,
            spare: None,
        }
    }
}

impl Sink for Collect {
    async fn buffer(&mut self) -> Vec<u8> {
        self.spare
            .take()
            .unwrap_or_else(|| vec![0u8; COLLECT_BUFFER])
    }

    fn take(&mut self, buf: Vec<u8>, range: Range<usize>) -> Result<(), TrustError> {
        let chunk = &buf[range];
        if self.out.len() + chunk.len() > self.cap {
            return Err(TrustError::Oversized {
                size: self.out.len() + chunk.len(),
                max: self.cap,
            });
        }
        self.out.extend_from_slice(chunk);
        // Not the leftover of the response head: that one is only as long as its bytes.
        if buf.len() == COLLECT_BUFFER {
            self.spare = Some(buf);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use phase_release::doc::Artifact;

    fn artifact(data: &[u8]) -> Artifact {
        Artifact {
            path: "x".into(),
            size: data.len() as u64,
            sha256: phase_release::hex::encode(&phase_release::sha256(data)),
            verity: None,
        }
    }

    /// Hand `data` to `pipe` in `piece`-byte reads, as `get` does; the bytes delivered.
    async fn feed(pipe: &mut Pipeline, data: &[u8], piece: usize) -> u64 {
        let (mut delivered, mut seen) = (0u64, 0u64);
        let mut progress = |d: u64| seen = d;
        {
            let mut sink = pipe.sink(&mut delivered, &mut progress);
            for chunk in data.chunks(piece) {
                let mut b = sink.buffer().await;
                b[..chunk.len()].copy_from_slice(chunk);
                sink.take(b, 0..chunk.len()).unwrap();
            }
        }
        assert_eq!(seen, delivered);
        delivered
    }

    fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn scratch(tag: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("phase-pipeline-{tag}-{}", std::process::id()))
    }

    /// (what, byte to flip or none, split point between two attempts, want verified)
    #[test]
    fn bytes_arrive_hashed_and_written_in_order() {
        let data: Vec<u8> = (0..3 * BUFFER_BYTES + 12345)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let cases: &[(&str, Option<usize>, usize, bool)] = &[
            ("one attempt", None, data.len(), true),
            (
                "two attempts continue one hash",
                None,
                BUFFER_BYTES + 17,
                true,
            ),
            (
                "a flipped byte",
                Some(BUFFER_BYTES * 2 + 5),
                data.len(),
                false,
            ),
            ("a flipped byte after a failover", Some(3), 1000, false),
        ];
        for (what, flip, split, verified) in cases {
            let mut sent = data.clone();
            if let Some(i) = flip {
                sent[*i] ^= 1;
            }
            let path = scratch("order");
            let out = std::fs::File::create(&path).unwrap();
            let v = ArtifactVerifier::new("rootfs", &artifact(&data)).unwrap();
            let verdict = block_on(async {
                let mut pipe = Pipeline::start("rootfs", v, &out).unwrap();
                let a = feed(&mut pipe, &sent[..*split], 65536).await;
                pipe.settle().await.unwrap();
                let b = feed(&mut pipe, &sent[*split..], BUFFER_BYTES).await;
                assert_eq!(a + b, data.len() as u64, "{what}");
                pipe.finish().await.unwrap()
            });
            assert_eq!(verdict.is_ok(), *verified, "{what}: {verdict:?}");
            if let Err(e) = verdict {
                assert_eq!(e.reason(), "artifact_hash", "{what}");
            }
            assert_eq!(std::fs::read(&path).unwrap(), sent, "{what}");
            let _ = std::fs::remove_file(&path);
        }
    }

    #[test]
    fn more_than_declared_is_rejected() {
        let data = vec![5u8; 10_000];
        let path = scratch("long");
        let out = std::fs::File::create(&path).unwrap();
        let v = ArtifactVerifier::new("kernel", &artifact(&data[..9_999])).unwrap();
        let verdict = block_on(async {
            let mut pipe = Pipeline::start("kernel", v, &out).unwrap();
            feed(&mut pipe, &data, 4096).await;
            pipe.finish().await.unwrap()
        });
        assert_eq!(verdict.map_err(|e| e.reason()), Err("artifact_too_long"));
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_failed_write_is_an_output_error() {
        let data = vec![9u8; 100_000];
        let path = scratch("ro");
        std::fs::write(&path, b"").unwrap();
        let read_only = std::fs::File::open(&path).unwrap();
        let v = ArtifactVerifier::new("initramfs", &artifact(&data)).unwrap();
        let got = block_on(async {
            let mut pipe = Pipeline::start("initramfs", v, &read_only).unwrap();
            feed(&mut pipe, &data, 30_000).await;
            pipe.finish().await
        });
        assert_eq!(got.map_err(|e| e.reason()).err(), Some("output_failed"));
        let _ = std::fs::remove_file(&path);
    }
}
