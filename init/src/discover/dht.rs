//! The DHT node: libp2p Kademlia (protocol `/phase-boot/kad/1.0.0`) with identify, over TCP
//! with Noise and Yamux, for provider discovery in `internet` mode.
//!
//! Providers of a channel/arch share one record key; its value is a set of signed
//! [`SignedRecord`]s (see [`record`]). Every node that listens runs in Kademlia server mode
//! and filters every inbound put through [`record::merge`] (`StoreInserts::FilterBoth`), so
//! an honest node never stores a forged, expired or foreign entry, and several providers
//! coexist under one key. A client trusts nothing it gets back: [`Dht::lookup`] verifies every
//! value with [`record::verify`] and reports what it rejected and why.
//!
//! An inbound put is only queued on the swarm's task: its signature checks (up to
//! [`record::MAX_CHECKED`] per value) run on the blocking pool, one put at a time, and the
//! checked entries come back to be merged ([`record::merge_checked`], cheap). At most
//! [`VERIFY_QUEUE`] puts wait; beyond that a put is dropped (`verify_queue_full`, counted in
//! [`InboundStats`]), so a flood of puts costs its senders, not the node's other work.
//!
//! The swarm is the node's one libp2p host (`crate::p2p`: Kademlia, identify, ping and the job
//! protocol in one composed behaviour); it runs as one tokio task (fine on the
//! current-thread runtime of PID 1), and [`Dht`] is a handle that talks to it over a channel.
//! Job requests that arrive go to the configured [`JobHandler`], each answered from its own
//! task; [`Dht::submit`] sends one. Every wait is bounded: a query by
//! `query_timeout` (Kademlia's own query timeout, plus a short grace on the handle side),
//! listening by [`LISTEN_TIMEOUT`]. Dropping the handle, or [`Dht::shutdown`], stops the
//! task and closes every connection.
//!
//! The node key is the ed25519 key of the libp2p identity, stored in the same JSON key file
//! format as release keys (`phase_release::keys::PrivateKeyFile`); the same key signs the
//! node's provider records, so `record.node` is the node's libp2p public key.

use super::record::{self, ProviderRecord, Rejected, SignedRecord};
use crate::p2p::capability;
use crate::p2p::wire::{JobRequest, JobResponse};
use crate::p2p::{Behaviour, BehaviourEvent, JobHandler, SubmitError};
use libp2p::futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::kad::{self, store::MemoryStore, store::RecordStore};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::swarm::SwarmEvent;
use libp2p::{identify, Multiaddr, PeerId, StreamProtocol, Swarm};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// The Kademlia protocol: a network of its own, apart from the IPFS DHT.
pub const PROTOCOL: &str = "/phase-boot/kad/1.0.0";
/// How long [`start`] waits for every listener to report an address.
pub const LISTEN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long [`start`] collects interface addresses when told to listen on 0.0.0.0 or `::`.
pub const INTERFACES_SETTLE: Duration = Duration::from_millis(200);
/// Largest Kademlia message: a full record set ([`record::MAX_VALUE_BYTES`]) plus framing.
/// libp2p's default (16 KiB) would silently drop large sets.
pub const MAX_PACKET: usize = record::MAX_VALUE_BYTES + 16 * 1024;
/// How often a filtering node re-checks what it stores (expired entries go).
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(60);
/// Record keys (one per channel/arch) a node stores at most.
pub const MAX_KEYS: usize = 64;
/// What the handle waits beyond `query_timeout` for the node task to answer.
const GRACE: Duration = Duration::from_secs(5);
/// Inbound puts waiting for their signature checks, at most (see the module header).
pub const VERIFY_QUEUE: usize = 16;
/// Largest key file read.
const MAX_KEY_FILE: u64 = 4096;

/// What a node is and does.
#[derive(Clone)]
pub struct DhtConfig {
    /// Ed25519: it is also the key that signs this node's provider records.
    pub key: Keypair,
    /// Where to listen (e.g. `/ip4/0.0.0.0/tcp/4001`); empty: a client that never serves.
    pub listen: Vec<Multiaddr>,
    /// Known nodes, each address ending in `/p2p/<peer id>`.
    pub bootstrap: Vec<Multiaddr>,
    /// Bound on each Kademlia query (bootstrap, put, get).
    pub query_timeout: Duration,
    /// How often announced records are signed afresh and published again.
    pub refresh: Duration,
    /// Filter inbound puts through [`record::merge`] (every honest node). `false` stores
    /// whatever arrives, unchecked: only tests use it, to play a malicious node.
    pub filter_inbound: bool,
    /// Who answers job requests; none: this node only sends them.
    pub jobs: Option<Arc<dyn JobHandler>>,
    /// Release versions this node verified itself: entries advertising them are preferred
    /// when stored and listed first by lookups ([`record::Verified`]).
    pub verified: record::Verified,
    /// The peers connected now (peer ids), kept current by the swarm's task and emptied
    /// when the node stops: the status endpoint's `peers`.
    pub connected: Connected,
    /// Tests: the verifier takes a queued put only with a permit from here.
    #[cfg(test)]
    pub verify_permits: Option<Arc<tokio::sync::Semaphore>>,
}

/// The peer ids a node is connected to, shared with whoever reports them.
pub type Connected = Arc<Mutex<Vec<String>>>;

/// What became of the inbound puts a filtering node received.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InboundStats {
    /// Queued for their signature checks.
    pub queued: u64,
    /// Dropped because [`VERIFY_QUEUE`] puts were waiting already (`verify_queue_full`).
    pub dropped: u64,
    /// Checked and merged into the store (or refused as a whole).
    pub checked: u64,
}

/// Why an inbound put was dropped unchecked: a stable reason for logs and counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutDrop {
    /// [`VERIFY_QUEUE`] puts wait already.
    QueueFull,
    /// The verifier has stopped (the node is shutting down).
    VerifierStopped,
}

impl PutDrop {
    pub fn reason(self) -> &'static str {
        match self {
            PutDrop::QueueFull => "verify_queue_full",
            PutDrop::VerifierStopped => "verifier_stopped",
        }
    }
}

impl DhtConfig {
    pub fn new(key: Keypair) -> DhtConfig {
        DhtConfig {
            key,
            listen: Vec::new(),
            bootstrap: Vec::new(),
            query_timeout: Duration::from_secs(10),
            refresh: Duration::from_secs(10 * 60),
            filter_inbound: true,
            jobs: None,
            verified: record::Verified::default(),
            connected: Connected::default(),
            #[cfg(test)]
            verify_permits: None,
        }
    }
}

/// What a lookup found: the verified records (newest per node, highest version first) and
/// every entry that did not verify, from every value any peer returned.
#[derive(Debug, Clone, Default)]
pub struct Lookup {
    pub found: Vec<ProviderRecord>,
    pub rejected: Vec<Rejected>,
    /// Peers the query sent a request to.
    pub peers_queried: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum DhtError {
    #[error("the node key is not an ed25519 key")]
    KeyType,
    #[error("key file {path}: {reason}")]
    KeyFile { path: PathBuf, reason: String },
    #[error("transport: {0}")]
    Transport(String),
    #[error("listen on {addr}: {reason}")]
    Listen { addr: Multiaddr, reason: String },
    #[error("no listen address within {0:?}")]
    ListenTimeout(Duration),
    #[error("bootstrap address {0} does not end with /p2p/<peer id>")]
    BootstrapAddr(Multiaddr),
    #[error("no known peers to bootstrap from")]
    NoKnownPeers,
    #[error("bootstrap reached no peer")]
    Unreachable,
    #[error("record not announced: {0}")]
    Record(&'static str),
    #[error("{what} failed: {reason}")]
    Query { what: &'static str, reason: String },
    #[error("{what} gave no answer within {after:?}")]
    Timeout { what: &'static str, after: Duration },
    #[error("the DHT node has stopped")]
    Stopped,
}

impl DhtError {
    /// Stable snake_case reason for events.
    pub fn reason(&self) -> &'static str {
        match self {
            DhtError::KeyType => "key_type",
            DhtError::KeyFile { .. } => "key_file",
            DhtError::Transport(_) => "transport",
            DhtError::Listen { .. } => "listen_failed",
            DhtError::ListenTimeout(_) => "listen_timeout",
            DhtError::BootstrapAddr(_) => "bad_bootstrap_addr",
            DhtError::NoKnownPeers => "no_known_peers",
            DhtError::Unreachable => "bootstrap_unreachable",
            DhtError::Record(_) => "bad_record",
            DhtError::Query { .. } => "query_failed",
            DhtError::Timeout { .. } => "timeout",
            DhtError::Stopped => "stopped",
        }
    }
}

enum Command {
    Bootstrap(oneshot::Sender<Result<usize, DhtError>>),
    Announce(SignedRecord, oneshot::Sender<Result<(), DhtError>>),
    StopAnnouncing(oneshot::Sender<()>),
    /// Answer once every job request received so far has had its answer sent (or failed).
    #[cfg_attr(not(feature = "executor"), allow(dead_code))] // used by stage 2's job node
    Drain(oneshot::Sender<()>),
    #[cfg(test)]
    PutRaw(Vec<u8>, Vec<u8>, oneshot::Sender<Result<(), DhtError>>),
    #[cfg(test)]
    LocalValue(Vec<u8>, oneshot::Sender<Option<Vec<u8>>>),
    /// Answer once every queued inbound put has been checked and merged.
    #[cfg(test)]
    Settled(oneshot::Sender<InboundStats>),
    Lookup {
        channel: String,
        arch: String,
        now: u64,
        reply: oneshot::Sender<Lookup>,
    },
    #[cfg_attr(not(feature = "executor"), allow(dead_code))]
    Submit {
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        request: Box<JobRequest>,
        reply: oneshot::Sender<Result<JobResponse, SubmitError>>,
    },
    /// Store one of this node's own values (a capability record) here and at the closest
    /// peers; the reply (if any) comes when the put finished.
    PutOwn {
        key: Vec<u8>,
        value: Vec<u8>,
        reply: Option<oneshot::Sender<Result<(), DhtError>>>,
    },
    Provide(Vec<u8>, oneshot::Sender<Result<(), DhtError>>),
    StopProviding(Vec<u8>),
    /// A peer seen on the LAN (`p2p::mdns`): into the routing table.
    #[cfg_attr(not(feature = "executor"), allow(dead_code))]
    AddPeer(PeerId, Multiaddr),
    Providers {
        key: Vec<u8>,
        reply: oneshot::Sender<Vec<PeerId>>,
    },
    Values {
        key: Vec<u8>,
        reply: oneshot::Sender<Vec<Vec<u8>>>,
    },
    Shutdown,
}

/// A shared list's lock; a panic elsewhere while it was held leaves the list usable (it
/// only ever holds whole values), so a poisoned lock is taken as it is.
fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A handle on a running node.
pub struct Dht {
    cmd: mpsc::Sender<Command>,
    peer_id: PeerId,
    listen: Arc<Mutex<Vec<Multiaddr>>>,
    query_timeout: Duration,
    task: tokio::task::JoinHandle<()>,
    /// This node's capability record while it is published (withdrawn at shutdown).
    offer: Mutex<Option<crate::p2p::capability::Publishing>>,
    /// This node's mDNS announcement and browser (goodbye at shutdown).
    lan: Mutex<Option<crate::p2p::mdns::Presence>>,
    new_peer: Arc<tokio::sync::Notify>,
    #[cfg_attr(not(feature = "executor"), allow(dead_code))] // used by stage 2's job node
    ended: watch::Receiver<()>,
    /// Dropped with the handle: the node stops even while [`Port`] clones remain.
    _handle: oneshot::Sender<()>,
}

/// A cloneable sender of this node's own values (the capability publisher's task).
#[derive(Clone)]
pub struct Port {
    cmd: mpsc::Sender<Command>,
    query_timeout: Duration,
    /// Woken when a new peer enters the routing table.
    new_peer: Arc<tokio::sync::Notify>,
}

/// A handle on a running node that does not keep it running: once the node's [`Dht`] is
/// dropped or shut down, every call answers [`DhtError::Stopped`].
#[cfg_attr(not(feature = "executor"), allow(dead_code))] // used by stage 2's job node
#[derive(Clone)]
pub struct DhtRef {
    cmd: mpsc::WeakSender<Command>,
    query_timeout: Duration,
}

/// Resolves once a node's task has ended: its swarm, listeners and connections are gone.
#[cfg_attr(not(feature = "executor"), allow(dead_code))] // used by stage 2's job node
pub struct Ended(watch::Receiver<()>);

#[cfg_attr(not(feature = "executor"), allow(dead_code))] // used by stage 2's job node
impl Ended {
    pub async fn wait(mut self) {
        // Nothing is ever sent: `changed` fails when the node drops the sender as it ends.
        while self.0.changed().await.is_ok() {}
    }
}

/// Send one command to the node task and wait for its answer, bounded by the query
/// timeout plus a grace.
async fn ask<T>(
    cmd: &mpsc::Sender<Command>,
    query_timeout: Duration,
    what: &'static str,
    make: impl FnOnce(oneshot::Sender<T>) -> Command,
) -> Result<T, DhtError> {
    let after = query_timeout + GRACE;
    let (tx, rx) = oneshot::channel();
    let asked = async {
        cmd.send(make(tx)).await.map_err(|_| DhtError::Stopped)?;
        rx.await.map_err(|_| DhtError::Stopped)
    };
    tokio::time::timeout(after, asked)
        .await
        .map_err(|_| DhtError::Timeout { what, after })?
}

impl Port {
    async fn ask<T>(
        &self,
        what: &'static str,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, DhtError> {
        ask(&self.cmd, self.query_timeout, what, make).await
    }

    /// Put one of this node's own values under `key` (stored here, then at the closest
    /// peers, which filter it); `Ok` once at least one peer stored it.
    pub async fn put_own(&self, key: Vec<u8>, value: Vec<u8>) -> Result<(), DhtError> {
        self.ask("put", |tx| Command::PutOwn {
            key,
            value,
            reply: Some(tx),
        })
        .await?
    }

    /// Announce this node as a provider of `key` (republished by Kademlia until
    /// [`Port::stop_providing`]).
    pub async fn provide(&self, key: Vec<u8>) -> Result<(), DhtError> {
        self.ask("provide", |tx| Command::Provide(key, tx)).await?
    }

    /// Resolves when the next new peer enters the routing table (a lone node's publisher
    /// tries again then).
    pub async fn new_peer(&self) {
        self.new_peer.notified().await
    }

    /// Add a peer seen on the LAN to the routing table (from a thread outside the runtime;
    /// `false` once the host stopped).
    #[cfg_attr(not(feature = "executor"), allow(dead_code))]
    pub fn add_peer_blocking(&self, peer: PeerId, addr: Multiaddr) -> bool {
        self.cmd.blocking_send(Command::AddPeer(peer, addr)).is_ok()
    }

    /// Stop announcing (peers forget the provider record when it expires).
    pub async fn stop_providing(&self, key: Vec<u8>) {
        let _ = tokio::time::timeout(GRACE, self.cmd.send(Command::StopProviding(key))).await;
    }
}

#[cfg_attr(not(feature = "executor"), allow(dead_code))] // used by stage 2's job node
impl DhtRef {
    async fn ask<T>(
        &self,
        what: &'static str,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, DhtError> {
        let cmd = self.cmd.upgrade().ok_or(DhtError::Stopped)?;
        ask(&cmd, self.query_timeout, what, make).await
    }

    /// [`Dht::bootstrap`] on the node this handle came from.
    pub async fn bootstrap(&self) -> Result<usize, DhtError> {
        self.ask("bootstrap", Command::Bootstrap).await?
    }

    /// [`Dht::announce`] on the node this handle came from.
    pub async fn announce(&self, signed: SignedRecord) -> Result<(), DhtError> {
        self.ask("announce", |tx| Command::Announce(signed, tx))
            .await?
    }

    /// Wait until every job request the node has received was answered (or failed) and every
    /// requester has closed its connection (so it has its answer): at shutdown, so that a
    /// job's answer is not cut off. Bound it: a requester may stay connected.
    pub async fn drain(&self) -> Result<(), DhtError> {
        self.ask("drain", Command::Drain).await
    }

    /// Stop republishing, without waiting (usable from `Drop`): the request is queued if
    /// the node still runs and has room for it.
    pub fn stop_announcing_now(&self) {
        if let Some(cmd) = self.cmd.upgrade() {
            let (tx, _) = oneshot::channel();
            let _ = cmd.try_send(Command::StopAnnouncing(tx));
        }
    }
}

/// Build the swarm, start listening, and run the node as a tokio task.
pub async fn start(cfg: DhtConfig) -> Result<Dht, DhtError> {
    let signing = signing_key(&cfg.key).ok_or(DhtError::KeyType)?;
    let bootstrap = cfg
        .bootstrap
        .iter()
        .map(|a| split_peer(a).ok_or_else(|| DhtError::BootstrapAddr(a.clone())))
        .collect::<Result<Vec<_>, _>>()?;
    let mut swarm = crate::p2p::build_swarm(
        &cfg.key,
        &crate::p2p::SwarmOptions {
            kad_protocol: StreamProtocol::new(PROTOCOL),
            server: !cfg.listen.is_empty(),
            filter_inbound: cfg.filter_inbound,
            query_timeout: cfg.query_timeout,
            max_packet: MAX_PACKET,
            max_value_bytes: record::MAX_VALUE_BYTES + 1,
            max_records: MAX_KEYS + crate::p2p::capability::MAX_HELD,
            serve_jobs: cfg.jobs.is_some(),
        },
    )
    .map_err(DhtError::Transport)?;

    let mut waiting = HashSet::new();
    for addr in &cfg.listen {
        let id = swarm
            .listen_on(addr.clone())
            .map_err(|e| DhtError::Listen {
                addr: addr.clone(),
                reason: e.to_string(),
            })?;
        waiting.insert(id);
    }
    let peer_id = *swarm.local_peer_id();
    let listen = Arc::new(Mutex::new(Vec::new()));
    let new_peer = Arc::new(tokio::sync::Notify::new());
    let (answered_tx, answered_rx) = mpsc::unbounded_channel();
    let (verify_tx, verify_rx) = mpsc::channel(VERIFY_QUEUE);
    let (checked_tx, checked_rx) = mpsc::channel(1);
    #[cfg(test)]
    let permits = cfg.verify_permits.clone();
    #[cfg(not(test))]
    let permits = None;
    tokio::spawn(verifier(verify_rx, checked_tx, permits));
    let (alive, ended) = watch::channel(());
    let mut node = Node {
        swarm,
        protocol: StreamProtocol::new(PROTOCOL),
        pending: HashMap::new(),
        jobs: cfg.jobs.clone(),
        answered: answered_tx,
        submits: HashMap::new(),
        announcing: BTreeMap::new(),
        signing,
        filter_inbound: cfg.filter_inbound,
        verified: cfg.verified.clone(),
        verify: verify_tx,
        inbound: InboundStats::default(),
        settled: Vec::new(),
        bootstrap,
        listen: listen.clone(),
        connected: cfg.connected.clone(),
        new_peer: new_peer.clone(),
        answering: HashSet::new(),
        requesters: HashSet::new(),
        drained: Vec::new(),
        _alive: alive,
    };
    let deadline = tokio::time::Instant::now() + LISTEN_TIMEOUT;
    while !waiting.is_empty() {
        let ev = tokio::time::timeout_at(deadline, node.swarm.select_next_some())
            .await
            .map_err(|_| DhtError::ListenTimeout(LISTEN_TIMEOUT))?;
        match ev {
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                waiting.remove(&listener_id);
                node.listened(address);
            }
            SwarmEvent::ListenerClosed {
                addresses, reason, ..
            } => {
                return Err(DhtError::Listen {
                    addr: addresses.first().cloned().unwrap_or_else(Multiaddr::empty),
                    reason: match reason {
                        Ok(()) => "listener closed".into(),
                        Err(e) => e.to_string(),
                    },
                })
            }
            ev => node.event(ev),
        }
    }
    // An unspecified address (0.0.0.0) is one listener per interface address: libp2p reports
    // them one by one as it learns the interfaces; let that burst arrive (briefly).
    if cfg.listen.iter().any(is_unspecified) {
        let settle = tokio::time::Instant::now() + INTERFACES_SETTLE;
        while let Ok(ev) = tokio::time::timeout_at(settle, node.swarm.select_next_some()).await {
            node.event(ev);
        }
    }
    let (tx, rx) = mpsc::channel(16);
    let (handle, handle_gone) = oneshot::channel();
    let task = tokio::spawn(node.run(rx, answered_rx, checked_rx, handle_gone, cfg.refresh));
    Ok(Dht {
        cmd: tx,
        peer_id,
        listen,
        query_timeout: cfg.query_timeout,
        task,
        offer: Mutex::new(None),
        lan: Mutex::new(None),
        new_peer,
        ended,
        _handle: handle,
    })
}

impl Dht {
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The addresses this node listens on (as the transport reported them).
    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        locked(&self.listen).clone()
    }

    async fn ask<T>(
        &self,
        what: &'static str,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, DhtError> {
        self.port().ask(what, make).await
    }

    /// A handle on this node that does not keep it running.
    #[cfg_attr(not(feature = "executor"), allow(dead_code))] // used by stage 2's job node
    pub fn weak(&self) -> DhtRef {
        DhtRef {
            cmd: self.cmd.downgrade(),
            query_timeout: self.query_timeout,
        }
    }

    /// Resolves once this node's task has ended (after a drop of the handle, a shutdown,
    /// or a failure of the task).
    #[cfg_attr(not(feature = "executor"), allow(dead_code))] // used by stage 2's job node
    pub fn ended(&self) -> Ended {
        Ended(self.ended.clone())
    }

    /// Join the network through the bootstrap peers: returns how many peers are in the
    /// routing table once the first lookup (of this node's own ID) finished.
    pub async fn bootstrap(&self) -> Result<usize, DhtError> {
        self.ask("bootstrap", Command::Bootstrap).await?
    }

    /// Publish this record (merged into the set under its key) and keep publishing it, signed
    /// afresh with the same lifetime, every `refresh`, until [`Dht::stop_announcing`] or
    /// shutdown. `Err` if the record is not valid, or if no peer stored it this time (it is
    /// still republished: peers may come later).
    pub async fn announce(&self, signed: SignedRecord) -> Result<(), DhtError> {
        self.ask("announce", |tx| Command::Announce(signed, tx))
            .await?
    }

    /// Stop republishing (what was published stays in the DHT until it expires).
    pub async fn stop_announcing(&self) {
        let _ = self.ask("stop announcing", Command::StopAnnouncing).await;
    }

    /// Store `value` under `key` here and at the closest peers, with no check at all (tests:
    /// honest peers still filter it; a node with `filter_inbound = false` keeps it as is).
    #[cfg(test)]
    pub async fn put_raw(&self, key: Vec<u8>, value: Vec<u8>) -> Result<(), DhtError> {
        self.ask("put", |tx| Command::PutRaw(key, value, tx))
            .await?
    }

    /// Wait until every inbound put received so far has been checked and merged; what
    /// became of the inbound puts until then (tests).
    #[cfg(test)]
    pub async fn settled(&self) -> Result<InboundStats, DhtError> {
        self.ask("settle", Command::Settled).await
    }

    /// What this node itself stores under `key` (tests).
    #[cfg(test)]
    pub async fn local_value(&self, key: Vec<u8>) -> Option<Vec<u8>> {
        self.ask("local value", |tx| Command::LocalValue(key, tx))
            .await
            .ok()
            .flatten()
    }

    #[cfg_attr(not(feature = "executor"), allow(dead_code))]
    /// Send one job request to `peer` (dialled at `addrs` if not connected; an open
    /// connection is reused) and wait for its answer, at most `timeout`.
    pub async fn submit(
        &self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        request: JobRequest,
        timeout: Duration,
    ) -> Result<JobResponse, SubmitError> {
        let (tx, rx) = oneshot::channel();
        let asked = async {
            self.cmd
                .send(Command::Submit {
                    peer,
                    addrs,
                    request: Box::new(request),
                    reply: tx,
                })
                .await
                .map_err(|_| SubmitError::Stopped)?;
            rx.await.map_err(|_| SubmitError::Stopped)?
        };
        tokio::time::timeout(timeout, asked)
            .await
            .map_err(|_| SubmitError::Timeout(timeout))?
    }

    /// Every provider of `channel`/`arch` the DHT knows, verified at `now` (unix seconds).
    pub async fn lookup(&self, channel: &str, arch: &str, now: u64) -> Result<Lookup, DhtError> {
        self.ask("lookup", |reply| Command::Lookup {
            channel: channel.into(),
            arch: arch.into(),
            now,
            reply,
        })
        .await
    }

    /// A sender of this node's own values, for a task of its own.
    pub fn port(&self) -> Port {
        Port {
            cmd: self.cmd.clone(),
            query_timeout: self.query_timeout,
            new_peer: self.new_peer.clone(),
        }
    }

    #[cfg_attr(not(feature = "executor"), allow(dead_code))]
    /// Keep this node's capability record published (see `p2p::capability::publish`)
    /// until shutdown, which withdraws it. A second offer replaces the first.
    pub fn offer(&self, publishing: crate::p2p::capability::Publishing) {
        let old = locked(&self.offer).replace(publishing);
        if let Some(old) = old {
            old.abort();
        }
    }

    #[cfg_attr(not(feature = "executor"), allow(dead_code))]
    /// Keep this node announced on the LAN until shutdown.
    pub fn join_lan(&self, presence: crate::p2p::mdns::Presence) {
        let old = locked(&self.lan).replace(presence);
        if let Some(old) = old {
            old.stop();
        }
    }

    /// The peers that announced themselves as providers of `key` (bounded by the query
    /// timeout; an empty list when none was found).
    pub async fn providers(&self, key: Vec<u8>) -> Result<Vec<PeerId>, DhtError> {
        self.ask("providers", |reply| Command::Providers { key, reply })
            .await
    }

    /// Every value peers hold under `key`, unverified (the caller verifies each).
    pub async fn values(&self, key: Vec<u8>) -> Result<Vec<Vec<u8>>, DhtError> {
        self.ask("get", |reply| Command::Values { key, reply })
            .await
    }

    /// Withdraw the capability record (if offered), stop announcing, close the swarm
    /// (bounded).
    pub async fn shutdown(self) {
        let offer = locked(&self.offer).take();
        if let Some(offer) = offer {
            offer.withdraw().await;
        }
        let lan = locked(&self.lan).take();
        if let Some(lan) = lan {
            // Goodbye packets wait for the responder (bounded): off the async thread.
            let _ = tokio::task::spawn_blocking(move || lan.stop()).await;
        }
        self.stop_announcing().await;
        let _ = tokio::time::timeout(GRACE, self.cmd.send(Command::Shutdown)).await;
        let Dht { cmd, mut task, .. } = self;
        drop(cmd);
        if tokio::time::timeout(GRACE, &mut task).await.is_err() {
            task.abort();
        }
    }
}

enum Pending {
    Bootstrap(oneshot::Sender<Result<usize, DhtError>>),
    Put(Option<oneshot::Sender<Result<(), DhtError>>>),
    Get {
        channel: String,
        arch: String,
        now: u64,
        values: Vec<Vec<u8>>,
        reply: oneshot::Sender<Lookup>,
    },
    Providers {
        found: HashSet<PeerId>,
        reply: oneshot::Sender<Vec<PeerId>>,
    },
    Values {
        values: Vec<Vec<u8>>,
        reply: oneshot::Sender<Vec<Vec<u8>>>,
    },
}

struct Node {
    swarm: Swarm<Behaviour>,
    protocol: StreamProtocol,
    pending: HashMap<kad::QueryId, Pending>,
    /// This node's own records, by record key.
    announcing: BTreeMap<Vec<u8>, SignedRecord>,
    signing: ed25519_dalek::SigningKey,
    filter_inbound: bool,
    verified: record::Verified,
    /// Inbound puts to the verifier (bounded: [`VERIFY_QUEUE`]).
    verify: mpsc::Sender<Inbound>,
    inbound: InboundStats,
    /// [`Command::Settled`] callers waiting for the queue to empty.
    settled: Vec<oneshot::Sender<InboundStats>>,
    bootstrap: Vec<(PeerId, Multiaddr)>,
    listen: Arc<Mutex<Vec<Multiaddr>>>,
    connected: Connected,
    /// Answers inbound job requests (none: inbound jobs are not accepted).
    jobs: Option<Arc<dyn JobHandler>>,
    /// Where a job's task sends its answer back to the swarm.
    answered: mpsc::UnboundedSender<(ResponseChannel<JobResponse>, JobResponse)>,
    /// Job requests this node sent, waiting for their answers.
    submits: HashMap<OutboundRequestId, oneshot::Sender<Result<JobResponse, SubmitError>>>,
    new_peer: Arc<tokio::sync::Notify>,
    /// Job requests handed to the handler whose answers are not on the wire yet.
    answering: HashSet<request_response::InboundRequestId>,
    /// Peers sent job requests, while they stay connected.
    requesters: HashSet<PeerId>,
    /// Waiting for `answering` and `requesters` to empty.
    drained: Vec<oneshot::Sender<()>>,
    /// What [`Ended`] waits for. Fields drop in order: this one last, after the swarm.
    _alive: watch::Sender<()>,
}

type Answered = (ResponseChannel<JobResponse>, JobResponse);

/// An inbound put on its way to the verifier.
struct Inbound {
    source: PeerId,
    record: kad::Record,
    now: u64,
}

/// A put and its signature checks, done off the swarm's task.
type CheckedPut = (
    PeerId,
    kad::Record,
    Result<record::Checked, record::RecordError>,
);

/// Check queued puts one at a time on the blocking pool and hand the results back to the
/// swarm. Ends when the swarm's task drops its end of either channel.
async fn verifier(
    mut rx: mpsc::Receiver<Inbound>,
    tx: mpsc::Sender<CheckedPut>,
    permits: Option<Arc<tokio::sync::Semaphore>>,
) {
    loop {
        if let Some(p) = &permits {
            match p.acquire().await {
                Ok(permit) => permit.forget(),
                Err(_) => return,
            }
        }
        let Some(put) = rx.recv().await else { return };
        let Inbound {
            source,
            record: r,
            now,
        } = put;
        let done = tokio::task::spawn_blocking(move || {
            let c = record::check_put(&r.value, r.key.as_ref(), now);
            (r, c)
        })
        .await;
        // A check that panicked is a refused put; the verifier goes on.
        let Ok((r, c)) = done else { continue };
        if tx.send((source, r, c)).await.is_err() {
            return;
        }
    }
}

impl Node {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Command>,
        mut answered: mpsc::UnboundedReceiver<Answered>,
        mut checked: mpsc::Receiver<CheckedPut>,
        mut handle_gone: oneshot::Receiver<()>,
        refresh: Duration,
    ) {
        let now = tokio::time::Instant::now();
        let mut republish = tokio::time::interval_at(now + refresh, refresh);
        republish.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut prune = tokio::time::interval_at(now + PRUNE_INTERVAL, PRUNE_INTERVAL);
        prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut handle_gone => break,
                cmd = rx.recv() => match cmd {
                    None | Some(Command::Shutdown) => break,
                    Some(c) => self.command(c),
                },
                ev = self.swarm.select_next_some() => self.event(ev),
                Some((channel, response)) = answered.recv() => {
                    if self.swarm.behaviour_mut().job.send_response(channel, response).is_err() {
                        tracing::debug!("job: the requester left before the answer");
                    }
                }
                Some((source, r, c)) = checked.recv() => self.checked_put(source, r, c),
                _ = republish.tick() => self.republish(),
                _ = prune.tick() => self.prune(),
            }
        }
        locked(&self.connected).clear();
        tracing::debug!("dht: node stopped");
    }

    fn listened(&mut self, addr: Multiaddr) {
        tracing::info!("dht: listening on {addr}");
        locked(&self.listen).push(addr);
    }

    fn kad(&mut self) -> &mut kad::Behaviour<MemoryStore> {
        &mut self.swarm.behaviour_mut().kad
    }

    fn routing_table_size(&mut self) -> usize {
        self.kad().kbuckets().map(|b| b.num_entries()).sum()
    }

    fn command(&mut self, c: Command) {
        match c {
            Command::Bootstrap(reply) => {
                for (peer, addr) in self.bootstrap.clone() {
                    self.kad().add_address(&peer, addr);
                }
                match self.kad().bootstrap() {
                    Ok(id) => {
                        self.pending.insert(id, Pending::Bootstrap(reply));
                    }
                    Err(_) => {
                        let _ = reply.send(Err(DhtError::NoKnownPeers));
                    }
                }
            }
            Command::Announce(signed, reply) => {
                let (channel, arch) = (&signed.signed.channel, &signed.signed.arch);
                if let Err(reason) = signed.check(channel, arch, now_unix()) {
                    let _ = reply.send(Err(DhtError::Record(reason)));
                    return;
                }
                let own = phase_release::hex::encode(&self.signing.verifying_key().to_bytes());
                if signed.signed.node != own {
                    let _ = reply.send(Err(DhtError::Record("not signed by this node's key")));
                    return;
                }
                let key = record::record_key(channel, arch);
                self.announcing.insert(key, signed.clone());
                self.publish(&signed, Some(reply));
            }
            Command::Submit {
                peer,
                addrs,
                request,
                reply,
            } => {
                let id = self
                    .swarm
                    .behaviour_mut()
                    .job
                    .send_request_with_addresses(&peer, *request, addrs);
                self.submits.insert(id, reply);
            }
            Command::StopAnnouncing(reply) => {
                self.announcing.clear();
                let _ = reply.send(());
            }
            Command::Drain(reply) => {
                self.drained.push(reply);
                self.answered_one(None);
            }
            #[cfg(test)]
            Command::PutRaw(key, value, reply) => {
                let r = kad::Record::new(kad::RecordKey::new(&key), value);
                match self.kad().put_record(r, kad::Quorum::One) {
                    Ok(id) => {
                        self.pending.insert(id, Pending::Put(Some(reply)));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(DhtError::Query {
                            what: "put",
                            reason: format!("{e:?}"),
                        }));
                    }
                }
            }
            #[cfg(test)]
            Command::LocalValue(key, reply) => {
                let v = self
                    .kad()
                    .store_mut()
                    .get(&kad::RecordKey::new(&key))
                    .map(|r| r.value.clone());
                let _ = reply.send(v);
            }
            Command::Lookup {
                channel,
                arch,
                now,
                reply,
            } => {
                let key = kad::RecordKey::new(&record::record_key(&channel, &arch));
                let id = self.kad().get_record(key);
                self.pending.insert(
                    id,
                    Pending::Get {
                        channel,
                        arch,
                        now,
                        values: Vec::new(),
                        reply,
                    },
                );
            }
            Command::PutOwn { key, value, reply } => {
                let r = kad::Record::new(kad::RecordKey::new(&key), value);
                match self.kad().put_record(r, kad::Quorum::One) {
                    Ok(id) => {
                        self.pending.insert(id, Pending::Put(reply));
                    }
                    Err(e) => {
                        if let Some(reply) = reply {
                            let _ = reply.send(Err(DhtError::Query {
                                what: "put",
                                reason: format!("local store: {e:?}"),
                            }));
                        }
                    }
                }
            }
            Command::Provide(key, reply) => {
                match self.kad().start_providing(kad::RecordKey::new(&key)) {
                    Ok(id) => {
                        self.pending.insert(id, Pending::Put(Some(reply)));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(DhtError::Query {
                            what: "provide",
                            reason: format!("local store: {e:?}"),
                        }));
                    }
                }
            }
            Command::StopProviding(key) => self.kad().stop_providing(&kad::RecordKey::new(&key)),
            Command::AddPeer(peer, addr) => {
                tracing::debug!("dht: {peer} seen on the LAN at {addr}");
                self.kad().add_address(&peer, addr);
            }
            Command::Providers { key, reply } => {
                let id = self.kad().get_providers(kad::RecordKey::new(&key));
                let found = HashSet::new();
                self.pending.insert(id, Pending::Providers { found, reply });
            }
            Command::Values { key, reply } => {
                let id = self.kad().get_record(kad::RecordKey::new(&key));
                let values = Vec::new();
                self.pending.insert(id, Pending::Values { values, reply });
            }
            #[cfg(test)]
            Command::Settled(reply) => {
                self.settled.push(reply);
                self.answer_settled();
            }
            Command::Shutdown => {}
        }
    }

    /// Answer the [`Command::Settled`] callers if no inbound put is waiting.
    fn answer_settled(&mut self) {
        let i = self.inbound;
        if i.queued == i.checked {
            for reply in self.settled.drain(..) {
                let _ = reply.send(i);
            }
        }
    }

    /// Merge one of our records into what we hold under its key and put the set.
    fn publish(
        &mut self,
        signed: &SignedRecord,
        reply: Option<oneshot::Sender<Result<(), DhtError>>>,
    ) {
        let raw_key = record::record_key(&signed.signed.channel, &signed.signed.arch);
        let key = kad::RecordKey::new(&raw_key);
        let existing = self.kad().store_mut().get(&key).map(|r| r.value.clone());
        let merged = record::merge(
            existing.as_deref(),
            &record::encode(std::slice::from_ref(signed)),
            &raw_key,
            now_unix(),
            &self.verified,
        );
        let fail = |reply: Option<oneshot::Sender<_>>, e: DhtError| {
            tracing::warn!("dht: announce: {e}");
            if let Some(r) = reply {
                let _ = r.send(Err(e));
            }
        };
        match merged {
            Ok(value) => match self
                .kad()
                .put_record(kad::Record::new(key, value), kad::Quorum::One)
            {
                Ok(id) => {
                    self.pending.insert(id, Pending::Put(reply));
                }
                Err(e) => fail(
                    reply,
                    DhtError::Query {
                        what: "put",
                        reason: format!("local store: {e:?}"),
                    },
                ),
            },
            Err(e) => fail(reply, DhtError::Record(e.reason())),
        }
    }

    /// Sign our records afresh (same lifetime) and publish them again.
    fn republish(&mut self) {
        let now = now_unix();
        let key = &self.signing;
        let records: Vec<SignedRecord> = self
            .announcing
            .values_mut()
            .map(|s| {
                let r = &s.signed;
                let ttl = r.expires.saturating_sub(r.issued);
                *s = ProviderRecord {
                    issued: now,
                    expires: now.saturating_add(ttl),
                    ..r.clone()
                }
                .sign(key);
                s.clone()
            })
            .collect();
        for s in records {
            tracing::debug!("dht: republishing {} {}", s.signed.channel, s.signed.arch);
            self.publish(&s, None);
        }
    }

    /// Drop what expired from the sets we hold (a filtering node only).
    fn prune(&mut self) {
        if !self.filter_inbound {
            return;
        }
        let now = now_unix();
        let store = self.kad().store_mut();
        let held: Vec<kad::Record> = store.records().map(|r| r.into_owned()).collect();
        for mut r in held {
            if capability::is_record_key(r.key.as_ref()) {
                if capability::verify(r.key.as_ref(), &r.value, now).is_err() {
                    store.remove(&r.key);
                }
                continue;
            }
            match record::prune(&r.value, r.key.as_ref(), now) {
                Ok(v) if v == r.value => {}
                Ok(v) => {
                    r.value = v;
                    let _ = store.put(r);
                }
                Err(_) => store.remove(&r.key),
            }
        }
    }

    fn event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::NewListenAddr { address, .. } => self.listened(address),
            SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                let id = peer_id.to_string();
                let mut c = locked(&self.connected);
                if !c.contains(&id) {
                    c.push(id);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                let id = peer_id.to_string();
                locked(&self.connected).retain(|p| *p != id);
                self.requesters.remove(&peer_id);
                self.answered_one(None)
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                locked(&self.listen).retain(|a| *a != address)
            }
            // Learn a peer's listen addresses (an inbound connection does not tell us where
            // to dial it), but only if it speaks our Kademlia as a server.
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) if info.protocols.contains(&self.protocol) => {
                for addr in info.listen_addrs {
                    if !is_unspecified(&addr) {
                        self.kad().add_address(&peer_id, addr);
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(ev)) => self.kad_event(ev),
            SwarmEvent::Behaviour(BehaviourEvent::Job(ev)) => self.job_event(ev),
            _ => {}
        }
    }

    fn job_event(&mut self, ev: request_response::Event<JobRequest, JobResponse>) {
        use request_response::{Event, Message};
        match ev {
            Event::Message {
                peer,
                message:
                    Message::Request {
                        request,
                        channel,
                        request_id,
                    },
                ..
            } => match &self.jobs {
                Some(h) => {
                    self.answering.insert(request_id);
                    self.requesters.insert(peer);
                    let answer = h.handle(peer, request);
                    let tx = self.answered.clone();
                    tokio::spawn(async move {
                        let _ = tx.send((channel, answer.await));
                    });
                }
                // Inbound support is off without a handler; nothing to answer with.
                None => drop(channel),
            },
            Event::Message {
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some(reply) = self.submits.remove(&request_id) {
                    let _ = reply.send(Ok(response));
                }
            }
            Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let Some(reply) = self.submits.remove(&request_id) {
                    let _ = reply.send(Err(SubmitError::from_outbound(&error, &peer)));
                }
            }
            Event::InboundFailure {
                peer,
                error,
                request_id,
                ..
            } => {
                tracing::debug!("job: inbound from {peer} failed: {error}");
                self.answered_one(Some(request_id));
            }
            Event::ResponseSent { request_id, .. } => self.answered_one(Some(request_id)),
        }
    }

    /// A job's answer went out (or failed); wake drain waiters once none is left.
    /// A job's answer went out (or failed), or a requester left. Drain waiters are woken once
    /// no answer is pending and every requester that was answered has closed its connection:
    /// an answer handed to a stream (`ResponseSent`) may still sit in the muxer's buffers, and
    /// only the requester's close says it has it (a requester that stays connected holds the
    /// drain up to the caller's bound).
    fn answered_one(&mut self, id: Option<request_response::InboundRequestId>) {
        if let Some(id) = id {
            self.answering.remove(&id);
        }
        if self.answering.is_empty() && self.requesters.is_empty() {
            for w in self.drained.drain(..) {
                let _ = w.send(());
            }
        }
    }

    fn kad_event(&mut self, ev: kad::Event) {
        match ev {
            kad::Event::InboundRequest {
                request:
                    kad::InboundRequest::PutRecord {
                        source,
                        record: Some(r),
                        ..
                    },
            } if capability::is_record_key(r.key.as_ref()) => self.inbound_capability(source, r),
            kad::Event::InboundRequest {
                request:
                    kad::InboundRequest::PutRecord {
                        source,
                        record: Some(r),
                        ..
                    },
            } => self.inbound_put(source, r),
            // Provider records only under offer keys (capability records point the way).
            kad::Event::InboundRequest {
                request: kad::InboundRequest::AddProvider { record: Some(r) },
            } if capability::is_offer_key(r.key.as_ref()) => {
                if let Err(e) = self.kad().store_mut().add_provider(r) {
                    tracing::debug!("dht: provider record not stored: {e:?}");
                }
            }
            kad::Event::OutboundQueryProgressed {
                id,
                result,
                step,
                stats,
            } => self.progressed(id, result, step.last, stats),
            kad::Event::RoutingUpdated {
                is_new_peer: true, ..
            } => self.new_peer.notify_waiters(),
            _ => {}
        }
    }

    /// An inbound capability record: stored if it verifies and is not older than ours.
    fn inbound_capability(&mut self, source: PeerId, r: kad::Record) {
        let now = now_unix();
        let store = self.kad().store_mut();
        let existing = store.get(&r.key).map(|e| e.value.clone());
        let held = store
            .records()
            .filter(|h| capability::is_record_key(h.key.as_ref()) && h.key != r.key)
            .count();
        match capability::admit(existing.as_deref(), &r.value, r.key.as_ref(), now, held) {
            Ok(()) => {
                if let Err(e) = store.put(r) {
                    tracing::debug!("dht: capability from {source} not stored: {e:?}");
                }
            }
            Err(e) => tracing::debug!("dht: capability from {source} refused: {}", e.reason()),
        }
    }

    /// Every inbound put (FilterBoth): queued for its signature checks, or dropped.
    fn inbound_put(&mut self, source: PeerId, r: kad::Record) {
        let put = Inbound {
            source,
            record: r,
            now: now_unix(),
        };
        let dropped = match self.verify.try_send(put) {
            Ok(()) => {
                self.inbound.queued += 1;
                return;
            }
            Err(mpsc::error::TrySendError::Full(_)) => PutDrop::QueueFull,
            Err(mpsc::error::TrySendError::Closed(_)) => PutDrop::VerifierStopped,
        };
        self.inbound.dropped += 1;
        tracing::debug!("dht: put from {source} dropped: {}", dropped.reason());
    }

    /// A put's entries came back checked: store the merge of what we hold and them.
    fn checked_put(
        &mut self,
        source: PeerId,
        mut r: kad::Record,
        checked: Result<record::Checked, record::RecordError>,
    ) {
        self.inbound.checked += 1;
        let now = now_unix();
        let verified = self.verified.clone();
        let result = checked.and_then(|c| {
            let store = self.kad().store_mut();
            let existing = store.get(&r.key).map(|e| e.value.clone());
            let v = record::merge_checked(existing.as_deref(), c, now, &verified)?;
            if existing.as_deref() != Some(v.as_slice()) {
                r.value = v;
                if let Err(e) = store.put(r) {
                    tracing::debug!("dht: put from {source} not stored: {e:?}");
                }
            }
            Ok(())
        });
        if let Err(e) = result {
            tracing::debug!("dht: put from {source} refused: {}", e.reason());
        }
        self.answer_settled();
    }

    fn progressed(
        &mut self,
        id: kad::QueryId,
        result: kad::QueryResult,
        last: bool,
        stats: kad::QueryStats,
    ) {
        let Some(pending) = self.pending.remove(&id) else {
            return;
        };
        match (pending, result) {
            // Answer after the first step (the lookup of our own ID fills the routing table);
            // the refresh of farther buckets goes on in the background.
            (Pending::Bootstrap(reply), kad::QueryResult::Bootstrap(r)) => {
                // Peers we were merely told about stay in the routing table even when they
                // cannot be dialled: success is a peer that answered.
                if let Err(e) = &r {
                    tracing::debug!("dht: bootstrap: {e}");
                }
                let _ = reply.send(if stats.num_successes() > 0 {
                    Ok(self.routing_table_size())
                } else {
                    Err(DhtError::Unreachable)
                });
            }
            (Pending::Put(reply), kad::QueryResult::StartProviding(r)) => {
                let r = r.map(|_| ()).map_err(|e| DhtError::Query {
                    what: "provide",
                    reason: e.to_string(),
                });
                if let Some(reply) = reply {
                    let _ = reply.send(r);
                }
            }
            (Pending::Providers { mut found, reply }, kad::QueryResult::GetProviders(r)) => {
                if let Ok(kad::GetProvidersOk::FoundProviders { providers, .. }) = r {
                    found.extend(providers);
                }
                if last {
                    let _ = reply.send(found.into_iter().collect());
                } else {
                    self.pending.insert(id, Pending::Providers { found, reply });
                }
            }
            (Pending::Values { mut values, reply }, kad::QueryResult::GetRecord(r)) => {
                if let Ok(kad::GetRecordOk::FoundRecord(pr)) = r {
                    if !values.contains(&pr.record.value) {
                        values.push(pr.record.value);
                    }
                }
                if last {
                    let _ = reply.send(values);
                } else {
                    self.pending.insert(id, Pending::Values { values, reply });
                }
            }
            (Pending::Put(reply), kad::QueryResult::PutRecord(r)) => {
                let r = r.map(|_| ()).map_err(|e| DhtError::Query {
                    what: "put",
                    reason: e.to_string(),
                });
                if let Err(e) = &r {
                    tracing::warn!("dht: {e}");
                }
                if let Some(reply) = reply {
                    let _ = reply.send(r);
                }
            }
            (
                Pending::Get {
                    channel,
                    arch,
                    now,
                    mut values,
                    reply,
                },
                kad::QueryResult::GetRecord(r),
            ) => {
                // Each peer's record arrives as its own FoundRecord step; the query ends with
                // FinishedWithNoAdditionalRecord (last), NotFound or Timeout.
                if let Ok(kad::GetRecordOk::FoundRecord(pr)) = r {
                    values.push(pr.record.value);
                }
                if last {
                    let found = verify_all(&values, &channel, &arch, now, &self.verified, &stats);
                    let _ = reply.send(found);
                } else {
                    self.pending.insert(
                        id,
                        Pending::Get {
                            channel,
                            arch,
                            now,
                            values,
                            reply,
                        },
                    );
                }
            }
            (p, _) => {
                if !last {
                    self.pending.insert(id, p);
                }
            }
        }
    }
}

/// Verify every value and union the results: newest per node, highest version first;
/// each rejection once.
fn verify_all(
    values: &[Vec<u8>],
    channel: &str,
    arch: &str,
    now: u64,
    verified: &record::Verified,
    stats: &kad::QueryStats,
) -> Lookup {
    let mut by_node: BTreeMap<String, ProviderRecord> = BTreeMap::new();
    let mut rejected = Vec::new();
    let mut seen_values = HashSet::new();
    for v in values {
        if !seen_values.insert(v.as_slice()) {
            continue;
        }
        let (found, rej) = record::verify(v, channel, arch, now, verified);
        for r in found {
            match by_node.get(&r.node) {
                Some(old) if old.issued >= r.issued => {}
                _ => {
                    by_node.insert(r.node.clone(), r);
                }
            }
        }
        for r in rej {
            if !rejected.contains(&r) {
                rejected.push(r);
            }
        }
    }
    let mut found: Vec<ProviderRecord> = by_node.into_values().collect();
    record::sort_found(&mut found, verified);
    Lookup {
        found,
        rejected,
        peers_queried: stats.num_requests() as usize,
    }
}

fn is_unspecified(a: &Multiaddr) -> bool {
    a.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_unspecified(),
        Protocol::Ip6(ip) => ip.is_unspecified(),
        _ => false,
    })
}

/// `(peer, address without /p2p)` of an address ending in `/p2p/<peer id>`.
pub fn split_peer(addr: &Multiaddr) -> Option<(PeerId, Multiaddr)> {
    let mut a = addr.clone();
    match a.pop()? {
        Protocol::P2p(peer) => Some((peer, a)),
        _ => None,
    }
}

/// Unix seconds now (0 if the clock is before 1970).
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The ed25519 signing key of a libp2p identity (the key provider records are signed with).
pub fn signing_key(kp: &Keypair) -> Option<ed25519_dalek::SigningKey> {
    let ed = kp.clone().try_into_ed25519().ok()?;
    let seed: [u8; 32] = ed.secret().as_ref().try_into().ok()?;
    Some(ed25519_dalek::SigningKey::from_bytes(&seed))
}

fn keypair_from_seed(mut seed: [u8; 32]) -> Option<Keypair> {
    // libp2p zeroes the bytes it is given.
    Keypair::ed25519_from_bytes(&mut seed).ok()
}

/// Load a node key file (`{"keytype":"ed25519","private":"<32-byte seed hex>",...}`, the
/// format of release keys).
pub fn keypair_from_file(path: &Path) -> Result<Keypair, DhtError> {
    use std::io::Read;
    let err = |reason: String| DhtError::KeyFile {
        path: path.to_path_buf(),
        reason,
    };
    let mut text = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_KEY_FILE + 1).read_to_end(&mut text))
        .map_err(|e| err(e.to_string()))?;
    if text.len() as u64 > MAX_KEY_FILE {
        return Err(err(format!("larger than {MAX_KEY_FILE} bytes")));
    }
    let f: phase_release::keys::PrivateKeyFile =
        serde_json::from_slice(&text).map_err(|e| err(format!("not a key file: {e}")))?;
    if f.keytype != phase_release::keys::KEYTYPE {
        return Err(err(format!("keytype {:?}, not ed25519", f.keytype)));
    }
    let seed = phase_release::hex::decode::<32>(&f.private)
        .ok_or_else(|| err("private is not 32 bytes of lowercase hex".into()))?;
    keypair_from_seed(seed).ok_or_else(|| err("not an ed25519 seed".into()))
}

/// This node's provider record: `url` serves `version` of `channel`/`arch`, valid for
/// `ttl_s` from now, signed with the node key and checked as a client would check it.
pub fn provider_record(
    key: &Keypair,
    url: &str,
    channel: &str,
    arch: &str,
    version: u64,
    ttl_s: u64,
) -> Result<SignedRecord, DhtError> {
    let signing = signing_key(key).ok_or(DhtError::KeyType)?;
    let now = now_unix();
    let signed = ProviderRecord {
        node: String::new(),
        url: url.into(),
        channel: channel.into(),
        arch: arch.into(),
        version,
        issued: now,
        expires: now.saturating_add(ttl_s),
    }
    .sign(&signing);
    signed.check(channel, arch, now).map_err(DhtError::Record)?;
    Ok(signed)
}

/// Start a node that publishes `record` (see [`provider_record`]) and keeps it fresh every
/// `cfg.refresh`. The node is returned even when joining or the first put failed (the
/// second value says why): the record stays registered and is published again at each
/// refresh, when peers may be there.
pub async fn publish(
    cfg: DhtConfig,
    record: SignedRecord,
) -> Result<(Dht, Result<(), DhtError>), DhtError> {
    let node = start(cfg).await?;
    let joined = node.bootstrap().await.map(|_| ());
    let announced = node.announce(record).await;
    Ok((node, joined.and(announced)))
}

/// Load the node key, or create it (mode 0600, written to a temp file, synced, renamed)
/// if there is no file yet.
pub fn load_or_create_key(path: &Path) -> Result<Keypair, DhtError> {
    if path.exists() {
        return keypair_from_file(path);
    }
    let err = |what: &str, e: std::io::Error| DhtError::KeyFile {
        path: path.to_path_buf(),
        reason: format!("{what}: {e}"),
    };
    let kp = Keypair::generate_ed25519();
    let seed = signing_key(&kp).ok_or(DhtError::KeyType)?.to_bytes();
    let file =
        phase_release::keys::Keypair::from_seed(&seed).to_file("phase node key (DHT identity)");
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| err("create directory", e))?;
    }
    phase_release::keys::write_private_file(path, &file).map_err(|e| err("write", e))?;
    Ok(kp)
}

/// Parse a bootstrap list (`/etc/phase/bootstrap`): one multiaddr per line, each ending in
/// `/p2p/<peer id>` and dialable over TCP (`/ip4|ip6/…/tcp/…`; there is no DNS); `#` starts
/// a comment; blank lines are ignored. `Err((line number, reason))` names the first bad line.
pub fn parse_bootstrap(text: &str) -> Result<Vec<Multiaddr>, (usize, String)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let addr: Multiaddr = line
            .parse()
            .map_err(|e| (i + 1, format!("not a multiaddr: {e}")))?;
        if split_peer(&addr).is_none() {
            return Err((i + 1, "does not end with /p2p/<peer id>".into()));
        }
        let mut it = addr.iter();
        let ip = matches!(it.next(), Some(Protocol::Ip4(_) | Protocol::Ip6(_)));
        let tcp = matches!(it.next(), Some(Protocol::Tcp(_)));
        if !(ip && tcp) {
            return Err((i + 1, "not an /ip4|ip6/ADDR/tcp/PORT address".into()));
        }
        out.push(addr);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_list() {
        let a = Keypair::generate_ed25519().public().to_peer_id();
        let b = Keypair::generate_ed25519().public().to_peer_id();
        let text = format!(
            "# the test network\n\n/ip4/127.0.0.1/tcp/4001/p2p/{a}\n  /ip6/::1/tcp/4002/p2p/{b}  # second\n"
        );
        let got = parse_bootstrap(&text).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(split_peer(&got[0]).unwrap().0, a);
        assert_eq!(
            split_peer(&got[1]).unwrap(),
            (b, "/ip6/::1/tcp/4002".parse().unwrap())
        );
        assert_eq!(parse_bootstrap("# nothing\n\n").unwrap(), vec![]);
        let bad = [
            ("/ip4/127.0.0.1/tcp/4001\n".to_string(), 1, "/p2p/"),
            (format!("\n\nnot an address/p2p/{a}\n"), 3, "multiaddr"),
            (format!("/dns4/example.org/tcp/1/p2p/{a}\n"), 1, "tcp"),
            (format!("/p2p/{a}\n"), 1, "tcp"),
            (format!("/ip4/10.0.0.1/udp/1/p2p/{a}\n"), 1, "tcp"),
        ];
        for (text, line, what) in bad {
            let (l, reason) = parse_bootstrap(&text).unwrap_err();
            assert_eq!(l, line, "{text}");
            assert!(reason.contains(what), "{text}: {reason}");
        }
    }

    #[test]
    fn key_files_round_trip_and_sign_as_the_identity() {
        let dir = std::env::temp_dir().join(format!("phase-dht-key-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("node.key");
        let kp = load_or_create_key(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let again = load_or_create_key(&path).unwrap();
        assert_eq!(kp.public().to_peer_id(), again.public().to_peer_id());
        assert_eq!(keypair_from_file(&path).unwrap().public(), kp.public());
        // The record key is the identity key.
        let sk = signing_key(&kp).unwrap();
        let ed = kp.public().try_into_ed25519().unwrap();
        assert_eq!(sk.verifying_key().to_bytes(), ed.to_bytes());
        // A release key file is a node key file.
        let f = phase_release::keys::Keypair::from_seed(&[9; 32]).to_file("test");
        std::fs::write(dir.join("r.key"), serde_json::to_vec(&f).unwrap()).unwrap();
        let r = keypair_from_file(&dir.join("r.key")).unwrap();
        assert_eq!(signing_key(&r).unwrap().to_bytes(), [9; 32]);
        std::fs::write(dir.join("bad.key"), b"{}").unwrap();
        assert_eq!(
            keypair_from_file(&dir.join("bad.key"))
                .unwrap_err()
                .reason(),
            "key_file"
        );
        assert!(keypair_from_file(&dir.join("missing.key")).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn localhost() -> Multiaddr {
        "/ip4/127.0.0.1/tcp/0".parse().unwrap()
    }

    fn with_peer(addr: &Multiaddr, peer: PeerId) -> Multiaddr {
        addr.clone().with(Protocol::P2p(peer))
    }

    async fn node(bootstrap: &[Multiaddr], filter_inbound: bool) -> Dht {
        let mut cfg = DhtConfig::new(Keypair::generate_ed25519());
        cfg.listen = vec![localhost()];
        cfg.bootstrap = bootstrap.to_vec();
        cfg.query_timeout = Duration::from_secs(5);
        cfg.filter_inbound = filter_inbound;
        start(cfg).await.unwrap()
    }

    fn record(kp: &Keypair, url: &str, channel: &str, version: u64, issued: u64) -> SignedRecord {
        ProviderRecord {
            node: String::new(),
            url: url.into(),
            channel: channel.into(),
            arch: "x86_64".into(),
            version,
            issued,
            expires: issued + 3600,
        }
        .sign(&signing_key(kp).unwrap())
    }

    /// Poll `connected` until `want` holds (bounded: a failure names what was seen).
    async fn connected_until(c: &Connected, want: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let now: Vec<String> = c.lock().map(|c| c.clone()).unwrap_or_default();
            if want(&now) || tokio::time::Instant::now() > deadline {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The status endpoint's `peers`: a peer is listed while connected, gone once it
    /// stops, and the list is empty once the node itself stops.
    #[tokio::test]
    async fn connected_peers_are_kept_current() {
        let mut cfg = DhtConfig::new(Keypair::generate_ed25519());
        cfg.listen = vec![localhost()];
        cfg.query_timeout = Duration::from_secs(5);
        let seen = cfg.connected.clone();
        let a = start(cfg).await.unwrap();
        let addr = with_peer(&a.listen_addrs()[0], a.peer_id());
        let b = node(&[addr], true).await;
        b.bootstrap().await.unwrap();
        let b_id = b.peer_id().to_string();
        let now = connected_until(&seen, |c| c.contains(&b_id)).await;
        assert_eq!(now, vec![b_id.clone()]);
        drop(b);
        let now = connected_until(&seen, |c| c.is_empty()).await;
        assert!(now.is_empty(), "{now:?} after {b_id} stopped");
        // A node that stops (a restart of the task) lists no one.
        let c = node(&[with_peer(&a.listen_addrs()[0], a.peer_id())], true).await;
        c.bootstrap().await.unwrap();
        let c_id = c.peer_id().to_string();
        assert_eq!(
            connected_until(&seen, |l| l.contains(&c_id)).await,
            vec![c_id]
        );
        let ended = a.ended();
        drop(a);
        ended.wait().await;
        assert!(seen.lock().unwrap().is_empty());
    }

    /// Wait until every node has checked and merged the puts it received.
    async fn settle(nodes: &[Dht]) {
        for n in nodes {
            n.settled().await.unwrap();
        }
    }

    /// A flood of puts while the node's verifier is held: the swarm keeps answering (a
    /// lookup finds what the node holds), at most [`VERIFY_QUEUE`] puts wait and the rest
    /// are dropped, counted; once the verifier runs, what waited is checked and merged, and
    /// the node's own entry keeps its place.
    #[tokio::test]
    async fn a_flood_of_puts_waits_off_the_swarm_which_keeps_answering() {
        let permits = Arc::new(tokio::sync::Semaphore::new(0));
        let mut cfg = DhtConfig::new(Keypair::generate_ed25519());
        let own_key = cfg.key.clone();
        cfg.listen = vec![localhost()];
        cfg.query_timeout = Duration::from_secs(5);
        cfg.verify_permits = Some(permits.clone());
        let honest = start(cfg).await.unwrap();
        let boot = vec![with_peer(&honest.listen_addrs()[0], honest.peer_id())];
        let now = now_unix();
        let own = record(&own_key, "http://10.0.0.1:8080/", "stable", 2, now);
        honest.announce(own.clone()).await.unwrap_or(()); // no peer yet: stored here
        let flooder = node(&boot, false).await;
        assert!(flooder.bootstrap().await.unwrap() >= 1);
        let key = record::record_key("stable", "x86_64");
        let puts = VERIFY_QUEUE + 8;
        for i in 0..puts {
            let value: Vec<SignedRecord> = (0..8)
                .map(|j| {
                    let url = format!("http://10.9.{i}.{j}:8080/");
                    record(&Keypair::generate_ed25519(), &url, "stable", 999, now)
                })
                .collect();
            let raw = serde_json::to_vec(&value).unwrap();
            // Acknowledged once the honest node's swarm took the put (queued or dropped).
            flooder.put_raw(key.clone(), raw).await.unwrap();
        }
        // The verifier has checked nothing, yet the swarm answers a lookup.
        let mut cfg = DhtConfig::new(Keypair::generate_ed25519());
        cfg.bootstrap = boot.clone();
        cfg.query_timeout = Duration::from_secs(5);
        let client = start(cfg).await.unwrap();
        assert!(client.bootstrap().await.unwrap() >= 1);
        let l = client.lookup("stable", "x86_64", now).await.unwrap();
        assert!(l.found.contains(&own.signed), "{l:?}");
        assert_eq!(
            honest.local_value(key.clone()).await,
            Some(record::encode(std::slice::from_ref(&own))),
            "nothing of the flood is stored before its checks"
        );
        permits.add_permits(puts);
        let stats = honest.settled().await.unwrap();
        assert_eq!(
            stats,
            InboundStats {
                queued: VERIFY_QUEUE as u64,
                dropped: (puts - VERIFY_QUEUE) as u64,
                checked: VERIFY_QUEUE as u64,
            }
        );
        let held = honest.local_value(key.clone()).await.unwrap();
        let (found, _) =
            record::verify(&held, "stable", "x86_64", now, &record::Verified::default());
        assert!(found.contains(&own.signed));
        assert!(
            found.len() > 1,
            "the queued puts were merged: {}",
            found.len()
        );
        client.shutdown().await;
        flooder.shutdown().await;
        honest.shutdown().await;
    }

    /// Twelve nodes on loopback bootstrapped off node 0: one announces, a malicious one
    /// serves forged and expired entries, two announce under one key; a client with an
    /// ephemeral key finds exactly the valid records and names every rejected entry.
    #[tokio::test]
    async fn providers_are_found_and_forgeries_named() {
        let t0 = std::time::Instant::now();
        let first = node(&[], true).await;
        let boot = vec![with_peer(&first.listen_addrs()[0], first.peer_id())];
        let mut nodes = vec![first];
        let mut keys = Vec::new();
        for i in 1..12 {
            let mut cfg = DhtConfig::new(Keypair::generate_ed25519());
            keys.push(cfg.key.clone());
            cfg.listen = vec![localhost()];
            cfg.bootstrap = boot.clone();
            cfg.query_timeout = Duration::from_secs(5);
            // Node 11 is malicious: it stores and serves whatever it is given.
            cfg.filter_inbound = i != 11;
            nodes.push(start(cfg).await.unwrap());
        }
        // keys[i - 1] is the key of nodes[i].
        let key_of = |i: usize| keys[i - 1].clone();
        for n in &nodes[1..] {
            assert!(n.bootstrap().await.unwrap() >= 1);
        }
        let now = now_unix();

        // Node 3 announces on stable/x86_64.
        let good = record(&key_of(3), "http://10.0.0.3:8080/", "stable", 7, now);
        nodes[3].announce(good.clone()).await.unwrap();

        // The malicious node injects a forgery (claims node 5, signed by node 11's key) and
        // its own validly signed but expired record, unfiltered, under the same key.
        let mut forged = record(&key_of(11), "http://10.6.6.6:8080/", "stable", 99, now);
        let victim = record(&key_of(5), "http://x/", "stable", 1, now)
            .signed
            .node;
        forged.signed.node = victim.clone();
        let expired = record(
            &key_of(11),
            "http://10.6.6.7:8080/",
            "stable",
            98,
            now - 7200,
        );
        let raw = serde_json::to_vec(&[forged, expired.clone()]).unwrap();
        let key = record::record_key("stable", "x86_64");
        nodes[11].put_raw(key.clone(), raw.clone()).await.unwrap();
        settle(&nodes).await;

        // Honest nodes stored nothing of it.
        assert_eq!(nodes[11].local_value(key.clone()).await, Some(raw));
        let mut holders = 0;
        for n in &nodes[..11] {
            if let Some(v) = n.local_value(key.clone()).await {
                holders += 1;
                let (found, rej) =
                    record::verify(&v, "stable", "x86_64", now, &record::Verified::default());
                assert_eq!(found, vec![good.signed.clone()]);
                assert!(rej.is_empty(), "{rej:?}");
            }
        }
        assert!(holders >= 2, "only {holders} honest nodes hold the record");

        // A client with an ephemeral key, listening nowhere.
        let mut cfg = DhtConfig::new(Keypair::generate_ed25519());
        cfg.bootstrap = boot.clone();
        cfg.query_timeout = Duration::from_secs(5);
        let client = start(cfg).await.unwrap();
        assert!(client.bootstrap().await.unwrap() >= 1);
        let l = client.lookup("stable", "x86_64", now).await.unwrap();
        assert_eq!(l.found, vec![good.signed.clone()], "{l:?}");
        assert_eq!(l.found[0].url, "http://10.0.0.3:8080/");
        assert_eq!(l.found[0].version, 7);
        let mut rej: Vec<(Option<String>, &str)> = l
            .rejected
            .iter()
            .map(|r| (r.node.clone(), r.reason))
            .collect();
        rej.sort();
        let mut want = vec![
            (Some(victim), "bad_signature"),
            (Some(expired.signed.node.clone()), "expired"),
        ];
        want.sort();
        assert_eq!(rej, want, "{l:?}");
        assert!(l.peers_queried >= 2, "{l:?}");

        // Two providers under one key (beta/x86_64) are both found, newest version first.
        let a = record(&key_of(4), "http://10.0.0.4:8080/", "beta", 3, now);
        let b = record(&key_of(8), "http://10.0.0.8:8080/", "beta", 4, now);
        nodes[4].announce(a.clone()).await.unwrap();
        nodes[8].announce(b.clone()).await.unwrap();
        settle(&nodes).await;
        let l = client.lookup("beta", "x86_64", now).await.unwrap();
        assert_eq!(l.found, vec![b.signed.clone(), a.signed.clone()], "{l:?}");
        assert!(l.rejected.is_empty(), "{l:?}");

        // A newer record from node 4 replaces its older one everywhere it lands.
        let a2 = record(&key_of(4), "http://10.0.0.4:9090/", "beta", 5, now + 1);
        nodes[4].announce(a2.clone()).await.unwrap();
        settle(&nodes).await;
        let l = client.lookup("beta", "x86_64", now + 1).await.unwrap();
        assert_eq!(l.found, vec![a2.signed.clone(), b.signed.clone()], "{l:?}");

        // Nothing under a key nobody announced: an empty answer, not an error.
        let l = client.lookup("nightly", "x86_64", now).await.unwrap();
        assert!(l.found.is_empty() && l.rejected.is_empty(), "{l:?}");

        // An invalid record is refused before anything is sent.
        let bad = record(&key_of(3), "https://10.0.0.3/", "stable", 8, now);
        assert_eq!(
            nodes[3].announce(bad).await.unwrap_err().reason(),
            "bad_record"
        );

        client.shutdown().await;
        for n in nodes {
            n.shutdown().await;
        }
        eprintln!("dht test took {:?}", t0.elapsed());
    }

    #[tokio::test]
    async fn bootstrap_failures_are_named() {
        // Nobody to ask.
        let lone = node(&[], true).await;
        assert_eq!(
            lone.bootstrap().await.unwrap_err().reason(),
            "no_known_peers"
        );
        lone.shutdown().await;
        // A bootstrap address without a peer id is refused at start.
        let mut cfg = DhtConfig::new(Keypair::generate_ed25519());
        cfg.bootstrap = vec![localhost()];
        assert_eq!(
            start(cfg).await.err().unwrap().reason(),
            "bad_bootstrap_addr"
        );
        // A bootstrap peer that is not there: bounded, and named.
        let gone = Keypair::generate_ed25519().public().to_peer_id();
        let addr: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
        let mut cfg = DhtConfig::new(Keypair::generate_ed25519());
        cfg.bootstrap = vec![with_peer(&addr, gone)];
        cfg.query_timeout = Duration::from_secs(2);
        let n = start(cfg).await.unwrap();
        let t = std::time::Instant::now();
        let e = n.bootstrap().await.unwrap_err();
        assert!(
            matches!(e.reason(), "bootstrap_unreachable" | "no_known_peers"),
            "{e}"
        );
        assert!(t.elapsed() < Duration::from_secs(8));
        n.shutdown().await;
    }

    /// Answers every job with a refusal, after saying that it answered (as the node's
    /// `job.done` comes before the answer is on the wire).
    struct AnswersThenSays(Mutex<Option<oneshot::Sender<()>>>);

    impl JobHandler for AnswersThenSays {
        fn handle(
            &self,
            _peer: PeerId,
            _request: JobRequest,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = JobResponse> + Send>> {
            if let Some(tx) = self.0.lock().ok().and_then(|mut t| t.take()) {
                let _ = tx.send(());
            }
            Box::pin(async {
                JobResponse::Refused {
                    reason: crate::p2p::wire::Refusal::Busy,
                    retry_after_ms: None,
                }
            })
        }
    }

    /// The shutdown that `phase.poweroff=job.done` starts: the answer of the job that
    /// triggered it must still reach the requester. Drained, then dropped, the node has sent
    /// it; dropping the handle then ends the node's task.
    #[cfg(feature = "executor")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_drained_node_has_sent_the_answer_of_the_job_that_stopped_it() {
        let (said, heard) = oneshot::channel();
        let mut cfg = DhtConfig::new(Keypair::generate_ed25519());
        cfg.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
        cfg.jobs = Some(Arc::new(AnswersThenSays(Mutex::new(Some(said)))));
        let node = start(cfg).await.unwrap();
        let (peer, addrs) = (node.peer_id(), node.listen_addrs());
        let requester = start(DhtConfig::new(Keypair::generate_ed25519()))
            .await
            .unwrap();
        let key = phase_release::keys::Keypair::from_seed(&[7; 32]);
        let node_key = signing_key(&Keypair::generate_ed25519())
            .unwrap()
            .verifying_key()
            .to_bytes();
        let request = crate::p2p::wire::sign(
            &crate::p2p::wire::Draft {
                id: "j",
                nonce: "0123456789abcdef0123456789abcdef",
                node: &node_key,
                module: b"\0asm",
                send_module: true,
                args: &[],
                env: &[],
                stdin: &[],
                limits: phase_release::receipt::Limits {
                    memory_bytes: 1 << 20,
                    fuel: 1000,
                    timeout_ms: 100,
                    stdout_bytes: 10,
                    stderr_bytes: 10,
                },
                issued_unix_ms: 0,
            },
            &key,
        );
        let asked = tokio::spawn(async move {
            let r = requester
                .submit(peer, addrs, request, Duration::from_secs(20))
                .await;
            requester.shutdown().await;
            r
        });
        heard.await.unwrap();
        let (weak, ended) = (node.weak(), node.ended());
        tokio::time::timeout(Duration::from_secs(10), weak.drain())
            .await
            .unwrap()
            .unwrap();
        drop(node);
        tokio::time::timeout(Duration::from_secs(10), ended.wait())
            .await
            .unwrap();
        assert_eq!(weak.drain().await.unwrap_err().reason(), "stopped");
        match asked.await.unwrap() {
            Ok(JobResponse::Refused { reason, .. }) => {
                assert_eq!(reason, crate::p2p::wire::Refusal::Busy)
            }
            other => panic!("the answer was cut off: {other:?}"),
        }
    }
}
