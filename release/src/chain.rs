//! The root chain a machine trusts: its anchor (the root baked into the initramfs) and every
//! rotation step verified since, as the exact bytes served (`N.root.json`), so the chain can
//! be stored, carried on a boot medium and served on, and re-walked from the anchor on every
//! boot. Nothing stored is trusted as such: a chain read back from the state partition or a
//! meta partition is verified again, step by step, from the anchor.
//!
//! TUF order: the root is brought up to date first (from any source), then every release is
//! judged with that one root. A root is never replaced by a lower version.

use crate::doc::Root;
use crate::verify::{verify_root_update, TrustError};

/// At most this many rotation steps are walked in one go (a source cannot keep a machine
/// busy forever; one rotation a week for a year is 52).
pub const MAX_ROOT_STEPS: usize = 64;

/// The trusted root and how it was reached from the anchor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootChain {
    /// The newest trusted root.
    pub root: Root,
    /// Version of the anchor the chain starts from.
    pub anchor_version: u64,
    /// `(N, N.root.json)` for every step after the anchor, in order.
    pub steps: Vec<(u64, Vec<u8>)>,
}

impl RootChain {
    /// A chain of one: the verified anchor.
    pub fn anchor(root: Root) -> RootChain {
        RootChain {
            anchor_version: root.version,
            root,
            steps: Vec::new(),
        }
    }

    /// The version the next step must have.
    pub fn next_version(&self) -> u64 {
        self.root.version + 1
    }

    /// Verify `bytes` as the next root (a threshold of the current and of its own root
    /// keys, version exactly +1) and move to it.
    pub fn extend(&mut self, bytes: &[u8]) -> Result<(), TrustError> {
        if self.steps.len() >= MAX_ROOT_STEPS {
            return Err(TrustError::RootChainTooLong {
                max: MAX_ROOT_STEPS,
            });
        }
        let next = verify_root_update(&self.root, bytes)?;
        self.steps.push((next.doc.version, bytes.to_vec()));
        self.root = next.doc;
        Ok(())
    }

    /// Walk forward with `file(N)` (the bytes of `N.root.json`, `None` when there is no
    /// such file) until a file is missing. Returns the first step that did not verify, if
    /// any: the chain then ends at the last root that did (a bad file never ends trust,
    /// it only stops the walk).
    pub fn walk(&mut self, mut file: impl FnMut(u64) -> Option<Vec<u8>>) -> Option<TrustError> {
        while self.steps.len() < MAX_ROOT_STEPS {
            let bytes = file(self.next_version())?;
            if let Err(e) = self.extend(&bytes) {
                return Some(e);
            }
        }
        None
    }

    /// Adopt `other` if it starts from the same anchor and reaches a higher root.
    pub fn adopt_if_newer(&mut self, other: RootChain) {
        if other.anchor_version == self.anchor_version && other.root.version > self.root.version {
            *self = other;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doc::{new_root, Envelope};
    use crate::keys::Keypair;

    fn keys(seed: u8, n: usize) -> Vec<Keypair> {
        (0..n)
            .map(|i| Keypair::from_seed(&[seed + i as u8; 32]))
            .collect()
    }

    fn root(v: u64, root_keys: &[Keypair]) -> Root {
        let pubs = |ks: &[Keypair]| ks.iter().map(|k| k.public()).collect::<Vec<_>>();
        new_root(v, u64::MAX, &pubs(root_keys), 1, &pubs(&keys(90, 1)), 1).unwrap()
    }

    fn signed(r: &Root, by: &[&Keypair]) -> Vec<u8> {
        let mut e = Envelope::new(r).unwrap();
        for k in by {
            e.sign(k).unwrap();
        }
        e.to_bytes()
    }

    /// Roots 1..=n, each key set new, each step signed by the old and the new key.
    fn ladder(n: u64) -> (Root, Vec<Vec<u8>>) {
        let ks: Vec<Vec<Keypair>> = (1..=n).map(|v| keys(v as u8 * 3, 1)).collect();
        let files = (2..=n)
            .map(|v| {
                let (old, new) = (&ks[v as usize - 2][0], &ks[v as usize - 1][0]);
                signed(&root(v, &ks[v as usize - 1]), &[old, new])
            })
            .collect();
        (root(1, &ks[0]), files)
    }

    #[test]
    fn walks_to_the_end_and_keeps_the_bytes() {
        let (anchor, files) = ladder(4);
        let mut c = RootChain::anchor(anchor);
        assert_eq!(c.walk(|v| files.get(v as usize - 2).cloned()), None);
        assert_eq!(c.root.version, 4);
        assert_eq!(
            c.steps.iter().map(|(v, _)| *v).collect::<Vec<_>>(),
            [2, 3, 4]
        );
        assert_eq!(c.steps[0].1, files[0]);
    }

    #[test]
    fn a_bad_step_stops_the_walk_at_the_last_good_root() {
        let (anchor, mut files) = ladder(4);
        files[1][40] ^= 1; // 3.root.json altered
        let mut c = RootChain::anchor(anchor);
        let e = c.walk(|v| files.get(v as usize - 2).cloned());
        assert!(e.is_some());
        assert_eq!(c.root.version, 2);
        // A file served for N that is really N+1 (a skipped step) is refused.
        let (anchor, files) = ladder(4);
        let mut c = RootChain::anchor(anchor);
        let e = c.walk(|v| (v == 2).then(|| files[1].clone())).unwrap();
        assert_eq!(e.reason(), "root_not_next");
        assert_eq!(c.root.version, 1);
    }

    #[test]
    fn bounded_and_only_adopts_higher_chains_from_the_same_anchor() {
        let (anchor, files) = ladder(3);
        let mut c = RootChain::anchor(anchor.clone());
        c.walk(|v| files.get(v as usize - 2).cloned());
        let mut short = RootChain::anchor(anchor.clone());
        short.adopt_if_newer(c.clone());
        assert_eq!(short.root.version, 3);
        c.adopt_if_newer(RootChain::anchor(anchor));
        assert_eq!(c.root.version, 3);
        c.steps = vec![(0, Vec::new()); MAX_ROOT_STEPS];
        assert_eq!(
            c.extend(&files[0]).unwrap_err().reason(),
            "root_chain_too_long"
        );
    }
}
