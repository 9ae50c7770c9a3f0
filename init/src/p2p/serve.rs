//! The node side of the job protocol: one request in, one answer out, every step a named
//! decision. The request is checked ([`wire::check`]: sizes, form, signature, skew, digests),
//! the requester admitted ([`admission::admit`]) and charged a token
//! ([`admission::RateLimiter`]), the module taken from the request or this node's module
//! cache, the job run on the executor's blocking pool, and the receipt signed with the node
//! key. Every answer, run or refused, is one `job.done` event.

use super::admission::{self, NodeConfig, RateLimiter};
use super::wire::{self, JobRequest, JobResponse, Refusal};
use super::JobHandler;
use crate::events::{Event, EventLog};
use crate::node::executor::{Executor, JobSpec};
use crate::node::receipt;
use phase_release::hex;
use phase_release::receipt::{Outcome, RefusedReason};
use serde_bytes::ByteBuf;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Module bytes kept for requests that send only the digest.
pub const MODULE_CACHE_BYTES: usize = 64 << 20;

/// Recently received modules by SHA-256, oldest evicted first.
#[derive(Default)]
struct ModuleCache {
    by_digest: HashMap<[u8; 32], Arc<[u8]>>,
    order: VecDeque<[u8; 32]>,
    bytes: usize,
}

impl ModuleCache {
    fn get(&self, digest: &[u8; 32]) -> Option<Arc<[u8]>> {
        self.by_digest.get(digest).cloned()
    }

    fn insert(&mut self, digest: [u8; 32], module: Arc<[u8]>) {
        if self.by_digest.contains_key(&digest) || module.len() > MODULE_CACHE_BYTES {
            return;
        }
        while self.bytes + module.len() > MODULE_CACHE_BYTES {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(m) = self.by_digest.remove(&old) {
                self.bytes -= m.len();
            }
        }
        self.bytes += module.len();
        self.order.push_back(digest);
        self.by_digest.insert(digest, module);
    }
}

struct Inner {
    executor: Arc<Executor>,
    signer: phase_release::keys::Keypair,
    node_public: [u8; 32],
    config: NodeConfig,
    rate: Mutex<RateLimiter>,
    modules: Mutex<ModuleCache>,
    events: Option<Arc<EventLog>>,
}

/// The job protocol's handler on a node with an executor.
#[derive(Clone)]
pub struct JobServer(Arc<Inner>);

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the executor's own refusal means on the wire.
fn refusal_of(r: RefusedReason) -> Refusal {
    match r {
        RefusedReason::QueueFull => Refusal::Busy,
        RefusedReason::LimitsAboveNode => Refusal::LimitsAboveNode,
        RefusedReason::ModuleTooLarge | RefusedReason::InputTooLarge => Refusal::TooLarge,
    }
}

impl JobServer {
    /// `None` if the node key is not ed25519.
    pub fn new(
        executor: Arc<Executor>,
        key: &libp2p::identity::Keypair,
        config: NodeConfig,
        events: Option<Arc<EventLog>>,
    ) -> Option<JobServer> {
        let signer = receipt::node_signer(key)?;
        let node_public = signer.public().bytes()?;
        Some(JobServer(Arc::new(Inner {
            executor,
            signer,
            node_public,
            config,
            rate: Mutex::new(RateLimiter::default()),
            modules: Mutex::new(ModuleCache::default()),
            events,
        })))
    }

    fn emit(&self, e: Event) {
        if let Some(log) = &self.0.events {
            log.emit(e);
        }
    }

    /// Answer one request, and report it (`job.done`).
    pub async fn answer(&self, req: JobRequest) -> JobResponse {
        let arrived = Instant::now();
        let id = req.job.id.clone();
        let (response, requester) = match self.run(req).await {
            Ok((r, requester)) => (r, Some(requester)),
            Err((refusal, retry_after_ms, requester)) => (
                JobResponse::Refused {
                    reason: refusal,
                    retry_after_ms,
                },
                requester,
            ),
        };
        let (outcome, reason) = match &response {
            JobResponse::Done { outcome, .. } => (outcome.kind().to_string(), None),
            JobResponse::Refused { reason, .. } => {
                ("refused".to_string(), Some(reason.reason().to_string()))
            }
        };
        self.emit(Event::JobDone {
            // A request that failed its checks names no job: its id is not trusted text.
            job_id: if requester.is_some() {
                id
            } else {
                String::new()
            },
            outcome,
            reason,
            requester: requester.map(|k| hex::encode(&k)),
            ms: arrived.elapsed().as_millis() as u64,
        });
        response
    }

    #[allow(clippy::type_complexity)]
    async fn run(
        &self,
        req: JobRequest,
    ) -> Result<(JobResponse, [u8; 32]), (Refusal, Option<u64>, Option<[u8; 32]>)> {
        let s = &self.0;
        let now = unix_ms();
        let checked = wire::check(&req, &s.node_public, now).map_err(|r| (r, None, None))?;
        let who = Some(checked.requester);
        admission::admit(&s.config.admission, &checked.requester).map_err(|r| (r, None, who))?;
        lock(&s.rate)
            .take(s.config.rate, &checked.requester, now)
            .map_err(|retry| (Refusal::RateLimited, Some(retry), who))?;
        let module: Arc<[u8]> = match req.module {
            Some(m) => {
                let m: Arc<[u8]> = m.into_vec().into();
                lock(&s.modules).insert(checked.module_sha256, m.clone());
                m
            }
            None => lock(&s.modules).get(&checked.module_sha256).ok_or((
                Refusal::UnknownModule,
                None,
                who,
            ))?,
        };
        let job = req.job;
        let spec = JobSpec {
            module,
            args: req.args,
            env: req.env,
            stdin: req.stdin.into_vec(),
            limits: job.limits,
            seed: phase_release::sha256(job.nonce.as_bytes()),
            clock_start_ns: now.saturating_mul(1_000_000),
        };
        self.emit(Event::JobStart {
            job_id: job.id.clone(),
            requester: hex::encode(&checked.requester),
        });
        let done = s.executor.run_blocking(spec.clone()).await;
        if let Outcome::Refused { reason } = done.outcome {
            return Err((refusal_of(reason), None, who));
        }
        let bound = receipt::JobRequest {
            id: job.id,
            nonce: job.nonce,
            requester: Some(hex::encode(&checked.requester)),
        };
        let signed = receipt::sign(&bound, &spec, &done, &s.executor, &s.signer);
        Ok((
            JobResponse::Done {
                outcome: done.outcome,
                stdout: ByteBuf::from(done.stdout),
                stderr: ByteBuf::from(done.stderr),
                receipt: ByteBuf::from(signed),
            },
            checked.requester,
        ))
    }
}

impl JobHandler for JobServer {
    fn handle(
        &self,
        _peer: libp2p::PeerId,
        request: JobRequest,
    ) -> Pin<Box<dyn Future<Output = JobResponse> + Send>> {
        let this = self.clone();
        Box::pin(async move { this.answer(request).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_cache_keeps_the_newest_within_its_bytes() {
        let mut c = ModuleCache::default();
        let big = MODULE_CACHE_BYTES / 2;
        c.insert([1; 32], vec![0; big].into());
        c.insert([2; 32], vec![0; big].into());
        assert!(c.get(&[1; 32]).is_some() && c.get(&[2; 32]).is_some());
        c.insert([3; 32], vec![0; 10].into());
        assert!(c.get(&[1; 32]).is_none(), "the oldest went");
        assert!(c.get(&[2; 32]).is_some() && c.get(&[3; 32]).is_some());
        assert!(c.bytes <= MODULE_CACHE_BYTES);
        c.insert([4; 32], vec![0; MODULE_CACHE_BYTES + 1].into());
        assert!(c.get(&[4; 32]).is_none(), "larger than the cache: not kept");
    }

    #[test]
    fn executor_refusals_map_to_wire_reasons() {
        let table = [
            (RefusedReason::QueueFull, Refusal::Busy),
            (RefusedReason::LimitsAboveNode, Refusal::LimitsAboveNode),
            (RefusedReason::ModuleTooLarge, Refusal::TooLarge),
            (RefusedReason::InputTooLarge, Refusal::TooLarge),
        ];
        for (r, want) in table {
            assert_eq!(refusal_of(r), want);
        }
    }
}
