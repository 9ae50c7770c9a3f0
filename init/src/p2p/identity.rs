//! Node identity: the ed25519 key behind the node's peer id, its provider records and its job
//! receipts. Persistent nodes keep it in `node.key` under the state directory (mode 0600,
//! written to a temporary file, synced, renamed: `discover::dht::load_or_create_key`); a
//! private node gets a fresh key per boot that never touches a disk.

use crate::discover::dht::{self, DhtError};
use libp2p::identity::Keypair;
use std::path::{Path, PathBuf};

/// The key file's name in the state directory.
pub const KEY_FILE: &str = "node.key";

/// Where the node key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// This file, created if missing.
    Persistent(PathBuf),
    /// A new key in memory only (private mode).
    Ephemeral,
}

impl Identity {
    /// The default for a state directory: `DIR/node.key`, or ephemeral when `private`.
    pub fn for_state(state_dir: &Path, private: bool) -> Identity {
        if private {
            Identity::Ephemeral
        } else {
            Identity::Persistent(state_dir.join(KEY_FILE))
        }
    }

    pub fn load(&self) -> Result<Keypair, DhtError> {
        match self {
            Identity::Persistent(path) => dht::load_or_create_key(path),
            Identity::Ephemeral => Ok(Keypair::generate_ed25519()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persistent_keys_are_kept_and_ephemeral_ones_write_nothing() {
        let dir = std::env::temp_dir().join(format!("phase-identity-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let p = Identity::for_state(&dir, false);
        assert_eq!(p, Identity::Persistent(dir.join(KEY_FILE)));
        let a = p.load().unwrap();
        assert_eq!(
            a.public(),
            p.load().unwrap().public(),
            "the same key on the next start"
        );
        std::fs::remove_file(dir.join(KEY_FILE)).unwrap();
        let e = Identity::for_state(&dir, true);
        assert_eq!(e, Identity::Ephemeral);
        let b = e.load().unwrap();
        assert_ne!(b.public(), e.load().unwrap().public());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
