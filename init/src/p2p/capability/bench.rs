//! The DHT capability lookup's figures for `make bench` (`phase node bench`): N nodes on
//! loopback in one process, each publishing its capability record and joined through the
//! first; a requester with its own host then runs [`find`] (providers of the offer key, every
//! provider's record read and verified, the ranking) repeatedly: median and p99 ms, and how
//! long after the last node started every record was visible.

use super::{find, publish, Offer, WASM_TARGET};
use crate::discover::dht::{self, Dht, DhtConfig};
use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;
use std::time::{Duration, Instant};

/// How long the records of all nodes may take to become visible.
pub const VISIBLE_BOUND: Duration = Duration::from_secs(60);

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn node(bootstrap: &[Multiaddr]) -> Result<(Dht, tokio::sync::watch::Sender<usize>), String> {
    let key = libp2p::identity::Keypair::generate_ed25519();
    let signing = dht::signing_key(&key).ok_or("node key")?;
    let mut cfg = DhtConfig::new(key);
    cfg.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().map_err(|e| format!("{e}"))?];
    cfg.bootstrap = bootstrap.to_vec();
    let host = dht::start(cfg).await.map_err(|e| e.to_string())?;
    if !bootstrap.is_empty() {
        host.bootstrap().await.map_err(|e| e.to_string())?;
    }
    let peer = host.peer_id();
    let offer = Offer {
        addrs: host
            .listen_addrs()
            .iter()
            .map(|a| a.clone().with(Protocol::P2p(peer)).to_string())
            .collect(),
        arch: std::env::consts::ARCH.into(),
        wasm: vec![WASM_TARGET.into()],
        cpus: 2,
        memory_mib: 256,
    };
    let (slots, rx) = tokio::sync::watch::channel(2);
    host.offer(publish(host.port(), signing, offer, rx));
    Ok((host, slots))
}

/// Start `n` nodes, then time `lookups` lookups from a requester.
pub async fn lookup_figures(n: usize, lookups: usize) -> Result<serde_json::Value, String> {
    let (first, s0) = node(&[]).await?;
    let boot = vec![first
        .listen_addrs()
        .first()
        .cloned()
        .ok_or("node 0 listens nowhere")?
        .with(Protocol::P2p(first.peer_id()))];
    let mut nodes = vec![(first, s0)];
    for _ in 1..n {
        nodes.push(node(&boot).await?);
    }
    let started = Instant::now();
    let mut cfg = DhtConfig::new(libp2p::identity::Keypair::generate_ed25519());
    cfg.bootstrap = boot;
    let client = dht::start(cfg).await.map_err(|e| e.to_string())?;
    client.bootstrap().await.map_err(|e| e.to_string())?;
    let need = super::Need::default();
    let mut visible_ms = None;
    while started.elapsed() < VISIBLE_BOUND {
        let f = find(&client, &need, dht::now_unix(), 0)
            .await
            .map_err(|e| e.to_string())?;
        if f.fit.len() == n {
            visible_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let Some(visible_ms) = visible_ms else {
        return Err(format!(
            "not every one of {n} records was visible within {VISIBLE_BOUND:?}"
        ));
    };
    let mut ms = Vec::with_capacity(lookups);
    let mut short = 0;
    for i in 0..lookups {
        let t0 = Instant::now();
        let f = find(&client, &need, dht::now_unix(), i as u64)
            .await
            .map_err(|e| e.to_string())?;
        ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        if f.fit.len() < n {
            short += 1;
        }
    }
    ms.sort_by(f64::total_cmp);
    client.shutdown().await;
    for (h, _slots) in nodes {
        h.shutdown().await;
    }
    Ok(serde_json::json!({
        "nodes": n,
        "lookups": lookups,
        "lookup_ms": {"median": percentile(&ms, 0.5), "p99": percentile(&ms, 0.99),
                      "max": ms.last()},
        "lookups_missing_a_node": short,
        "all_visible_ms": visible_ms,
    }))
}
