//! A module's appended signature, and when the init leaves it off (PURE).
//!
//! Debian signs every module: after the ELF image come the PKCS#7 signature, a 12-byte
//! `struct module_signature` whose last 4 bytes are the signature's length (big-endian),
//! and the marker `~Module signature appended~\n`. The kernel hashes the whole image to
//! check it, about 20 MB/s under TCG: 60-150 ms of the modules step before the root,
//! with the host's speed (docs/bench.md).
//!
//! When the kernel does not enforce signatures (`module.sig_enforce=N` and no lockdown) it
//! loads a module whose signature fails all the same, and only taints itself; so there the
//! check protects nothing, and the init hands the kernel the image without its signature
//! (the kernel notes an unsigned module once, taint `E`). The bytes are trusted as `/init`
//! is: the initramfs's own, or the dm-verity rootfs's under the signed root hash. Where the
//! kernel enforces (`sig_enforce=Y`, or lockdown, which refuses the unsigned image with
//! `EPERM`), every module goes with its signature and the kernel checks it.

/// The last bytes of a signed module.
pub const MARKER: &[u8] = b"~Module signature appended~\n";

/// `struct module_signature`: algo, hash, id_type, signer_len, key_id_len, pad[3], sig_len.
const INFO_LEN: usize = 12;

/// The module image without its appended signature; `None` when it carries none or its
/// trailer does not add up (then the image goes to the kernel whole, which judges it).
pub fn unsigned(image: &[u8]) -> Option<&[u8]> {
    let body = image.strip_suffix(MARKER)?;
    let info_at = body.len().checked_sub(INFO_LEN)?;
    let len: [u8; 4] = body[info_at + 8..].try_into().ok()?;
    let sig_len = u32::from_be_bytes(len) as usize;
    let end = info_at.checked_sub(sig_len)?;
    (end > 0).then(|| &image[..end])
}

/// Whether the kernel's `/sys/module/module/parameters/sig_enforce` says it loads modules
/// whose signature fails: only `N`. Absent (a kernel without module signing: nothing to
/// skip) or anything else keeps the signatures.
pub fn not_enforced(sig_enforce: Option<&str>) -> bool {
    sig_enforce.map(str::trim) == Some("N")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed(body: &[u8], sig: &[u8]) -> Vec<u8> {
        let mut m = body.to_vec();
        m.extend_from_slice(sig);
        m.extend_from_slice(&[0, 0, 2, 0, 0, 0, 0, 0]);
        m.extend_from_slice(&(sig.len() as u32).to_be_bytes());
        m.extend_from_slice(MARKER);
        m
    }

    #[test]
    fn the_signature_and_its_trailer_come_off_and_nothing_else() {
        let body = b"\x7fELF the module image";
        let sig = vec![0x30; 659];
        let m = signed(body, &sig);
        assert_eq!(unsigned(&m), Some(&body[..]));
    }

    #[test]
    fn a_module_without_a_signature_or_with_a_bad_trailer_stays_whole() {
        assert_eq!(unsigned(b"\x7fELF unsigned"), None);
        // The length claims more than there is.
        let mut m = signed(b"\x7fELF", &[1, 2, 3]);
        let at = m.len() - MARKER.len() - 4;
        m[at..at + 4].copy_from_slice(&1000u32.to_be_bytes());
        assert_eq!(unsigned(&m), None);
        // A signature with no image before it.
        assert_eq!(unsigned(&signed(b"", &[1, 2, 3])), None);
        // Only the marker.
        assert_eq!(unsigned(MARKER), None);
    }

    #[test]
    fn only_an_explicit_n_lets_the_signatures_off() {
        assert!(not_enforced(Some("N\n")));
        assert!(!not_enforced(Some("Y\n")));
        assert!(!not_enforced(Some("")));
        assert!(!not_enforced(None));
    }
}
