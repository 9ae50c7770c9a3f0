//! `phase job run --local` (run a job in-process, print its output, write its receipt) and
//! `phase receipt verify` (check a receipt against the module, input and output; with
//! `--reexec`, run the job again and compare). Their options are parsed in `cli::job` and
//! `cli::receipt`.

use super::executor::{Executor, ExecutorConfig, Finished, JobSpec};
use super::receipt::{self, JobRequest};
use crate::cli::job::{JobRun, Local};
use crate::cli::receipt::VerifyOpts;
use phase_release::hex;
use phase_release::receipt::{self as doc, Outcome, OutputCheck};
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Exit status when the job did not exit by itself.
const EXIT_STOPPED: i32 = 125;
/// Exit status when the job was refused or its module invalid.
const EXIT_NOT_RUN: i32 = 126;

fn read_limited(path: &Path, max: usize) -> Result<Vec<u8>, String> {
    let mut v = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(max as u64 + 1).read_to_end(&mut v))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if v.len() > max {
        return Err(format!("{}: larger than {max} bytes", path.display()));
    }
    Ok(v)
}

fn random_hex16() -> Result<String, String> {
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| format!("/dev/urandom: {e}"))?;
    Ok(hex::encode(&b))
}

fn executor(state_dir: &Path) -> Result<Arc<Executor>, String> {
    Executor::new(ExecutorConfig {
        cache_dir: Some(state_dir.join("cache")),
        ..ExecutorConfig::default()
    })
    .map(Arc::new)
    .map_err(|e| format!("executor: {} ({e})", e.reason()))
}

fn summary_line(done: &Finished) -> String {
    serde_json::json!({
        "outcome": done.outcome,
        "fuel": done.fuel,
        "wall_us": done.wall_us,
        "memory_peak_bytes": done.memory_peak_bytes,
        "compiled": match done.compiled {
            super::executor::Compiled::Fresh => "fresh",
            super::executor::Compiled::DiskCache => "disk_cache",
            super::executor::Compiled::Warm => "warm",
            super::executor::Compiled::No => "no",
        },
    })
    .to_string()
}

/// `phase job run --local`: the job's exit status.
pub fn run_local(o: &JobRun, local: &Local) -> Result<i32, String> {
    let state_dir = local
        .state_dir
        .clone()
        .unwrap_or_else(|| "/var/lib/phase".into());
    let policy = super::executor::limits::NodePolicy::default();
    let module = read_limited(&o.module, policy.max_module_bytes)?;
    let mut stdin = Vec::new();
    if !std::io::stdin().is_terminal() {
        std::io::stdin()
            .take(policy.max_input_bytes as u64 + 1)
            .read_to_end(&mut stdin)
            .map_err(|e| format!("stdin: {e}"))?;
    }
    let key_path = o.key.clone().unwrap_or_else(|| state_dir.join("node.key"));
    let kp = crate::discover::dht::load_or_create_key(&key_path)
        .map_err(|e| format!("node key {}: {e}", key_path.display()))?;
    let key = receipt::node_signer(&kp).ok_or("node key is not ed25519")?;
    let nonce = match &o.job.nonce {
        Some(n) => n.clone(),
        None => random_hex16()?,
    };
    let req = JobRequest {
        id: o.job.id.clone().unwrap_or_else(|| "local".into()),
        nonce,
        requester: o.job.requester.clone(),
    };
    let spec = JobSpec {
        module: module.into(),
        args: o.job.args.clone(),
        env: o.job.env.clone(),
        stdin,
        limits: o.limits,
        seed: local
            .seed
            .unwrap_or_else(|| phase_release::sha256(req.nonce.as_bytes())),
        clock_start_ns: local.clock_start_ns.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
        }),
    };
    let exec = executor(&state_dir)?;
    let done = exec.run(&spec);
    let _ = std::io::stdout().write_all(&done.stdout);
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().write_all(&done.stderr);
    if let Some(path) = &o.receipt {
        let bytes = receipt::sign(&req, &spec, &done, &exec, &key);
        std::fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if o.summary {
        eprintln!("{}", summary_line(&done));
    }
    Ok(match done.outcome {
        Outcome::Exit { code } => code.clamp(0, 255),
        Outcome::InvalidModule | Outcome::Refused { .. } => EXIT_NOT_RUN,
        _ => EXIT_STOPPED,
    })
}

/// `phase receipt verify`: prints the verdict as one JSON line; 0 verified, 1 not.
pub fn verify(o: VerifyOpts) -> i32 {
    match check(&o) {
        Ok(line) => {
            println!("{line}");
            0
        }
        Err((reason, msg)) => {
            println!(
                "{}",
                serde_json::json!({"verified": false, "reason": reason, "error": msg})
            );
            1
        }
    }
}

type Failure = (&'static str, String);

fn check(o: &VerifyOpts) -> Result<String, Failure> {
    let io = |e: String| ("io", e);
    let policy = super::executor::limits::NodePolicy::default();
    let bytes = read_limited(&o.receipt, doc::MAX_RECEIPT_BYTES).map_err(io)?;
    // What the receipt claims, signature checked: fills in what the caller did not give.
    let claimed =
        doc::open_receipt(&bytes, o.node.as_ref()).map_err(|e| (e.reason(), e.to_string()))?;
    let p = &claimed.predicate;
    let module = read_limited(&o.module, policy.max_module_bytes).map_err(io)?;
    let stdin = match &o.stdin {
        Some(f) => read_limited(f, policy.max_input_bytes).map_err(io)?,
        None => Vec::new(),
    };
    let digest = |f: &Option<PathBuf>| -> Result<Option<[u8; 32]>, Failure> {
        f.as_ref()
            .map(|f| read_limited(f, 1 << 30).map(|b| phase_release::sha256(&b)))
            .transpose()
            .map_err(io)
    };
    let output = OutputCheck {
        stdout_sha256: digest(&o.stdout)?,
        stderr_sha256: digest(&o.stderr)?,
    };
    let seed =
        hex::decode::<32>(&p.determinism.seed).ok_or(("not_statement", "seed".to_string()))?;
    let req = JobRequest {
        id: o.job.id.clone().unwrap_or_else(|| p.job.id.clone()),
        nonce: o.job.nonce.clone().unwrap_or_else(|| p.job.nonce.clone()),
        requester: o.job.requester.clone().or_else(|| p.job.requester.clone()),
    };
    let spec = JobSpec {
        module: module.into(),
        args: o.job.args.clone(),
        env: o.job.env.clone(),
        stdin,
        limits: p.limits,
        seed,
        clock_start_ns: p.determinism.clock_start_ns,
    };
    let job = receipt::job_of(&req, &spec);
    let st = doc::verify_receipt(&bytes, &job, &output, o.node.as_ref())
        .map_err(|e| (e.reason(), e.to_string()))?;
    let p = &st.predicate;
    let node = hex::decode::<32>(&p.node.public_key).unwrap_or_default();
    if o.reexec {
        let state_dir = o
            .state_dir
            .clone()
            .unwrap_or_else(|| "/var/lib/phase".into());
        let exec = executor(&state_dir).map_err(|e| ("executor", e))?;
        let done = exec.run(&spec);
        let digest_of = |name: &str| {
            st.subject
                .iter()
                .find(|s| s.name == name)
                .map(|s| s.digest.sha256.clone())
        };
        let mismatch = if done.outcome != p.outcome {
            Some(format!(
                "outcome {} vs receipt {}",
                done.outcome.kind(),
                p.outcome.kind()
            ))
        } else if done.fuel != p.usage.fuel {
            Some(format!("fuel {} vs receipt {}", done.fuel, p.usage.fuel))
        } else if Some(hex::encode(&phase_release::sha256(&done.stdout))) != digest_of("stdout") {
            Some("stdout digest differs".into())
        } else if Some(hex::encode(&phase_release::sha256(&done.stderr))) != digest_of("stderr") {
            Some("stderr digest differs".into())
        } else {
            None
        };
        if let Some(m) = mismatch {
            return Err(("reexec_mismatch", m));
        }
    }
    Ok(serde_json::json!({
        "verified": true,
        "reexec": o.reexec,
        "outcome": p.outcome,
        "fuel": p.usage.fuel,
        "node": p.node.public_key,
        "peer_id": receipt::peer_id(&node).map(|id| id.to_string()),
        "job_id": p.job.id,
    })
    .to_string())
}
