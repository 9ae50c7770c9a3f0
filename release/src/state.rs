//! The trusted state: the highest release version (and its content digest) and the root
//! version this machine has accepted, and the newest time it has seen. Persisted as one
//! small JSON file, replaced atomically (write a temp file, fsync, rename, fsync the
//! directory), so a crash at any point leaves either the old or the new state, never a
//! torn one. In private mode the state lives in RAM only ([`Store::in_memory`]).

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const FILE_NAME: &str = "trusted-state.json";
/// The state file is read with this cap (a real one is about 200 bytes): a partition
/// anyone could have written to cannot make PID 1 allocate without bound.
pub const MAX_STATE_BYTES: u64 = 4096;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedState {
    pub root_version: u64,
    pub release_version: u64,
    /// Content digest (hex) of the trusted release, empty if none yet.
    pub release_digest: String,
    /// Newest time (unix seconds) this machine accepted; a floor for the clock.
    pub time: u64,
}

impl TrustedState {
    /// The trusted release as the verifier's policy wants it.
    pub fn trusted_release(&self) -> Option<(u64, [u8; 32])> {
        crate::hex::decode::<32>(&self.release_digest).map(|d| (self.release_version, d))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: corrupt trusted state: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{path}: larger than {max} bytes")]
    Oversized { path: PathBuf, max: u64 },
}

impl StateError {
    pub fn reason(&self) -> &'static str {
        match self {
            StateError::Io { .. } => "state_io",
            StateError::Corrupt { .. } => "state_corrupt",
            StateError::Oversized { .. } => "state_oversized",
        }
    }
}

/// Where the state lives.
pub struct Store {
    dir: Option<PathBuf>,
    mem: TrustedState,
    /// The root chain steps (`N.root.json` bytes), when the state lives in RAM.
    mem_roots: Vec<(u64, Vec<u8>)>,
}

/// Read at most `cap` bytes of `path`; `Ok(None)` if it does not exist.
fn read_capped(path: &Path, cap: u64) -> Result<Option<Vec<u8>>, StateError> {
    use std::io::Read;
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateError::Io {
                path: path.into(),
                source,
            })
        }
    };
    let mut buf = Vec::new();
    f.take(cap + 1)
        .read_to_end(&mut buf)
        .map_err(|source| StateError::Io {
            path: path.into(),
            source,
        })?;
    if buf.len() as u64 > cap {
        return Err(StateError::Oversized {
            path: path.into(),
            max: cap,
        });
    }
    Ok(Some(buf))
}

/// Replace `path` with `bytes` atomically: temp file, fsync, rename, fsync the directory.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StateError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StateError::Io { path, source }
    };
    let (tmp, path) = (dir.join(format!(".{name}.tmp")), dir.join(name));
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

impl Store {
    /// RAM only: nothing is written anywhere (private mode).
    pub fn in_memory() -> Store {
        Store {
            dir: None,
            mem: TrustedState::default(),
            mem_roots: Vec::new(),
        }
    }

    /// A directory on persistent storage (e.g. /var/lib/phase).
    pub fn on_disk(dir: &Path) -> Store {
        Store {
            dir: Some(dir.to_path_buf()),
            mem: TrustedState::default(),
            mem_roots: Vec::new(),
        }
    }

    fn path(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join(FILE_NAME))
    }

    /// The current state; a missing file is the empty state. A leftover temp file from an
    /// interrupted save is ignored (the rename never happened, so the old file stands).
    pub fn load(&mut self) -> Result<TrustedState, StateError> {
        let Some(path) = self.path() else {
            return Ok(self.mem.clone());
        };
        let Some(bytes) = read_capped(&path, MAX_STATE_BYTES)? else {
            return Ok(TrustedState::default());
        };
        let v = crate::canonical::parse(&bytes).map_err(|e| StateError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let s: TrustedState = serde_json::from_value(v).map_err(|e| StateError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        self.mem = s.clone();
        Ok(s)
    }

    /// Replace the state atomically.
    pub fn save(&mut self, s: &TrustedState) -> Result<(), StateError> {
        self.mem = s.clone();
        let Some(dir) = self.dir.clone() else {
            return Ok(());
        };
        let bytes = crate::canonical::encode(&serde_json::to_value(s).unwrap_or_default());
        write_atomic(&dir, FILE_NAME, &bytes)
    }

    /// The stored `N.root.json`, read with the metadata cap; `None` if absent or
    /// unreadable (the chain walk then ends there and says so).
    pub fn root_file(&self, version: u64) -> Option<Vec<u8>> {
        let Some(dir) = &self.dir else {
            return self
                .mem_roots
                .iter()
                .find(|(v, _)| *v == version)
                .map(|(_, b)| b.clone());
        };
        let cap = crate::doc::MAX_METADATA_BYTES as u64;
        // An unreadable or oversized file ends the walk like a missing one; the caller
        // compares the root it reached with the root version the state records.
        read_capped(&dir.join(format!("{version}.root.json")), cap)
            .ok()
            .flatten()
    }

    /// Store every step of a verified root chain (`N.root.json`), each replaced
    /// atomically. Steps already stored are rewritten with the same bytes.
    pub fn save_root_chain(&mut self, steps: &[(u64, Vec<u8>)]) -> Result<(), StateError> {
        let Some(dir) = self.dir.clone() else {
            self.mem_roots = steps.to_vec();
            return Ok(());
        };
        for (v, bytes) in steps {
            write_atomic(&dir, &format!("{v}.root.json"), bytes)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("phase-state-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn state(v: u64) -> TrustedState {
        TrustedState {
            root_version: 1,
            release_version: v,
            release_digest: crate::hex::encode(&[v as u8; 32]),
            time: 1_800_000_000 + v,
        }
    }

    #[test]
    fn survives_restart() {
        let d = tmpdir("restart");
        Store::on_disk(&d).save(&state(3)).unwrap();
        // A new Store is what a reboot sees.
        assert_eq!(Store::on_disk(&d).load().unwrap(), state(3));
        assert_eq!(state(3).trusted_release(), Some((3, [3; 32])));
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn torn_write_leaves_old_state() {
        let d = tmpdir("torn");
        Store::on_disk(&d).save(&state(3)).unwrap();
        // A crash while writing v4: half a temp file, no rename.
        let full = crate::canonical::encode(&serde_json::to_value(state(4)).unwrap());
        std::fs::write(d.join(format!(".{FILE_NAME}.tmp")), &full[..full.len() / 2]).unwrap();
        assert_eq!(Store::on_disk(&d).load().unwrap(), state(3));
        // A crash after writing the whole temp file but before the rename: still v3.
        std::fs::write(d.join(format!(".{FILE_NAME}.tmp")), &full).unwrap();
        assert_eq!(Store::on_disk(&d).load().unwrap(), state(3));
        // The next save completes and replaces it.
        Store::on_disk(&d).save(&state(4)).unwrap();
        assert_eq!(Store::on_disk(&d).load().unwrap(), state(4));
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn corrupt_file_is_a_named_error_and_missing_is_empty() {
        let d = tmpdir("corrupt");
        assert_eq!(Store::on_disk(&d).load().unwrap(), TrustedState::default());
        std::fs::write(d.join(FILE_NAME), b"{\"release_version\":").unwrap();
        let e = Store::on_disk(&d).load().unwrap_err();
        assert_eq!(e.reason(), "state_corrupt");
        assert!(e.to_string().contains(FILE_NAME));
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn oversized_state_file_is_refused_unread() {
        let d = tmpdir("oversized");
        std::fs::write(d.join(FILE_NAME), vec![b' '; MAX_STATE_BYTES as usize + 1]).unwrap();
        let e = Store::on_disk(&d).load().unwrap_err();
        assert_eq!(e.reason(), "state_oversized");
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn root_chain_is_stored_beside_the_state() {
        let d = tmpdir("roots");
        let steps = vec![(2, b"two".to_vec()), (3, b"three".to_vec())];
        Store::on_disk(&d).save_root_chain(&steps).unwrap();
        let s = Store::on_disk(&d);
        assert_eq!(s.root_file(3), Some(b"three".to_vec()));
        assert_eq!(s.root_file(4), None);
        // Larger than any metadata: not read.
        std::fs::write(
            d.join("4.root.json"),
            vec![0; crate::doc::MAX_METADATA_BYTES + 1],
        )
        .unwrap();
        assert_eq!(s.root_file(4), None);
        let mut m = Store::in_memory();
        m.save_root_chain(&steps).unwrap();
        assert_eq!(m.root_file(2), Some(b"two".to_vec()));
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn in_memory_writes_nothing() {
        let mut s = Store::in_memory();
        s.save(&state(9)).unwrap();
        assert_eq!(s.load().unwrap(), state(9));
        assert_eq!(Store::in_memory().load().unwrap(), TrustedState::default());
    }
}
