//! Ed25519 keys, key IDs, and the key files `phase-image keygen` writes.
//!
//! A key ID is the lowercase hex SHA-256 of the 32-byte public key, so it names exactly one
//! key and cannot be chosen by an attacker.

use crate::hex;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

/// The only key type.
pub const KEYTYPE: &str = "ed25519";

/// A public key as it appears in a root document and in a `.pub` file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicKey {
    pub keytype: String,
    /// 32 bytes, lowercase hex.
    pub public: String,
}

impl PublicKey {
    pub fn from_bytes(b: &[u8; 32]) -> Self {
        PublicKey {
            keytype: KEYTYPE.into(),
            public: hex::encode(b),
        }
    }
    pub fn bytes(&self) -> Option<[u8; 32]> {
        if self.keytype != KEYTYPE {
            return None;
        }
        hex::decode::<32>(&self.public)
    }
    /// The key ID, or `None` if the key is malformed.
    pub fn key_id(&self) -> Option<String> {
        self.bytes().map(|b| key_id(&b))
    }
    pub fn verifying_key(&self) -> Option<VerifyingKey> {
        VerifyingKey::from_bytes(&self.bytes()?).ok()
    }
}

/// Lowercase hex SHA-256 of a public key.
pub fn key_id(public: &[u8; 32]) -> String {
    hex::encode(&crate::sha256(public))
}

/// A private key file (`.key`, mode 0600): the 32-byte Ed25519 seed.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivateKeyFile {
    pub keytype: String,
    /// 32-byte seed, lowercase hex.
    pub private: String,
    /// Free text for people (e.g. "TEST KEY - never use in production").
    pub comment: String,
}

/// A key that can sign.
pub struct Keypair {
    signing: SigningKey,
}

impl Keypair {
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Keypair {
            signing: SigningKey::from_bytes(seed),
        }
    }
    pub fn from_file(f: &PrivateKeyFile) -> Option<Self> {
        if f.keytype != KEYTYPE {
            return None;
        }
        Some(Self::from_seed(&hex::decode::<32>(&f.private)?))
    }
    pub fn to_file(&self, comment: &str) -> PrivateKeyFile {
        PrivateKeyFile {
            keytype: KEYTYPE.into(),
            private: hex::encode(&self.signing.to_bytes()),
            comment: comment.into(),
        }
    }
    pub fn public(&self) -> PublicKey {
        PublicKey::from_bytes(&self.signing.verifying_key().to_bytes())
    }
    pub fn key_id(&self) -> String {
        key_id(&self.signing.verifying_key().to_bytes())
    }
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        let s: Signature = self.signing.sign(msg);
        s.to_bytes()
    }
}

impl std::fmt::Debug for PrivateKeyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PrivateKeyFile({}, <redacted>)", self.comment)
    }
}

/// Write a private key file as a new file: mode 0600 from the start, written to a temp file
/// beside it, synced, then renamed into place (a crash leaves the old state or the new key,
/// never a readable partial secret). The caller decides whether an existing key may be
/// replaced; this replaces whatever `path` is.
pub fn write_private_file(path: &std::path::Path, file: &PrivateKeyFile) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut bytes = serde_json::to_vec_pretty(file).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    // A temp file left by a crash may have other permissions: start from a new one.
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    let _ = std::fs::File::open(&dir).and_then(|d| d.sync_all());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_id_is_sha256_of_public_key() {
        let k = Keypair::from_seed(&[7; 32]);
        let public = k.public();
        assert_eq!(public.key_id().unwrap(), k.key_id());
        assert_eq!(
            k.key_id(),
            hex::encode(&crate::sha256(&public.bytes().unwrap()))
        );
        let f = k.to_file("test");
        assert_eq!(Keypair::from_file(&f).unwrap().key_id(), k.key_id());
        let wrong_type = PublicKey {
            keytype: "rsa".into(),
            public: public.public.clone(),
        };
        assert!(wrong_type.key_id().is_none());
    }
}
