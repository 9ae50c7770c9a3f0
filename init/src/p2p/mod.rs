//! The node's one libp2p host: one Swarm over TCP + Noise + Yamux whose composed
//! [`Behaviour`] carries everything the node says to peers: Kademlia (provider records,
//! `discover::dht`), identify, ping, and the job protocol `/phase/job/1` ([`wire`]), behind
//! connection limits (total, pending, per peer) and a cap on concurrent streams per
//! connection.
//!
//! [`build_swarm`] composes it; the swarm's task and its handle are `discover::dht` (the
//! Kademlia record logic lives there, beside the provider lookup), which hands job traffic to
//! a [`JobHandler`] (the node side, `serve`) and sends requests for the requester side
//! (`submit`). Node identity is [`identity`]; the policy of who may submit is [`admission`].
//! [`node::start`] starts a whole node (`phase node`, and stage 2 of a booted node).
//! The executor-side modules (`serve`, `submit`, `node`, `node_cli`) need feature `executor`; the
//! initramfs's build keeps the host (it needs the DHT), whose job protocol then only sends.

// The initramfs's build (no executor) keeps only the host: it sends no jobs either.
#![cfg_attr(not(feature = "executor"), allow(dead_code))]

#[cfg(feature = "executor")]
pub mod admission;
#[cfg(feature = "executor")]
pub mod bench;
pub mod capability;
#[cfg(feature = "executor")]
pub mod identity;
pub mod mdns;
#[cfg(feature = "executor")]
pub mod node;
#[cfg(feature = "executor")]
pub mod node_cli;
#[cfg(feature = "executor")]
pub mod serve;
#[cfg(feature = "executor")]
pub mod submit;
#[cfg(all(test, feature = "executor"))]
mod tests;
pub mod wire;

use libp2p::identity::Keypair;
use libp2p::kad::{self, store::MemoryStore, store::MemoryStoreConfig};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::NetworkBehaviour;
use libp2p::{connection_limits, identify, noise, ping, tcp, yamux, StreamProtocol, Swarm};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use wire::{JobRequest, JobResponse};

/// The identify protocol version peers announce.
pub const IDENTIFY_VERSION: &str = "/phase-boot/1.0.0";
/// Established connections, all peers together.
pub const MAX_CONNECTIONS: u32 = 256;
/// Inbound connections still in their handshake.
pub const MAX_PENDING_INCOMING: u32 = 64;
/// Established connections with one peer.
pub const MAX_CONNECTIONS_PER_PEER: u32 = 4;
/// Job streams open at once on one connection (so per peer: this × the connections).
pub const MAX_JOB_STREAMS: usize = 16;
/// Bound on one job exchange: the longest job a node allows (60 s) plus the transfers.
pub const JOB_EXCHANGE_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a connection with nothing in flight stays open (libp2p's default is 10 s,
/// which makes every query after a pause redial its peers).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Everything this node speaks, in one swarm.
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    pub limits: connection_limits::Behaviour,
    pub kad: kad::Behaviour<MemoryStore>,
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
    pub job: request_response::cbor::Behaviour<JobRequest, JobResponse>,
}

/// The node side of the job protocol: answers one request (the future runs as its own task,
/// so a long job never holds up the swarm).
pub trait JobHandler: Send + Sync + 'static {
    fn handle(
        &self,
        peer: libp2p::PeerId,
        request: JobRequest,
    ) -> Pin<Box<dyn Future<Output = JobResponse> + Send>>;
}

/// Why a job exchange with a node failed (the node gave no answer: not a refusal).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error("could not connect to {0}")]
    Dial(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the connection closed before the answer")]
    ConnectionClosed,
    #[error("the peer does not speak {}", wire::PROTOCOL)]
    Unsupported,
    #[error("stream: {0}")]
    Io(String),
    #[error("the host has stopped")]
    Stopped,
}

impl SubmitError {
    pub fn reason(&self) -> &'static str {
        match self {
            SubmitError::Dial(_) => "dial_failed",
            SubmitError::Timeout(_) => "timeout",
            SubmitError::ConnectionClosed => "connection_closed",
            SubmitError::Unsupported => "unsupported_protocol",
            SubmitError::Io(_) => "stream_error",
            SubmitError::Stopped => "stopped",
        }
    }

    pub fn from_outbound(e: &request_response::OutboundFailure, peer: &libp2p::PeerId) -> Self {
        use request_response::OutboundFailure as F;
        match e {
            F::DialFailure => SubmitError::Dial(peer.to_string()),
            F::Timeout => SubmitError::Timeout(JOB_EXCHANGE_TIMEOUT),
            F::ConnectionClosed => SubmitError::ConnectionClosed,
            F::UnsupportedProtocols => SubmitError::Unsupported,
            F::Io(e) => SubmitError::Io(e.to_string()),
        }
    }
}

/// How the swarm is set up.
pub struct SwarmOptions {
    /// The Kademlia protocol name.
    pub kad_protocol: StreamProtocol,
    /// Kademlia server mode (a node that listens) or client.
    pub server: bool,
    /// Filter inbound Kademlia puts (`discover::dht` merges them through its record checks).
    pub filter_inbound: bool,
    pub query_timeout: Duration,
    pub max_packet: usize,
    pub max_value_bytes: usize,
    pub max_records: usize,
    /// Accept job requests (a node with an executor), or only send them.
    pub serve_jobs: bool,
}

/// Compose the behaviour and build the swarm over TCP + Noise + Yamux.
pub fn build_swarm(key: &Keypair, o: &SwarmOptions) -> Result<Swarm<Behaviour>, String> {
    let swarm = libp2p::SwarmBuilder::with_existing_identity(key.clone())
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| e.to_string())?
        .with_behaviour(|key| {
            let id = key.public().to_peer_id();
            let mut kc = kad::Config::new(o.kad_protocol.clone());
            kc.set_query_timeout(o.query_timeout)
                .set_max_packet_size(o.max_packet)
                // Offer keys (capability::offer_key) are the only provider records: they
                // live as long as a capability record may, and are renewed at half of it.
                .set_provider_record_ttl(Some(capability::PROVIDER_TTL))
                .set_provider_publication_interval(Some(capability::PROVIDER_TTL / 2))
                .set_record_filtering(if o.filter_inbound {
                    kad::StoreInserts::FilterBoth
                } else {
                    kad::StoreInserts::Unfiltered
                });
            let store = MemoryStore::with_config(
                id,
                MemoryStoreConfig {
                    max_value_bytes: o.max_value_bytes,
                    // Keys (channel/arch sets) held at once: a peer putting records under
                    // many invented keys fills this, not the node's memory.
                    max_records: o.max_records,
                    max_providers_per_key: capability::MAX_PROVIDERS,
                    ..Default::default()
                },
            );
            let mut kad = kad::Behaviour::with_config(id, store, kc);
            kad.set_mode(Some(if o.server {
                kad::Mode::Server
            } else {
                kad::Mode::Client
            }));
            let identify = identify::Behaviour::new(
                identify::Config::new(IDENTIFY_VERSION.into(), key.public())
                    .with_agent_version(format!("phase/{}", env!("CARGO_PKG_VERSION"))),
            );
            let limits = connection_limits::Behaviour::new(
                connection_limits::ConnectionLimits::default()
                    .with_max_established(Some(MAX_CONNECTIONS))
                    .with_max_pending_incoming(Some(MAX_PENDING_INCOMING))
                    .with_max_established_per_peer(Some(MAX_CONNECTIONS_PER_PEER)),
            );
            let support = if o.serve_jobs {
                ProtocolSupport::Full
            } else {
                ProtocolSupport::Outbound
            };
            let codec = request_response::cbor::codec::Codec::default()
                .set_request_size_maximum(wire::MAX_REQUEST_FRAME)
                .set_response_size_maximum(wire::MAX_RESPONSE_FRAME);
            let job = request_response::Behaviour::with_codec(
                codec,
                [(StreamProtocol::new(wire::PROTOCOL), support)],
                request_response::Config::default()
                    .with_request_timeout(JOB_EXCHANGE_TIMEOUT)
                    .with_max_concurrent_streams(MAX_JOB_STREAMS),
            );
            Behaviour {
                limits,
                kad,
                identify,
                ping: ping::Behaviour::new(ping::Config::new()),
                job,
            }
        })
        .map_err(|e| e.to_string())?
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_TIMEOUT))
        .build();
    Ok(swarm)
}
