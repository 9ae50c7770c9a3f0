//! A dm-verity check that keeps up with a download: [`TreeStream`] takes an artifact's
//! bytes in order, in pieces of any length, and hashes its 4 KiB blocks on a pool of
//! threads while the next bytes arrive; [`TreeStream::finish`] builds the tree above the
//! leaves and compares its root with the signed root hash.
//!
//! No bulk copy: a piece is shared with the pool (`Arc`) and its whole blocks are hashed
//! where they lie; only a block split between two pieces is put together in a one-block
//! buffer and hashed by the caller. The caller learns that the pool is done with a piece
//! when its `Arc` is dropped (the fetch pipeline returns the buffer to its pool then).
//! More bytes than the signed tree covers are refused at once, like
//! [`crate::stream::ArtifactVerifier`], so an endless body is cut off.

use super::{hash_block, levels, VerityError, BLOCK};
use crate::doc::Verity;
use std::ops::Range;
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

/// Bytes the caller shares with the pool.
pub type Shared = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// Blocks per pool job: small enough to spread one 1 MiB piece over every thread.
const JOB_BLOCKS: usize = 64;

/// Whole blocks of a shared piece to hash: `piece[range]` starts at block `first`.
struct Job {
    piece: Shared,
    range: Range<usize>,
    first: u64,
}

/// What one pool thread hashed: runs of consecutive leaves, each with its first block.
type Runs = Vec<(u64, Vec<[u8; 32]>)>;

/// A streaming, parallel check of one artifact against its signed verity parameters.
pub struct TreeStream {
    salt: [u8; 32],
    root: [u8; 32],
    root_hex: String,
    data_blocks: u64,
    /// Bytes taken so far.
    seen: u64,
    /// The start of a block split between pieces.
    stitch: Vec<u8>,
    /// Leaves hashed here (stitched blocks, or everything without a pool).
    own: Runs,
    jobs: Option<mpsc::Sender<Job>>,
    pool: Vec<JoinHandle<Runs>>,
}

impl TreeStream {
    /// A check of `v.data_blocks` blocks with `threads` pool threads (0: hash in the
    /// caller's thread).
    pub fn new(v: &Verity, threads: usize) -> Result<TreeStream, VerityError> {
        let (salt, root) = super::signed_params(v)?;
        let (jobs, pool) = if threads == 0 {
            (None, Vec::new())
        } else {
            let (tx, rx) = mpsc::channel::<Job>();
            let rx = Arc::new(Mutex::new(rx));
            let mut pool = Vec::new();
            for i in 0..threads {
                let rx = rx.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("verity {i}"))
                    .spawn(move || hash_jobs(&rx, &salt));
                match spawned {
                    Ok(h) => pool.push(h),
                    // Fewer threads (or none: hashed in the caller) still check every block.
                    Err(_) => break,
                }
            }
            (if pool.is_empty() { None } else { Some(tx) }, pool)
        };
        Ok(TreeStream {
            salt,
            root,
            root_hex: v.root_hash.clone(),
            data_blocks: v.data_blocks,
            seen: 0,
            stitch: Vec::with_capacity(BLOCK),
            own: Vec::new(),
            jobs,
            pool,
        })
    }

    /// Bytes taken so far.
    pub fn bytes_seen(&self) -> u64 {
        self.seen
    }

    /// The next bytes of the artifact: `piece[range]`. Refused (nothing taken) when they
    /// would go past the signed size.
    pub fn update(&mut self, piece: Shared, range: Range<usize>) -> Result<(), VerityError> {
        let signed = self.data_blocks.saturating_mul(BLOCK as u64);
        let bytes = bytes_of(&piece).get(range.clone()).unwrap_or_default();
        let len = bytes.len();
        if self.seen.saturating_add(len as u64) > signed {
            return Err(VerityError::TooLong { signed });
        }
        let mut at = 0;
        if !self.stitch.is_empty() {
            at = (BLOCK - self.stitch.len()).min(len);
            self.stitch.extend_from_slice(&bytes[..at]);
            if self.stitch.len() == BLOCK {
                let block = self.seen / BLOCK as u64;
                self.own
                    .push((block, vec![hash_block(&self.salt, &self.stitch)]));
                self.stitch.clear();
            }
        }
        let whole = (len - at) / BLOCK * BLOCK;
        let mut start = at;
        while start < at + whole {
            let end = (start + JOB_BLOCKS * BLOCK).min(at + whole);
            let first = (self.seen + start as u64) / BLOCK as u64;
            let job = Job {
                piece: piece.clone(),
                range: range.start + start..range.start + end,
                first,
            };
            match self.jobs.as_ref().map(|tx| tx.send(job)) {
                Some(Ok(())) => {}
                // No pool, or it is gone: hash here.
                Some(Err(mpsc::SendError(job))) => self.own.push(hash_job(&job, &self.salt)),
                None => self
                    .own
                    .push((first, hash_run(&bytes[start..end], &self.salt))),
            }
            start = end;
        }
        self.stitch.extend_from_slice(&bytes[at + whole..]);
        self.seen += len as u64;
        Ok(())
    }

    /// Every byte taken: the size must be the signed one and the tree's root the signed
    /// root hash.
    pub fn finish(mut self) -> Result<(), VerityError> {
        self.jobs = None; // the pool drains what is queued, then ends
        let mut runs = std::mem::take(&mut self.own);
        let mut lost = false;
        for h in self.pool.drain(..) {
            match h.join() {
                Ok(r) => runs.extend(r),
                Err(_) => lost = true,
            }
        }
        let signed = self.data_blocks.saturating_mul(BLOCK as u64);
        if self.seen != signed {
            return Err(VerityError::Size {
                signed: self.data_blocks,
                actual: self.seen / BLOCK as u64,
            });
        }
        if lost {
            return Err(VerityError::Read {
                block: 0,
                message: "a verity thread failed".into(),
            });
        }
        let n = usize::try_from(self.data_blocks).unwrap_or(usize::MAX);
        let mut leaves = vec![[0u8; 32]; n];
        let mut filled = 0usize;
        for (first, hashes) in runs {
            let first = first as usize;
            if let Some(slot) = leaves.get_mut(first..first + hashes.len()) {
                slot.copy_from_slice(&hashes);
                filled += hashes.len();
            }
        }
        if filled != n {
            return Err(VerityError::Read {
                block: 0,
                message: format!("{filled} of {n} blocks hashed"),
            });
        }
        let (_, computed) = levels(leaves, &self.salt);
        if computed != self.root {
            return Err(VerityError::RootMismatch {
                signed: std::mem::take(&mut self.root_hex),
                computed: crate::hex::encode(&computed),
            });
        }
        Ok(())
    }
}

impl Drop for TreeStream {
    /// Dropped unfinished (an attempt given up): the pool ends once its queue is empty.
    fn drop(&mut self) {
        self.jobs = None;
        for h in self.pool.drain(..) {
            let _ = h.join();
        }
    }
}

/// A pool thread: jobs until the sender is gone.
fn hash_jobs(rx: &Mutex<mpsc::Receiver<Job>>, salt: &[u8; 32]) -> Runs {
    let mut runs = Vec::new();
    loop {
        let job = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => break,
        };
        let Ok(job) = job else { break };
        runs.push(hash_job(&job, salt));
        // `job.piece` drops here: the caller may reuse the buffer once every job is done.
    }
    runs
}

fn hash_job(job: &Job, salt: &[u8; 32]) -> (u64, Vec<[u8; 32]>) {
    let bytes = bytes_of(&job.piece)
        .get(job.range.clone())
        .unwrap_or_default();
    (job.first, hash_run(bytes, salt))
}

fn bytes_of(piece: &Shared) -> &[u8] {
    (**piece).as_ref()
}

fn hash_run(bytes: &[u8], salt: &[u8; 32]) -> Vec<[u8; 32]> {
    bytes.chunks(BLOCK).map(|b| hash_block(salt, b)).collect()
}

#[cfg(test)]
mod tests;
