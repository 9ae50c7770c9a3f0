//! Finding nodes by capability (EFFECT, the requester side of `--discover`): ask the DHT for
//! the providers of the job's offer key, read each provider's record under its own key (all
//! at once, each bounded by the query timeout), keep the newest record per node that
//! verifies, and rank them with the pure [`select`]. Nothing found is trusted beyond its
//! signature: the receipt of the job is what proves which node ran it.

use super::{node_of, record_key, select, verify, Capability, Need, Passed, MAX_PROVIDERS};
use crate::discover::dht::{Dht, DhtError};
use libp2p::futures::future::join_all;

/// What a lookup found.
#[derive(Debug, Clone, Default)]
pub struct Found {
    /// Nodes that can take the job, best first.
    pub fit: Vec<Capability>,
    /// Nodes with a verified record that cannot take it, and why.
    pub passed: Vec<Passed>,
    /// Providers whose record was missing or did not verify, and why (`not_found`, or the
    /// record's reason).
    pub rejected: Vec<Passed>,
    /// Providers the DHT named.
    pub providers: usize,
}

/// Look up the nodes that offer what `need` asks for, at `now` (unix seconds); `seed`
/// spreads requesters over equal nodes.
pub async fn find(host: &Dht, need: &Need, now: u64, seed: u64) -> Result<Found, DhtError> {
    let providers = host
        .providers(super::offer_key(&need.arch, &need.wasm))
        .await?;
    let nodes: Vec<String> = providers
        .iter()
        .filter_map(node_of)
        .take(MAX_PROVIDERS)
        .collect();
    let values = join_all(nodes.iter().map(|n| host.values(record_key(n)))).await;
    let mut verified = Vec::new();
    let mut rejected = Vec::new();
    for (node, got) in nodes.into_iter().zip(values) {
        let key = record_key(&node);
        let mut newest: Option<Capability> = None;
        let mut reason = "not_found";
        for v in got.unwrap_or_default() {
            match verify(&key, &v, now) {
                Ok(c) if newest.as_ref().is_none_or(|n| c.issued > n.issued) => newest = Some(c),
                Ok(_) => {}
                Err(e) => reason = e.reason(),
            }
        }
        match newest {
            Some(c) => verified.push(c),
            None => rejected.push(Passed { node, reason }),
        }
    }
    let (fit, passed) = select(verified, need, seed);
    Ok(Found {
        fit,
        passed,
        rejected,
        providers: providers.len(),
    })
}
