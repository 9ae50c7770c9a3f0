//! `phase job`: its options, parsed once here, and the dispatch to where a job runs: in this
//! process (`node::job_cli`), or on the nodes named or found by capability (`p2p::node_cli`).
//!
//! What describes a job (its arguments after `--`, environment, identity) means the same in
//! `job run` and `receipt verify` (receipt.rs) and is read by one function, [`JobDesc::take`];
//! the limits by [`LimitOpts::take`]. `job run` yields one [`JobRun`] whose [`Where`] says where it runs;
//! options that only make sense in one place are refused elsewhere by name.

use super::{parsed, subcommand, Args, Parsed, Sub};
use crate::p2p::capability::Need;
use libp2p::Multiaddr;
use phase_release::hex;
use phase_release::receipt::Limits;
use std::path::PathBuf;

const JOB_SUBS: &[Sub] = &[
    Sub {
        name: "run",
        synopsis: "--local|--node MULTIADDR...|--discover MODULE.wasm [OPTIONS] [-- ARGS...]",
        about: "run a job here (--local), on nodes (--node) or found ones (--discover)",
        run: run_job,
    },
    Sub {
        name: "bench",
        synopsis: "JOBS_DIR [NATIVE_SIEVE]",
        about: "the executor's figures for make bench",
        run: crate::node::bench::run,
    },
];

pub const RUN_USAGE: &str = "\
Usage: phase job run --local MODULE.wasm [OPTIONS] [-- ARGS...]
       phase job run --node MULTIADDR [--node MULTIADDR]... MODULE.wasm [OPTIONS] [-- ARGS...]
       phase job run --discover [--need LIST] [--bootstrap MULTIADDR]... MODULE.wasm [OPTIONS]

Runs a WASM job (wasm32-wasip1) with every limit enforced: stdin is piped to it, its
stdout/stderr are printed, and phase exits with its exit code (125 if it did not exit: trap,
out_of_fuel, timeout, memory_limit, output_truncated; 126 if it was refused or the module is
invalid; 1 if no node ran it).
Where it runs:
  --local                in this process, the receipt signed with the node key
  --node MULTIADDR       on this node (its address ends in /p2p/<peer id>; repeatable): the
                         job is signed with the requester key and sent to the first node; if
                         it cannot be reached, dies mid-job, refuses, or answers with a
                         receipt that does not verify against the dialled peer id, the next
                         node is tried
  --discover             on nodes found in the DHT by their signed capability records,
                         ranked (most free slots, then most CPUs), with the same failover;
                         the node that ran the job is printed to stderr
The job:
  --env K=V              environment variable for the job (repeatable)
  --job-id ID            the job's name (default: local with --local, job with --node)
  --fuel N  --memory-bytes N  --timeout-ms N  --stdout-bytes N  --stderr-bytes N
                         limits (defaults: 10^10 fuel, 64 MiB, 10000 ms, 1 MiB, 64 KiB)
  --key FILE             --local: the node key (default DIR/node.key, created if missing);
                         --node: the requester key (created if missing; default: a fresh
                         key per run)
  --receipt FILE         write the signed (with --node: verified) receipt, a DSSE envelope
  --summary              print one JSON line to stderr at the end; --local: outcome, fuel,
                         wall_us, memory_peak_bytes, compiled (fresh|disk_cache|warm|no);
                         --node: verified, node, peer_id, outcome, attempts (each node
                         left: node, reason, ms), ms; with --discover also discovered (fit,
                         passed and rejected nodes)
Only with --local:
  --state-dir DIR        node state (default /var/lib/phase): compile cache in DIR/cache,
                         node key DIR/node.key
  --nonce HEX  --requester HEX
                         request identity bound into the receipt (defaults: a random nonce,
                         none)
  --seed HEX             32-byte seed of the job's random source (default: SHA-256 of nonce)
  --clock-start-ns N     first reading of the job's virtual clock (default: now)
Only with --discover:
  --need LIST            what the node must offer, comma-separated: wasm[=TARGET], arch=A,
                         cpus=N, memory=MIB, slots=N (default: this arch, wasm32-wasip1,
                         one free slot; memory at least --memory-bytes)
  --bootstrap MULTIADDR  a DHT node to join through (repeatable; ends in /p2p/<id>)
  --bootstrap-file FILE  one bootstrap multiaddr per line (default
                         /etc/phase/bootstrap-peers when it exists, else the nodes announced
                         on the LAN by mDNS, _phase-node._tcp)";

/// Default limits of `phase job run`.
pub const DEFAULT_LIMITS: Limits = Limits {
    memory_bytes: 64 << 20,
    fuel: 10_000_000_000,
    timeout_ms: 10_000,
    stdout_bytes: 1 << 20,
    stderr_bytes: 64 << 10,
};

/// What describes a job, the same wherever it runs and in its receipt.
#[derive(Debug, Default, PartialEq)]
pub struct JobDesc {
    /// The job's own arguments (everything after `--`).
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub id: Option<String>,
    pub nonce: Option<String>,
    /// The requester's public key, hex.
    pub requester: Option<String>,
}

impl JobDesc {
    /// Reads the value of `--NAME` if it is one of these options; false if it is not.
    pub(super) fn take(
        &mut self,
        name: &str,
        p: &mut lexopt::Parser,
    ) -> Result<bool, lexopt::Error> {
        use lexopt::ValueExt;
        match name {
            "env" => {
                let v = p.value()?.string()?;
                let (k, val) = v
                    .split_once('=')
                    .ok_or_else(|| format!("--env {v:?}: expected K=V"))?;
                self.env.push((k.into(), val.into()));
            }
            "job-id" => self.id = Some(p.value()?.string()?),
            "nonce" => self.nonce = Some(p.value()?.string()?),
            "requester" => self.requester = Some(hex::encode(&p.value()?.parse_with(key32)?)),
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// Limits given on the command line; the rest are [`DEFAULT_LIMITS`].
#[derive(Debug, Default, PartialEq)]
struct LimitOpts {
    fuel: Option<u64>,
    memory_bytes: Option<u64>,
    timeout_ms: Option<u64>,
    stdout_bytes: Option<u64>,
    stderr_bytes: Option<u64>,
}

impl LimitOpts {
    fn take(&mut self, name: &str, p: &mut lexopt::Parser) -> Result<bool, lexopt::Error> {
        use lexopt::ValueExt;
        let slot = match name {
            "fuel" => &mut self.fuel,
            "memory-bytes" => &mut self.memory_bytes,
            "timeout-ms" => &mut self.timeout_ms,
            "stdout-bytes" => &mut self.stdout_bytes,
            "stderr-bytes" => &mut self.stderr_bytes,
            _ => return Ok(false),
        };
        *slot = Some(p.value()?.parse()?);
        Ok(true)
    }

    fn or_defaults(&self) -> Limits {
        let d = DEFAULT_LIMITS;
        Limits {
            memory_bytes: self.memory_bytes.unwrap_or(d.memory_bytes),
            fuel: self.fuel.unwrap_or(d.fuel),
            timeout_ms: self.timeout_ms.unwrap_or(d.timeout_ms),
            stdout_bytes: self.stdout_bytes.unwrap_or(d.stdout_bytes),
            stderr_bytes: self.stderr_bytes.unwrap_or(d.stderr_bytes),
        }
    }
}

/// Where `phase job run` runs the job.
#[derive(Debug, PartialEq)]
pub enum Where {
    /// In this process (`--local`).
    Local(Local),
    /// On the first of these nodes that answers with a receipt that verifies (`--node`).
    Nodes(Vec<Multiaddr>),
    /// On nodes found in the DHT by capability, best first (`--discover`).
    Discover(Discover),
}

/// What only `--discover` takes.
#[derive(Debug, Default, PartialEq)]
pub struct Discover {
    pub need: Option<Need>,
    pub bootstrap: Vec<Multiaddr>,
    pub bootstrap_file: Option<PathBuf>,
}

/// What only a local run takes.
#[derive(Debug, Default, PartialEq)]
pub struct Local {
    pub state_dir: Option<PathBuf>,
    pub seed: Option<[u8; 32]>,
    pub clock_start_ns: Option<u64>,
}

/// `phase job run`, parsed.
#[derive(Debug, PartialEq)]
pub struct JobRun {
    pub module: PathBuf,
    pub job: JobDesc,
    pub limits: Limits,
    /// The node key (local) or the requester key (nodes).
    pub key: Option<PathBuf>,
    pub receipt: Option<PathBuf>,
    pub summary: bool,
    pub on: Where,
}

/// The options only `--local` takes (a node picks or derives these itself).
const LOCAL_ONLY: &[&str] = &["state-dir", "nonce", "requester", "seed", "clock-start-ns"];
/// The options only `--discover` takes.
const DISCOVER_ONLY: &[&str] = &["need", "bootstrap", "bootstrap-file"];

/// Everything after a `--` at this point of the command line: the job's own arguments.
pub(super) fn job_args(p: &mut lexopt::Parser) -> Result<Option<Vec<String>>, lexopt::Error> {
    let Some(mut raw) = p.try_raw_args() else {
        return Ok(None);
    };
    if raw.peek().is_none_or(|a| a != "--") {
        return Ok(None);
    }
    raw.next();
    raw.map(|a| a.into_string().map_err(lexopt::Error::NonUnicodeValue))
        .collect::<Result<_, _>>()
        .map(Some)
}

/// A 32-byte value in hex (keys, seeds).
pub(super) fn key32(v: &str) -> Result<[u8; 32], String> {
    hex::decode::<32>(v).ok_or_else(|| format!("{v:?} is not 32 bytes of hex"))
}

pub fn parse_run(args: Args) -> Result<Parsed<JobRun>, lexopt::Error> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let (mut job, mut limits, mut local) =
        (JobDesc::default(), LimitOpts::default(), Local::default());
    let (mut module, mut key, mut receipt) = (None, None, None);
    let (mut is_local, mut nodes, mut summary) = (false, Vec::new(), false);
    let (mut is_discover, mut discover) = (false, Discover::default());
    // The first option only a local (discovering) run takes, to refuse it by name elsewhere.
    let (mut local_only, mut discover_only) = (None, None);
    loop {
        if let Some(a) = job_args(&mut p)? {
            job.args = a;
            break;
        }
        let Some(arg) = p.next()? else { break };
        if let Long(name) = &arg {
            if local_only.is_none() && LOCAL_ONLY.contains(name) {
                local_only = Some(name.to_string());
            }
            if discover_only.is_none() && DISCOVER_ONLY.contains(name) {
                discover_only = Some(name.to_string());
            }
        }
        match arg {
            Short('h') | Long("help") => return Ok(Parsed::Help),
            Long("local") => is_local = true,
            Long("node") => nodes.push(p.value()?.parse::<Multiaddr>()?),
            Long("discover") => is_discover = true,
            Long("need") => discover.need = Some(p.value()?.parse_with(Need::parse)?),
            Long("bootstrap") => discover.bootstrap.push(p.value()?.parse()?),
            Long("bootstrap-file") => discover.bootstrap_file = Some(PathBuf::from(p.value()?)),
            Long("summary") => summary = true,
            Long("key") => key = Some(PathBuf::from(p.value()?)),
            Long("receipt") => receipt = Some(PathBuf::from(p.value()?)),
            Long("state-dir") => local.state_dir = Some(PathBuf::from(p.value()?)),
            Long("seed") => local.seed = Some(p.value()?.parse_with(key32)?),
            Long("clock-start-ns") => local.clock_start_ns = Some(p.value()?.parse()?),
            Long(name) => {
                let name = name.to_owned();
                if !(job.take(&name, &mut p)? || limits.take(&name, &mut p)?) {
                    return Err(lexopt::Error::UnexpectedOption(format!("--{name}")));
                }
            }
            Value(v) if module.is_none() => module = Some(PathBuf::from(v)),
            _ => return Err(arg.unexpected()),
        }
    }
    let module = module.ok_or("one MODULE.wasm is required")?;
    let on = match (is_local, !nodes.is_empty(), is_discover) {
        (true, false, false) => Where::Local(local),
        (false, true, false) => Where::Nodes(nodes),
        (false, false, true) => Where::Discover(discover),
        (false, false, false) => {
            return Err("say where the job runs: --local, --node MULTIADDR or --discover".into())
        }
        _ => return Err("--local, --node and --discover exclude each other".into()),
    };
    let refused = match on {
        Where::Local(_) => discover_only.map(|n| (n, "--discover")),
        Where::Nodes(_) => local_only
            .map(|n| (n, "--local"))
            .or(discover_only.map(|n| (n, "--discover"))),
        Where::Discover(_) => local_only.map(|n| (n, "--local")),
    };
    if let Some((name, only)) = refused {
        return Err(format!("--{name} is only for {only}").into());
    }
    Ok(Parsed::Run(JobRun {
        module,
        job,
        limits: limits.or_defaults(),
        key,
        receipt,
        summary,
        on,
    }))
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

fn run_job(args: Args) -> i32 {
    parsed("job run", RUN_USAGE, parse_run(args), |o| {
        let ran = match &o.on {
            Where::Local(local) => crate::node::job_cli::run_local(&o, local),
            Where::Nodes(_) | Where::Discover(_) => crate::p2p::node_cli::run_remote(&o),
        };
        ran.unwrap_or_else(|e| {
            eprintln!("phase job run: {e}");
            1
        })
    })
}

#[cfg(test)]
mod tests;
