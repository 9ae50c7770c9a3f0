//! The requester side of the job protocol: sign one request per node, try the nodes in order
//! until one answers with a receipt that verifies, and say what happened at each.
//!
//! A node that cannot be reached, closes the connection (it died mid-job), gives no answer
//! within the job's own timeout plus [`ATTEMPT_SLACK`], refuses, or answers with a receipt that
//! does not verify is left for the next. A receipt verifies when it is signed by the key of the
//! peer id that was dialled, is about exactly this module, args, env, stdin, limits, job id,
//! nonce and requester, uses the seed both sides derive from the nonce, and names the outcome
//! and output digests of the answer it came with.

use super::wire::{self, Draft, JobResponse, Refusal};
use super::SubmitError;
use crate::discover::dht::{self, Dht};
use libp2p::{Multiaddr, PeerId};
use phase_release::hex;
use phase_release::keys::Keypair;
use phase_release::receipt::{self as doc, Limits, Outcome, OutputCheck};
use std::time::{Duration, Instant};

/// What an attempt may take beyond the job's own timeout: connecting, sending the module,
/// compiling it, the answer.
pub const ATTEMPT_SLACK: Duration = Duration::from_secs(10);

/// A node to send to: its address ending in `/p2p/<peer id>`, and the key behind that id.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: Multiaddr,
    pub peer: PeerId,
    pub dial: Multiaddr,
    pub node_public: [u8; 32],
}

impl Target {
    pub fn parse(addr: &Multiaddr) -> Result<Target, String> {
        let (peer, dial) = dht::split_peer(addr)
            .ok_or_else(|| format!("{addr}: does not end with /p2p/<peer id>"))?;
        let node_public = node_public(&peer)
            .ok_or_else(|| format!("{addr}: the peer id is not an ed25519 key"))?;
        Ok(Target {
            addr: addr.clone(),
            peer,
            dial,
            node_public,
        })
    }
}

/// The ed25519 public key a peer id is made of (ids of ed25519 keys inline the key).
pub fn node_public(peer: &PeerId) -> Option<[u8; 32]> {
    let mh: &libp2p::multihash::Multihash<64> = peer.as_ref();
    if mh.code() != 0 {
        return None;
    }
    let pk = libp2p::identity::PublicKey::try_decode_protobuf(mh.digest()).ok()?;
    Some(pk.try_into_ed25519().ok()?.to_bytes())
}

/// The job, as the requester gives it.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: String,
    pub module: Vec<u8>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub stdin: Vec<u8>,
    pub limits: Limits,
}

/// One node tried and left.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Attempt {
    pub node: String,
    pub reason: String,
    pub ms: u64,
}

/// A job that ran and whose receipt verified.
#[derive(Debug, Clone)]
pub struct Verified {
    /// Index in the targets.
    pub target: usize,
    pub outcome: Outcome,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub receipt: Vec<u8>,
    /// Nodes left before this one.
    pub attempts: Vec<Attempt>,
}

/// Fresh nonces: a random base hashed with a counter.
pub struct Nonces {
    base: [u8; 16],
    n: u64,
}

impl Nonces {
    pub fn new() -> Result<Nonces, String> {
        use std::io::Read;
        let mut base = [0u8; 16];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut base))
            .map_err(|e| format!("/dev/urandom: {e}"))?;
        Ok(Nonces { base, n: 0 })
    }

    pub fn next_hex(&mut self) -> String {
        self.n += 1;
        let mut b = self.base.to_vec();
        b.extend_from_slice(&self.n.to_le_bytes());
        hex::encode(&phase_release::sha256(&b)[..16])
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What a node answered with, as received.
pub struct Answer<'a> {
    pub outcome: &'a Outcome,
    pub stdout: &'a [u8],
    pub stderr: &'a [u8],
    pub receipt: &'a [u8],
}

/// Check a node's answer against the request it signed (pure).
pub fn verify_answer(
    job: &Job,
    nonce: &str,
    requester: &[u8; 32],
    node: &[u8; 32],
    a: &Answer,
) -> Result<(), &'static str> {
    let (outcome, stdout, stderr, receipt) = (a.outcome, a.stdout, a.stderr, a.receipt);
    let claimed = doc::open_receipt(receipt, Some(node)).map_err(|e| e.reason())?;
    let d = &claimed.predicate.determinism;
    let seed = phase_release::sha256(nonce.as_bytes());
    if d.seed != hex::encode(&seed) {
        return Err("seed_mismatch");
    }
    let expected = doc::Job {
        id: job.id.clone(),
        nonce: nonce.into(),
        requester: Some(hex::encode(requester)),
        module_sha256: phase_release::sha256(&job.module),
        args: job.args.clone(),
        env: job.env.clone(),
        stdin_sha256: phase_release::sha256(&job.stdin),
        limits: job.limits,
        seed,
        clock_start_ns: d.clock_start_ns,
    };
    let output = OutputCheck {
        stdout_sha256: Some(phase_release::sha256(stdout)),
        stderr_sha256: Some(phase_release::sha256(stderr)),
    };
    let st =
        doc::verify_receipt(receipt, &expected, &output, Some(node)).map_err(|e| e.reason())?;
    if st.predicate.outcome != *outcome {
        return Err("outcome_mismatch");
    }
    Ok(())
}

/// Send `job` to each target in turn until one answers with a verified receipt.
/// `send_module: false` sends only the module's digest first (a node that does not have it
/// is asked again with the module). `Err` lists every attempt.
pub async fn submit(
    host: &Dht,
    targets: &[Target],
    job: &Job,
    key: &Keypair,
    nonces: &mut Nonces,
    send_module: bool,
) -> Result<Verified, Vec<Attempt>> {
    let requester = key.public().bytes().unwrap_or_default();
    let per_attempt = Duration::from_millis(job.limits.timeout_ms) + ATTEMPT_SLACK;
    let mut attempts = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        let started = Instant::now();
        let mut with_module = send_module;
        let result = loop {
            let nonce = nonces.next_hex();
            let request = wire::sign(
                &Draft {
                    id: &job.id,
                    nonce: &nonce,
                    node: &t.node_public,
                    module: &job.module,
                    send_module: with_module,
                    args: &job.args,
                    env: &job.env,
                    stdin: &job.stdin,
                    limits: job.limits,
                    issued_unix_ms: unix_ms(),
                },
                key,
            );
            let answer = host
                .submit(t.peer, vec![t.dial.clone()], request, per_attempt)
                .await;
            match answer {
                Ok(JobResponse::Refused {
                    reason: Refusal::UnknownModule,
                    ..
                }) if !with_module => with_module = true,
                other => break (other, nonce),
            }
        };
        let reason = match result {
            (
                Ok(JobResponse::Done {
                    outcome,
                    stdout,
                    stderr,
                    receipt,
                }),
                nonce,
            ) => match verify_answer(
                job,
                &nonce,
                &requester,
                &t.node_public,
                &Answer {
                    outcome: &outcome,
                    stdout: &stdout,
                    stderr: &stderr,
                    receipt: &receipt,
                },
            ) {
                Ok(()) => {
                    return Ok(Verified {
                        target: i,
                        outcome,
                        stdout: stdout.into_vec(),
                        stderr: stderr.into_vec(),
                        receipt: receipt.into_vec(),
                        attempts,
                    })
                }
                Err(r) => format!("receipt_invalid:{r}"),
            },
            (Ok(JobResponse::Refused { reason, .. }), _) => reason.reason().to_string(),
            (Err(e), _) => e.reason().to_string(),
        };
        attempts.push(Attempt {
            node: t.addr.to_string(),
            reason,
            ms: started.elapsed().as_millis() as u64,
        });
    }
    Err(attempts)
}

/// A requester's host: listens nowhere, serves no jobs, keeps connections for reuse.
pub async fn requester_host(key: libp2p::identity::Keypair) -> Result<Dht, SubmitError> {
    dht::start(dht::DhtConfig::new(key))
        .await
        .map_err(|e| SubmitError::Io(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_ids_of_ed25519_keys_give_the_key_back() {
        let kp = libp2p::identity::Keypair::generate_ed25519();
        let want = kp.public().try_into_ed25519().unwrap().to_bytes();
        assert_eq!(node_public(&kp.public().to_peer_id()), Some(want));
        let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/1/p2p/{}", kp.public().to_peer_id())
            .parse()
            .unwrap();
        let t = Target::parse(&addr).unwrap();
        assert_eq!(t.node_public, want);
        assert_eq!(t.dial, "/ip4/127.0.0.1/tcp/1".parse::<Multiaddr>().unwrap());
        assert!(Target::parse(&"/ip4/127.0.0.1/tcp/1".parse().unwrap()).is_err());
    }

    #[test]
    fn nonces_are_fresh_hex() {
        let mut n = Nonces::new().unwrap();
        let (a, b) = (n.next_hex(), n.next_hex());
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    }
}
