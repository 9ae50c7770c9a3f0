//! `phase node` (the job node on an ordinary Linux host, not PID 1: the same host, executor
//! and policy as a booted node, printing the same `PHASE-EVENT` lines) and
//! `phase job run --node` (submit a job over the network, verify the receipt).

use super::capability::{self, Capability, Found, Need};
use super::identity::Identity;
use super::node::NodeSetup;
use super::submit::{self, Job, Nonces, Target};
use crate::cli::{parsed, positive, Args, Parsed};
use crate::discover::dht;
use crate::events::EventLog;
use crate::node::job_cli::DEFAULT_LIMITS;
use libp2p::Multiaddr;
use phase_release::hex;
use phase_release::receipt::Outcome;
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

pub const NODE_USAGE: &str = "\
Usage: phase node [OPTIONS]
       phase node bench [OPTIONS]

Commands:
    bench                          the job protocol's loopback figures (make bench)

  Runs a job node on this host (not PID 1) until SIGTERM/SIGINT: one libp2p host
  (Kademlia, identify, ping, the job protocol /phase/job/1 over TCP + Noise + Yamux) and the
  WASM executor. Prints PHASE-EVENT lines: node.ready (peer_id, listen addresses ready for
  --node and --bootstrap, peers), then job.start and job.done for every request.
  --listen MULTIADDR     where to listen (repeatable; default /ip4/0.0.0.0/tcp/4001)
  --state-dir DIR        node state (default /var/lib/phase): DIR/node.key, DIR/cache,
                         DIR/node.json (the policy override)
  --key FILE             node key (default DIR/node.key, created if missing, mode 0600)
  --ephemeral            a fresh key in memory only (as a private-mode node)
  --bootstrap MULTIADDR  a peer to join the DHT through (repeatable; ends in /p2p/<id>)
  --bootstrap-file FILE  one bootstrap multiaddr per line (# comments)
  --config FILE          admission policy (default DIR/node.json, else /etc/phase/node.json,
                         else open with a rate of 20 jobs burst, 10/s per requester);
                         docs/jobs.md describes the file
  --workers N            jobs run at once (default 2); --queue N  jobs waiting (default 16)
  --max-memory-mib N     the largest job memory admitted (default 256)
  Unless --ephemeral, the node publishes its capability record in the DHT (arch, WASM
  target, CPUs, largest job memory, free slots; signed by the node key, re-signed as its
  free slots change, withdrawn at SIGTERM), for phase job run --discover.";

pub const RUN_USAGE: &str = "\
Usage: phase job run --node MULTIADDR [--node MULTIADDR]... MODULE.wasm [OPTIONS] [-- ARGS...]
       phase job run --discover [--need LIST] [--bootstrap MULTIADDR]... MODULE.wasm ...
  Sends the job to the first node (its address ends in /p2p/<peer id>), signed with the
  requester key; if that node cannot be reached, dies mid-job, refuses, or answers with a
  receipt that does not verify, the next node is tried. With --discover the nodes are found
  in the DHT by their signed capability records and ranked (most free slots, then most
  CPUs); the node that ran the job is printed to stderr. stdin is piped to the job; its
  stdout/stderr are printed; phase exits with the job's exit code (125 if it did not exit:
  trap, out_of_fuel, timeout, memory_limit, output_truncated; 126 for invalid_module), or 1
  if no node ran it. The receipt is verified against the dialled peer id's key.
  --key FILE             requester key (created if missing; default: a fresh key per run)
  --receipt FILE         write the verified receipt (DSSE envelope) to FILE
  --job-id ID            the job's name (default: job)
  --env K=V              environment variable for the job (repeatable)
  --fuel N  --memory-bytes N  --timeout-ms N  --stdout-bytes N  --stderr-bytes N
                         limits (defaults: 10^10 fuel, 64 MiB, 10000 ms, 1 MiB, 64 KiB)
  --summary              print one JSON line to stderr at the end: verified, node, peer_id,
                         outcome, attempts (each node left: node, reason, ms), ms, and
                         with --discover: discovered (fit, passed and rejected nodes)
  --discover             find nodes by capability in the DHT instead of --node
  --need LIST            what the node must offer, comma-separated: wasm[=TARGET],
                         arch=A, cpus=N, memory=MIB, slots=N (default: this arch,
                         wasm32-wasip1, one free slot; memory at least --memory-bytes)
  --bootstrap MULTIADDR  a DHT node to join through (repeatable; ends in /p2p/<id>)
  --bootstrap-file FILE  one bootstrap multiaddr per line (default
                         /etc/phase/bootstrap-peers when it exists)";

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))
}

#[derive(Default)]
struct NodeOpts {
    listen: Vec<Multiaddr>,
    state_dir: Option<PathBuf>,
    key: Option<PathBuf>,
    ephemeral: bool,
    bootstrap: Vec<Multiaddr>,
    bootstrap_file: Option<PathBuf>,
    config: Option<PathBuf>,
    workers: Option<usize>,
    queue: Option<usize>,
    max_memory_mib: Option<u64>,
}

fn parse_node(args: Args) -> Result<Parsed<NodeOpts>, lexopt::Error> {
    use lexopt::prelude::*;
    let mut o = NodeOpts::default();
    let mut p = lexopt::Parser::from_args(args);
    while let Some(arg) = p.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Parsed::Help),
            Long("ephemeral") => o.ephemeral = true,
            Long("listen") => o.listen.push(p.value()?.parse()?),
            Long("state-dir") => o.state_dir = Some(p.value()?.into()),
            Long("key") => o.key = Some(p.value()?.into()),
            Long("bootstrap") => o.bootstrap.push(p.value()?.parse()?),
            Long("bootstrap-file") => o.bootstrap_file = Some(p.value()?.into()),
            Long("config") => o.config = Some(p.value()?.into()),
            Long("workers") => o.workers = Some(p.value()?.parse_with(positive::<usize>)?),
            Long("queue") => o.queue = Some(p.value()?.parse()?),
            Long("max-memory-mib") => {
                o.max_memory_mib = Some(p.value()?.parse_with(positive::<u64>)?)
            }
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(Parsed::Run(o))
}

/// `phase node ...`
pub fn node(args: Args) -> i32 {
    if args.first().is_some_and(|a| a == "bench") {
        return super::bench::run(args.into_iter().skip(1).collect());
    }
    parsed("node", NODE_USAGE, parse_node(args), |o| {
        crate::log::init();
        match runtime().and_then(|rt| rt.block_on(run_node(o))) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("phase node: {e}");
                1
            }
        }
    })
}

async fn run_node(o: NodeOpts) -> Result<(), String> {
    let state_dir = o.state_dir.unwrap_or_else(|| "/var/lib/phase".into());
    let identity = match (&o.key, o.ephemeral) {
        (_, true) => Identity::Ephemeral,
        (Some(k), false) => Identity::Persistent(k.clone()),
        (None, false) => Identity::for_state(&state_dir, false),
    };
    let bootstrap = bootstrap_list(o.bootstrap, o.bootstrap_file.as_deref())?;
    let listen = if o.listen.is_empty() {
        vec![Multiaddr::from(std::net::Ipv4Addr::UNSPECIFIED)
            .with(libp2p::multiaddr::Protocol::Tcp(4001))]
    } else {
        o.listen
    };
    let setup = NodeSetup {
        identity,
        state_dir,
        config: o.config,
        listen,
        bootstrap,
        workers: o.workers,
        queue: o.queue,
        disk_cache: !o.ephemeral,
        announce: !o.ephemeral,
        max_memory_bytes: o.max_memory_mib.map(|m| m << 20),
    };
    let host = super::node::start(setup, Arc::new(EventLog::new()))
        .await
        .map_err(|e| format!("{} ({e})", e.reason()))?;
    wait_for_signal().await?;
    host.shutdown().await;
    Ok(())
}

/// `given` plus the file's addresses.
fn bootstrap_list(
    mut given: Vec<Multiaddr>,
    file: Option<&std::path::Path>,
) -> Result<Vec<Multiaddr>, String> {
    if let Some(f) = file {
        let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
        given.extend(
            dht::parse_bootstrap(&text)
                .map_err(|(line, e)| format!("{}:{line}: {e}", f.display()))?,
        );
    }
    Ok(given)
}

async fn wait_for_signal() -> Result<(), String> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM: {e}"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT: {e}"))?;
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    Ok(())
}

#[derive(Default)]
struct RunOpts {
    nodes: Vec<Multiaddr>,
    module: Option<PathBuf>,
    key: Option<PathBuf>,
    receipt: Option<PathBuf>,
    job_id: Option<String>,
    env: Vec<(String, String)>,
    fuel: Option<u64>,
    memory_bytes: Option<u64>,
    timeout_ms: Option<u64>,
    stdout_bytes: Option<u64>,
    stderr_bytes: Option<u64>,
    summary: bool,
    discover: bool,
    need: Option<Need>,
    bootstrap: Vec<Multiaddr>,
    bootstrap_file: Option<PathBuf>,
    args: Vec<String>,
}

fn parse_run(args: Args) -> Result<Parsed<RunOpts>, lexopt::Error> {
    use lexopt::prelude::*;
    let mut o = RunOpts::default();
    let mut p = lexopt::Parser::from_args(args);
    loop {
        // Everything after `--` is the job's own ARGS.
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
            Long("summary") => o.summary = true,
            Long("node") => o.nodes.push(p.value()?.parse()?),
            Long("discover") => o.discover = true,
            Long("need") => o.need = Some(p.value()?.parse_with(Need::parse)?),
            Long("bootstrap") => o.bootstrap.push(p.value()?.parse()?),
            Long("bootstrap-file") => o.bootstrap_file = Some(p.value()?.into()),
            Long("key") => o.key = Some(p.value()?.into()),
            Long("receipt") => o.receipt = Some(p.value()?.into()),
            Long("job-id") => o.job_id = Some(p.value()?.string()?),
            Long("env") => {
                let v = p.value()?.string()?;
                let (k, val) = v
                    .split_once('=')
                    .ok_or_else(|| format!("--env {v:?}: expected K=V"))?;
                o.env.push((k.into(), val.into()));
            }
            Long("fuel") => o.fuel = Some(p.value()?.parse()?),
            Long("memory-bytes") => o.memory_bytes = Some(p.value()?.parse()?),
            Long("timeout-ms") => o.timeout_ms = Some(p.value()?.parse()?),
            Long("stdout-bytes") => o.stdout_bytes = Some(p.value()?.parse()?),
            Long("stderr-bytes") => o.stderr_bytes = Some(p.value()?.parse()?),
            Value(v) if o.module.is_none() => o.module = Some(v.into()),
            _ => return Err(arg.unexpected()),
        }
    }
    if o.nodes.is_empty() != o.discover || o.module.is_none() {
        return Err("--node or --discover (not both) and one MODULE are required".into());
    }
    Ok(Parsed::Run(o))
}

/// The requester key: a file (created if missing) or a fresh one.
pub fn requester_key(path: Option<&std::path::Path>) -> Result<libp2p::identity::Keypair, String> {
    match path {
        Some(p) => Identity::Persistent(p.into()),
        None => Identity::Ephemeral,
    }
    .load()
    .map_err(|e| format!("requester key: {e}"))
}

/// `phase job run --node ...` (args after `run`).
pub fn run_job(args: Args) -> i32 {
    parsed("job run", RUN_USAGE, parse_run(args), |o| {
        match runtime().and_then(|rt| rt.block_on(run_remote(o))) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("phase job run: {e}");
                1
            }
        }
    })
}

async fn run_remote(o: RunOpts) -> Result<i32, String> {
    let started = std::time::Instant::now();
    let mut targets = o
        .nodes
        .iter()
        .map(Target::parse)
        .collect::<Result<Vec<_>, _>>()?;
    let module_path = o.module.clone().unwrap_or_default();
    let module =
        std::fs::read(&module_path).map_err(|e| format!("{}: {e}", module_path.display()))?;
    if module.len() > super::wire::MAX_MODULE_BYTES {
        return Err(format!(
            "{}: larger than the protocol's {} bytes",
            module_path.display(),
            super::wire::MAX_MODULE_BYTES
        ));
    }
    let mut stdin = Vec::new();
    if !std::io::stdin().is_terminal() {
        std::io::stdin()
            .take(super::wire::MAX_INPUT_BYTES as u64 + 1)
            .read_to_end(&mut stdin)
            .map_err(|e| format!("stdin: {e}"))?;
    }
    let d = DEFAULT_LIMITS;
    let job = Job {
        id: o.job_id.clone().unwrap_or_else(|| "job".into()),
        module,
        args: o.args.clone(),
        env: o.env.clone(),
        stdin,
        limits: phase_release::receipt::Limits {
            memory_bytes: o.memory_bytes.unwrap_or(d.memory_bytes),
            fuel: o.fuel.unwrap_or(d.fuel),
            timeout_ms: o.timeout_ms.unwrap_or(d.timeout_ms),
            stdout_bytes: o.stdout_bytes.unwrap_or(d.stdout_bytes),
            stderr_bytes: o.stderr_bytes.unwrap_or(d.stderr_bytes),
        },
    };
    let kp = requester_key(o.key.as_deref())?;
    let signer = crate::node::receipt::node_signer(&kp).ok_or("requester key is not ed25519")?;
    let mut nonces = Nonces::new()?;
    let mut discovered = None;
    let host = if o.discover {
        let mut need = o.need.clone().unwrap_or_default();
        need.memory_mib = need
            .memory_mib
            .max(job.limits.memory_bytes.div_ceil(1 << 20));
        let file = o.bootstrap_file.clone().or_else(|| {
            let f = PathBuf::from(crate::boot::discover::BOOTSTRAP_PATH);
            (o.bootstrap.is_empty() && f.exists()).then_some(f)
        });
        let bootstrap = bootstrap_list(o.bootstrap.clone(), file.as_deref())?;
        let (host, found) = discover(kp, bootstrap, &need, &mut nonces).await?;
        targets = found.fit.iter().filter_map(target_of).collect();
        discovered = Some(found);
        host
    } else {
        submit::requester_host(kp)
            .await
            .map_err(|e| format!("{} ({e})", e.reason()))?
    };
    let result = submit::submit(&host, &targets, &job, &signer, &mut nonces, true).await;
    host.shutdown().await;
    let ms = started.elapsed().as_millis() as u64;
    let requester = hex::encode(&signer.public().bytes().unwrap_or_default());
    match result {
        Ok(v) => {
            let _ = std::io::stdout().write_all(&v.stdout);
            let _ = std::io::stdout().flush();
            let _ = std::io::stderr().write_all(&v.stderr);
            if let Some(path) = &o.receipt {
                std::fs::write(path, &v.receipt).map_err(|e| format!("{}: {e}", path.display()))?;
            }
            let t = &targets[v.target];
            if o.discover {
                eprintln!("phase job run: ran on {} ({})", t.peer, t.addr);
            }
            if o.summary {
                eprintln!(
                    "{}",
                    serde_json::json!({
                        "verified": true,
                        "node": t.addr.to_string(),
                        "peer_id": t.peer.to_string(),
                        "requester": requester,
                        "outcome": v.outcome,
                        "attempts": v.attempts,
                        "ms": ms,
                        "discovered": discovered.as_ref().map(found_json),
                    })
                );
            }
            Ok(match v.outcome {
                Outcome::Exit { code } => code.clamp(0, 255),
                Outcome::InvalidModule | Outcome::Refused { .. } => 126,
                _ => 125,
            })
        }
        Err(attempts) => {
            eprintln!(
                "{}",
                serde_json::json!({
                    "verified": false,
                    "requester": requester,
                    "attempts": attempts,
                    "ms": ms,
                    "discovered": discovered.as_ref().map(found_json),
                })
            );
            Ok(1)
        }
    }
}

/// Join the DHT through `bootstrap` and find the nodes that fit `need`, best first.
async fn discover(
    kp: libp2p::identity::Keypair,
    bootstrap: Vec<Multiaddr>,
    need: &Need,
    nonces: &mut Nonces,
) -> Result<(dht::Dht, Found), String> {
    if bootstrap.is_empty() {
        return Err(format!(
            "--discover needs a DHT node to join: --bootstrap MULTIADDR, --bootstrap-file \
             FILE or {}",
            crate::boot::discover::BOOTSTRAP_PATH
        ));
    }
    let mut cfg = dht::DhtConfig::new(kp);
    cfg.bootstrap = bootstrap;
    let host = dht::start(cfg)
        .await
        .map_err(|e| format!("{} ({e})", e.reason()))?;
    let found = async {
        host.bootstrap().await?;
        let seed = u64::from_str_radix(&nonces.next_hex()[..16], 16).unwrap_or(0);
        capability::find(&host, need, dht::now_unix(), seed).await
    }
    .await;
    match found {
        Ok(f) => Ok((host, f)),
        Err(e) => {
            host.shutdown().await;
            Err(format!("discover: {} ({e})", e.reason()))
        }
    }
}

/// Where to send a job for a node found by capability: its first address that is a
/// multiaddr of that node.
fn target_of(c: &Capability) -> Option<Target> {
    c.addrs
        .iter()
        .filter_map(|a| a.parse::<Multiaddr>().ok())
        .find_map(|a| Target::parse(&a).ok())
}

fn found_json(f: &Found) -> serde_json::Value {
    serde_json::json!({
        "providers": f.providers,
        "fit": f.fit.iter().map(|c| serde_json::json!({
            "node": c.node,
            "addr": c.addrs.first(),
            "cpus": c.cpus,
            "memory_mib": c.memory_mib,
            "free_slots": c.free_slots,
        })).collect::<Vec<_>>(),
        "passed": f.passed,
        "rejected": f.rejected,
    })
}
