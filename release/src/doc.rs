//! The signed documents: [`Root`] (keys and roles) and [`Release`] (what to boot), each
//! wrapped in an [`Envelope`] `{"signatures":[...],"signed":{...}}`.
//!
//! The signature covers the domain-separated input
//! `"phase-boot/v1/" + TYPE + "\n" + canonical(signed)`, where TYPE is `root` or `release`,
//! so a signature over one document type can never be replayed as another, and the client
//! uses only the `signed` value it verified: there is no unsigned field to swap.

use crate::canonical;
use crate::hex;
use crate::keys::{Keypair, PublicKey};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// Largest metadata file read (root or release); checked before parsing.
pub const MAX_METADATA_BYTES: usize = 64 * 1024;
/// Current metadata format.
pub const SPEC_VERSION: u64 = 1;

/// A document type, with its domain-separation tag.
pub trait Document: Serialize + DeserializeOwned {
    const TYPE: &'static str;
}

/// The bytes a signature covers.
pub fn signing_input(doc_type: &str, canonical_signed: &[u8]) -> Vec<u8> {
    let mut v = format!("phase-boot/v1/{doc_type}\n").into_bytes();
    v.extend_from_slice(canonical_signed);
    v
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureEntry {
    pub keyid: String,
    /// 64 bytes, lowercase hex.
    pub sig: String,
}

/// `{"signatures": [...], "signed": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub signatures: Vec<SignatureEntry>,
    pub signed: Value,
}

impl Envelope {
    /// Wrap a document, unsigned.
    pub fn new<D: Document>(doc: &D) -> Result<Envelope, serde_json::Error> {
        Ok(Envelope {
            signatures: Vec::new(),
            signed: serde_json::to_value(doc)?,
        })
    }
    /// The canonical bytes of the signed part.
    pub fn signed_bytes(&self) -> Vec<u8> {
        canonical::encode(&self.signed)
    }
    /// The `_type` field of the signed part.
    pub fn doc_type(&self) -> Option<&str> {
        self.signed.get("_type")?.as_str()
    }
    /// Add (or replace) this key's signature.
    pub fn sign(&mut self, key: &Keypair) -> Result<(), &'static str> {
        let t = self
            .doc_type()
            .ok_or("signed part has no _type")?
            .to_string();
        let sig = key.sign(&signing_input(&t, &self.signed_bytes()));
        let keyid = key.key_id();
        self.signatures.retain(|s| s.keyid != keyid);
        self.signatures.push(SignatureEntry {
            keyid,
            sig: hex::encode(&sig),
        });
        self.signatures.sort_by(|a, b| a.keyid.cmp(&b.keyid));
        Ok(())
    }
    /// The canonical file bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        canonical::encode(&serde_json::to_value(self).unwrap_or(Value::Null))
    }
}

/// Keys allowed to sign for a role, and how many must.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Role {
    pub keyids: Vec<String>,
    pub threshold: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Roles {
    pub root: Role,
    pub release: Role,
}

/// The root of trust: keys, roles, a version (each rotation +1) and an expiry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Root {
    #[serde(rename = "_type")]
    pub doc_type: String,
    pub spec_version: u64,
    pub version: u64,
    /// Unix seconds (UTC).
    pub expires: u64,
    /// key ID → public key.
    pub keys: BTreeMap<String, PublicKey>,
    pub roles: Roles,
}

impl Document for Root {
    const TYPE: &'static str = "root";
}

/// One file of a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    /// File name inside the release directory (no `/`).
    pub path: String,
    pub size: u64,
    /// Lowercase hex.
    pub sha256: String,
    /// dm-verity parameters (rootfs only): the kernel checks every block read against
    /// `root_hash`, so the image need not be hashed whole before mounting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verity: Option<Verity>,
}

/// dm-verity hash tree of an artifact, in the standard on-disk format (veritysetup
/// compatible: a 512-byte superblock padded to one hash block, then the tree, top level
/// first), SHA-256, version 1 (salt prepended).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verity {
    /// File name of the hash device in the release directory.
    pub hash_path: String,
    /// Size in bytes of the hash device (superblock + tree).
    pub hash_size: u64,
    /// SHA-256 of the hash device file, for transfers.
    pub hash_sha256: String,
    /// Lowercase hex, 32 bytes.
    pub root_hash: String,
    /// Lowercase hex, 32 bytes.
    pub salt: String,
    /// Number of data blocks covered (data size / data_block_size).
    pub data_blocks: u64,
    pub data_block_size: u64,
    pub hash_block_size: u64,
    /// Always "sha256".
    pub algorithm: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifacts {
    pub kernel: Artifact,
    pub initramfs: Artifact,
    /// The squashfs root filesystem, once releases carry one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<Artifact>,
}

impl Artifacts {
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &Artifact)> {
        [("kernel", &self.kernel), ("initramfs", &self.initramfs)]
            .into_iter()
            .chain(self.rootfs.as_ref().map(|r| ("rootfs", r)))
    }
}

/// What to boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Release {
    #[serde(rename = "_type")]
    pub doc_type: String,
    pub spec_version: u64,
    /// Monotonic; a machine never accepts a lower one than it has trusted.
    pub version: u64,
    pub channel: String,
    pub arch: String,
    /// Unix seconds (UTC).
    pub expires: u64,
    /// Kernel command line to boot the release with.
    pub cmdline: String,
    pub artifacts: Artifacts,
}

impl Document for Release {
    const TYPE: &'static str = "release";
}

/// Build a root document with its keys and roles (IDs computed from the keys).
pub fn new_root(
    version: u64,
    expires: u64,
    root_keys: &[PublicKey],
    root_threshold: u64,
    release_keys: &[PublicKey],
    release_threshold: u64,
) -> Result<Root, String> {
    let mut keys = BTreeMap::new();
    let mut ids = |list: &[PublicKey]| -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        for k in list {
            let id = k.key_id().ok_or("malformed public key")?;
            keys.insert(id.clone(), k.clone());
            if !out.contains(&id) {
                out.push(id);
            }
        }
        out.sort();
        Ok(out)
    };
    let root_ids = ids(root_keys)?;
    let release_ids = ids(release_keys)?;
    for (name, ids, t) in [
        ("root", &root_ids, root_threshold),
        ("release", &release_ids, release_threshold),
    ] {
        if t == 0 || t as usize > ids.len() {
            return Err(format!(
                "{name} threshold {t} needs 1..={} distinct keys",
                ids.len()
            ));
        }
    }
    Ok(Root {
        doc_type: Root::TYPE.into(),
        spec_version: SPEC_VERSION,
        version,
        expires,
        keys,
        roles: Roles {
            root: Role {
                keyids: root_ids,
                threshold: root_threshold,
            },
            release: Role {
                keyids: release_ids,
                threshold: release_threshold,
            },
        },
    })
}
