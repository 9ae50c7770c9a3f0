//! dm-verity hash trees (PURE), in the standard on-disk format: byte for byte what
//! `veritysetup format` writes with its defaults (format 1, SHA-256, 4096-byte data and hash
//! blocks, 32-byte salt, superblock present), given the same salt and UUID.
//!
//! The hash device is the 512-byte `struct verity_sb` padded to one hash block, then the
//! tree levels with the top level (one block) first and the leaf level last: the kernel's
//! `hash_level_block` order when the tree starts at hash block 1. Each hash is
//! SHA-256(salt || block) (format 1 puts the salt first); a hash block holds 128 hashes and
//! is zero padded. The root hash is the hash of the top block (of the only data block, when
//! there is just one: then the tree has no levels).
//!
//! Salt and UUID derive from the data, so the same image always gets the same tree. The
//! tree itself (leaf hashes on every core, the levels, the root) is
//! `phase_release::verity`, which the init uses to check a rootfs without dm-verity; this
//! module adds what only the builder needs: salt and UUID, the superblock, the hash device.

use phase_release::doc::Verity;
use phase_release::hex;
use phase_release::verity::{leaf_hashes, levels, slice_reader};
pub use phase_release::verity::{level_sizes, ALGORITHM, BLOCK};
use sha2::{Digest, Sha256};

const SB_SIZE: usize = 512;
const SIGNATURE: &[u8; 8] = b"verity\0\0";

/// A computed tree and what a release records about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree {
    /// Superblock block, then the levels, top first.
    pub hash_device: Vec<u8>,
    pub root_hash: [u8; 32],
    pub salt: [u8; 32],
    pub uuid: [u8; 16],
    pub data_blocks: u64,
}

impl Tree {
    /// The release metadata for this tree; `hash_path` is the hash device's file name.
    pub fn doc(&self, hash_path: &str) -> Verity {
        Verity {
            hash_path: hash_path.to_string(),
            hash_size: self.hash_device.len() as u64,
            hash_sha256: hex::encode(&phase_release::sha256(&self.hash_device)),
            root_hash: hex::encode(&self.root_hash),
            salt: hex::encode(&self.salt),
            data_blocks: self.data_blocks,
            data_block_size: BLOCK as u64,
            hash_block_size: BLOCK as u64,
            algorithm: ALGORITHM.to_string(),
        }
    }
}

/// Zero-pad `data` to a whole number of blocks (what the tree covers).
pub fn pad(data: &mut Vec<u8>) {
    data.resize(data.len().div_ceil(BLOCK) * BLOCK, 0);
}

/// The deterministic salt: SHA-256 over a domain tag and the data.
pub fn derive_salt(data: &[u8]) -> [u8; 32] {
    Sha256::new()
        .chain_update(b"phase-boot/verity-salt\n")
        .chain_update(data)
        .finalize()
        .into()
}

/// The deterministic UUID: SHA-256 over a domain tag and the data, cut to 16 bytes, with
/// the RFC 4122 version-4 and variant bits set (tools expect a well-formed UUID).
pub fn derive_uuid(data: &[u8]) -> [u8; 16] {
    let h: [u8; 32] = Sha256::new()
        .chain_update(b"phase-boot/verity-uuid\n")
        .chain_update(data)
        .finalize()
        .into();
    let mut u = [0u8; 16];
    u.copy_from_slice(&h[..16]);
    set_v4_bits(&mut u);
    u
}

/// Mark 16 bytes (in textual order) as an RFC 4122 version-4 UUID.
pub fn set_v4_bits(u: &mut [u8; 16]) {
    u[6] = (u[6] & 0x0f) | 0x40;
    u[8] = (u[8] & 0x3f) | 0x80;
}

/// `struct verity_sb`: 512 bytes, little endian.
pub fn superblock(uuid: &[u8; 16], salt: &[u8; 32], data_blocks: u64) -> [u8; SB_SIZE] {
    let mut sb = [0u8; SB_SIZE];
    sb[0..8].copy_from_slice(SIGNATURE);
    sb[8..12].copy_from_slice(&1u32.to_le_bytes()); // superblock version
    sb[12..16].copy_from_slice(&1u32.to_le_bytes()); // hash_type 1: normal (not Chrome OS)
    sb[16..32].copy_from_slice(uuid);
    sb[32..32 + ALGORITHM.len()].copy_from_slice(ALGORITHM.as_bytes());
    sb[64..68].copy_from_slice(&(BLOCK as u32).to_le_bytes());
    sb[68..72].copy_from_slice(&(BLOCK as u32).to_le_bytes());
    sb[72..80].copy_from_slice(&data_blocks.to_le_bytes());
    sb[80..82].copy_from_slice(&(salt.len() as u16).to_le_bytes());
    // 82..88 padding; the salt field holds up to 256 bytes.
    sb[88..88 + salt.len()].copy_from_slice(salt);
    sb
}

/// The tree of `data` (a non-empty multiple of [`BLOCK`] bytes), salt and UUID derived
/// from the data.
pub fn compute(data: &[u8]) -> Result<Tree, String> {
    compute_with(data, &derive_salt(data), &derive_uuid(data))
}

/// The tree of `data` with a given salt and UUID (what `veritysetup format --salt --uuid`
/// would write).
pub fn compute_with(data: &[u8], salt: &[u8; 32], uuid: &[u8; 16]) -> Result<Tree, String> {
    if data.is_empty() || !data.len().is_multiple_of(BLOCK) {
        return Err(format!(
            "dm-verity data must be a non-empty multiple of {BLOCK} bytes, not {}",
            data.len()
        ));
    }
    let data_blocks = (data.len() / BLOCK) as u64;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let leaves = leaf_hashes(data_blocks, salt, threads, slice_reader(data))
        .map_err(|(block, e)| format!("block {block}: {e}"))?;
    // Leaf level first; the hash device stores them top first.
    let (levels, root_hash) = levels(leaves, salt);
    let tree_blocks: u64 = level_sizes(data_blocks).iter().sum();
    let mut hash_device = Vec::with_capacity((1 + tree_blocks as usize) * BLOCK);
    hash_device.extend_from_slice(&superblock(uuid, salt, data_blocks));
    hash_device.resize(BLOCK, 0);
    for level in levels.iter().rev() {
        hash_device.extend_from_slice(level);
    }
    Ok(Tree {
        hash_device,
        root_hash,
        salt: *salt,
        uuid: *uuid,
        data_blocks,
    })
}

/// Check a hash device against its data, as `veritysetup verify` would: parse the
/// superblock (only the parameters this builder writes are accepted), recompute the tree
/// with its salt and UUID, and require the same bytes. Returns the tree (with the root hash).
pub fn verify(data: &[u8], hash_device: &[u8]) -> Result<Tree, String> {
    let sb = hash_device
        .get(..SB_SIZE)
        .ok_or("hash device shorter than a verity superblock")?;
    let u32_at = |o: usize| u32::from_le_bytes([sb[o], sb[o + 1], sb[o + 2], sb[o + 3]]);
    if &sb[0..8] != SIGNATURE {
        return Err("no verity superblock signature".into());
    }
    let mut alg = sb[32..64].to_vec();
    while alg.last() == Some(&0) {
        alg.pop();
    }
    let data_blocks = u64::from_le_bytes(sb[72..80].try_into().map_err(|_| "superblock")?);
    let salt_size = u16::from_le_bytes([sb[80], sb[81]]) as usize;
    if u32_at(8) != 1
        || u32_at(12) != 1
        || alg != ALGORITHM.as_bytes()
        || u32_at(64) as usize != BLOCK
        || u32_at(68) as usize != BLOCK
        || salt_size != 32
    {
        return Err(
            "unsupported verity parameters (want format 1, sha256, 4096-byte blocks, 32-byte salt)"
                .into(),
        );
    }
    if data_blocks * BLOCK as u64 != data.len() as u64 {
        return Err(format!(
            "hash device covers {data_blocks} blocks, the data has {} bytes",
            data.len()
        ));
    }
    let mut salt = [0u8; 32];
    salt.copy_from_slice(&sb[88..120]);
    let mut uuid = [0u8; 16];
    uuid.copy_from_slice(&sb[16..32]);
    let tree = compute_with(data, &salt, &uuid)?;
    if tree.hash_device != hash_device {
        return Err("hash device does not match the data".into());
    }
    Ok(tree)
}

#[cfg(test)]
mod tests {
    use super::*;
    use phase_release::verity::hash_block;

    fn data(blocks: usize) -> Vec<u8> {
        (0..blocks * BLOCK)
            .map(|i| (i / BLOCK * 7 + i % 251) as u8)
            .collect()
    }

    #[test]
    fn level_counts_follow_the_kernel() {
        assert_eq!(level_sizes(1), Vec::<u64>::new());
        assert_eq!(level_sizes(2), [1]);
        assert_eq!(level_sizes(128), [1]);
        assert_eq!(level_sizes(129), [2, 1]);
        assert_eq!(level_sizes(128 * 128), [128, 1]);
        assert_eq!(level_sizes(128 * 128 + 1), [129, 2, 1]);
    }

    #[test]
    fn one_block_has_no_levels_and_hashes_the_block() {
        let d = data(1);
        let t = compute(&d).unwrap();
        assert_eq!(t.hash_device.len(), BLOCK);
        assert_eq!(t.root_hash, hash_block(&t.salt, &d));
        assert_eq!(t.data_blocks, 1);
    }

    #[test]
    fn full_leaf_block_is_one_level() {
        let d = data(128);
        let t = compute(&d).unwrap();
        assert_eq!(t.hash_device.len(), 2 * BLOCK);
        let leaf = &t.hash_device[BLOCK..];
        // The leaf block holds every data block's hash in order, salt first.
        for (i, b) in d.chunks(BLOCK).enumerate() {
            assert_eq!(leaf[i * 32..i * 32 + 32], hash_block(&t.salt, b));
        }
        assert_eq!(t.root_hash, hash_block(&t.salt, leaf));
    }

    #[test]
    fn top_level_comes_first_and_blocks_are_zero_padded() {
        let d = data(129);
        let t = compute(&d).unwrap();
        // superblock, top (1 block), leaves (2 blocks)
        assert_eq!(t.hash_device.len(), 4 * BLOCK);
        let top = &t.hash_device[BLOCK..2 * BLOCK];
        let leaves = &t.hash_device[2 * BLOCK..];
        assert_eq!(t.root_hash, hash_block(&t.salt, top));
        assert_eq!(top[..32], hash_block(&t.salt, &leaves[..BLOCK]));
        assert_eq!(top[32..64], hash_block(&t.salt, &leaves[BLOCK..]));
        assert!(top[64..].iter().all(|&b| b == 0));
        // The second leaf block holds one hash (of data block 128), then zeros.
        assert_eq!(
            leaves[BLOCK..BLOCK + 32],
            hash_block(&t.salt, &d[128 * BLOCK..])
        );
        assert!(leaves[BLOCK + 32..].iter().all(|&b| b == 0));
    }

    #[test]
    fn three_levels_beyond_128_squared() {
        let d = vec![0u8; (128 * 128 + 1) * BLOCK];
        let t = compute(&d).unwrap();
        assert_eq!(t.hash_device.len(), (1 + 1 + 2 + 129) * BLOCK);
        let top = &t.hash_device[BLOCK..2 * BLOCK];
        let mid = &t.hash_device[2 * BLOCK..4 * BLOCK];
        assert_eq!(t.root_hash, hash_block(&t.salt, top));
        assert_eq!(top[..32], hash_block(&t.salt, &mid[..BLOCK]));
    }

    #[test]
    fn superblock_layout() {
        let d = data(3);
        let t = compute(&d).unwrap();
        let sb = &t.hash_device[..SB_SIZE];
        assert_eq!(&sb[..8], b"verity\0\0");
        assert_eq!(sb[8..16], [1, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(sb[16..32], t.uuid);
        assert_eq!(t.uuid[6] >> 4, 4);
        assert_eq!(t.uuid[8] >> 6, 0b10);
        assert_eq!(&sb[32..39], b"sha256\0");
        assert_eq!(sb[64..72], [0, 16, 0, 0, 0, 16, 0, 0]);
        assert_eq!(sb[72..80], 3u64.to_le_bytes());
        assert_eq!(sb[80..82], [32, 0]);
        assert_eq!(sb[88..120], t.salt);
        assert!(t.hash_device[120..BLOCK].iter().all(|&b| b == 0));
    }

    #[test]
    fn deterministic_and_data_dependent() {
        let d = data(5);
        assert_eq!(compute(&d), compute(&d));
        let mut e = d.clone();
        e[BLOCK * 4 + 9] ^= 1;
        let (a, b) = (compute(&d).unwrap(), compute(&e).unwrap());
        assert_ne!(a.root_hash, b.root_hash);
        assert_ne!(a.salt, b.salt);
        assert_ne!(a.uuid, b.uuid);
    }

    #[test]
    fn rejects_partial_and_empty_data() {
        assert!(compute(&[]).is_err());
        assert!(compute(&[0u8; BLOCK + 1]).is_err());
        let mut v = vec![1u8; BLOCK + 1];
        pad(&mut v);
        assert_eq!(v.len(), 2 * BLOCK);
        assert!(compute(&v).is_ok());
    }

    #[test]
    fn verify_accepts_own_tree_and_rejects_changes() {
        let d = data(200);
        let t = compute(&d).unwrap();
        assert_eq!(verify(&d, &t.hash_device).unwrap(), t);
        let mut e = d.clone();
        e[77] ^= 1;
        assert!(verify(&e, &t.hash_device).is_err());
        let mut h = t.hash_device.clone();
        h[BLOCK + 5] ^= 1;
        assert!(verify(&d, &h).is_err());
        assert!(verify(&d[..BLOCK], &t.hash_device).is_err());
        assert!(verify(&d, &t.hash_device[..100]).is_err());
    }

    #[test]
    fn doc_describes_the_tree() {
        let t = compute(&data(2)).unwrap();
        let v = t.doc("rootfs.verity");
        assert_eq!(v.hash_path, "rootfs.verity");
        assert_eq!(v.hash_size, 2 * BLOCK as u64);
        assert_eq!(v.root_hash, hex::encode(&t.root_hash));
        assert_eq!(v.data_blocks, 2);
        assert_eq!(v.algorithm, "sha256");
        assert_eq!(
            v.hash_sha256,
            hex::encode(&phase_release::sha256(&t.hash_device))
        );
    }
}
