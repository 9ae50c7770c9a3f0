//! Verification: bytes and trusted keys in, a verified document or a named rejection out.
//!
//! Order of checks for any document: size cap (before parsing) → canonical JSON (duplicate
//! keys, encoding) → schema → `_type` → signatures (threshold of distinct listed keys,
//! strict Ed25519) → expiry → content rules (arch, channel, rollback, then [`crate::artifact::check`]: file names and
//! dm-verity parameters). A document that fails
//! any check is never used.

use crate::canonical::{self, CanonicalError};
use crate::doc::{
    signing_input, Document, Envelope, Release, Role, Root, MAX_METADATA_BYTES, SPEC_VERSION,
};
use crate::hex;
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    #[error("metadata is {size} bytes; at most {max} are read")]
    Oversized { size: usize, max: usize },
    #[error("duplicate JSON key {0:?}")]
    DuplicateKey(String),
    #[error("not canonical JSON: {0}")]
    NonCanonical(CanonicalError),
    #[error("malformed metadata: {0}")]
    Malformed(String),
    #[error("expected a {expected} document, found {found:?}")]
    WrongType {
        expected: &'static str,
        found: String,
    },
    #[error("unsupported spec_version {0}")]
    UnsupportedSpec(u64),
    #[error("no signature from any {role} key")]
    UnknownKey { role: &'static str },
    #[error("invalid signature by key {keyid}")]
    InvalidSignature { keyid: String },
    #[error("key {keyid} signed twice")]
    DuplicateSignature { keyid: String },
    #[error("{role}: {valid} valid signatures, threshold {threshold}")]
    BelowThreshold {
        role: &'static str,
        valid: u64,
        threshold: u64,
    },
    #[error("release expired at {expires} (now {now})")]
    ReleaseExpired { expires: u64, now: u64 },
    #[error("root version {version} expired at {expires} (now {now})")]
    RootExpired {
        version: u64,
        expires: u64,
        now: u64,
    },
    #[error("release version {version} is below the trusted version {trusted}")]
    Rollback { version: u64, trusted: u64 },
    #[error("release version {version} is below this system's floor {floor}")]
    BelowFloor { version: u64, floor: u64 },
    #[error("release version {version} has different content than the one trusted")]
    SameVersionDifferentContent { version: u64 },
    #[error("release is for arch {found:?}, this machine is {want:?}")]
    WrongArch { want: String, found: String },
    #[error("release is on channel {found:?}, this machine follows {want:?}")]
    WrongChannel { want: String, found: String },
    #[error("root version {found} does not follow trusted root version {trusted}")]
    RootNotNext { trusted: u64, found: u64 },
    #[error("root chain longer than {max} steps")]
    RootChainTooLong { max: usize },
    #[error("artifact {name}: invalid dm-verity {field}")]
    BadVerity { name: String, field: &'static str },
    #[error("artifact {name}: invalid path {path:?}")]
    BadArtifactPath { name: String, path: String },
    #[error("artifact {name}: {got} bytes, {expected} declared")]
    ArtifactSize {
        name: String,
        expected: u64,
        got: u64,
    },
    #[error("artifact {name}: more bytes than the {declared} declared")]
    ArtifactTooLong { name: String, declared: u64 },
    #[error("artifact {name}: SHA-256 mismatch")]
    ArtifactHash { name: String },
    #[error("artifact {name}: its dm-verity tree does not end in the signed root hash")]
    ArtifactVerity { name: String },
}

impl TrustError {
    /// Stable snake_case reason for `verify.failed` events and the CLI.
    pub fn reason(&self) -> &'static str {
        use TrustError::*;
        match self {
            Oversized { .. } => "oversized_metadata",
            DuplicateKey(_) => "duplicate_json_key",
            NonCanonical(_) => "non_canonical",
            Malformed(_) => "malformed",
            WrongType { .. } => "wrong_type",
            UnsupportedSpec(_) => "unsupported_spec",
            UnknownKey { .. } => "unknown_key",
            InvalidSignature { .. } => "invalid_signature",
            DuplicateSignature { .. } => "duplicate_signature",
            BelowThreshold { .. } => "below_threshold",
            ReleaseExpired { .. } => "release_expired",
            RootExpired { .. } => "root_expired",
            Rollback { .. } => "rollback",
            BelowFloor { .. } => "below_floor",
            SameVersionDifferentContent { .. } => "same_version_different_content",
            WrongArch { .. } => "wrong_arch",
            WrongChannel { .. } => "wrong_channel",
            RootNotNext { .. } => "root_not_next",
            RootChainTooLong { .. } => "root_chain_too_long",
            BadArtifactPath { .. } => "bad_artifact_path",
            BadVerity { .. } => "bad_verity_params",
            ArtifactSize { .. } => "artifact_size",
            ArtifactTooLong { .. } => "artifact_too_long",
            ArtifactHash { .. } => "artifact_hash",
            ArtifactVerity { .. } => "verity_mismatch",
        }
    }
}

/// A verified document and the SHA-256 of its canonical signed part (its content digest:
/// adding a signature does not change it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified<D> {
    pub doc: D,
    pub digest: [u8; 32],
}

/// The time to check expiry against. A machine's RTC may be wrong (no battery, never set):
/// it is never trusted below the newest time this machine has already accepted (the build
/// time of its initramfs, or a later time recorded in its trusted state). Setting the clock
/// back therefore cannot revive expired metadata; a clock far in the future makes current
/// metadata look expired and the machine falls back to what it has (see docs/keys.md).
pub fn effective_now(rtc: u64, build_time: u64, last_seen: u64) -> u64 {
    rtc.max(build_time).max(last_seen)
}

/// Size cap, canonical parse, envelope schema.
pub fn open_envelope(bytes: &[u8]) -> Result<Envelope, TrustError> {
    if bytes.len() > MAX_METADATA_BYTES {
        return Err(TrustError::Oversized {
            size: bytes.len(),
            max: MAX_METADATA_BYTES,
        });
    }
    let v = canonical::parse(bytes).map_err(|e| match e {
        CanonicalError::DuplicateKey(k) => TrustError::DuplicateKey(k),
        other => TrustError::NonCanonical(other),
    })?;
    serde_json::from_value(v).map_err(|e| TrustError::Malformed(e.to_string()))
}

fn typed<D: Document>(env: &Envelope) -> Result<D, TrustError> {
    let found = env.doc_type().unwrap_or("").to_string();
    if found != D::TYPE {
        return Err(TrustError::WrongType {
            expected: D::TYPE,
            found,
        });
    }
    if env.signed.get("spec_version").and_then(|v| v.as_u64()) != Some(SPEC_VERSION) {
        let v = env
            .signed
            .get("spec_version")
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        return Err(TrustError::UnsupportedSpec(v));
    }
    serde_json::from_value(env.signed.clone()).map_err(|e| TrustError::Malformed(e.to_string()))
}

/// Count valid signatures by distinct keys listed for `role`; require its threshold.
fn check_threshold(
    env: &Envelope,
    doc_type: &str,
    role_name: &'static str,
    role: &Role,
    keys: &BTreeMap<String, crate::keys::PublicKey>,
) -> Result<(), TrustError> {
    let input = signing_input(doc_type, &env.signed_bytes());
    let mut seen: Vec<&str> = Vec::new();
    let (mut valid, mut invalid, mut listed) = (0u64, None, 0u64);
    for s in &env.signatures {
        if seen.contains(&s.keyid.as_str()) {
            return Err(TrustError::DuplicateSignature {
                keyid: s.keyid.clone(),
            });
        }
        seen.push(&s.keyid);
        if !role.keyids.contains(&s.keyid) {
            continue;
        }
        listed += 1;
        let key = keys.get(&s.keyid).and_then(|k| {
            // The listed ID must really be this key's ID.
            (k.key_id().as_deref() == Some(s.keyid.as_str())).then(|| k.verifying_key())?
        });
        let sig = hex::decode::<64>(&s.sig).map(|b| ed25519_dalek::Signature::from_bytes(&b));
        match (key, sig) {
            (Some(k), Some(sig)) if k.verify_strict(&input, &sig).is_ok() => valid += 1,
            _ => invalid = Some(s.keyid.clone()),
        }
    }
    if valid >= role.threshold && role.threshold > 0 {
        return Ok(());
    }
    Err(match (invalid, listed) {
        (Some(keyid), _) => TrustError::InvalidSignature { keyid },
        (None, 0) => TrustError::UnknownKey { role: role_name },
        (None, _) => TrustError::BelowThreshold {
            role: role_name,
            valid,
            threshold: role.threshold,
        },
    })
}

fn digest(env: &Envelope) -> [u8; 32] {
    crate::sha256(&env.signed_bytes())
}

/// A root trusted because it is baked into the initramfs (or given on the command line):
/// it must still be well formed and meet its own root threshold. Expiry is checked when
/// it is used to verify a release.
pub fn verify_root_self(bytes: &[u8]) -> Result<Verified<Root>, TrustError> {
    let env = open_envelope(bytes)?;
    let root: Root = typed(&env)?;
    check_threshold(&env, Root::TYPE, "root", &root.roles.root, &root.keys)?;
    Ok(Verified {
        digest: digest(&env),
        doc: root,
    })
}

/// One rotation step: `bytes` must be root version `trusted.version + 1`, signed by a
/// threshold of the trusted root's root keys AND of its own root keys.
pub fn verify_root_update(trusted: &Root, bytes: &[u8]) -> Result<Verified<Root>, TrustError> {
    let env = open_envelope(bytes)?;
    let new: Root = typed(&env)?;
    if new.version != trusted.version + 1 {
        return Err(TrustError::RootNotNext {
            trusted: trusted.version,
            found: new.version,
        });
    }
    check_threshold(&env, Root::TYPE, "root", &trusted.roles.root, &trusted.keys)?;
    check_threshold(&env, Root::TYPE, "root", &new.roles.root, &new.keys)?;
    Ok(Verified {
        digest: digest(&env),
        doc: new,
    })
}

/// Walk the chain from `trusted`: fetch `N+1`, `N+2`, … with `next(version)` until it
/// returns `None`, verifying each step; never skipping. The final root must be unexpired.
pub fn update_root_chain(
    trusted: Root,
    mut next: impl FnMut(u64) -> Option<Vec<u8>>,
    now: u64,
) -> Result<Root, TrustError> {
    let mut root = trusted;
    // A bound on the walk, so a provider cannot keep us busy forever.
    for _ in 0..1024 {
        let Some(bytes) = next(root.version + 1) else {
            break;
        };
        root = verify_root_update(&root, &bytes)?.doc;
    }
    if root.expires <= now {
        return Err(TrustError::RootExpired {
            version: root.version,
            expires: root.expires,
            now,
        });
    }
    Ok(root)
}

/// What this machine accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub arch: String,
    pub channel: String,
    /// [`effective_now`].
    pub now: u64,
    /// The release version built into the running system: nothing older is accepted.
    pub floor: u64,
    /// The highest release accepted before, with its content digest.
    pub trusted: Option<(u64, [u8; 32])>,
}

/// Verify release metadata against a trusted root and this machine's policy.
pub fn verify_release(
    bytes: &[u8],
    root: &Root,
    policy: &Policy,
) -> Result<Verified<Release>, TrustError> {
    let env = open_envelope(bytes)?;
    let rel: Release = typed(&env)?;
    check_threshold(
        &env,
        Release::TYPE,
        "release",
        &root.roles.release,
        &root.keys,
    )?;
    if root.expires <= policy.now {
        return Err(TrustError::RootExpired {
            version: root.version,
            expires: root.expires,
            now: policy.now,
        });
    }
    if rel.expires <= policy.now {
        return Err(TrustError::ReleaseExpired {
            expires: rel.expires,
            now: policy.now,
        });
    }
    if rel.arch != policy.arch {
        return Err(TrustError::WrongArch {
            want: policy.arch.clone(),
            found: rel.arch,
        });
    }
    if rel.channel != policy.channel {
        return Err(TrustError::WrongChannel {
            want: policy.channel.clone(),
            found: rel.channel,
        });
    }
    if rel.version < policy.floor {
        return Err(TrustError::BelowFloor {
            version: rel.version,
            floor: policy.floor,
        });
    }
    let d = digest(&env);
    if let Some((tv, td)) = policy.trusted {
        if rel.version < tv {
            return Err(TrustError::Rollback {
                version: rel.version,
                trusted: tv,
            });
        }
        if rel.version == tv && d != td {
            return Err(TrustError::SameVersionDifferentContent {
                version: rel.version,
            });
        }
    }
    crate::artifact::check(&rel)?;
    Ok(Verified {
        doc: rel,
        digest: d,
    })
}

#[cfg(test)]
mod tests;
