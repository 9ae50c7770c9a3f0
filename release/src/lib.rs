//! Phase Boot's release metadata, shared by the init (which verifies) and `phase-image`
//! (which signs). Modelled on The Update Framework, small enough for PID 1.
//!
//! - [`artifact`]: the one check of artifact paths and dm-verity parameters (init and
//!   `phase-image verify`), and the one list of a release's files.
//! - [`canonical`]: the one JSON encoding that is signed and accepted (sorted keys, no
//!   insignificant whitespace, UTF-8, integers only, duplicate keys rejected).
//! - [`keys`]: Ed25519 keys and key IDs (SHA-256 of the public key).
//! - [`doc`]: the root and release documents and their signed envelope, with a
//!   domain-separated signing input per document type.
//! - [`verify`]: root chain walking, release verification (threshold, expiry, arch/channel,
//!   rollback), each rejection a distinct [`verify::TrustError`] kind.
//! - [`chain`]: the trusted root chain (anchor plus verified rotation steps), walked
//!   forward from any source, stored and carried as the bytes served.
//! - [`stream`]: size- and hash-checked artifact streams.
//! - [`verity`]: dm-verity hash trees (the builder writes them; the init checks a rootfs
//!   by its tree on every core when the kernel has no dm-verity).
//! - [`cpio`]: newc archives (the initramfs, and the release carried across kexec).
//! - [`state`]: the trusted state (highest accepted release and root), persisted atomically.
//! - [`receipt`]: job receipts (DSSE envelope, in-toto Statement v1) and their one check.
//!
//! # Dependencies
//! `ed25519-dalek` (strict verification; default features off: no precomputed tables, so
//! the init stays small), `sha2`, `serde`/`serde_json` (typed documents; the canonical
//! parser is our own because serde_json silently accepts duplicate keys), `thiserror`,
//! `base64` (DSSE envelopes carry the payload and signatures in standard base64).

pub mod artifact;
pub mod canonical;
pub mod chain;
pub mod cpio;
pub mod doc;
pub mod hex;
pub mod keys;
pub mod receipt;
pub mod state;
pub mod stream;
pub mod verify;
pub mod verity;

/// Incremental SHA-256, for callers that hash streams without a declared artifact.
#[derive(Default, Clone)]
pub struct Sha256Hasher(sha2::Sha256);

impl Sha256Hasher {
    pub fn update(&mut self, data: &[u8]) {
        use sha2::Digest;
        self.0.update(data);
    }
    pub fn finish(self) -> [u8; 32] {
        use sha2::Digest;
        self.0.finalize().into()
    }
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}
