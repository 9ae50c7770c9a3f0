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
//!
//! With an output ([`TreeStream::write_to`]) the pool threads also write the bytes they
//! took, each its share of a piece at its offset, after hashing it (while it is still in
//! the cache): the copy into the output is spread over the pool like the hashing, instead
//! of one thread writing everything.

use super::{hash_block, levels, VerityError, BLOCK};
use crate::doc::Verity;
use std::ops::Range;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

/// Bytes the caller shares with the pool.
pub type Shared = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// Where the pool writes what it took: `(offset in the artifact, bytes)`. It keeps its
/// own first error; the caller asks it once the pieces are back.
pub type WriteAt = Arc<dyn Fn(u64, &[u8]) + Send + Sync>;

/// The fewest blocks worth a job of their own (a handoff costs a thread wakeup).
const MIN_JOB_BLOCKS: usize = 16;

/// Whole blocks of a shared piece to hash: `piece[range]` starts at block `first`; then
/// `piece[write]` to write at offset `at` (a job's share of the piece, stitched block
/// bytes included).
struct Job {
    piece: Shared,
    range: Range<usize>,
    first: u64,
    write: Range<usize>,
    at: u64,
    out: Option<WriteAt>,
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
    /// One queue per pool thread, dealt round robin: no shared queue for the threads to
    /// contend on, and each thread sleeps only while its own queue is empty.
    jobs: Vec<mpsc::Sender<Job>>,
    /// The queue that gets the next job.
    next: usize,
    pool: Vec<JoinHandle<Runs>>,
    out: Option<WriteAt>,
}

impl TreeStream {
    /// A check of `v.data_blocks` blocks with `threads` pool threads (0: hash in the
    /// caller's thread).
    pub fn new(v: &Verity, threads: usize) -> Result<TreeStream, VerityError> {
        let (salt, root) = super::signed_params(v)?;
        let (mut jobs, mut pool) = (Vec::new(), Vec::new());
        for i in 0..threads {
            let (tx, rx) = mpsc::channel::<Job>();
            let spawned = std::thread::Builder::new()
                .name(format!("verity {i}"))
                .spawn(move || hash_jobs(&rx, &salt));
            match spawned {
                Ok(h) => {
                    pool.push(h);
                    jobs.push(tx);
                }
                // Fewer threads (or none: hashed in the caller) still check every block.
                Err(_) => break,
            }
        }
        Ok(TreeStream {
            salt,
            root,
            root_hex: v.root_hash.clone(),
            data_blocks: v.data_blocks,
            seen: 0,
            stitch: Vec::with_capacity(BLOCK),
            own: Vec::new(),
            jobs,
            next: 0,
            pool,
            out: None,
        })
    }

    /// Write every byte taken to `out` as well (set before the first [`Self::update`]).
    pub fn write_to(&mut self, out: WriteAt) {
        self.out = Some(out);
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
        let whole = (len - at) / BLOCK;
        // The whole blocks in one job per thread (fewer when there are few blocks): each
        // thread wakes once per piece. The jobs' write shares cover the piece end to end.
        let n_jobs = self.jobs.len().min(whole.div_ceil(MIN_JOB_BLOCKS)).max(1);
        let (mut start, mut written) = (at, 0);
        for j in 0..n_jobs {
            let blocks = whole / n_jobs + usize::from(j < whole % n_jobs);
            let end = start + blocks * BLOCK;
            let write_end = if j + 1 == n_jobs { len } else { end };
            let first = (self.seen + start as u64) / BLOCK as u64;
            if blocks == 0 && (self.out.is_none() || write_end == written) {
                continue; // nothing to hash or write: no wakeup
            }
            let job = Job {
                piece: piece.clone(),
                range: range.start + start..range.start + end,
                first,
                write: range.start + written..range.start + write_end,
                at: self.seen + written as u64,
                out: self.out.clone(),
            };
            written = write_end;
            start = end;
            let queue = self.next % self.jobs.len().max(1);
            self.next = self.next.wrapping_add(1);
            // No pool, or that thread is gone: here.
            let job = match self.jobs.get(queue) {
                Some(tx) => match tx.send(job) {
                    Ok(()) => continue,
                    Err(mpsc::SendError(job)) => job,
                },
                None => job,
            };
            self.own.push(do_job(&job, &self.salt));
        }
        self.stitch.extend_from_slice(&bytes[start..]);
        self.seen += len as u64;
        Ok(())
    }

    /// Every byte taken: the size must be the signed one and the tree's root the signed
    /// root hash.
    pub fn finish(mut self) -> Result<(), VerityError> {
        self.jobs.clear(); // the pool drains what is queued, then ends
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
        self.jobs.clear();
        for h in self.pool.drain(..) {
            let _ = h.join();
        }
    }
}

/// A pool thread: jobs until the sender is gone.
fn hash_jobs(rx: &mpsc::Receiver<Job>, salt: &[u8; 32]) -> Runs {
    let mut runs = Vec::new();
    for job in rx {
        runs.push(do_job(&job, salt));
        // `job.piece` drops here: the caller may reuse the buffer once every job is done.
    }
    runs
}

/// Hash a job's blocks, then write its share.
fn do_job(job: &Job, salt: &[u8; 32]) -> (u64, Vec<[u8; 32]>) {
    let piece = bytes_of(&job.piece);
    let hashed = (
        job.first,
        hash_run(piece.get(job.range.clone()).unwrap_or_default(), salt),
    );
    if let Some(out) = &job.out {
        let share = piece.get(job.write.clone()).unwrap_or_default();
        if !share.is_empty() {
            out(job.at, share);
        }
    }
    hashed
}

fn bytes_of(piece: &Shared) -> &[u8] {
    (**piece).as_ref()
}

fn hash_run(bytes: &[u8], salt: &[u8; 32]) -> Vec<[u8; 32]> {
    let mut hashes = vec![[0u8; 32]; bytes.len().div_ceil(BLOCK)];
    super::hash_blocks(salt, bytes, &mut hashes);
    hashes
}

#[cfg(test)]
mod tests;
