//! `phase node` (the job node on an ordinary Linux host, not PID 1: the same host, executor
//! and policy as a booted node, printing the same `PHASE-EVENT` lines) and
//! `phase job run --node`/`--discover` (submit a job over the network, verify the receipt;
//! its options are parsed in `cli::job`).

use super::capability::{self, Capability, Found, Need};
use super::identity::Identity;
use super::node::NodeSetup;
use super::submit::{self, Job, Nonces, Target};
use crate::cli::job::{JobRun, Where};
use crate::cli::{parsed, positive, Args, Parsed};
use crate::discover::dht;
use crate::events::EventLog;
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
  free slots change, withdrawn at SIGTERM), for phase job run --discover; listening on a
  LAN address it announces itself by mDNS (_phase-node._tcp, TXT peer=<peer id>) and adds
  the nodes it sees there to its DHT routing table.";

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
        connected: Default::default(),
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

/// The requester key: a file (created if missing) or a fresh one.
pub fn requester_key(path: Option<&std::path::Path>) -> Result<libp2p::identity::Keypair, String> {
    match path {
        Some(p) => Identity::Persistent(p.into()),
        None => Identity::Ephemeral,
    }
    .load()
    .map_err(|e| format!("requester key: {e}"))
}

/// `phase job run --node ...` or `--discover`: the job's exit status, or 1 if no node ran it.
pub fn run_remote(o: &JobRun) -> Result<i32, String> {
    runtime()?.block_on(submit_job(o))
}

async fn submit_job(o: &JobRun) -> Result<i32, String> {
    let started = std::time::Instant::now();
    let mut targets = match &o.on {
        Where::Nodes(nodes) => nodes
            .iter()
            .map(Target::parse)
            .collect::<Result<Vec<_>, _>>()?,
        _ => Vec::new(),
    };
    let module_path = &o.module;
    let module =
        std::fs::read(module_path).map_err(|e| format!("{}: {e}", module_path.display()))?;
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
    let job = Job {
        id: o.job.id.clone().unwrap_or_else(|| "job".into()),
        module,
        args: o.job.args.clone(),
        env: o.job.env.clone(),
        stdin,
        limits: o.limits,
    };
    let kp = requester_key(o.key.as_deref())?;
    let signer = crate::node::receipt::node_signer(&kp).ok_or("requester key is not ed25519")?;
    let mut nonces = Nonces::new()?;
    let mut discovered = None;
    let host = if let Where::Discover(d) = &o.on {
        let mut need = d.need.clone().unwrap_or_default();
        need.memory_mib = need
            .memory_mib
            .max(job.limits.memory_bytes.div_ceil(1 << 20));
        let file = d.bootstrap_file.clone().or_else(|| {
            let f = PathBuf::from(crate::boot::discover::BOOTSTRAP_PATH);
            (d.bootstrap.is_empty() && f.exists()).then_some(f)
        });
        let bootstrap = bootstrap_list(d.bootstrap.clone(), file.as_deref())?;
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
            if discovered.is_some() {
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
    let bootstrap = if bootstrap.is_empty() {
        // No list: a node on the LAN to join through.
        let seen = tokio::task::spawn_blocking(super::mdns::browse)
            .await
            .map_err(|e| format!("mdns: {e}"))??;
        if seen.is_empty() {
            return Err(format!(
                "--discover needs a DHT node to join: --bootstrap MULTIADDR, --bootstrap-file \
                 FILE, {} or a node announced on the LAN (mDNS {}): none",
                crate::boot::discover::BOOTSTRAP_PATH,
                super::mdns::SERVICE
            ));
        }
        seen
    } else {
        bootstrap
    };
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
