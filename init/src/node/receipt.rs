//! Receipts for jobs this node ran: the glue between the executor's [`Finished`] and the
//! document in `phase_release::receipt`, signed with the node key (the ed25519 key of the
//! node's libp2p peer id, `discover::dht`).

use super::executor::{Executor, Finished, JobSpec, WASMTIME_VERSION};
use phase_release::hex;
use phase_release::keys::Keypair;
use phase_release::receipt::{self as doc, Job, Statement};

/// Who asked, and how the request is named (not used to run the job, but bound).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRequest {
    pub id: String,
    /// Hex, chosen by the requester.
    pub nonce: String,
    /// Requester's public key (hex), if known.
    pub requester: Option<String>,
}

/// The job as the receipt's verifier sees it.
pub fn job_of(req: &JobRequest, spec: &JobSpec) -> Job {
    Job {
        id: req.id.clone(),
        nonce: req.nonce.clone(),
        requester: req.requester.clone(),
        module_sha256: phase_release::sha256(&spec.module),
        args: spec.args.clone(),
        env: spec.env.clone(),
        stdin_sha256: phase_release::sha256(&spec.stdin),
        limits: spec.limits,
        seed: spec.seed,
        clock_start_ns: spec.clock_start_ns,
    }
}

/// The statement about one run.
pub fn statement(
    req: &JobRequest,
    spec: &JobSpec,
    done: &Finished,
    executor: &Executor,
    node_public: &[u8; 32],
) -> Statement {
    let job = job_of(req, spec);
    Statement::new(
        &phase_release::sha256(&done.stdout),
        &phase_release::sha256(&done.stderr),
        doc::Predicate {
            job: doc::JobRef {
                id: job.id.clone(),
                nonce: job.nonce.clone(),
                requester: job.requester.clone(),
            },
            module: doc::Digest {
                sha256: hex::encode(&job.module_sha256),
            },
            input: doc::Input {
                sha256: hex::encode(&job.input_sha256()),
                stdin_sha256: hex::encode(&job.stdin_sha256),
            },
            limits: spec.limits,
            determinism: executor.determinism(spec),
            outcome: done.outcome,
            usage: doc::Usage {
                fuel: done.fuel,
                wall_us: done.wall_us,
                memory_peak_bytes: done.memory_peak_bytes,
            },
            executor: doc::Executor {
                name: "phase".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                wasmtime: WASMTIME_VERSION.into(),
            },
            node: doc::Node {
                public_key: hex::encode(node_public),
            },
            timestamps: doc::Timestamps {
                started_unix_ms: done.started_unix_ms,
                finished_unix_ms: done.finished_unix_ms,
            },
        },
    )
}

/// The signed receipt (DSSE envelope bytes).
pub fn sign(
    req: &JobRequest,
    spec: &JobSpec,
    done: &Finished,
    executor: &Executor,
    key: &Keypair,
) -> Vec<u8> {
    let public = key.public().bytes().unwrap_or_default();
    doc::sign_receipt(&statement(req, spec, done, executor, &public), key)
}

/// The node key as a receipt signer (the same ed25519 key as the libp2p identity).
pub fn node_signer(kp: &libp2p::identity::Keypair) -> Option<Keypair> {
    crate::discover::dht::signing_key(kp).map(|k| Keypair::from_seed(&k.to_bytes()))
}

/// The libp2p peer id of a node public key.
pub fn peer_id(public: &[u8; 32]) -> Option<libp2p::PeerId> {
    let pk = libp2p::identity::ed25519::PublicKey::try_from_bytes(public).ok()?;
    Some(libp2p::identity::PublicKey::from(pk).to_peer_id())
}
