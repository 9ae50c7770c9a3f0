//! Tests of the streaming check: every way of cutting the bytes gives the whole check's
//! verdict, and one flipped byte anywhere in 256 MiB is refused as it streams.

use super::super::{leaf_hashes, slice_reader};
use super::*;

fn params(data: &[u8], salt: [u8; 32]) -> Verity {
    let blocks = (data.len() / BLOCK) as u64;
    let leaves = leaf_hashes(blocks, &salt, 2, slice_reader(data)).unwrap();
    let (_, root) = levels(leaves, &salt);
    Verity {
        hash_path: "rootfs.verity".into(),
        hash_size: 0,
        hash_sha256: "00".repeat(32),
        root_hash: crate::hex::encode(&root),
        salt: crate::hex::encode(&salt),
        data_blocks: blocks,
        data_block_size: BLOCK as u64,
        hash_block_size: BLOCK as u64,
        algorithm: super::super::ALGORITHM.into(),
    }
}

/// Blocks that differ from each other (a zero image would hash every block alike).
fn image(blocks: usize) -> Vec<u8> {
    let mut data = vec![0u8; blocks * BLOCK];
    for (i, b) in data.chunks_mut(BLOCK).enumerate() {
        b[..8].copy_from_slice(&(i as u64).to_le_bytes());
        b[BLOCK - 1] = (i % 251) as u8;
    }
    data
}

/// Feed `data` in pieces of the given sizes (cycled), each piece in its own shared buffer
/// with a few bytes around it, as the pipeline hands over the ranges of its buffers.
fn stream(v: &Verity, data: &[u8], pieces: &[usize], threads: usize) -> Result<(), VerityError> {
    let mut t = TreeStream::new(v, threads)?;
    let (mut at, mut k) = (0, 0);
    while at < data.len() {
        let n = pieces[k % pieces.len()].min(data.len() - at);
        let mut buf = vec![0xeeu8; n + 9];
        buf[3..3 + n].copy_from_slice(&data[at..at + n]);
        let shared: Shared = Arc::new(buf);
        t.update(shared, 3..3 + n)?;
        at += n;
        k += 1;
    }
    assert_eq!(t.bytes_seen(), data.len() as u64);
    t.finish()
}

#[test]
fn any_cut_of_the_bytes_gives_the_whole_verdict() {
    let data = image(300);
    let v = params(&data, [9; 32]);
    let cuts: &[&[usize]] = &[
        &[data.len()],
        &[BLOCK],
        &[1],
        &[BLOCK - 1, BLOCK + 1],
        &[65483],
        &[7, 1 << 20, 3 * BLOCK, 100_000],
    ];
    for cut in cuts {
        for threads in [0, 1, 3] {
            assert_eq!(stream(&v, &data, cut, threads), Ok(()), "{cut:?} {threads}");
        }
    }
}

/// With an output, the pool writes every byte taken at its offset, whatever the cut and
/// the number of threads (none: the caller writes): the output equals the input.
#[test]
fn the_pool_writes_what_it_took_where_it_belongs() {
    let data = image(300);
    let v = params(&data, [4; 32]);
    let cuts: &[&[usize]] = &[
        &[data.len()],
        &[1],
        &[BLOCK - 1, BLOCK + 1],
        &[65483],
        &[7, 1 << 20, 100_000],
    ];
    for cut in cuts {
        for threads in [0, 1, 3] {
            let written = Arc::new(std::sync::Mutex::new(vec![0u8; data.len()]));
            let w = written.clone();
            let out: WriteAt = Arc::new(move |at: u64, bytes: &[u8]| {
                let at = at as usize;
                w.lock().unwrap()[at..at + bytes.len()].copy_from_slice(bytes);
            });
            let mut t = TreeStream::new(&v, threads).unwrap();
            t.write_to(out);
            let (mut at, mut k) = (0, 0);
            while at < data.len() {
                let n = cut[k % cut.len()].min(data.len() - at);
                let mut buf = vec![0xeeu8; n + 9];
                buf[3..3 + n].copy_from_slice(&data[at..at + n]);
                t.update(Arc::new(buf), 3..3 + n).unwrap();
                (at, k) = (at + n, k + 1);
            }
            assert_eq!(t.finish(), Ok(()), "{cut:?} {threads}");
            assert!(*written.lock().unwrap() == data, "{cut:?} {threads}");
        }
    }
}

#[test]
fn size_and_parameters_are_named() {
    let data = image(10);
    let v = params(&data, [1; 32]);
    let short = stream(&v, &data[..9 * BLOCK + 5], &[4096], 2).unwrap_err();
    assert_eq!(short.reason(), "size_mismatch");
    // One byte past the signed size is refused when it arrives, not at the end.
    let mut t = TreeStream::new(&v, 2).unwrap();
    t.update(Arc::new(data.clone()), 0..data.len()).unwrap();
    let more = t.update(Arc::new(vec![0u8; 1]), 0..1).unwrap_err();
    assert_eq!(more.reason(), "artifact_too_long");
    let mut bad = v.clone();
    bad.data_block_size = 512;
    assert_eq!(
        TreeStream::new(&bad, 2).err().map(|e| e.reason()),
        Some("verity_params_unsupported")
    );
    // Dropped unfinished: the pool ends (the test would hang otherwise).
    let mut t = TreeStream::new(&v, 2).unwrap();
    t.update(Arc::new(data.clone()), 0..5 * BLOCK).unwrap();
    drop(t);
}

/// The acceptance check for a download: one flipped byte anywhere in a 256 MiB image,
/// arriving in TCP-sized pieces (so most blocks are split between two pieces), is refused
/// by the tree check on every core: first and last byte, both halves of a split block, a
/// block hashed whole by the pool, a spread in between; the intact image passes.
#[test]
fn one_flipped_byte_anywhere_in_256_mib_is_refused_as_it_streams() {
    let mut data = image(65536);
    let v = params(&data, [0x5a; 32]);
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .max(2);
    let piece = 65483; // a loopback TCP segment's payload
    let pieces = [piece];
    assert_eq!(stream(&v, &data, &pieces, threads), Ok(()));
    let size = data.len();
    let mut at: Vec<usize> = vec![0, BLOCK, piece - 1, piece, 2 * BLOCK + 17, size / 2 + 77];
    at.extend((1..4).map(|k| k * (size / 4) + k * 4099));
    at.push(size - 1);
    for pos in at {
        data[pos] ^= 0x20;
        let err = stream(&v, &data, &pieces, threads).unwrap_err();
        assert_eq!(err.reason(), "verity_mismatch", "byte {pos}: {err}");
        data[pos] ^= 0x20;
    }
    assert_eq!(stream(&v, &data, &pieces, threads), Ok(()));
}
