//! Publishing this node's capability record (EFFECT): one task per node that signs the record
//! afresh and puts it under the node's key whenever its free slots change, at most once per
//! [`MIN_INTERVAL`] (a busy node does not flood the DHT), and at least every half
//! [`RECORD_TTL`] (it never expires while the node runs), and announces the node under its
//! offer key. While no peer took the record (a node alone, or still joining) it tries again
//! with a doubling wait up to [`MAX_RETRY`]. [`Publishing::withdraw`] (run by the host's shutdown) puts it once more with no
//! free slot, which replaces it everywhere it is held, and stops the announcement.

use super::{offer_key, record_key, Capability};
use crate::discover::dht::{self, Port};
use ed25519_dalek::SigningKey;
use std::time::Duration;
use tokio::sync::watch;

/// How long a published record is valid.
pub const RECORD_TTL: Duration = Duration::from_secs(600);
/// Least time between two publications.
pub const MIN_INTERVAL: Duration = Duration::from_secs(2);
/// Longest wait before trying again when no peer took the record.
pub const MAX_RETRY: Duration = Duration::from_secs(60);
/// Bound on the withdrawal at shutdown.
pub const WITHDRAW_TIMEOUT: Duration = Duration::from_secs(5);

/// What this node offers (the record's fields that do not change while it runs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// Multiaddrs of the job protocol, each ending in `/p2p/<peer id>`.
    pub addrs: Vec<String>,
    pub arch: String,
    pub wasm: Vec<String>,
    pub cpus: u32,
    /// Largest job memory admitted (MiB).
    pub memory_mib: u64,
}

impl Offer {
    /// The record with `free_slots`, valid from `now` (unix seconds) for [`RECORD_TTL`].
    pub fn record(&self, free_slots: u32, now: u64) -> Capability {
        Capability {
            node: String::new(),
            addrs: self.addrs.clone(),
            arch: self.arch.clone(),
            wasm: self.wasm.clone(),
            cpus: self.cpus,
            memory_mib: self.memory_mib,
            free_slots,
            issued: now,
            expires: now.saturating_add(RECORD_TTL.as_secs()),
        }
    }
}

/// The addresses a record lists: the listen addresses (with `/p2p/<id>`), loopback ones
/// only when there is nothing else (a requester elsewhere would dial itself), at most
/// [`super::MAX_ADDRS`].
pub fn offered_addrs(listen: &[String]) -> Vec<String> {
    let loopback = |a: &String| a.starts_with("/ip4/127.") || a.starts_with("/ip6/::1/");
    let lan: Vec<String> = listen.iter().filter(|a| !loopback(a)).cloned().collect();
    let mut addrs = if lan.is_empty() { listen.to_vec() } else { lan };
    addrs.truncate(super::MAX_ADDRS);
    addrs
}

/// A running publication (see [`publish`]).
pub struct Publishing {
    task: tokio::task::JoinHandle<()>,
    port: Port,
    key: SigningKey,
    offer: Offer,
}

/// Start publishing `offer` signed with `key` (the node key), its free slots read from
/// `slots`. The first put may find no peer yet: the next change or refresh tries again.
pub fn publish(
    port: Port,
    key: SigningKey,
    offer: Offer,
    mut slots: watch::Receiver<usize>,
) -> Publishing {
    let (p, k, o) = (port.clone(), key.clone(), offer.clone());
    let task = tokio::spawn(async move {
        let node = phase_release::hex::encode(&k.verifying_key().to_bytes());
        let rkey = record_key(&node);
        // Until a put reaches a peer (a node alone, or still joining), try again soon.
        let mut retry = MIN_INTERVAL;
        let mut reached = false;
        let mut refreshing = true;
        loop {
            if refreshing || !reached {
                if let Err(e) = p.provide(offer_key(&o.arch, WASM)).await {
                    tracing::debug!("capability: provide: {e}");
                }
            }
            let free = u32::try_from(*slots.borrow_and_update()).unwrap_or(u32::MAX);
            let signed = o.record(free, dht::now_unix()).sign(&k);
            let sent = tokio::time::Instant::now();
            reached = match p.put_own(rkey.clone(), signed.encode()).await {
                Ok(()) => {
                    tracing::debug!("capability: published ({free} free slots)");
                    true
                }
                Err(e) => {
                    tracing::debug!("capability: put: {e}");
                    false
                }
            };
            let refresh = sent + RECORD_TTL / 2;
            refreshing = false;
            if !reached {
                // A peer coming (mDNS, an inbound connection) ends the wait early.
                tokio::select! {
                    _ = tokio::time::sleep_until((sent + retry).min(refresh)) => {}
                    _ = p.new_peer() => {}
                }
                tokio::time::sleep_until(sent + MIN_INTERVAL).await;
                retry = (retry * 2).min(MAX_RETRY);
                continue;
            }
            retry = MIN_INTERVAL;
            tokio::select! {
                changed = slots.changed() => {
                    // The executor is gone: the slots no longer change; refresh only.
                    if changed.is_err() {
                        tokio::time::sleep_until(refresh).await;
                        refreshing = true;
                    }
                }
                _ = tokio::time::sleep_until(refresh) => refreshing = true,
            }
            tokio::time::sleep_until(sent + MIN_INTERVAL).await;
        }
    });
    Publishing {
        task,
        port,
        key,
        offer,
    }
}

/// The offer key's WASM part: the executor's one target.
const WASM: &str = super::WASM_TARGET;

/// A publication dropped without a withdrawal (its host stopped or was dropped) stops too.
impl Drop for Publishing {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Publishing {
    /// Stop publishing without withdrawing (a replaced offer).
    pub fn abort(self) {
        self.task.abort();
    }

    /// Stop publishing, put the record once more with no free slot (bounded), and stop
    /// announcing the node under its offer key.
    pub async fn withdraw(self) {
        self.task.abort();
        let node = phase_release::hex::encode(&self.key.verifying_key().to_bytes());
        let signed = self.offer.record(0, dht::now_unix()).sign(&self.key);
        let put = self.port.put_own(record_key(&node), signed.encode());
        match tokio::time::timeout(WITHDRAW_TIMEOUT, put).await {
            Ok(Ok(())) => tracing::debug!("capability: withdrawn"),
            Ok(Err(e)) => tracing::debug!("capability: withdraw: {e}"),
            Err(_) => tracing::debug!("capability: withdraw: no answer in {WITHDRAW_TIMEOUT:?}"),
        }
        self.port
            .stop_providing(offer_key(&self.offer.arch, WASM))
            .await;
    }
}
