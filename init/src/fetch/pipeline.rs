//! The receive/verify pipeline: a connection fills buffers from a small pool with the
//! body (several reads each) and hands each filled buffer (not a copy) to one worker
//! thread, which feeds it to the artifact's [`Check`]. An artifact with verity parameters
//! (the rootfs) is checked by its tree: the worker shares the buffer with a pool of
//! hashing threads, one per CPU (`phase_release::verity::stream`), each of which hashes
//! its share of the blocks and then writes that share to the output at its offset, so
//! the copy into the output is spread over the CPUs like the hashing; the buffer comes
//! back once every share is done. Any other artifact is hashed whole (SHA-256) and
//! written by the worker. Reading the next bytes and hashing the last ones overlap, so
//! verification does not slow the download on a machine with a second core; with a
//! single-threaded runtime (PID 1) hashing never holds up the timers either.
//!
//! The worker keeps its verifier across providers (a failover continues the running hash),
//! and [`Pipeline::settle`] waits until it has processed everything handed over, so the
//! byte count an attempt reports is exactly what was hashed and written.

use super::FetchError;
use phase_release::doc::Artifact;
use phase_release::stream::ArtifactVerifier;
use phase_release::verify::TrustError;
use phase_release::verity::stream::{Shared, TreeStream};
use phase_release::verity::VerityError;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::{mpsc, Arc};
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

/// How an artifact's bytes are checked.
pub enum Check {
    /// Size and SHA-256 of the whole, in the worker.
    Sha256(ArtifactVerifier),
    /// 4 KiB blocks hashed on every CPU, up the tree to the signed root hash.
    Tree {
        tree: TreeStream,
        name: String,
        size: u64,
    },
}

impl Check {
    /// The tree check when `a` has verity parameters it supports, else SHA-256.
    pub fn for_artifact(name: &str, a: &Artifact) -> Result<Check, TrustError> {
        if let Some(v) = &a.verity {
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
            match TreeStream::new(v, cpus) {
                Ok(tree) => {
                    return Ok(Check::Tree {
                        tree,
                        name: name.to_string(),
                        size: a.size,
                    })
                }
                Err(e) => tracing::warn!("{name}: {e}; checking its SHA-256 instead"),
            }
        }
        Ok(Check::Sha256(ArtifactVerifier::new(name, a)?))
    }

    /// The verdict on everything taken. Outer error: the check itself broke down.
    fn finish(self) -> Result<Result<(), TrustError>, String> {
        let (tree, name, size) = match self {
            Check::Sha256(v) => return Ok(v.finish()),
            Check::Tree { tree, name, size } => (tree, name, size),
        };
        let seen = tree.bytes_seen();
        Ok(Err(match tree.finish() {
            Ok(()) => return Ok(Ok(())),
            Err(VerityError::Read { message, .. }) => return Err(message),
            Err(VerityError::TooLong { .. }) => TrustError::ArtifactTooLong {
                name,
                declared: size,
            },
            Err(VerityError::Size { .. }) => TrustError::ArtifactSize {
                name,
                expected: size,
                got: seen,
            },
            Err(VerityError::RootMismatch { .. }) | Err(VerityError::Unsupported(_)) => {
                TrustError::ArtifactVerity { name }
            }
        }))
    }
}

/// A buffer lent to the hashing threads: back to the pool when the last of them is done.
struct Lent {
    buf: Vec<u8>,
    back: amsc::UnboundedSender<Vec<u8>>,
}

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        // The reader may be gone (its attempt ended): nothing to return to.
        let _ = self.back.send(std::mem::take(&mut self.buf));
    }
}

/// What the worker is left with when the pipeline ends.
struct Done {
    check: Check,
    /// The first check error (more bytes than declared), if any.
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
    write_failed: Arc<std::sync::Mutex<Option<String>>>,
}

impl Pipeline {
    /// Start a worker that checks with `check` and writes to `out` (at its current
    /// position).
    pub fn start(name: &str, check: Check, out: &std::fs::File) -> Result<Pipeline, FetchError> {
        let output = |msg: String| FetchError::Output {
            artifact: name.to_string(),
            msg,
        };
        let out = out.try_clone().map_err(|e| output(e.to_string()))?;
        // Bytes go to `out` from its current position on, each at its own offset (the
        // hashing threads write theirs in parallel).
        let base = std::io::Seek::stream_position(&mut &out).map_err(|e| output(e.to_string()))?;
        let out = Arc::new(out);
        let (to_worker, from_reader) = mpsc::channel::<(Vec<u8>, Range<usize>)>();
        let (give_back, back) = amsc::unbounded_channel();
        let (report, done) = oneshot::channel();
        let write_failed = Arc::new(std::sync::Mutex::new(None));
        let failed = write_failed.clone();
        let write = move |at: u64, bytes: &[u8]| {
            if let Err(e) = out.write_all_at(bytes, base + at) {
                if let Ok(mut f) = failed.lock() {
                    f.get_or_insert(e.to_string());
                }
            }
        };
        let mut check = check;
        if let Check::Tree { tree, .. } = &mut check {
            tree.write_to(Arc::new(write.clone()));
        }
        std::thread::Builder::new()
            .name(format!("verify {name}"))
            .spawn(move || {
                let mut rejected = None;
                // Bytes taken so far: the offset of the next.
                let mut pos = 0u64;
                for (buf, range) in from_reader {
                    let n = range.len() as u64;
                    match &mut check {
                        Check::Sha256(v) => {
                            let bytes = buf.get(range).unwrap_or_default();
                            if rejected.is_none() {
                                rejected = v.update(bytes).err();
                            }
                            write(pos, bytes);
                            // The reader may be gone (its attempt ended).
                            let _ = give_back.send(buf);
                        }
                        Check::Tree { tree, name, size } => {
                            // The pool hashes and writes it; this thread goes on.
                            let lent = Arc::new(Lent {
                                buf,
                                back: give_back.clone(),
                            });
                            let mut taken = false;
                            if rejected.is_none() {
                                let shared: Shared = lent.clone();
                                match tree.update(shared, range.clone()) {
                                    Ok(()) => taken = true,
                                    Err(_) => {
                                        rejected = Some(TrustError::ArtifactTooLong {
                                            name: name.clone(),
                                            declared: *size,
                                        })
                                    }
                                }
                            }
                            if !taken {
                                write(pos, lent.buf.get(range).unwrap_or_default());
                            }
                        }
                    }
                    pos += n;
                }
                let _ = report.send(Done { check, rejected });
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
        done.check.finish().map_err(|msg| FetchError::Output {
            artifact: self.name.clone(),
            msg,
        })
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
            let v = Check::for_artifact("rootfs", &artifact(&data)).unwrap();
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

    /// An artifact with verity parameters for `data` (whole 4 KiB blocks).
    fn with_tree(data: &[u8]) -> Artifact {
        use phase_release::verity::{leaf_hashes, levels, slice_reader, BLOCK};
        let salt = [3u8; 32];
        let blocks = (data.len() / BLOCK) as u64;
        let (_, root) = levels(
            leaf_hashes(blocks, &salt, 1, slice_reader(data)).unwrap(),
            &salt,
        );
        Artifact {
            verity: Some(phase_release::doc::Verity {
                hash_path: "x.verity".into(),
                hash_size: 4096,
                hash_sha256: "00".repeat(32),
                root_hash: phase_release::hex::encode(&root),
                salt: phase_release::hex::encode(&salt),
                data_blocks: blocks,
                data_block_size: BLOCK as u64,
                hash_block_size: BLOCK as u64,
                algorithm: "sha256".into(),
            }),
            // Not what is checked: the tree is.
            sha256: "11".repeat(32),
            ..artifact(data)
        }
    }

    /// (what, bytes sent, want: the reason or verified). The rootfs is checked by its
    /// tree on every CPU as it streams, in pieces that split blocks, over two attempts.
    #[test]
    fn a_rootfs_is_checked_by_its_verity_tree_as_it_streams() {
        let data: Vec<u8> = (0..(3 << 20) + 5 * 4096)
            .map(|i| (i * 13 % 251) as u8)
            .collect();
        let a = with_tree(&data);
        let flipped = |at: usize| {
            let mut d = data.clone();
            d[at] ^= 0x80;
            d
        };
        let longer = [&data[..], &[0u8; 10]].concat();
        let cases: &[(&str, Vec<u8>, Result<(), &str>)] = &[
            ("intact", data.clone(), Ok(())),
            ("first byte", flipped(0), Err("verity_mismatch")),
            ("split block", flipped(65483), Err("verity_mismatch")),
            ("last byte", flipped(data.len() - 1), Err("verity_mismatch")),
            (
                "short",
                data[..data.len() - 1].to_vec(),
                Err("artifact_size"),
            ),
            ("longer", longer, Err("artifact_too_long")),
        ];
        for (what, sent, want) in cases {
            let path = scratch("tree");
            let out = std::fs::File::create(&path).unwrap();
            let check = Check::for_artifact("rootfs", &a).unwrap();
            assert!(matches!(check, Check::Tree { .. }), "{what}");
            let verdict = block_on(async {
                let mut pipe = Pipeline::start("rootfs", check, &out).unwrap();
                let split = sent.len() / 3;
                feed(&mut pipe, &sent[..split], 65483).await;
                pipe.settle().await.unwrap();
                feed(&mut pipe, &sent[split..], BUFFER_BYTES).await;
                pipe.finish().await.unwrap()
            });
            assert_eq!(verdict.map_err(|e| e.reason()), *want, "{what}");
            assert_eq!(std::fs::read(&path).unwrap(), *sent, "{what}");
            let _ = std::fs::remove_file(&path);
        }
    }

    #[test]
    fn more_than_declared_is_rejected() {
        let data = vec![5u8; 10_000];
        let path = scratch("long");
        let out = std::fs::File::create(&path).unwrap();
        let v = Check::for_artifact("kernel", &artifact(&data[..9_999])).unwrap();
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
        let v = Check::for_artifact("initramfs", &artifact(&data)).unwrap();
        let got = block_on(async {
            let mut pipe = Pipeline::start("initramfs", v, &read_only).unwrap();
            feed(&mut pipe, &data, 30_000).await;
            pipe.finish().await
        });
        assert_eq!(got.map_err(|e| e.reason()).err(), Some("output_failed"));
        let _ = std::fs::remove_file(&path);
    }
}
