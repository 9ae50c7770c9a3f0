//! Provider records (PURE): what a provider announces in the DHT, and the one rule every
//! honest node applies before storing or believing one.
//!
//! A provider signs a [`ProviderRecord`] with its node key (the ed25519 key that is also its
//! libp2p identity). The signature covers the domain-separated input
//! `"phase-boot/v1/provider-record\n" + canonical(signed)`, the same scheme as the release
//! metadata (`phase_release::doc::signing_input`), so no release or root signature can be
//! replayed as a provider record, nor the other way round.
//!
//! All providers of one channel and arch share ONE Kademlia key ([`record_key`]); the value
//! under it is a set of signed records (a canonical JSON array sorted by node), so providers
//! coexist instead of overwriting each other. [`merge`] is what a node runs on every inbound
//! put: entries that do not verify, are expired, or belong to another key are dropped, each
//! node keeps only its newest entry, and the set is capped. The set resists flooding: an
//! entry already held keeps its place until it expires (only its own node can replace it),
//! one put adds at most [`MAX_NEW_PER_PUT`] new nodes, at most [`MAX_PER_HOST`] entries may
//! name one host, and a value is checked for at most [`MAX_CHECKED`] entries (a bounded
//! number of signature checks per put). So 64 fresh keys cannot push honest entries out.
//! Entries whose advertised release version this node has verified itself ([`Verified`]:
//! its running release, its trusted state, the release on its medium) are *backed*: they
//! come in first, and when the set is full a backed newcomer takes the place of the oldest
//! unbacked entry; a lookup lists them before any unbacked claim of a higher version. So a
//! flood of fresh keys advertising made-up versions cannot keep an honest provider of a
//! verified release out of the set, nor out of a client's candidate list.
//! [`verify`] is what a client runs
//! on every value it gets back: nothing in a DHT value is trusted, and a record that verifies
//! only says "this node claims to serve this URL": the release it serves must still verify
//! against the root keys before anything is used.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use phase_release::{canonical, hex};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// The domain-separation tag (the document type in `phase-boot/v1/<type>\n`).
pub const DOC_TYPE: &str = "provider-record";
/// Most entries kept under one key.
pub const MAX_ENTRIES: usize = 64;
/// Largest value accepted or produced under one key (below the record store's 65 KiB).
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// How far in the future `issued` may be (clock skew between nodes).
pub const MAX_FUTURE_SKEW_S: u64 = 300;
/// New nodes one put may add to a set.
pub const MAX_NEW_PER_PUT: usize = 4;
/// Entries of one set whose URL names the same host.
pub const MAX_PER_HOST: usize = 4;
/// Entries of one value that are checked at all; the rest are `too_many_entries`.
pub const MAX_CHECKED: usize = 2 * MAX_ENTRIES;
/// Field bounds: a record is small, whatever a peer sends. With them, [`MAX_ENTRIES`] entries
/// stay well below [`MAX_VALUE_BYTES`]; the byte cap is a second line.
const MAX_URL: usize = 256;
const MAX_NAME: usize = 64;
const KEY_PREFIX: &str = "/phase-boot/v1/providers/";

/// What a provider announces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderRecord {
    /// The provider's ed25519 public key (32 bytes, lowercase hex); also its libp2p identity.
    pub node: String,
    /// `http://IP:PORT/` base of a release directory.
    pub url: String,
    pub channel: String,
    pub arch: String,
    /// The release version it serves (unverified: ordering only).
    pub version: u64,
    /// Unix seconds.
    pub issued: u64,
    /// Unix seconds; the record is void from then on.
    pub expires: u64,
}

/// A record and the node's signature over it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedRecord {
    pub signed: ProviderRecord,
    /// 64 bytes, lowercase hex.
    pub sig: String,
}

/// Release versions this node has verified itself. An entry that advertises one of them is
/// backed: the release it claims exists and verifies here. Any other version is only a
/// claim (it may still verify when fetched; it just cannot outrank a backed entry).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verified(std::collections::BTreeSet<u64>);

impl Verified {
    pub fn new(versions: impl IntoIterator<Item = u64>) -> Verified {
        Verified(versions.into_iter().collect())
    }

    /// Whether `version` is one this node verified.
    pub fn backs(&self, version: u64) -> bool {
        self.0.contains(&version)
    }
}

/// An entry a value carried that was not accepted, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejected {
    /// The node the entry claims, when it could be read.
    pub node: Option<String>,
    /// Stable: `bad_signature`, `expired`, `not_yet_valid`, `wrong_channel`, `wrong_arch`,
    /// `malformed`, `bad_url`, `too_large`, `too_many_entries`.
    pub reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("not a provider record key")]
    BadKey,
    #[error("value is larger than {MAX_VALUE_BYTES} bytes")]
    TooLarge,
    #[error("value is not a JSON array of signed records")]
    Malformed,
    #[error("no valid entry left")]
    Empty,
}

impl RecordError {
    pub fn reason(&self) -> &'static str {
        match self {
            RecordError::BadKey => "bad_key",
            RecordError::TooLarge => "too_large",
            RecordError::Malformed => "malformed",
            RecordError::Empty => "empty",
        }
    }
}

/// The Kademlia key all providers of `channel`/`arch` announce under.
pub fn record_key(channel: &str, arch: &str) -> Vec<u8> {
    format!("{KEY_PREFIX}{channel}/{arch}").into_bytes()
}

/// `(channel, arch)` of a provider record key.
pub fn parse_key(key: &[u8]) -> Option<(String, String)> {
    let s = std::str::from_utf8(key).ok()?.strip_prefix(KEY_PREFIX)?;
    let (channel, arch) = s.split_once('/')?;
    let ok = |n: &str| !n.is_empty() && n.len() <= MAX_NAME && !n.contains('/');
    (ok(channel) && ok(arch)).then(|| (channel.to_string(), arch.to_string()))
}

impl ProviderRecord {
    /// The bytes the signature covers.
    pub fn signing_input(&self) -> Vec<u8> {
        let v = serde_json::to_value(self).unwrap_or(Value::Null);
        phase_release::doc::signing_input(DOC_TYPE, &canonical::encode(&v))
    }

    /// Sign with the node key; `node` is set to that key's public half.
    pub fn sign(mut self, key: &SigningKey) -> SignedRecord {
        self.node = hex::encode(&key.verifying_key().to_bytes());
        let sig: Signature = key.sign(&self.signing_input());
        SignedRecord {
            signed: self,
            sig: hex::encode(&sig.to_bytes()),
        }
    }
}

impl SignedRecord {
    /// The record, if it is acceptable for `channel`/`arch` at `now`; otherwise the stable
    /// reason. The signature is checked first, so an entry no key vouches for is always
    /// `bad_signature`, whatever else is wrong with it.
    pub fn check(
        &self,
        channel: &str,
        arch: &str,
        now: u64,
    ) -> Result<&ProviderRecord, &'static str> {
        let r = &self.signed;
        let key = hex::decode::<32>(&r.node).ok_or("malformed")?;
        let vk = VerifyingKey::from_bytes(&key).map_err(|_| "bad_signature")?;
        let sig = hex::decode::<64>(&self.sig).ok_or("bad_signature")?;
        vk.verify_strict(&r.signing_input(), &Signature::from_bytes(&sig))
            .map_err(|_| "bad_signature")?;
        self.check_fields(channel, arch, now)
    }

    /// Everything [`SignedRecord::check`] checks but the signature: for entries this node
    /// checked when it stored them, which may have expired since.
    fn check_fields(
        &self,
        channel: &str,
        arch: &str,
        now: u64,
    ) -> Result<&ProviderRecord, &'static str> {
        let r = &self.signed;
        if r.channel != channel {
            return Err("wrong_channel");
        }
        if r.arch != arch {
            return Err("wrong_arch");
        }
        if r.expires <= r.issued || r.url.len() > MAX_URL {
            return Err("malformed");
        }
        if now >= r.expires {
            return Err("expired");
        }
        if r.issued > now.saturating_add(MAX_FUTURE_SKEW_S) {
            return Err("not_yet_valid");
        }
        // Strict parsing (no CR/LF, userinfo, odd characters) and no loopback or
        // link-local address: anyone can publish a record.
        let url = crate::fetch::Url::parse(&r.url).map_err(|_| "bad_url")?;
        url.check_origin(super::How::Dht).map_err(|_| "bad_url")?;
        Ok(r)
    }
}

/// Decode a value into its entries: the signed ones, and the ones that are not even that.
fn decode(value: &[u8]) -> Result<(Vec<SignedRecord>, Vec<Rejected>), RecordError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(RecordError::TooLarge);
    }
    let Ok(Value::Array(items)) = serde_json::from_slice::<Value>(value) else {
        return Err(RecordError::Malformed);
    };
    let mut good = Vec::new();
    let mut bad = Vec::new();
    let over = items.len().saturating_sub(MAX_CHECKED);
    if over > 0 {
        bad.push(Rejected {
            node: None,
            reason: "too_many_entries",
        });
    }
    for item in items.into_iter().take(MAX_CHECKED) {
        let node = item
            .get("signed")
            .and_then(|s| s.get("node"))
            .and_then(Value::as_str)
            .map(|n| n.chars().take(64).collect());
        match serde_json::from_value::<SignedRecord>(item) {
            Ok(s) => good.push(s),
            Err(_) => bad.push(Rejected {
                node,
                reason: "malformed",
            }),
        }
    }
    Ok((good, bad))
}

/// The canonical value of a set: a JSON array sorted by node.
pub fn encode(set: &[SignedRecord]) -> Vec<u8> {
    let mut set: Vec<&SignedRecord> = set.iter().collect();
    set.sort_by(|a, b| a.signed.node.cmp(&b.signed.node));
    let items = set
        .into_iter()
        .filter_map(|s| serde_json::to_value(s).ok())
        .collect();
    canonical::encode(&Value::Array(items))
}

/// Keep, per node, the newest entry (ties: the greater signature, so every node agrees).
fn newest_per_node(
    entries: impl IntoIterator<Item = SignedRecord>,
) -> BTreeMap<String, SignedRecord> {
    let mut by_node: BTreeMap<String, SignedRecord> = BTreeMap::new();
    for s in entries {
        match by_node.get(&s.signed.node) {
            Some(old) if (old.signed.issued, &old.sig) >= (s.signed.issued, &s.sig) => {}
            _ => {
                by_node.insert(s.signed.node.clone(), s);
            }
        }
    }
    by_node
}

/// The entries of an inbound value whose signatures (and every other check) passed, for
/// one key: the costly half of [`merge`], which [`check_put`] does off the swarm's task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    key: Vec<u8>,
    entries: Vec<SignedRecord>,
}

/// Check every entry of `incoming` for `key` at `now` (at most [`MAX_CHECKED`] signature
/// checks); `Err` when the key or the value itself is refused.
pub fn check_put(incoming: &[u8], key: &[u8], now: u64) -> Result<Checked, RecordError> {
    let (channel, arch) = parse_key(key).ok_or(RecordError::BadKey)?;
    let (entries, _) = decode(incoming)?;
    let entries = entries
        .into_iter()
        .filter(|s| s.check(&channel, &arch, now).is_ok())
        .collect();
    Ok(Checked {
        key: key.to_vec(),
        entries,
    })
}

/// What an honest node stores when `incoming` is put under `key` while it holds `existing`:
/// the valid, unexpired entries that match the key, the newest per node. Entries held keep
/// their place (updated only by their own node); new nodes come in backed first (see
/// [`Verified`]), then newest first (`issued` counted at most as `now`, so a future date
/// buys nothing), at most [`MAX_NEW_PER_PUT`] per put, [`MAX_PER_HOST`] per URL host, up to
/// [`MAX_ENTRIES`] and [`MAX_VALUE_BYTES`]. In a full set a backed newcomer replaces the
/// oldest unbacked entry; an unbacked one replaces nothing.
/// `Err` means nothing should be stored (`Empty`: nothing valid is left).
pub fn merge(
    existing: Option<&[u8]>,
    incoming: &[u8],
    key: &[u8],
    now: u64,
    verified: &Verified,
) -> Result<Vec<u8>, RecordError> {
    merge_checked(existing, check_put(incoming, key, now)?, now, verified)
}

/// [`merge`] of entries [`check_put`] checked already. `existing` must be what this node
/// stored (every entry in it was checked then): only expiry and the fields are checked
/// again, no signature, so this half is cheap enough for the swarm's task.
pub fn merge_checked(
    existing: Option<&[u8]>,
    incoming: Checked,
    now: u64,
    verified: &Verified,
) -> Result<Vec<u8>, RecordError> {
    let (channel, arch) = parse_key(&incoming.key).ok_or(RecordError::BadKey)?;
    // What we hold was checked when stored, but it may have expired since.
    let held: Vec<SignedRecord> = existing
        .and_then(|v| decode(v).ok())
        .map(|(good, _)| good)
        .unwrap_or_default()
        .into_iter()
        .filter(|s| s.check_fields(&channel, &arch, now).is_ok())
        .collect();
    let held_nodes: std::collections::BTreeSet<String> =
        held.iter().map(|s| s.signed.node.clone()).collect();
    let (updates, newcomers): (Vec<_>, Vec<_>) = incoming
        .entries
        .into_iter()
        .partition(|s| held_nodes.contains(&s.signed.node));
    let mut kept: Vec<SignedRecord> = newest_per_node(held.into_iter().chain(updates))
        .into_values()
        .collect();
    kept.sort_by(|a, b| (b.signed.issued, &b.signed.node).cmp(&(a.signed.issued, &a.signed.node)));
    let backed = |s: &SignedRecord| verified.backs(s.signed.version);
    let mut new: Vec<SignedRecord> = newest_per_node(newcomers).into_values().collect();
    new.sort_by(|a, b| {
        (backed(b), b.signed.issued.min(now), &b.signed.node).cmp(&(
            backed(a),
            a.signed.issued.min(now),
            &a.signed.node,
        ))
    });
    let mut per_host: BTreeMap<String, usize> = BTreeMap::new();
    for s in &kept {
        *per_host.entry(host(&s.signed.url)).or_default() += 1;
    }
    let mut added = 0;
    for s in new {
        if added == MAX_NEW_PER_PUT {
            break;
        }
        if per_host.get(&host(&s.signed.url)).copied().unwrap_or(0) >= MAX_PER_HOST {
            continue;
        }
        if kept.len() >= MAX_ENTRIES {
            // Full: only a backed newcomer gets in, in the place of the oldest unbacked
            // entry (`kept` is newest first). Newcomers are backed first: none is left.
            let Some(i) = kept.iter().rposition(|k| !backed(k)).filter(|_| backed(&s)) else {
                break;
            };
            let out = kept.remove(i);
            if let Some(n) = per_host.get_mut(&host(&out.signed.url)) {
                *n = n.saturating_sub(1);
            }
        }
        *per_host.entry(host(&s.signed.url)).or_default() += 1;
        added += 1;
        kept.push(s);
    }
    capped(kept)
}

/// What a node keeps of a set it holds as time passes: every entry still valid, the newest
/// per node (entries are not admitted here, so no flood rule applies).
pub fn prune(value: &[u8], key: &[u8], now: u64) -> Result<Vec<u8>, RecordError> {
    let (channel, arch) = parse_key(key).ok_or(RecordError::BadKey)?;
    let (entries, _) = decode(value)?;
    let valid = entries
        .into_iter()
        .filter(|s| s.check(&channel, &arch, now).is_ok());
    let mut kept: Vec<SignedRecord> = newest_per_node(valid).into_values().collect();
    kept.sort_by(|a, b| (b.signed.issued, &b.signed.node).cmp(&(a.signed.issued, &a.signed.node)));
    capped(kept)
}

/// The encoded set, dropping from the end until it fits the caps.
fn capped(mut set: Vec<SignedRecord>) -> Result<Vec<u8>, RecordError> {
    set.truncate(MAX_ENTRIES);
    loop {
        if set.is_empty() {
            return Err(RecordError::Empty);
        }
        let bytes = encode(&set);
        if bytes.len() <= MAX_VALUE_BYTES {
            return Ok(bytes);
        }
        set.pop();
    }
}

/// The host a record's URL names (checked by [`SignedRecord::check`] before this is asked).
fn host(url: &str) -> String {
    crate::fetch::Url::parse(url)
        .map(|u| u.host)
        .unwrap_or_else(|_| url.to_string())
}

/// Every record in `value` that verifies for `channel`/`arch` at `now` (newest per node,
/// in [`sort_found`] order), and every entry that does not, with its reason.
pub fn verify(
    value: &[u8],
    channel: &str,
    arch: &str,
    now: u64,
    verified: &Verified,
) -> (Vec<ProviderRecord>, Vec<Rejected>) {
    let (entries, mut rejected) = match decode(value) {
        Ok(d) => d,
        Err(e) => {
            let reason = match e {
                RecordError::TooLarge => "too_large",
                _ => "malformed",
            };
            return (Vec::new(), vec![Rejected { node: None, reason }]);
        }
    };
    let mut valid = Vec::new();
    for s in entries {
        match s.check(channel, arch, now) {
            Ok(_) => valid.push(s),
            Err(reason) => rejected.push(Rejected {
                node: Some(s.signed.node.clone()),
                reason,
            }),
        }
    }
    let mut found: Vec<ProviderRecord> = newest_per_node(valid)
        .into_values()
        .map(|s| s.signed)
        .collect();
    sort_found(&mut found, verified);
    (found, rejected)
}

/// Backed entries first (an advertised version is unverified: a made-up high one must not
/// outrank a release this node verified), then the highest version, then the newest, then
/// by node (a stable order for output).
pub fn sort_found(found: &mut [ProviderRecord], verified: &Verified) {
    found.sort_by(|a, b| {
        (verified.backs(b.version), b.version, b.issued, &a.node).cmp(&(
            verified.backs(a.version),
            a.version,
            a.issued,
            &b.node,
        ))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;
    const NONE: Verified = Verified(std::collections::BTreeSet::new());

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn rec(url: &str, version: u64, issued: u64) -> ProviderRecord {
        ProviderRecord {
            node: String::new(),
            url: url.into(),
            channel: "stable".into(),
            arch: "x86_64".into(),
            version,
            issued,
            expires: issued + 3600,
        }
    }

    fn value(set: &[SignedRecord]) -> Vec<u8> {
        // Deliberately not through `encode`: a value as any peer may send it.
        serde_json::to_vec(set).unwrap()
    }

    fn reasons(rej: &[Rejected]) -> Vec<&'static str> {
        rej.iter().map(|r| r.reason).collect()
    }

    #[test]
    fn good_record_verifies() {
        let s = rec("http://10.0.0.5:8080/", 3, NOW).sign(&key(1));
        assert_eq!(
            s.signed.node,
            hex::encode(&key(1).verifying_key().to_bytes())
        );
        let (found, rej) = verify(
            &value(std::slice::from_ref(&s)),
            "stable",
            "x86_64",
            NOW + 10,
            &NONE,
        );
        assert_eq!(found, vec![s.signed]);
        assert!(rej.is_empty());
    }

    #[test]
    fn forged_records_are_bad_signature() {
        // Signed by another key than the node it names.
        let mut other = rec("http://10.0.0.6:8080/", 9, NOW).sign(&key(2));
        other.signed.node = hex::encode(&key(1).verifying_key().to_bytes());
        // A field changed after signing.
        let mut changed = rec("http://10.0.0.5:8080/", 3, NOW).sign(&key(3));
        changed.signed.url = "http://10.6.6.6:80/".into();
        let mut bumped = rec("http://10.0.0.5:8080/", 3, NOW).sign(&key(4));
        bumped.signed.version = 4;
        let mut garbage = rec("http://10.0.0.5:8080/", 3, NOW).sign(&key(5));
        garbage.sig = "00".repeat(64);
        let (found, rej) = verify(
            &value(&[other, changed, bumped, garbage]),
            "stable",
            "x86_64",
            NOW,
            &NONE,
        );
        assert!(found.is_empty());
        assert_eq!(reasons(&rej), ["bad_signature"; 4]);
        assert_eq!(
            rej[0].node.as_deref(),
            Some(hex::encode(&key(1).verifying_key().to_bytes()).as_str())
        );
    }

    #[test]
    fn each_rejection_is_named() {
        let k = key(1);
        let cases: Vec<(SignedRecord, &str)> = vec![
            (
                rec("http://10.0.0.5:8080/", 1, NOW - 7200).sign(&k),
                "expired",
            ),
            (
                rec("http://10.0.0.5:8080/", 1, NOW + 600).sign(&k),
                "not_yet_valid",
            ),
            (
                ProviderRecord {
                    channel: "beta".into(),
                    ..rec("http://10.0.0.5:8080/", 1, NOW)
                }
                .sign(&k),
                "wrong_channel",
            ),
            (
                ProviderRecord {
                    arch: "aarch64".into(),
                    ..rec("http://10.0.0.5:8080/", 1, NOW)
                }
                .sign(&k),
                "wrong_arch",
            ),
            (rec("https://10.0.0.5/", 1, NOW).sign(&k), "bad_url"),
            (rec("ftp://10.0.0.5/", 1, NOW).sign(&k), "bad_url"),
            // Request splitting and forged log lines: refused before any connection.
            (
                rec("http://10.0.0.5/r\r\nHost: evil\r\n", 1, NOW).sign(&k),
                "bad_url",
            ),
            (
                rec(
                    "http://10.0.0.5/\nPHASE-EVENT {\"event\":\"init.ready\"}",
                    1,
                    NOW,
                )
                .sign(&k),
                "bad_url",
            ),
            (rec("http://u@10.0.0.5/", 1, NOW).sign(&k), "bad_url"),
            // Anyone may publish: never this machine or its link.
            (rec("http://127.0.0.1:8080/", 1, NOW).sign(&k), "bad_url"),
            (rec("http://[::1]:8080/", 1, NOW).sign(&k), "bad_url"),
            (rec("http://169.254.169.254/", 1, NOW).sign(&k), "bad_url"),
            (rec("http://localhost:8080/", 1, NOW).sign(&k), "bad_url"),
            (
                ProviderRecord {
                    expires: NOW,
                    ..rec("http://10.0.0.5:8080/", 1, NOW)
                }
                .sign(&k),
                "malformed",
            ),
        ];
        for (s, want) in cases {
            let (found, rej) = verify(&value(&[s]), "stable", "x86_64", NOW, &NONE);
            assert!(found.is_empty(), "{want}");
            assert_eq!(reasons(&rej), [want]);
        }
        // A small skew is tolerated.
        let s = rec("http://10.0.0.5:8080/", 1, NOW + 200).sign(&k);
        assert_eq!(
            verify(&value(&[s]), "stable", "x86_64", NOW, &NONE).0.len(),
            1
        );
        // Whole values.
        assert_eq!(
            reasons(&verify(b"{}", "stable", "x86_64", NOW, &NONE).1),
            ["malformed"]
        );
        assert_eq!(
            reasons(
                &verify(
                    &vec![b' '; MAX_VALUE_BYTES + 1],
                    "stable",
                    "x86_64",
                    NOW,
                    &NONE
                )
                .1
            ),
            ["too_large"]
        );
        // One unreadable entry does not hide the good ones.
        let good = rec("http://10.0.0.5:8080/", 1, NOW).sign(&k);
        let mixed = format!(
            r#"[{{"signed":{{"node":"ab"}},"sig":"x"}},{}]"#,
            serde_json::to_string(&good).unwrap()
        );
        let (found, rej) = verify(mixed.as_bytes(), "stable", "x86_64", NOW, &NONE);
        assert_eq!(found, vec![good.signed]);
        assert_eq!(
            rej,
            vec![Rejected {
                node: Some("ab".into()),
                reason: "malformed"
            }]
        );
    }

    #[test]
    fn domain_separated_from_release_metadata() {
        let k = key(1);
        let mut r = rec("http://10.0.0.5:8080/", 1, NOW);
        r.node = hex::encode(&k.verifying_key().to_bytes());
        let body = canonical::encode(&serde_json::to_value(&r).unwrap());
        // A signature over the bare canonical bytes, or with another document type's tag
        // (as release metadata is signed), must not verify as a provider record.
        for msg in [
            body.clone(),
            phase_release::doc::signing_input("release", &body),
            phase_release::doc::signing_input("root", &body),
        ] {
            let sig: Signature = k.sign(&msg);
            let s = SignedRecord {
                signed: r.clone(),
                sig: hex::encode(&sig.to_bytes()),
            };
            assert_eq!(
                reasons(&verify(&value(&[s]), "stable", "x86_64", NOW, &NONE).1),
                ["bad_signature"]
            );
        }
        // The release crate's signer over the same input with the right tag does verify.
        let s = SignedRecord {
            signed: r.clone(),
            sig: hex::encode(
                &phase_release::keys::Keypair::from_seed(&[1; 32]).sign(&r.signing_input()),
            ),
        };
        assert_eq!(
            verify(&value(&[s]), "stable", "x86_64", NOW, &NONE).0.len(),
            1
        );
    }

    #[test]
    fn keys() {
        let k = record_key("stable", "x86_64");
        assert_eq!(k, b"/phase-boot/v1/providers/stable/x86_64");
        assert_eq!(parse_key(&k), Some(("stable".into(), "x86_64".into())));
        assert_eq!(parse_key(b"/phase-boot/v1/providers/stable"), None);
        assert_eq!(parse_key(b"/phase-boot/v1/providers/a/b/c"), None);
        assert_eq!(parse_key(b"/other/stable/x86_64"), None);
    }

    #[test]
    fn merge_keeps_providers_side_by_side_and_the_newest_per_node() {
        let key_ = record_key("stable", "x86_64");
        let a1 = rec("http://10.0.0.1:8080/", 1, NOW).sign(&key(1));
        let b1 = rec("http://10.0.0.2:8080/", 1, NOW).sign(&key(2));
        let v = merge(None, &value(std::slice::from_ref(&a1)), &key_, NOW, &NONE).unwrap();
        let v = merge(
            Some(&v),
            &value(std::slice::from_ref(&b1)),
            &key_,
            NOW,
            &NONE,
        )
        .unwrap();
        let (found, rej) = verify(&v, "stable", "x86_64", NOW, &NONE);
        assert!(rej.is_empty());
        assert_eq!(found.len(), 2);
        // A newer record from node 1 replaces its older one; an older one does not come back.
        let a2 = rec("http://10.0.0.1:9090/", 2, NOW + 10).sign(&key(1));
        let v = merge(
            Some(&v),
            &value(std::slice::from_ref(&a2)),
            &key_,
            NOW + 10,
            &NONE,
        )
        .unwrap();
        let v = merge(
            Some(&v),
            &value(std::slice::from_ref(&a1)),
            &key_,
            NOW + 10,
            &NONE,
        )
        .unwrap();
        let (found, _) = verify(&v, "stable", "x86_64", NOW + 10, &NONE);
        assert_eq!(found, vec![a2.signed.clone(), b1.signed.clone()]);
        // Deterministic: the same set in any order encodes to the same bytes.
        let w = merge(
            None,
            &value(&[b1.clone(), a2.clone()]),
            &key_,
            NOW + 10,
            &NONE,
        )
        .unwrap();
        assert_eq!(v, w);
        assert_eq!(v, encode(&[a2.clone(), b1.clone()]));
    }

    #[test]
    fn merge_drops_forged_expired_and_foreign_entries() {
        let key_ = record_key("stable", "x86_64");
        let good = rec("http://10.0.0.1:8080/", 1, NOW).sign(&key(1));
        let mut forged = rec("http://10.6.6.6:8080/", 99, NOW).sign(&key(6));
        forged.signed.node = hex::encode(&key(2).verifying_key().to_bytes());
        let expired = rec("http://10.0.0.3:8080/", 5, NOW - 7200).sign(&key(3));
        let beta = ProviderRecord {
            channel: "beta".into(),
            ..rec("http://10.0.0.4:8080/", 1, NOW)
        }
        .sign(&key(4));
        let v = merge(
            None,
            &value(&[forged.clone(), good.clone(), expired.clone(), beta]),
            &key_,
            NOW,
            &NONE,
        )
        .unwrap();
        assert_eq!(v, encode(std::slice::from_ref(&good)));
        // Nothing valid at all: nothing to store.
        assert_eq!(
            merge(None, &value(&[forged, expired]), &key_, NOW, &NONE),
            Err(RecordError::Empty)
        );
        // What was stored expires too.
        assert_eq!(
            merge(Some(&v), b"[]", &key_, NOW + 3600, &NONE),
            Err(RecordError::Empty)
        );
        assert_eq!(
            merge(None, b"nope", &key_, NOW, &NONE),
            Err(RecordError::Malformed)
        );
        assert_eq!(
            merge(None, &v, b"/elsewhere", NOW, &NONE),
            Err(RecordError::BadKey)
        );
        assert_eq!(
            merge(None, &vec![b' '; MAX_VALUE_BYTES + 1], &key_, NOW, &NONE),
            Err(RecordError::TooLarge)
        );
    }

    #[test]
    fn prune_caps_the_set_keeping_the_newest() {
        let key_ = record_key("stable", "x86_64");
        let set: Vec<SignedRecord> = (0..(MAX_ENTRIES as u64 + 6))
            .map(|i| rec("http://10.0.0.1:8080/", 1, NOW - 100 + i).sign(&key(i as u8 + 1)))
            .collect();
        let v = prune(&value(&set), &key_, NOW).unwrap();
        assert!(v.len() <= MAX_VALUE_BYTES);
        let (found, _) = verify(&v, "stable", "x86_64", NOW, &NONE);
        assert_eq!(found.len(), MAX_ENTRIES);
        assert_eq!(found.iter().map(|r| r.issued).min(), Some(NOW - 100 + 6));
    }

    /// The issue's flood: 64 fresh keys, each record as new as the skew allows and with a
    /// huge version, put all at once and then one by one, each naming its own host.
    #[test]
    fn a_flood_of_fresh_keys_does_not_push_honest_entries_out() {
        let key_ = record_key("stable", "x86_64");
        let honest: Vec<SignedRecord> = (1..=3u8)
            .map(|i| rec(&format!("http://10.0.0.{i}:8080/"), 1, NOW - 600).sign(&key(i)))
            .collect();
        let mut v = merge(None, &value(&honest[..1]), &key_, NOW, &NONE).unwrap();
        for h in &honest[1..] {
            v = merge(Some(&v), &value(std::slice::from_ref(h)), &key_, NOW, &NONE).unwrap();
        }
        let flood: Vec<SignedRecord> = (0..64u8)
            .map(|i| {
                rec(
                    &format!("http://10.9.{i}.1:8080/"),
                    999,
                    NOW + MAX_FUTURE_SKEW_S,
                )
                .sign(&key(100 + i))
            })
            .collect();
        // One put adds at most MAX_NEW_PER_PUT new nodes.
        let once = merge(Some(&v), &value(&flood), &key_, NOW, &NONE).unwrap();
        assert_eq!(
            verify(&once, "stable", "x86_64", NOW, &NONE).0.len(),
            3 + MAX_NEW_PER_PUT
        );
        v = once;
        for f in &flood {
            v = merge(Some(&v), &value(std::slice::from_ref(f)), &key_, NOW, &NONE).unwrap();
        }
        let (found, _) = verify(&v, "stable", "x86_64", NOW, &NONE);
        assert_eq!(found.len(), MAX_ENTRIES);
        for h in &honest {
            assert!(found.contains(&h.signed), "{} pushed out", h.signed.url);
        }
        // One host gets at most MAX_PER_HOST entries, however many keys name it.
        let mut w = encode(&honest);
        for i in 0..8u8 {
            let s = rec("http://10.9.9.9:8080/", 2, NOW).sign(&key(200 + i));
            w = merge(
                Some(&w),
                &value(std::slice::from_ref(&s)),
                &key_,
                NOW,
                &NONE,
            )
            .unwrap();
        }
        assert_eq!(
            verify(&w, "stable", "x86_64", NOW, &NONE).0.len(),
            3 + MAX_PER_HOST
        );
        // A value is checked for at most MAX_CHECKED entries.
        let many: Vec<SignedRecord> = (0..=MAX_CHECKED as u64)
            .map(|i| rec("http://10.0.0.1:8080/", 1, NOW).sign(&key((i % 250) as u8 + 1)))
            .collect();
        let (_, rej) = verify(&value(&many), "stable", "x86_64", NOW, &NONE);
        assert!(reasons(&rej).contains(&"too_many_entries"), "{rej:?}");
    }

    /// The set already full of a flood (64 fresh keys, made-up versions, 16 hosts): an
    /// honest provider of a release this node verified still gets in, in the place of the
    /// oldest flood entry, and a second flood cannot push it out; a lookup lists it first.
    #[test]
    fn a_flood_cannot_keep_a_provider_of_a_verified_release_out() {
        let key_ = record_key("stable", "x86_64");
        let verified = Verified::new([2]);
        let flood = |base: u8| -> Vec<SignedRecord> {
            (0..MAX_ENTRIES as u8)
                .map(|i| {
                    rec(
                        &format!("http://10.{base}.{}.1:8080/", i / 4),
                        999,
                        NOW + i as u64 % 7,
                    )
                    .sign(&key(base.wrapping_add(i)))
                })
                .collect()
        };
        let mut v = encode(&[]);
        for f in flood(100) {
            v = merge(
                Some(&v),
                &value(std::slice::from_ref(&f)),
                &key_,
                NOW,
                &verified,
            )
            .unwrap_or(v);
        }
        assert_eq!(
            verify(&v, "stable", "x86_64", NOW, &verified).0.len(),
            MAX_ENTRIES
        );
        let honest = rec("http://10.0.0.1:8080/", 2, NOW - 600).sign(&key(1));
        let one = value(std::slice::from_ref(&honest));
        // Without knowing version 2 (as before), a full set keeps every newcomer out.
        let blind = merge(Some(&v), &one, &key_, NOW, &NONE).unwrap();
        assert!(!verify(&blind, "stable", "x86_64", NOW, &NONE)
            .0
            .contains(&honest.signed));
        let v = merge(Some(&v), &one, &key_, NOW, &verified).unwrap();
        let (found, _) = verify(&v, "stable", "x86_64", NOW, &verified);
        assert_eq!(found.len(), MAX_ENTRIES);
        assert_eq!(
            found[0], honest.signed,
            "listed before every claim of version 999"
        );
        // Unbacked newcomers replace nothing; a second flood leaves the honest entry held.
        let mut w = v.clone();
        for f in flood(170) {
            w = merge(
                Some(&w),
                &value(std::slice::from_ref(&f)),
                &key_,
                NOW,
                &verified,
            )
            .unwrap();
        }
        assert!(w == v, "a full set takes no unbacked newcomer");
        let (found, _) = verify(&w, "stable", "x86_64", NOW, &verified);
        assert!(found.contains(&honest.signed));
    }
}
