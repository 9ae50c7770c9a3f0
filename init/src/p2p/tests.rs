//! The job protocol's two ends without the network: a [`JobServer`] answering signed requests
//! (every refusal with its reason, then a run whose receipt verifies), and the requester's
//! [`verify_answer`] rejecting every altered answer. Uses out/jobs/hello.wasm (`make build`).

use super::admission::{Admission, NodeConfig, Rate};
use super::serve::JobServer;
use super::submit::{verify_answer, Answer, Job};
use super::wire::{self, Draft, JobResponse, Refusal};
use crate::cli::job::DEFAULT_LIMITS;
use crate::node::executor::{Executor, ExecutorConfig};
use phase_release::keys::Keypair;
use std::sync::Arc;

fn hello() -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../out/jobs/hello.wasm");
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e} (make build)", p.display()))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

struct Fixture {
    server: JobServer,
    node: [u8; 32],
    job: Job,
}

fn fixture(admission: Admission, rate: Rate) -> Fixture {
    let key = libp2p::identity::Keypair::generate_ed25519();
    let node = key.public().try_into_ed25519().unwrap().to_bytes();
    let exec = Arc::new(Executor::new(ExecutorConfig::default()).unwrap());
    let server = JobServer::new(exec, &key, NodeConfig { admission, rate }, None).unwrap();
    let job = Job {
        id: "t".into(),
        module: hello(),
        args: vec!["abc".into()],
        env: vec![],
        stdin: vec![],
        limits: DEFAULT_LIMITS,
    };
    Fixture { server, node, job }
}

fn request(f: &Fixture, key: &Keypair, nonce: &str, send_module: bool) -> wire::JobRequest {
    wire::sign(
        &Draft {
            id: &f.job.id,
            nonce,
            node: &f.node,
            module: &f.job.module,
            send_module,
            args: &f.job.args,
            env: &f.job.env,
            stdin: &f.job.stdin,
            limits: f.job.limits,
            issued_unix_ms: now_ms(),
        },
        key,
    )
}

fn refused(r: JobResponse) -> (Refusal, Option<u64>) {
    match r {
        JobResponse::Refused {
            reason,
            retry_after_ms,
        } => (reason, retry_after_ms),
        JobResponse::Done { outcome, .. } => panic!("not refused: ran ({outcome:?})"),
    }
}

const NONCE: &str = "0123456789abcdef0123456789abcdef";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_refuses_with_reasons_then_runs_and_the_requester_verifies() {
    let allowed = Keypair::from_seed(&[1; 32]);
    let stranger = Keypair::from_seed(&[2; 32]);
    let keys = [phase_release::hex::encode(
        &allowed.public().bytes().unwrap(),
    )];
    let f = fixture(
        Admission::Allowlist {
            keys: keys.into_iter().collect(),
        },
        // Two jobs, never refilled: the test does not depend on how long a job takes.
        Rate {
            burst: 2,
            per_second: 0,
        },
    );
    // A stranger: not_allowed. A bad signature: bad_signature (before admission).
    let r = f.server.answer(request(&f, &stranger, NONCE, true)).await;
    assert_eq!(refused(r).0, Refusal::NotAllowed);
    let mut bad = request(&f, &allowed, NONCE, true);
    bad.signature[5] ^= 1;
    assert_eq!(refused(f.server.answer(bad).await).0, Refusal::BadSignature);
    // The digest of a module the node never saw: unknown_module (a token spent).
    let r = f.server.answer(request(&f, &allowed, NONCE, false)).await;
    assert_eq!(refused(r).0, Refusal::UnknownModule);
    // With the module: it runs, and the receipt verifies as the requester checks it.
    let JobResponse::Done {
        outcome,
        stdout,
        stderr,
        receipt,
    } = f.server.answer(request(&f, &allowed, NONCE, true)).await
    else {
        panic!("not run");
    };
    assert_eq!(&stdout[..], b"cba\n");
    let requester = allowed.public().bytes().unwrap();
    let good = Answer {
        outcome: &outcome,
        stdout: &stdout,
        stderr: &stderr,
        receipt: &receipt,
    };
    assert_eq!(
        verify_answer(&f.job, NONCE, &requester, &f.node, &good),
        Ok(())
    );
    // Every altered answer fails, each for its own reason.
    let other_out = b"abc\n".to_vec();
    let other_outcome = phase_release::receipt::Outcome::Exit { code: 1 };
    let cases: [(&str, Answer, &[u8; 32], &str, &str); 5] = [
        (
            "stdout swapped",
            Answer {
                stdout: &other_out,
                ..good
            },
            &f.node,
            NONCE,
            "output_mismatch",
        ),
        (
            "outcome swapped",
            Answer {
                outcome: &other_outcome,
                ..good
            },
            &f.node,
            NONCE,
            "outcome_mismatch",
        ),
        (
            "another node's key",
            Answer { ..good },
            &[9; 32],
            NONCE,
            "wrong_node",
        ),
        (
            "another nonce",
            Answer { ..good },
            &f.node,
            "ffffffffffffffffffffffffffffffff",
            "seed_mismatch",
        ),
        (
            "not a receipt",
            Answer {
                receipt: b"{}",
                ..good
            },
            &f.node,
            NONCE,
            "not_dsse",
        ),
    ];
    for (what, answer, node, nonce, reason) in &cases {
        let got = verify_answer(&f.job, nonce, &requester, node, answer);
        assert_eq!(got, Err(*reason), "{what}");
    }
    // The bucket (2 at once) is empty now: rate_limited, with a retry time.
    let (reason, retry) = refused(f.server.answer(request(&f, &allowed, NONCE, true)).await);
    assert_eq!(reason, Refusal::RateLimited);
    assert!(retry.is_some(), "{retry:?}");
}
