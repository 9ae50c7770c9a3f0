//! Starting the job node: node key, admission policy, executor, job server and the libp2p
//! host, joined through the bootstrap peers, then `node.ready`. One function for `phase node`
//! on a host and for stage 2 of a booted node, so both are the same node. A node that
//! announces itself publishes its capability record (`capability::publish`), withdrawn
//! when the host shuts down, and, listening on a LAN address, announces itself by mDNS and
//! adds the nodes it sees there to its routing table (`p2p::mdns`).

use super::admission::{self, ConfigError};
use super::capability::{self, Offer};
use super::identity::Identity;
use super::serve::JobServer;
use crate::discover::dht::{self, Dht, DhtConfig, DhtError};
use crate::events::{Event, EventLog};
use crate::node::executor::{Executor, ExecutorConfig};
use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;
use std::path::PathBuf;
use std::sync::Arc;

/// What a node is made of.
#[derive(Debug, Clone)]
pub struct NodeSetup {
    pub identity: Identity,
    /// Holds `node.json` (the policy override) and, with `disk_cache`, the compile cache.
    pub state_dir: PathBuf,
    /// An explicit policy file (else the state directory's, else the rootfs's).
    pub config: Option<PathBuf>,
    pub listen: Vec<Multiaddr>,
    /// Peers to join the DHT through (each ending in `/p2p/<peer id>`).
    pub bootstrap: Vec<Multiaddr>,
    pub workers: Option<usize>,
    pub queue: Option<usize>,
    /// Keep compiled modules in `state_dir/cache` (not in private mode).
    pub disk_cache: bool,
    /// Publish the capability record in the DHT (internet and local modes; a private node
    /// tells no one what it is).
    pub announce: bool,
    /// The largest job memory admitted (default: the executor's, 256 MiB).
    pub max_memory_bytes: Option<u64>,
    /// Kept current with the host's connected peers (the status endpoint's `peers`).
    pub connected: dht::Connected,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("node key: {0}")]
    Key(DhtError),
    #[error("admission policy: {0}")]
    Config(#[from] ConfigError),
    #[error("executor: {0}")]
    Executor(String),
    #[error("the node key is not ed25519")]
    KeyType,
    #[error("libp2p host: {0}")]
    Host(DhtError),
}

impl NodeError {
    pub fn reason(&self) -> &'static str {
        match self {
            NodeError::Key(_) => "node_key",
            NodeError::Config(e) => e.reason(),
            NodeError::Executor(_) => "executor",
            NodeError::KeyType => "key_type",
            NodeError::Host(e) => e.reason(),
        }
    }
}

/// Start the node and report `node.ready` (peer id, listen addresses with the peer id, the
/// routing table's size after bootstrap; a failed bootstrap is logged and leaves 0: peers
/// may come later). The node runs until the returned host is shut down.
pub async fn start(setup: NodeSetup, events: Arc<EventLog>) -> Result<Dht, NodeError> {
    let key = setup.identity.load().map_err(NodeError::Key)?;
    let policy = admission::load(setup.config.as_deref(), Some(&setup.state_dir))?;
    let mut ec = ExecutorConfig {
        cache_dir: setup.disk_cache.then(|| setup.state_dir.join("cache")),
        ..ExecutorConfig::default()
    };
    if let Some(w) = setup.workers {
        ec.workers = w.max(1);
    }
    if let Some(q) = setup.queue {
        ec.queue = q;
    }
    if let Some(m) = setup.max_memory_bytes {
        ec.policy.max.memory_bytes = m;
    }
    let executor =
        Executor::new(ec).map_err(|e| NodeError::Executor(format!("{} ({e})", e.reason())))?;
    let executor = Arc::new(executor);
    let server = JobServer::new(executor.clone(), &key, policy, Some(events.clone()))
        .ok_or(NodeError::KeyType)?;
    let signing = dht::signing_key(&key).ok_or(NodeError::KeyType)?;
    let mut cfg = DhtConfig::new(key);
    cfg.listen = setup.listen;
    cfg.bootstrap = setup.bootstrap.clone();
    cfg.jobs = Some(Arc::new(server));
    cfg.connected = setup.connected.clone();
    let host = dht::start(cfg).await.map_err(NodeError::Host)?;
    let peers = if setup.bootstrap.is_empty() {
        0
    } else {
        host.bootstrap().await.unwrap_or_else(|e| {
            tracing::warn!("node: bootstrap failed ({}): {e}", e.reason());
            0
        })
    };
    let peer_id = host.peer_id();
    let listen: Vec<String> = host
        .listen_addrs()
        .iter()
        .map(|a| a.clone().with(Protocol::P2p(peer_id)).to_string())
        .collect();
    if setup.announce {
        let offer = Offer {
            addrs: capability::offered_addrs(&listen),
            arch: std::env::consts::ARCH.into(),
            wasm: vec![capability::WASM_TARGET.into()],
            cpus: std::thread::available_parallelism()
                .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
                .unwrap_or(1),
            memory_mib: executor.max_memory_bytes() >> 20,
        };
        host.offer(capability::publish(
            host.port(),
            signing,
            offer,
            executor.free_slots(),
        ));
    }
    if setup.announce {
        if let Some(port) = super::mdns::lan_port(&host.listen_addrs()) {
            let p = host.port();
            match super::mdns::join(peer_id, port, move |peer, addr| {
                let _ = p.add_peer_blocking(peer, addr);
            }) {
                Ok(presence) => host.join_lan(presence),
                Err(e) => tracing::warn!("node: no mDNS peer discovery: {e}"),
            }
        }
    }
    events.emit(Event::NodeReady {
        peer_id: peer_id.to_string(),
        listen,
        peers,
    });
    Ok(host)
}
