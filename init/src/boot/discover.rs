//! Where stage 1 looks for providers when the command line names none (or none of them
//! serves a release that verifies): the LAN by DNS-SD/mDNS, then the DHT, as the mode
//! allows. Each method is bounded and reports `discovery.done`; what it finds is only a
//! list of URLs for the verified fetch.

use super::Boot;
use crate::discover::record::Verified;
use crate::discover::{self, mdns, Candidate, How};
use crate::events::Event;
use std::time::Instant;

/// Bootstrap peers for the DHT, baked into the initramfs (one multiaddr per line).
pub const BOOTSTRAP_PATH: &str = "/etc/phase/bootstrap-peers";

/// Candidates from every discovery method the mode allows, in fetch order; providers
/// advertising a release version in `verified` (verified here before) go first.
pub async fn candidates(boot: &Boot, verified: &Verified) -> Vec<Candidate> {
    let bootstrap = boot.bootstrap.join("\n");
    let have_peers = !boot.bootstrap.is_empty();
    let plan = discover::plan(boot.config.mode, have_peers);
    let mut found = Vec::new();
    if plan.lan {
        found.extend(lan(boot).await);
    }
    if plan.dht {
        found.extend(dht(boot, &bootstrap, verified).await);
    } else if boot.config.mode.allows_dht() {
        boot.events.emit(Event::Fallback {
            step: "dht".into(),
            reason: "no_bootstrap_peers".into(),
        });
    }
    discover::order(found, verified)
}

/// Browse the LAN (bounded; on a blocking thread, the mDNS engine's own).
async fn lan(boot: &Boot) -> Vec<Candidate> {
    let start = Instant::now();
    let channel = boot.config.channel.clone();
    let arch = std::env::consts::ARCH;
    let bounds = mdns::Bounds::default();
    let result = tokio::task::spawn_blocking(move || mdns::browse(&channel, arch, bounds)).await;
    let browse = match result {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            tracing::warn!("LAN discovery: {e}");
            boot.events.emit(Event::Fallback {
                step: "mdns".into(),
                reason: "mdns_failed".into(),
            });
            return Vec::new();
        }
        Err(e) => {
            tracing::warn!("LAN discovery thread: {e}");
            return Vec::new();
        }
    };
    for (name, reason) in &browse.skipped {
        tracing::info!("LAN: skipped {name}: {reason}");
    }
    boot.events.emit(Event::DiscoveryDone {
        how: "mdns".into(),
        found: browse.found.len(),
        rejected: browse.skipped.len(),
        ms: start.elapsed().as_millis() as u64,
    });
    browse.found
}

/// How long the DHT may take in stage 1: joining, then one lookup (each bounded by this).
const DHT_BOUND: std::time::Duration = std::time::Duration::from_secs(5);

/// Look the channel's provider records up in the DHT (internet mode only), as a client
/// with a throwaway identity: it stores nothing and serves nothing.
async fn dht(boot: &Boot, bootstrap: &str, verified: &Verified) -> Vec<Candidate> {
    use crate::discover::dht::{self, DhtConfig};
    let start = Instant::now();
    let fallback = |reason: &str| {
        boot.events.emit(Event::Fallback {
            step: "dht".into(),
            reason: reason.into(),
        })
    };
    let peers = match dht::parse_bootstrap(bootstrap) {
        Ok(p) => p,
        Err((line, why)) => {
            tracing::warn!("{BOOTSTRAP_PATH}:{line}: {why}");
            fallback("bad_bootstrap_list");
            return Vec::new();
        }
    };
    let mut cfg = DhtConfig::new(libp2p::identity::Keypair::generate_ed25519());
    cfg.bootstrap = peers;
    cfg.query_timeout = DHT_BOUND;
    cfg.verified = verified.clone();
    let node = match dht::start(cfg).await {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!("DHT: {e}");
            fallback(e.reason());
            return Vec::new();
        }
    };
    let channel = boot.config.channel.clone();
    let result = match node.bootstrap().await {
        Ok(_) => {
            node.lookup(&channel, std::env::consts::ARCH, dht::now_unix())
                .await
        }
        Err(e) => Err(e),
    };
    node.shutdown().await;
    let lookup = match result {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!("DHT: {e}");
            fallback(e.reason());
            return Vec::new();
        }
    };
    for r in &lookup.rejected {
        tracing::info!(
            "DHT: rejected a record from {}: {}",
            r.node.as_deref().unwrap_or("?"),
            r.reason
        );
    }
    boot.events.emit(Event::DiscoveryDone {
        how: "dht".into(),
        found: lookup.found.len(),
        rejected: lookup.rejected.len(),
        ms: start.elapsed().as_millis() as u64,
    });
    lookup
        .found
        .into_iter()
        .map(|r| Candidate {
            url: r.url,
            how: How::Dht,
            advertised: Some(r.version),
        })
        .collect()
}
