//! dm-verity hash trees (PURE), shared by `phase-image` (which writes them) and the init
//! (which checks a rootfs by its tree when the kernel has no dm-verity, or a fetched one):
//! format 1, SHA-256, 4096-byte data and hash blocks, each hash SHA-256(salt || block), a
//! hash block holding 128 hashes, zero padded; the root hash is the hash of the top block
//! (of the only data block, when there is just one).
//!
//! [`leaf_hashes`] hashes the data blocks on several threads (each reads its own share of
//! the data through a `read_at` seam, so a file need not be held in memory); [`levels`]
//! builds the tree above the leaves; [`verify_data`] checks data against the signed
//! parameters by recomputing the tree up to its root; [`stream::TreeStream`] does the same
//! for bytes as they arrive (a download).

use crate::doc::Verity;
use sha2::{Digest, Sha256};

mod lanes;
pub mod stream;

/// Data and hash block size.
pub const BLOCK: usize = 4096;
const DIGEST: usize = 32;
/// Hashes per hash block.
pub const FANOUT: usize = BLOCK / DIGEST;
pub const ALGORITHM: &str = "sha256";
/// Blocks a thread reads at once.
const BATCH_BLOCKS: usize = 256;

/// Why data does not match its signed verity parameters.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerityError {
    #[error("unsupported verity parameters (want sha256, 4096-byte blocks, a 32-byte salt): {0}")]
    Unsupported(String),
    #[error("the data has {actual} blocks, the signed tree covers {signed}")]
    Size { signed: u64, actual: u64 },
    #[error("more bytes than the {signed} the signed tree covers")]
    TooLong { signed: u64 },
    #[error("reading block {block}: {message}")]
    Read { block: u64, message: String },
    #[error("the tree computed from the data ends in {computed}, not the signed root {signed}")]
    RootMismatch { signed: String, computed: String },
}

impl VerityError {
    /// Stable reasons for `verify.failed` events.
    pub fn reason(&self) -> &'static str {
        match self {
            VerityError::Unsupported(_) => "verity_params_unsupported",
            VerityError::Size { .. } => "size_mismatch",
            VerityError::TooLong { .. } => "artifact_too_long",
            VerityError::Read { .. } => "rootfs_unreadable",
            VerityError::RootMismatch { .. } => "verity_mismatch",
        }
    }
}

/// Blocks per tree level for `data_blocks` data blocks, leaf level first: the kernel's
/// `levels` loop (as many levels as it takes until one block covers everything).
pub fn level_sizes(data_blocks: u64) -> Vec<u64> {
    let mut sizes = Vec::new();
    let mut n = data_blocks;
    while n > 1 {
        n = n.div_ceil(FANOUT as u64);
        sizes.push(n);
    }
    sizes
}

/// SHA-256(salt || block).
pub fn hash_block(salt: &[u8], block: &[u8]) -> [u8; 32] {
    Sha256::new()
        .chain_update(salt)
        .chain_update(block)
        .finalize()
        .into()
}

/// `hash_block` of each `BLOCK`-byte block of `data` (the last may be short) into `out`, two
/// at a time on the SHA extensions where the CPU has them ([`lanes`]).
pub fn hash_blocks(salt: &[u8], data: &[u8], out: &mut [[u8; 32]]) {
    let mut blocks = data.chunks(BLOCK);
    let mut out = out.iter_mut();
    while let (Some(a), Some(ha)) = (blocks.next(), out.next()) {
        let Some((b, hb)) = blocks.next().zip(out.next()) else {
            *ha = hash_block(salt, a);
            break;
        };
        match lanes::hash_pair(salt, a, b) {
            Some((x, y)) => (*ha, *hb) = (x, y),
            None => (*ha, *hb) = (hash_block(salt, a), hash_block(salt, b)),
        }
    }
}

/// The hash of each of `data_blocks` blocks, on `threads` threads. Each thread takes
/// contiguous batches and fills its buffer with `read_at(byte offset, buf)`.
pub fn leaf_hashes<E: Send>(
    data_blocks: u64,
    salt: &[u8],
    threads: usize,
    read_at: impl Fn(u64, &mut [u8]) -> Result<(), E> + Sync,
) -> Result<Vec<[u8; 32]>, (u64, E)> {
    let n = data_blocks as usize;
    let mut hashes = vec![[0u8; 32]; n];
    let batches: Vec<&mut [[u8; 32]]> = hashes.chunks_mut(BATCH_BLOCKS).collect();
    // Batches are handed out from a shared list, so a slow thread holds back no one.
    let batches = std::sync::Mutex::new(batches.into_iter().enumerate().collect::<Vec<_>>());
    let failed: std::sync::Mutex<Option<(u64, E)>> = std::sync::Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..threads.clamp(1, n.div_ceil(BATCH_BLOCKS).max(1)) {
            s.spawn(|| {
                let mut buf = vec![0u8; BATCH_BLOCKS * BLOCK];
                loop {
                    let taken = match batches.lock() {
                        Ok(mut b) => b.pop(),
                        Err(_) => None,
                    };
                    let Some((i, out)) = taken else { break };
                    let first = (i * BATCH_BLOCKS) as u64;
                    let buf = &mut buf[..out.len() * BLOCK];
                    if let Err(e) = read_at(first * BLOCK as u64, buf) {
                        if let Ok(mut f) = failed.lock() {
                            f.get_or_insert((first, e));
                        }
                        break;
                    }
                    hash_blocks(salt, buf, out);
                }
            });
        }
    });
    match failed.into_inner() {
        Ok(Some(f)) => Err(f),
        _ => Ok(hashes),
    }
}

/// The levels above the leaves, leaf level first, each packed into zero-padded hash
/// blocks, and the root hash. One leaf means no levels: the root is that leaf.
pub fn levels(mut hashes: Vec<[u8; 32]>, salt: &[u8]) -> (Vec<Vec<u8>>, [u8; 32]) {
    let mut levels: Vec<Vec<u8>> = Vec::new();
    while hashes.len() > 1 {
        let mut level = Vec::with_capacity(hashes.len().div_ceil(FANOUT) * BLOCK);
        for chunk in hashes.chunks(FANOUT) {
            for h in chunk {
                level.extend_from_slice(h);
            }
            level.resize(level.len().div_ceil(BLOCK) * BLOCK, 0);
        }
        hashes = level.chunks(BLOCK).map(|b| hash_block(salt, b)).collect();
        levels.push(level);
    }
    (levels, hashes.first().copied().unwrap_or([0u8; 32]))
}

/// Check `data_blocks` blocks read through `read_at` against signed verity parameters: the
/// leaves on `threads` threads, then up the tree to the root, which must be the signed one.
pub fn verify_data<E: std::fmt::Display + Send>(
    v: &Verity,
    data_blocks: u64,
    threads: usize,
    read_at: impl Fn(u64, &mut [u8]) -> Result<(), E> + Sync,
) -> Result<(), VerityError> {
    let (salt, root) = signed_params(v)?;
    if data_blocks != v.data_blocks || data_blocks == 0 {
        return Err(VerityError::Size {
            signed: v.data_blocks,
            actual: data_blocks,
        });
    }
    let leaves = leaf_hashes(data_blocks, &salt, threads, read_at).map_err(|(block, e)| {
        VerityError::Read {
            block,
            message: e.to_string(),
        }
    })?;
    let (_, computed) = levels(leaves, &salt);
    if computed != root {
        return Err(VerityError::RootMismatch {
            signed: v.root_hash.clone(),
            computed: crate::hex::encode(&computed),
        });
    }
    Ok(())
}

/// The salt and root hash of parameters this module can check (SHA-256, 4 KiB blocks).
fn signed_params(v: &Verity) -> Result<([u8; 32], [u8; 32]), VerityError> {
    let salt = crate::hex::decode::<32>(&v.salt);
    let root = crate::hex::decode::<32>(&v.root_hash);
    let (Some(salt), Some(root)) = (salt, root) else {
        return Err(VerityError::Unsupported(
            "salt or root hash is not 32 hex bytes".into(),
        ));
    };
    if v.algorithm != ALGORITHM
        || v.data_block_size != BLOCK as u64
        || v.hash_block_size != BLOCK as u64
    {
        return Err(VerityError::Unsupported(format!(
            "{}, {}/{}-byte blocks",
            v.algorithm, v.data_block_size, v.hash_block_size
        )));
    }
    Ok((salt, root))
}

/// `read_at` over bytes in memory.
pub fn slice_reader(data: &[u8]) -> impl Fn(u64, &mut [u8]) -> Result<(), String> + Sync + '_ {
    move |off, buf| {
        let off = usize::try_from(off).map_err(|e| e.to_string())?;
        let src = data
            .get(off..off + buf.len())
            .ok_or_else(|| format!("offset {off}: past the end"))?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(data: &[u8], salt: [u8; 32]) -> Verity {
        let leaves =
            leaf_hashes((data.len() / BLOCK) as u64, &salt, 1, slice_reader(data)).unwrap();
        let (_, root) = levels(leaves, &salt);
        Verity {
            hash_path: "rootfs.verity".into(),
            hash_size: 0,
            hash_sha256: "00".repeat(32),
            root_hash: crate::hex::encode(&root),
            salt: crate::hex::encode(&salt),
            data_blocks: (data.len() / BLOCK) as u64,
            data_block_size: BLOCK as u64,
            hash_block_size: BLOCK as u64,
            algorithm: ALGORITHM.into(),
        }
    }

    fn verify(v: &Verity, data: &[u8], threads: usize) -> Result<(), VerityError> {
        verify_data(v, (data.len() / BLOCK) as u64, threads, slice_reader(data))
    }

    #[test]
    fn parallel_leaves_equal_sequential_ones() {
        let data: Vec<u8> = (0..1000 * BLOCK).map(|i| (i % 251) as u8).collect();
        let one = leaf_hashes(1000, &[7u8; 32], 1, slice_reader(&data)).unwrap();
        let four = leaf_hashes(1000, &[7u8; 32], 4, slice_reader(&data)).unwrap();
        assert_eq!(one, four);
        for (i, b) in data.chunks(BLOCK).enumerate() {
            assert_eq!(one[i], hash_block(&[7u8; 32], b));
        }
    }

    /// The acceptance check: one flipped byte anywhere in a 256 MiB image is rejected by the
    /// parallel tree verification (first and last byte, block and batch edges, a spread of
    /// positions in between), and the untouched image passes.
    #[test]
    fn one_flipped_byte_anywhere_in_256_mib_is_rejected() {
        let size = 256 << 20;
        let mut data = vec![0u8; size];
        // Distinct blocks (a zero image would hash every block alike).
        for (i, b) in data.chunks_mut(BLOCK).enumerate() {
            b[..8].copy_from_slice(&(i as u64).to_le_bytes());
        }
        let v = params(&data, [0x5a; 32]);
        let threads = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .max(2);
        assert_eq!(verify(&v, &data, threads), Ok(()));
        let batch = BATCH_BLOCKS * BLOCK;
        let mut at: Vec<usize> = vec![0, 1, BLOCK - 1, BLOCK, batch - 1, batch, size / 2 + 77];
        at.extend((1..6).map(|k| k * (size / 6) + k * 4099));
        at.push(size - 1);
        for pos in at {
            data[pos] ^= 0x01;
            let err = verify(&v, &data, threads).unwrap_err();
            assert_eq!(err.reason(), "verity_mismatch", "byte {pos}: {err}");
            data[pos] ^= 0x01;
        }
        assert_eq!(verify(&v, &data, threads), Ok(()));
    }

    #[test]
    fn parameters_sizes_and_reads_are_named() {
        let data = vec![3u8; 3 * BLOCK];
        let v = params(&data, [1; 32]);
        let mut bad = v.clone();
        bad.algorithm = "sha1".into();
        assert_eq!(
            verify(&bad, &data, 2).unwrap_err().reason(),
            "verity_params_unsupported"
        );
        let mut bad = v.clone();
        bad.salt = "zz".into();
        assert_eq!(
            verify(&bad, &data, 2).unwrap_err().reason(),
            "verity_params_unsupported"
        );
        assert_eq!(
            verify(&v, &data[..2 * BLOCK], 2).unwrap_err().reason(),
            "size_mismatch"
        );
        let failing = |_: u64, _: &mut [u8]| Err::<(), _>("EIO");
        assert_eq!(
            verify_data(&v, 3, 2, failing).unwrap_err().reason(),
            "rootfs_unreadable"
        );
        // Another salt, same data: another tree.
        let mut other = v.clone();
        other.salt = crate::hex::encode(&[2u8; 32]);
        assert_eq!(
            verify(&other, &data, 2).unwrap_err().reason(),
            "verity_mismatch"
        );
    }

    #[test]
    fn level_counts_follow_the_kernel() {
        assert_eq!(level_sizes(1), Vec::<u64>::new());
        assert_eq!(level_sizes(2), [1]);
        assert_eq!(level_sizes(128), [1]);
        assert_eq!(level_sizes(129), [2, 1]);
        assert_eq!(level_sizes(128 * 128 + 1), [129, 2, 1]);
    }
}
