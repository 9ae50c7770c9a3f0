//! `phase job run --local` (run a job in-process, print its output, write its receipt) and
//! `phase receipt verify` (check a receipt against the module, input and output; with
//! `--reexec`, run the job again and compare).

use super::executor::{Executor, ExecutorConfig, Finished, JobSpec};
use super::receipt::{self, JobRequest};
use crate::cli::{parsed, subcommand, usage_error, Args, Parsed, Sub};
use phase_release::hex;
use phase_release::receipt::{self as doc, Limits, Outcome, OutputCheck};
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const JOB_SUBS: &[Sub] = &[
    Sub {
        name: "run",
        synopsis: "--local|--node MULTIADDR... MODULE.wasm [OPTIONS] [-- ARGS...]",
        about: "run a job here (--local) or on nodes (--node); print its output; receipt",
        run: run_job,
    },
    Sub {
        name: "bench",
        synopsis: "JOBS_DIR [NATIVE_SIEVE]",
        about: "the executor's figures for make bench",
        run: super::bench::run,
    },
];

const RECEIPT_SUBS: &[Sub] = &[Sub {
    name: "verify",
    synopsis: "RECEIPT --module MODULE.wasm [OPTIONS] [-- ARGS...]",
    about: "check a receipt's signature, module, input and output",
    run: verify_cmd,
}];

pub const JOB_USAGE: &str = "\
Usage: phase job run --local MODULE.wasm [OPTIONS] [-- ARGS...]
  Runs the job in this process: stdin is piped to it, its stdout/stderr are printed, and
  phase exits with its exit code (125 if it did not exit: trap, out_of_fuel, timeout,
  memory_limit, output_truncated; 126 if it was refused or the module is invalid).
  --state-dir DIR        node state (default /var/lib/phase): compile cache in DIR/cache,
                         node key DIR/node.key (created if missing)
  --key FILE             node key file (default DIR/node.key)
  --receipt FILE         write the signed receipt (DSSE envelope) to FILE
  --env K=V              environment variable for the job (repeatable)
  --job-id ID  --nonce HEX  --requester HEX
                         request identity bound into the receipt (defaults: local, a
                         random nonce, none)
  --seed HEX             32-byte seed of the job's random source (default: SHA-256 of nonce)
  --clock-start-ns N     first reading of the job's virtual clock (default: now)
  --fuel N  --memory-bytes N  --timeout-ms N  --stdout-bytes N  --stderr-bytes N
                         limits (defaults: 10^10 fuel, 64 MiB, 10000 ms, 1 MiB, 64 KiB)
  --summary              print one JSON line to stderr at the end: outcome, fuel,
                         wall_us, memory_peak_bytes, compiled (fresh|disk_cache|warm|no)";

pub const RECEIPT_USAGE: &str = "\
Usage: phase receipt verify RECEIPT --module MODULE.wasm [OPTIONS] [-- ARGS...]
  Checks the receipt's DSSE signature (by the node key it names, or --node) and that it
  is about this module, these ARGS, env and stdin, and this output. Job identity and
  limits not given are taken from the receipt. Prints one JSON line; exit 0 if verified,
  1 if not (the reason is printed), 2 on a usage error.
  --stdin FILE  --stdout FILE  --stderr FILE
                         the input given and the output received (stdin default: empty;
                         outputs not given are not compared)
  --env K=V              the job's environment (repeatable)
  --node HEX             the node public key the job was sent to
  --job-id ID  --nonce HEX  --requester HEX
  --reexec               run the job again here (same seed, clock and limits) and require
                         the same outcome, fuel and output digests
  --state-dir DIR        for --reexec's compile cache (default /var/lib/phase)";

/// Exit status when the job did not exit by itself.
const EXIT_STOPPED: i32 = 125;
/// Exit status when the job was refused or its module invalid.
const EXIT_NOT_RUN: i32 = 126;

/// Default limits of `phase job run --local`.
pub const DEFAULT_LIMITS: Limits = Limits {
    memory_bytes: 64 << 20,
    fuel: 10_000_000_000,
    timeout_ms: 10_000,
    stdout_bytes: 1 << 20,
    stderr_bytes: 64 << 10,
};

#[derive(Debug, Default)]
struct Opts {
    module: Option<PathBuf>,
    local: bool,
    state_dir: Option<PathBuf>,
    key: Option<PathBuf>,
    receipt: Option<PathBuf>,
    env: Vec<(String, String)>,
    job_id: Option<String>,
    nonce: Option<String>,
    requester: Option<String>,
    seed: Option<[u8; 32]>,
    clock_start_ns: Option<u64>,
    limits: LimitOpts,
    summary: bool,
    stdin: Option<PathBuf>,
    stdout: Option<PathBuf>,
    stderr: Option<PathBuf>,
    node: Option<[u8; 32]>,
    reexec: bool,
    args: Vec<String>,
    positional: Vec<String>,
}

#[derive(Debug, Default)]
struct LimitOpts {
    fuel: Option<u64>,
    memory_bytes: Option<u64>,
    timeout_ms: Option<u64>,
    stdout_bytes: Option<u64>,
    stderr_bytes: Option<u64>,
}

fn parse(args: Args) -> Result<Parsed<Opts>, lexopt::Error> {
    use lexopt::prelude::*;
    let mut o = Opts::default();
    let mut p = lexopt::Parser::from_args(args);
    loop {
        // Everything after `--` is the job's own ARGS, kept apart from positionals.
        if let Some(mut raw) = p.try_raw_args() {
            if raw.peek().is_some_and(|a| a == "--") {
                raw.next();
                o.args = raw
                    .map(|a| a.into_string().map_err(lexopt::Error::NonUnicodeValue))
                    .collect::<Result<_, _>>()?;
                break;
            }
        }
        let Some(arg) = p.next()? else { break };
        match arg {
            Short('h') | Long("help") => return Ok(Parsed::Help),
            Long("local") => o.local = true,
            Long("summary") => o.summary = true,
            Long("reexec") => o.reexec = true,
            Long("module") => o.module = Some(p.value()?.into()),
            Long("state-dir") => o.state_dir = Some(p.value()?.into()),
            Long("key") => o.key = Some(p.value()?.into()),
            Long("receipt") => o.receipt = Some(p.value()?.into()),
            Long("env") => {
                let v = p.value()?.string()?;
                let (k, val) = v
                    .split_once('=')
                    .ok_or_else(|| format!("--env {v:?}: expected K=V"))?;
                o.env.push((k.into(), val.into()));
            }
            Long("job-id") => o.job_id = Some(p.value()?.string()?),
            Long("nonce") => o.nonce = Some(p.value()?.string()?),
            Long("requester") => o.requester = Some(hex::encode(&p.value()?.parse_with(key32)?)),
            Long("seed") => o.seed = Some(p.value()?.parse_with(key32)?),
            Long("clock-start-ns") => o.clock_start_ns = Some(p.value()?.parse()?),
            Long("fuel") => o.limits.fuel = Some(p.value()?.parse()?),
            Long("memory-bytes") => o.limits.memory_bytes = Some(p.value()?.parse()?),
            Long("timeout-ms") => o.limits.timeout_ms = Some(p.value()?.parse()?),
            Long("stdout-bytes") => o.limits.stdout_bytes = Some(p.value()?.parse()?),
            Long("stderr-bytes") => o.limits.stderr_bytes = Some(p.value()?.parse()?),
            Long("stdin") => o.stdin = Some(p.value()?.into()),
            Long("stdout") => o.stdout = Some(p.value()?.into()),
            Long("stderr") => o.stderr = Some(p.value()?.into()),
            Long("node") => o.node = Some(p.value()?.parse_with(key32)?),
            Value(v) => o.positional.push(v.string()?),
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(Parsed::Run(o))
}

/// A 32-byte value in hex (keys, seeds).
fn key32(v: &str) -> Result<[u8; 32], String> {
    hex::decode::<32>(v).ok_or_else(|| format!("{v:?} is not 32 bytes of hex"))
}

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

/// `phase job ...`
pub fn job(args: Args) -> i32 {
    subcommand(
        "job",
        "WASM jobs (wasm32-wasip1) with every limit enforced, and their signed receipts\n\
         (docs/jobs.md).",
        JOB_SUBS,
        args,
    )
}

/// `phase receipt ...`
pub fn receipt(args: Args) -> i32 {
    subcommand(
        "receipt",
        "Job receipts: DSSE envelopes signed by the node that ran the job (docs/jobs.md).",
        RECEIPT_SUBS,
        args,
    )
}

/// `phase job run`: `--node` sends the job over the network (src/p2p/node_cli.rs).
fn run_job(args: Args) -> i32 {
    if args.iter().any(|a| a == "--node" || a == "--discover") {
        return crate::p2p::node_cli::run_job(args);
    }
    let usage = format!("{JOB_USAGE}\n\n{}", crate::p2p::node_cli::RUN_USAGE);
    parsed("job run", &usage, parse(args), |o| {
        if !(o.local && o.positional.len() == 1) {
            return usage_error(
                "job run",
                &usage,
                "--local or --node, and one MODULE, are required",
            );
        }
        match run_local(&o) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("phase job run: {e}");
                1
            }
        }
    })
}

fn run_local(o: &Opts) -> Result<i32, String> {
    let state_dir = o
        .state_dir
        .clone()
        .unwrap_or_else(|| "/var/lib/phase".into());
    let policy = super::executor::limits::NodePolicy::default();
    let module_path = PathBuf::from(&o.positional[0]);
    let module = read_limited(&module_path, policy.max_module_bytes)?;
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
    let nonce = match &o.nonce {
        Some(n) => n.clone(),
        None => random_hex16()?,
    };
    let req = JobRequest {
        id: o.job_id.clone().unwrap_or_else(|| "local".into()),
        nonce,
        requester: o.requester.clone(),
    };
    let d = DEFAULT_LIMITS;
    let l = &o.limits;
    let spec = JobSpec {
        module: module.into(),
        args: o.args.clone(),
        env: o.env.clone(),
        stdin,
        limits: Limits {
            memory_bytes: l.memory_bytes.unwrap_or(d.memory_bytes),
            fuel: l.fuel.unwrap_or(d.fuel),
            timeout_ms: l.timeout_ms.unwrap_or(d.timeout_ms),
            stdout_bytes: l.stdout_bytes.unwrap_or(d.stdout_bytes),
            stderr_bytes: l.stderr_bytes.unwrap_or(d.stderr_bytes),
        },
        seed: o
            .seed
            .unwrap_or_else(|| phase_release::sha256(req.nonce.as_bytes())),
        clock_start_ns: o.clock_start_ns.unwrap_or_else(|| {
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

/// `phase receipt verify`
fn verify_cmd(args: Args) -> i32 {
    parsed("receipt verify", RECEIPT_USAGE, parse(args), |o| {
        if !(o.positional.len() == 1 && o.module.is_some()) {
            return usage_error(
                "receipt verify",
                RECEIPT_USAGE,
                "one RECEIPT and --module are required",
            );
        }
        match verify(&o) {
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
    })
}

type Failure = (&'static str, String);

fn verify(o: &Opts) -> Result<String, Failure> {
    let io = |e: String| ("io", e);
    let policy = super::executor::limits::NodePolicy::default();
    let bytes = read_limited(Path::new(&o.positional[0]), doc::MAX_RECEIPT_BYTES).map_err(io)?;
    // What the receipt claims, signature checked: fills in what the caller did not give.
    let claimed =
        doc::open_receipt(&bytes, o.node.as_ref()).map_err(|e| (e.reason(), e.to_string()))?;
    let p = &claimed.predicate;
    let module_path = o.module.clone().unwrap_or_default();
    let module = read_limited(&module_path, policy.max_module_bytes).map_err(io)?;
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
        id: o.job_id.clone().unwrap_or_else(|| p.job.id.clone()),
        nonce: o.nonce.clone().unwrap_or_else(|| p.job.nonce.clone()),
        requester: o.requester.clone().or_else(|| p.job.requester.clone()),
    };
    let spec = JobSpec {
        module: module.into(),
        args: o.args.clone(),
        env: o.env.clone(),
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
