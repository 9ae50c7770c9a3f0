//! Who may run jobs on this node, and how often: the node's admission policy
//! (`/etc/phase/node.json` in the rootfs, overridden by `node.json` in the state directory),
//! and per-requester rate limits as token buckets. Pure: a parsed [`NodeConfig`], a key and a
//! clock reading in, a decision out; the file reading is [`load`], the only effect.
//!
//! ```json
//! {"admission": {"mode": "allowlist", "keys": ["<64 hex>", ...]},
//!  "rate": {"burst": 20, "per_second": 10}}
//! ```
//! `admission` defaults to `{"mode": "open"}`, `rate` to the values above.

use super::wire::Refusal;
use phase_release::hex;
use serde::Deserialize;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// The rootfs's policy file.
pub const SYSTEM_CONFIG: &str = "/etc/phase/node.json";
/// The override's name in the state directory.
pub const STATE_CONFIG: &str = "node.json";
/// Largest policy file read.
pub const MAX_CONFIG_BYTES: u64 = 256 * 1024;
/// Requesters whose buckets are remembered at once; beyond it full buckets are forgotten
/// (a forgotten requester starts again with a full bucket, which is what it would have).
pub const MAX_TRACKED: usize = 4096;

/// Who may submit jobs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum Admission {
    /// Anyone with a valid signature.
    Open,
    /// Only these requester public keys (hex).
    Allowlist { keys: BTreeSet<String> },
}

/// A token bucket's shape: `burst` jobs at once, refilled at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    pub burst: u32,
    pub per_second: u32,
}

impl Default for Rate {
    fn default() -> Self {
        Rate {
            burst: 20,
            per_second: 10,
        }
    }
}

/// The node's policy file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    #[serde(default = "open")]
    pub admission: Admission,
    #[serde(default)]
    pub rate: Rate,
}

fn open() -> Admission {
    Admission::Open
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            admission: Admission::Open,
            rate: Rate::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{path}: not a node policy: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("{path}: allowlist key {key:?} is not 32 bytes of lowercase hex")]
    BadKey { path: PathBuf, key: String },
}

impl ConfigError {
    pub fn reason(&self) -> &'static str {
        match self {
            ConfigError::Read { .. } => "config_unreadable",
            ConfigError::Parse { .. } => "config_invalid",
            ConfigError::BadKey { .. } => "config_bad_key",
        }
    }
}

/// Parse a policy file's bytes (`path` only names it in errors).
pub fn parse(bytes: &[u8], path: &Path) -> Result<NodeConfig, ConfigError> {
    let cfg: NodeConfig = serde_json::from_slice(bytes).map_err(|e| ConfigError::Parse {
        path: path.into(),
        reason: e.to_string(),
    })?;
    if let Admission::Allowlist { keys } = &cfg.admission {
        if let Some(bad) = keys.iter().find(|k| hex::decode::<32>(k).is_none()) {
            return Err(ConfigError::BadKey {
                path: path.into(),
                key: bad.clone(),
            });
        }
    }
    Ok(cfg)
}

/// Which file holds the policy: an explicit one, else the state directory's override, else
/// the rootfs's, else none (the defaults: open, default rate).
pub fn choose(explicit: Option<&Path>, state_dir: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.into());
    }
    let candidates = state_dir
        .map(|d| d.join(STATE_CONFIG))
        .into_iter()
        .chain(std::iter::once(PathBuf::from(SYSTEM_CONFIG)));
    candidates.into_iter().find(|p| p.exists())
}

/// Read the policy from [`choose`]'s file (bounded read), or the defaults if there is none.
pub fn load(explicit: Option<&Path>, state_dir: Option<&Path>) -> Result<NodeConfig, ConfigError> {
    use std::io::Read;
    let Some(path) = choose(explicit, state_dir) else {
        return Ok(NodeConfig::default());
    };
    let mut bytes = Vec::new();
    std::fs::File::open(&path)
        .and_then(|f| f.take(MAX_CONFIG_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| ConfigError::Read {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ConfigError::Read {
            path,
            reason: format!("larger than {MAX_CONFIG_BYTES} bytes"),
        });
    }
    parse(&bytes, &path)
}

/// Whether `requester` may submit at all.
pub fn admit(admission: &Admission, requester: &[u8; 32]) -> Result<(), Refusal> {
    match admission {
        Admission::Open => Ok(()),
        Admission::Allowlist { keys } if keys.contains(&hex::encode(requester)) => Ok(()),
        Admission::Allowlist { .. } => Err(Refusal::NotAllowed),
    }
}

/// One requester's bucket, in thousandths of a job (so refill is integer arithmetic:
/// `per_second` thousandths per millisecond).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    milli: u64,
    at_ms: u64,
}

impl Bucket {
    pub fn full(rate: Rate, now_ms: u64) -> Bucket {
        Bucket {
            milli: u64::from(rate.burst) * 1000,
            at_ms: now_ms,
        }
    }

    /// Take one job's token at `now_ms`: `Err(retry_after_ms)` if there is none yet.
    pub fn take(&mut self, rate: Rate, now_ms: u64) -> Result<(), u64> {
        let cap = u64::from(rate.burst) * 1000;
        let elapsed = now_ms.saturating_sub(self.at_ms);
        self.milli = cap.min(
            self.milli
                .saturating_add(elapsed.saturating_mul(u64::from(rate.per_second))),
        );
        self.at_ms = self.at_ms.max(now_ms);
        if self.milli >= 1000 {
            self.milli -= 1000;
            return Ok(());
        }
        match rate.per_second {
            0 => Err(u64::MAX),
            r => Err((1000 - self.milli).div_ceil(u64::from(r))),
        }
    }

    fn is_full(&self, rate: Rate, now_ms: u64) -> bool {
        let elapsed = now_ms.saturating_sub(self.at_ms);
        self.milli
            .saturating_add(elapsed.saturating_mul(u64::from(rate.per_second)))
            >= u64::from(rate.burst) * 1000
    }
}

/// Every requester's bucket, bounded by [`MAX_TRACKED`].
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: HashMap<[u8; 32], Bucket>,
}

impl RateLimiter {
    /// Take a token for `requester`: `Err(retry_after_ms)` when it is over its rate.
    pub fn take(&mut self, rate: Rate, requester: &[u8; 32], now_ms: u64) -> Result<(), u64> {
        if self.buckets.len() >= MAX_TRACKED && !self.buckets.contains_key(requester) {
            self.buckets.retain(|_, b| !b.is_full(rate, now_ms));
            if self.buckets.len() >= MAX_TRACKED {
                // Every tracked requester is mid-burst: a newcomer waits for room rather
                // than letting the table grow without bound.
                return Err(1000);
            }
        }
        self.buckets
            .entry(*requester)
            .or_insert_with(|| Bucket::full(rate, now_ms))
            .take(rate, now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_files_parse_or_name_what_is_wrong() {
        let p = Path::new("/etc/phase/node.json");
        let k = hex::encode(&[3; 32]);
        let cases: &[(&str, Result<NodeConfig, &str>)] = &[
            ("{}", Ok(NodeConfig::default())),
            (
                r#"{"admission":{"mode":"open"}}"#,
                Ok(NodeConfig::default()),
            ),
            (
                r#"{"rate":{"burst":1,"per_second":2}}"#,
                Ok(NodeConfig {
                    admission: Admission::Open,
                    rate: Rate {
                        burst: 1,
                        per_second: 2,
                    },
                }),
            ),
            ("\"open\"", Err("config_invalid")),
            (r#"{"admission":{"mode":"closed"}}"#, Err("config_invalid")),
            (r#"{"admision":{"mode":"open"}}"#, Err("config_invalid")),
            (
                r#"{"admission":{"mode":"allowlist"}}"#,
                Err("config_invalid"),
            ),
            (
                r#"{"admission":{"mode":"allowlist","keys":["AB"]}}"#,
                Err("config_bad_key"),
            ),
            (
                r#"{"rate":{"burst":-1,"per_second":2}}"#,
                Err("config_invalid"),
            ),
        ];
        for (text, want) in cases {
            match (parse(text.as_bytes(), p), want) {
                (Ok(got), Ok(want)) => assert_eq!(&got, want, "{text}"),
                (Err(e), Err(reason)) => assert_eq!(e.reason(), *reason, "{text}: {e}"),
                (got, want) => panic!("{text}: {got:?}, want {want:?}"),
            }
        }
        let text = format!(r#"{{"admission":{{"mode":"allowlist","keys":["{k}"]}}}}"#);
        let cfg = parse(text.as_bytes(), p).unwrap();
        assert_eq!(admit(&cfg.admission, &[3; 32]), Ok(()));
        assert_eq!(admit(&cfg.admission, &[4; 32]), Err(Refusal::NotAllowed));
        assert_eq!(admit(&Admission::Open, &[4; 32]), Ok(()));
    }

    #[test]
    fn the_state_directory_overrides_the_rootfs() {
        let dir = std::env::temp_dir().join(format!("phase-admission-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let explicit = dir.join("x.json");
        assert_eq!(choose(Some(&explicit), Some(&dir)), Some(explicit.clone()));
        // No override in the state directory: the rootfs's file if this host has one.
        let system = Path::new(SYSTEM_CONFIG);
        assert_eq!(
            choose(None, Some(&dir)),
            system.exists().then(|| system.to_path_buf())
        );
        std::fs::write(
            dir.join(STATE_CONFIG),
            r#"{"rate":{"burst":1,"per_second":1}}"#,
        )
        .unwrap();
        assert_eq!(choose(None, Some(&dir)), Some(dir.join(STATE_CONFIG)));
        assert_eq!(load(None, Some(&dir)).unwrap().rate.burst, 1);
        std::fs::write(&explicit, "{").unwrap();
        assert_eq!(
            load(Some(&explicit), Some(&dir)).unwrap_err().reason(),
            "config_invalid"
        );
        assert_eq!(
            load(Some(&dir.join("missing.json")), None)
                .unwrap_err()
                .reason(),
            "config_unreadable"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A bucket of 3, refilled at 2 per second: (clock, taken or retry_after_ms).
    #[test]
    fn token_bucket_table() {
        let rate = Rate {
            burst: 3,
            per_second: 2,
        };
        let mut b = Bucket::full(rate, 1000);
        let steps: &[(u64, Result<(), u64>)] = &[
            (1000, Ok(())),
            (1000, Ok(())),
            (1000, Ok(())),
            (1000, Err(500)),
            (1250, Err(250)),
            (1500, Ok(())),
            (1500, Err(500)),
            // A clock that goes back refills nothing.
            (900, Err(500)),
            // Long idle: refilled to the burst, never beyond.
            (100_000, Ok(())),
            (100_000, Ok(())),
            (100_000, Ok(())),
            (100_000, Err(500)),
        ];
        for (i, (now, want)) in steps.iter().enumerate() {
            assert_eq!(b.take(rate, *now), *want, "step {i} at {now}");
        }
        let never = Rate {
            burst: 0,
            per_second: 0,
        };
        assert_eq!(Bucket::full(never, 0).take(never, 10), Err(u64::MAX));
    }

    #[test]
    fn requesters_have_their_own_buckets_and_the_table_is_bounded() {
        let rate = Rate {
            burst: 1,
            per_second: 1,
        };
        let mut l = RateLimiter::default();
        assert_eq!(l.take(rate, &[1; 32], 0), Ok(()));
        assert_eq!(l.take(rate, &[1; 32], 0), Err(1000));
        assert_eq!(l.take(rate, &[2; 32], 0), Ok(()));
        // Fill the table with requesters mid-burst: a newcomer is told to wait.
        for i in 0..MAX_TRACKED as u32 {
            let mut k = [0; 32];
            k[..4].copy_from_slice(&i.to_le_bytes());
            k[31] = 9;
            let _ = l.take(rate, &k, 0);
        }
        assert_eq!(l.take(rate, &[5; 32], 0), Err(1000));
        // A second later every bucket is full again and may be forgotten.
        assert_eq!(l.take(rate, &[5; 32], 1000), Ok(()));
        assert!(l.buckets.len() <= MAX_TRACKED);
    }
}
