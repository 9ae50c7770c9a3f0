//! How every identifier on a disk is derived from its content, so the same inputs give
//! the same disk and a new release gives new identifiers. Root and verity partitions are
//! named by the dm-verity root hash (systemd's convention: its first and last 16 bytes),
//! so the init finds the pair from the signed hash alone; everything else is a
//! domain-separated SHA-256 (`phase-boot/<tag>\n` then the inputs) cut to a v4 GUID.

use crate::Guid;
use sha2::{Digest, Sha256};

/// A v4 GUID from a tag and inputs: SHA-256 over `phase-boot/<tag>\n` and the inputs.
pub fn guid(tag: &str, inputs: &[&[u8]]) -> Guid {
    let d = digest(tag, inputs);
    let mut u = [0u8; 16];
    u.copy_from_slice(&d[..16]);
    // RFC 4122 version 4, variant 1: what a random GUID would look like.
    u[6] = (u[6] & 0x0f) | 0x40;
    u[8] = (u[8] & 0x3f) | 0x80;
    Guid(u)
}

/// A 32-bit FAT volume ID from a tag and inputs (the first four digest bytes).
pub fn volume_id(tag: &str, inputs: &[&[u8]]) -> u32 {
    let d = digest(tag, inputs);
    u32::from_le_bytes([d[0], d[1], d[2], d[3]])
}

fn digest(tag: &str, inputs: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"phase-boot/");
    h.update(tag.as_bytes());
    h.update(b"\n");
    for i in inputs {
        h.update(i);
    }
    h.finalize().into()
}

/// The unique GUIDs of the rootfs and verity partitions of the release whose dm-verity
/// root hash is `root_hash`.
pub fn root_and_verity(root_hash: &[u8; 32]) -> (Guid, Guid) {
    let mut first = [0u8; 16];
    let mut last = [0u8; 16];
    first.copy_from_slice(&root_hash[..16]);
    last.copy_from_slice(&root_hash[16..]);
    (Guid(first), Guid(last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable_distinct_and_v4() {
        let a = guid("disk-guid", &[b"x", b"y"]);
        assert_eq!(a, guid("disk-guid", &[b"x", b"y"]));
        assert_ne!(a, guid("disk-guid", &[b"x", b"z"]));
        assert_ne!(a, guid("state-guid", &[b"x", b"y"]));
        assert_eq!(a.0[6] >> 4, 4);
        assert_eq!(a.0[8] >> 6, 2);
        assert_ne!(volume_id("esp", &[b"a"]), volume_id("esp", &[b"b"]));
        // Domain separation: the tag is not just a prefix of the input.
        assert_ne!(guid("ab", &[b"c"]), guid("a", &[b"bc"]));
    }

    #[test]
    fn root_and_verity_are_the_halves_of_the_root_hash() {
        let rh: [u8; 32] = std::array::from_fn(|i| i as u8);
        let (r, v) = root_and_verity(&rh);
        assert_eq!(r.to_string(), "00010203-0405-0607-0809-0a0b0c0d0e0f");
        assert_eq!(v.to_string(), "10111213-1415-1617-1819-1a1b1c1d1e1f");
    }
}
