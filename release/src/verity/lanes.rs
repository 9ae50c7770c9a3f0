//! Two salted block hashes at once with the x86 SHA extensions (SHA-NI): SHA-256(salt ||
//! block) of two 4 KiB blocks, their compression rounds interleaved. One SHA-256 is a
//! chain of dependent `sha256rnds2` steps, so a core runs it at the instruction's latency,
//! not its throughput; a second, independent chain fills the gaps (Linux's dm-verity does
//! the same, `sha256_finup_2x`). [`hash_pair`] says `None` when the CPU lacks the
//! extensions or the shapes differ (another salt length, a short block): the caller
//! hashes with `sha2` then, which gives the same digests.
//!
//! The only `unsafe` is the unaligned 16-byte loads, from 64-byte arrays.

use super::BLOCK;

/// The salt length this path takes (the one `signed_params` accepts).
const SALT: usize = 32;

/// `(SHA-256(salt || a), SHA-256(salt || b))`, or `None`: use `sha2`.
pub fn hash_pair(salt: &[u8], a: &[u8], b: &[u8]) -> Option<([u8; 32], [u8; 32])> {
    #[cfg(target_arch = "x86_64")]
    {
        let salt: &[u8; SALT] = salt.try_into().ok()?;
        let a: &[u8; BLOCK] = a.try_into().ok()?;
        let b: &[u8; BLOCK] = b.try_into().ok()?;
        if std::is_x86_feature_detected!("sha")
            && std::is_x86_feature_detected!("sse4.1")
            && std::is_x86_feature_detected!("ssse3")
        {
            // SAFETY: the CPU has the features `x86::pair` is compiled for.
            return Some(unsafe { x86::pair(salt, a, b) });
        }
    }
    let _ = (salt, a, b);
    None
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{BLOCK, SALT};
    use core::arch::x86_64::*;

    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    const IV: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];

    /// One hash's state in the register order `sha256rnds2` wants.
    #[derive(Clone, Copy)]
    struct State {
        abef: __m128i,
        cdgh: __m128i,
    }

    #[inline]
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn initial() -> State {
        let dcba = _mm_set_epi32(IV[3] as i32, IV[2] as i32, IV[1] as i32, IV[0] as i32);
        let hgfe = _mm_set_epi32(IV[7] as i32, IV[6] as i32, IV[5] as i32, IV[4] as i32);
        let cdab = _mm_shuffle_epi32(dcba, 0xB1);
        let efgh = _mm_shuffle_epi32(hgfe, 0x1B);
        State {
            abef: _mm_alignr_epi8(cdab, efgh, 8),
            cdgh: _mm_blend_epi16(efgh, cdab, 0xF0),
        }
    }

    /// The digest bytes (big-endian words a..h).
    #[inline]
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn digest(s: State) -> [u8; 32] {
        let feba = _mm_shuffle_epi32(s.abef, 0x1B);
        let dchg = _mm_shuffle_epi32(s.cdgh, 0xB1);
        let dcba = _mm_blend_epi16(feba, dchg, 0xF0);
        let hgef = _mm_alignr_epi8(dchg, feba, 8);
        // Byte-swap each word: the state holds native words, the digest is big-endian.
        let swap = _mm_set_epi64x(0x0C0D_0E0F_0809_0A0B, 0x0405_0607_0001_0203);
        let mut out = [0u8; 32];
        let (lo, hi) = out.split_at_mut(16);
        // SAFETY: each half is 16 bytes; unaligned stores.
        unsafe {
            _mm_storeu_si128(lo.as_mut_ptr().cast(), _mm_shuffle_epi8(dcba, swap));
            _mm_storeu_si128(hi.as_mut_ptr().cast(), _mm_shuffle_epi8(hgef, swap));
        }
        out
    }

    #[inline]
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn load(block: &[u8; 64]) -> [__m128i; 4] {
        let mask = _mm_set_epi64x(0x0C0D_0E0F_0809_0A0B, 0x0405_0607_0001_0203);
        let p: *const __m128i = block.as_ptr().cast();
        // SAFETY: four 16-byte loads inside a 64-byte array, unaligned.
        core::array::from_fn(|i| _mm_shuffle_epi8(unsafe { _mm_loadu_si128(p.add(i)) }, mask))
    }

    #[inline]
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn rounds4(r: usize, s: &mut State, w: __m128i) {
        let k = _mm_set_epi32(
            K[4 * r + 3] as i32,
            K[4 * r + 2] as i32,
            K[4 * r + 1] as i32,
            K[4 * r] as i32,
        );
        let t = _mm_add_epi32(w, k);
        s.cdgh = _mm_sha256rnds2_epu32(s.cdgh, s.abef, t);
        s.abef = _mm_sha256rnds2_epu32(s.abef, s.cdgh, _mm_shuffle_epi32(t, 0x0E));
    }

    /// The next four message words from the last sixteen (`w[i]` is replaced).
    #[inline]
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn schedule(w: &mut [__m128i; 4], i: usize) -> __m128i {
        let t = _mm_sha256msg1_epu32(w[i], w[(i + 1) % 4]);
        let t = _mm_add_epi32(t, _mm_alignr_epi8(w[(i + 3) % 4], w[(i + 2) % 4], 4));
        w[i] = _mm_sha256msg2_epu32(t, w[(i + 3) % 4]);
        w[i]
    }

    /// One 64-byte block into each state, the two chains interleaved step by step.
    #[inline]
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn compress2(s: &mut [State; 2], a: &[u8; 64], b: &[u8; 64]) {
        let saved = *s;
        let [sa, sb] = s;
        let (mut wa, mut wb) = (load(a), load(b));
        for r in 0..4 {
            rounds4(r, sa, wa[r]);
            rounds4(r, sb, wb[r]);
        }
        for q in 1..4 {
            // Four constant indices per pass: the words stay in registers.
            for i in 0..4 {
                let (xa, xb) = (schedule(&mut wa, i), schedule(&mut wb, i));
                rounds4(4 * q + i, sa, xa);
                rounds4(4 * q + i, sb, xb);
            }
        }
        for (s, saved) in s.iter_mut().zip(saved) {
            s.abef = _mm_add_epi32(s.abef, saved.abef);
            s.cdgh = _mm_add_epi32(s.cdgh, saved.cdgh);
        }
    }

    /// The message `salt || block` is 4128 bytes: a first 64-byte block of the salt and the
    /// block's first 32 bytes, 63 blocks straight from the block, and a last one of its final
    /// 32 bytes, the 0x80 marker and the bit length.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    pub(super) fn pair(
        salt: &[u8; SALT],
        a: &[u8; BLOCK],
        b: &[u8; BLOCK],
    ) -> ([u8; 32], [u8; 32]) {
        let mut s = [initial(), initial()];
        let first = |block: &[u8; BLOCK]| {
            let mut m = [0u8; 64];
            m[..SALT].copy_from_slice(salt);
            m[SALT..].copy_from_slice(&block[..64 - SALT]);
            m
        };
        compress2(&mut s, &first(a), &first(b));
        let (mid_a, _) = a[64 - SALT..BLOCK - SALT].as_chunks::<64>();
        let (mid_b, _) = b[64 - SALT..BLOCK - SALT].as_chunks::<64>();
        for (x, y) in mid_a.iter().zip(mid_b) {
            compress2(&mut s, x, y);
        }
        let bits = ((SALT + BLOCK) as u64 * 8).to_be_bytes();
        let last = |block: &[u8; BLOCK]| {
            let mut m = [0u8; 64];
            m[..SALT].copy_from_slice(&block[BLOCK - SALT..]);
            m[SALT] = 0x80;
            m[56..].copy_from_slice(&bits);
            m
        };
        compress2(&mut s, &last(a), &last(b));
        (digest(s[0]), digest(s[1]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pairs of blocks of many patterns, against `sha2` one at a time; other shapes
    /// are declined.
    #[test]
    fn pairs_hash_as_sha2_does() {
        let salts: [[u8; 32]; 3] = [[0; 32], [0xff; 32], core::array::from_fn(|i| (i * 9) as u8)];
        let block = |seed: u32| -> Vec<u8> {
            (0..BLOCK as u32)
                .map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed) >> 13) as u8)
                .collect()
        };
        for salt in &salts {
            for seed in 0..20 {
                let (a, b) = (block(seed), block(seed + 100));
                let want = (
                    super::super::hash_block(salt, &a),
                    super::super::hash_block(salt, &b),
                );
                if let Some(got) = hash_pair(salt, &a, &b) {
                    assert_eq!(got, want, "seed {seed}");
                }
                // One flipped bit anywhere changes that lane only.
                let mut flipped = b.clone();
                flipped[(seed as usize * 211) % BLOCK] ^= 1;
                if let Some((x, y)) = hash_pair(salt, &a, &flipped) {
                    assert_eq!(x, want.0);
                    assert_ne!(y, want.1);
                    assert_eq!(y, super::super::hash_block(salt, &flipped));
                }
            }
        }
        let a = block(1);
        assert_eq!(hash_pair(&[0; 16], &a, &a), None, "salt of another length");
        assert_eq!(
            hash_pair(&[0; 32], &a[..100], &a[..100]),
            None,
            "short block"
        );
    }

    /// This machine kind has SHA-NI: the fast path must be the one tested above.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn the_sha_extensions_are_used_where_present() {
        let has = std::is_x86_feature_detected!("sha") && std::is_x86_feature_detected!("sse4.1");
        let block = [5u8; BLOCK];
        assert_eq!(hash_pair(&[1; 32], &block, &block).is_some(), has);
    }
}
