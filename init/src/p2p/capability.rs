//! Capability records (PURE): what a job node offers to run (arch, WASM targets, CPUs, the
//! largest job memory it admits, free slots), signed by its node key and kept in the DHT, and
//! how a requester picks a node by them (`phase job run --discover`).
//!
//! Each node publishes ONE [`SignedCapability`] under its own Kademlia key ([`record_key`]:
//! `/phase-boot/v1/capability/<node key, hex>`), signed afresh when its free slots change (at
//! a bounded rate) and before it expires (at most [`MAX_TTL_S`] after `issued`), and
//! announces itself as a Kademlia provider of [`offer_key`] (arch + WASM target) so that
//! requesters find the nodes first, then read each node's record. The signature covers
//! `"phase-boot/v1/capability-record\n" + canonical(signed)` (the scheme of provider records
//! and release metadata, with its own tag, so no other signature can be replayed as one).
//! Checks, in order: size, shape (unknown fields refused), signature, the key it was stored
//! under names the signer, lifetime, then field bounds. A node that stops withdraws its
//! record by publishing it once more with no free slot (a newer record replaces an older
//! one everywhere, [`admit`]). A record that verifies only says what a node claims; its
//! receipt is what proves what ran.
//!
//! [`select`] ranks the verified records for a job: the ones that can take it (arch, WASM
//! target, memory, CPUs, free slots), most free slots first, then most CPUs, ties broken by a
//! requester's seed so that requesters spread over equal nodes. The publishing task is
//! [`publish`]; the lookup is [`find`].

#[cfg(feature = "executor")]
pub mod bench;
pub mod find;
pub mod publish;
#[cfg(test)]
mod tests;

// The initramfs's build (no executor) neither publishes nor looks up; it filters what it stores.
#[cfg_attr(not(feature = "executor"), allow(unused_imports))]
pub use find::{find, Found};
#[cfg_attr(not(feature = "executor"), allow(unused_imports))]
pub use publish::{offered_addrs, publish, Offer, Publishing};

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use phase_release::{canonical, hex};
use serde::{Deserialize, Serialize};

/// The domain-separation tag.
pub const DOC_TYPE: &str = "capability-record";
/// Longest lifetime a record may claim (the node refreshes at half of it).
pub const MAX_TTL_S: u64 = 3600;
/// How long peers keep a node listed under an offer key without its renewal.
pub const PROVIDER_TTL: std::time::Duration = std::time::Duration::from_secs(MAX_TTL_S);
/// How far in the future `issued` may be (clock skew).
pub const MAX_FUTURE_SKEW_S: u64 = 300;
/// Largest record accepted (far below the record store's 65 KiB).
pub const MAX_RECORD_BYTES: usize = 4096;
/// Addresses one record lists.
pub const MAX_ADDRS: usize = 8;
const MAX_ADDR_LEN: usize = 256;
const MAX_NAME: usize = 32;
const MAX_TARGETS: usize = 4;
/// Capability records one node holds for others (each under its own key); a node already
/// holding this many takes no new ones (records it holds are still updated).
pub const MAX_HELD: usize = 256;
/// Nodes one offer key may list as providers (libp2p's default, 20, would hide nodes in a
/// cluster larger than that).
pub const MAX_PROVIDERS: usize = 128;
/// The one WASM target the executor runs.
pub const WASM_TARGET: &str = "wasm32-wasip1";
const KEY_PREFIX: &str = "/phase-boot/v1/capability/";
const OFFER_PREFIX: &str = "/phase-boot/v1/capable/";

/// What a node offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capability {
    /// The node's ed25519 public key (lowercase hex); also its libp2p identity.
    pub node: String,
    /// Multiaddrs to reach its job protocol.
    pub addrs: Vec<String>,
    /// CPU architecture (`x86_64`).
    pub arch: String,
    /// WASM targets it runs (`wasm32-wasip1`).
    pub wasm: Vec<String>,
    pub cpus: u32,
    /// Largest linear memory a job may have (MiB).
    pub memory_mib: u64,
    /// Jobs it can start now.
    pub free_slots: u32,
    /// Unix seconds.
    pub issued: u64,
    /// Unix seconds; void from then on.
    pub expires: u64,
}

/// A record and its node's signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedCapability {
    pub signed: Capability,
    /// 64 bytes, lowercase hex.
    pub sig: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapabilityError {
    #[error("capability record is larger than {MAX_RECORD_BYTES} bytes")]
    TooLarge,
    #[error("not a signed capability record")]
    Malformed,
    #[error("signature does not verify against the record's node key")]
    BadSignature,
    #[error("stored under another node's key")]
    WrongKey,
    #[error("expired")]
    Expired,
    #[error("issued in the future")]
    NotYetValid,
    #[error("lifetime longer than {MAX_TTL_S} s")]
    TooLongLived,
    #[error("a field is out of bounds")]
    OutOfBounds,
    #[error("an address is not a multiaddr of this node")]
    BadAddr,
    #[error("older than the record held for that node")]
    Stale,
    #[error("not a capability record key")]
    BadKey,
}

impl CapabilityError {
    pub fn reason(&self) -> &'static str {
        match self {
            CapabilityError::TooLarge => "too_large",
            CapabilityError::Malformed => "malformed",
            CapabilityError::BadSignature => "bad_signature",
            CapabilityError::WrongKey => "wrong_key",
            CapabilityError::Expired => "expired",
            CapabilityError::NotYetValid => "not_yet_valid",
            CapabilityError::TooLongLived => "too_long_lived",
            CapabilityError::OutOfBounds => "out_of_bounds",
            CapabilityError::BadAddr => "bad_addr",
            CapabilityError::Stale => "stale",
            CapabilityError::BadKey => "bad_key",
        }
    }
}

/// The Kademlia key of `node`'s capability record (`node`: public key, hex).
pub fn record_key(node: &str) -> Vec<u8> {
    format!("{KEY_PREFIX}{node}").into_bytes()
}

/// Whether `key` is a capability record key (the DHT routes such puts to [`admit`]).
pub fn is_record_key(key: &[u8]) -> bool {
    key.starts_with(KEY_PREFIX.as_bytes())
}

/// The Kademlia key nodes of `arch` running `wasm` provide (so requesters find them).
pub fn offer_key(arch: &str, wasm: &str) -> Vec<u8> {
    format!("{OFFER_PREFIX}{arch}/{wasm}").into_bytes()
}

/// Whether `key` is an offer key (the only keys a node stores provider records under).
pub fn is_offer_key(key: &[u8]) -> bool {
    let Some(rest) = std::str::from_utf8(key)
        .ok()
        .and_then(|s| s.strip_prefix(OFFER_PREFIX))
    else {
        return false;
    };
    matches!(rest.split_once('/'), Some((a, w)) if name_ok(a) && name_ok(w))
}

/// The node key (hex) of an ed25519 peer id.
pub fn node_of(peer: &libp2p::PeerId) -> Option<String> {
    let mh: &libp2p::multihash::Multihash<64> = peer.as_ref();
    if mh.code() != 0 {
        return None;
    }
    let pk = libp2p::identity::PublicKey::try_decode_protobuf(mh.digest()).ok()?;
    Some(hex::encode(&pk.try_into_ed25519().ok()?.to_bytes()))
}

fn name_ok(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= MAX_NAME
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Capability {
    /// The bytes the signature covers.
    pub fn signing_input(&self) -> Vec<u8> {
        let v = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        phase_release::doc::signing_input(DOC_TYPE, &canonical::encode(&v))
    }

    /// Sign with the node key; `node` becomes that key's public half.
    pub fn sign(mut self, key: &SigningKey) -> SignedCapability {
        self.node = hex::encode(&key.verifying_key().to_bytes());
        let sig: Signature = key.sign(&self.signing_input());
        SignedCapability {
            signed: self,
            sig: hex::encode(&sig.to_bytes()),
        }
    }
}

impl SignedCapability {
    /// The canonical bytes stored in the DHT.
    pub fn encode(&self) -> Vec<u8> {
        canonical::encode(&serde_json::to_value(self).unwrap_or(serde_json::Value::Null))
    }
}

/// The libp2p peer id of an ed25519 node key.
fn peer_id(key: &[u8; 32]) -> Option<libp2p::PeerId> {
    let pk = libp2p::identity::ed25519::PublicKey::try_from_bytes(key).ok()?;
    Some(libp2p::identity::PublicKey::from(pk).to_peer_id())
}

/// Verify a value found under (or put to) `key` at unix time `now`: the record, or why not.
pub fn verify(key: &[u8], value: &[u8], now: u64) -> Result<Capability, CapabilityError> {
    use CapabilityError as E;
    if value.len() > MAX_RECORD_BYTES {
        return Err(E::TooLarge);
    }
    let s: SignedCapability = serde_json::from_slice(value).map_err(|_| E::Malformed)?;
    let r = s.signed;
    let node = hex::decode::<32>(&r.node).ok_or(E::Malformed)?;
    let vk = VerifyingKey::from_bytes(&node).map_err(|_| E::BadSignature)?;
    let sig = hex::decode::<64>(&s.sig).ok_or(E::BadSignature)?;
    vk.verify_strict(&r.signing_input(), &Signature::from_bytes(&sig))
        .map_err(|_| E::BadSignature)?;
    if key != record_key(&r.node).as_slice() {
        return Err(E::WrongKey);
    }
    if r.expires <= r.issued || r.expires - r.issued > MAX_TTL_S {
        return Err(E::TooLongLived);
    }
    if now >= r.expires {
        return Err(E::Expired);
    }
    if r.issued > now.saturating_add(MAX_FUTURE_SKEW_S) {
        return Err(E::NotYetValid);
    }
    if !name_ok(&r.arch)
        || r.wasm.is_empty()
        || r.wasm.len() > MAX_TARGETS
        || !r.wasm.iter().all(|w| name_ok(w))
        || r.cpus == 0
        || r.addrs.is_empty()
        || r.addrs.len() > MAX_ADDRS
    {
        return Err(E::OutOfBounds);
    }
    let me = peer_id(&node).ok_or(E::BadSignature)?;
    for a in &r.addrs {
        if a.len() > MAX_ADDR_LEN {
            return Err(E::BadAddr);
        }
        let addr: libp2p::Multiaddr = a.parse().map_err(|_| E::BadAddr)?;
        // An address naming another peer would send requesters elsewhere.
        let other = addr.iter().any(|p| match p {
            libp2p::multiaddr::Protocol::P2p(id) => id != me,
            _ => false,
        });
        if other {
            return Err(E::BadAddr);
        }
    }
    Ok(r)
}

/// What an honest node stores when `incoming` is put under the capability key `key` while
/// it holds `existing`: the incoming record if it verifies and is not older than the one
/// held (a replayed old record cannot undo a newer one, such as a withdrawal); `Err` says
/// why nothing is stored. `held_elsewhere` counts the capability records held under other
/// keys: a new key is refused once [`MAX_HELD`] are held.
pub fn admit(
    existing: Option<&[u8]>,
    incoming: &[u8],
    key: &[u8],
    now: u64,
    held_elsewhere: usize,
) -> Result<(), CapabilityError> {
    if !is_record_key(key) {
        return Err(CapabilityError::BadKey);
    }
    let new = verify(key, incoming, now)?;
    match existing.map(|v| verify(key, v, now)) {
        Some(Ok(old)) if old.issued > new.issued => Err(CapabilityError::Stale),
        Some(Ok(_)) => Ok(()),
        // Nothing (valid) held yet: a new key.
        _ if held_elsewhere >= MAX_HELD => Err(CapabilityError::TooLarge),
        _ => Ok(()),
    }
}

/// What a job needs of a node (`--need wasm,cpus=N,memory=MIB,slots=N,arch=A`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    pub arch: String,
    pub wasm: String,
    /// Largest job memory the node must admit (MiB).
    pub memory_mib: u64,
    pub cpus: u32,
    /// Free slots the node must have now.
    pub free_slots: u32,
}

impl Default for Need {
    /// Any node of this architecture that runs the executor's target and has a free slot.
    fn default() -> Self {
        Need {
            arch: std::env::consts::ARCH.into(),
            wasm: WASM_TARGET.into(),
            memory_mib: 0,
            cpus: 1,
            free_slots: 1,
        }
    }
}

impl Need {
    /// Parse `--need`: comma-separated `wasm[=TARGET]`, `arch=A`, `cpus=N`, `memory=MIB`,
    /// `slots=N`, over [`Need::default`]. `Err` names the item.
    pub fn parse(text: &str) -> Result<Need, String> {
        let mut need = Need::default();
        for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (k, v) = match item.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (item, None),
            };
            let num = |v: Option<&str>| -> Result<u64, String> {
                v.and_then(|v| v.parse::<u64>().ok())
                    .ok_or_else(|| format!("--need {item:?}: expected {k}=N"))
            };
            let small = |n: u64| -> Result<u32, String> {
                u32::try_from(n).map_err(|_| format!("--need {item:?}: too large"))
            };
            let name = |v: Option<&str>| -> Result<String, String> {
                v.filter(|v| name_ok(v))
                    .map(String::from)
                    .ok_or_else(|| format!("--need {item:?}: expected {k}=NAME"))
            };
            match k {
                "wasm" => {
                    if v.is_some() {
                        need.wasm = name(v)?;
                    }
                }
                "arch" => need.arch = name(v)?,
                "cpus" => need.cpus = small(num(v)?)?,
                "memory" => need.memory_mib = num(v)?,
                "slots" => need.free_slots = small(num(v)?)?,
                _ => {
                    return Err(format!(
                        "--need {item:?}: unknown (wasm, arch, cpus, memory, slots)"
                    ))
                }
            }
        }
        Ok(need)
    }
}

/// Why a verified node was passed over (stable reasons).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Passed {
    pub node: String,
    /// `wrong_arch`, `no_wasm_target`, `too_little_memory`, `too_few_cpus`, `no_free_slot`.
    pub reason: &'static str,
}

/// Rank `nodes` for a job needing `need`: the ones that can take it, best first (most free
/// slots, then most CPUs, ties by `seed`), and the others with why.
pub fn select(nodes: Vec<Capability>, need: &Need, seed: u64) -> (Vec<Capability>, Vec<Passed>) {
    let mut fit = Vec::new();
    let mut passed = Vec::new();
    for c in nodes {
        let reason = if c.arch != need.arch {
            Some("wrong_arch")
        } else if !c.wasm.contains(&need.wasm) {
            Some("no_wasm_target")
        } else if c.memory_mib < need.memory_mib {
            Some("too_little_memory")
        } else if c.cpus < need.cpus {
            Some("too_few_cpus")
        } else if c.free_slots < need.free_slots.max(1) {
            Some("no_free_slot")
        } else {
            None
        };
        match reason {
            Some(reason) => passed.push(Passed {
                node: c.node,
                reason,
            }),
            None => fit.push(c),
        }
    }
    let tie = |node: &str| {
        // FNV-1a of the node key, mixed with the seed (SplitMix64).
        let h = node.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        crate::supervise::policy::Jitter::from_seed(h ^ seed).next_u64()
    };
    fit.sort_by_key(|c| {
        (
            std::cmp::Reverse(c.free_slots),
            std::cmp::Reverse(c.cpus),
            tie(&c.node),
        )
    });
    (fit, passed)
}
