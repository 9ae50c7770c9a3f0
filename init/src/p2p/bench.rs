//! `phase node bench`: the job protocol's figures for `make bench`, over loopback in one
//! process (a node and a requester, each its own libp2p host): warm job latency (submit to
//! verified receipt on a reused connection, the module sent by digest) as median and p99 of N
//! jobs against the 1 ms goal; a fresh connection's first job (dial, Noise, Yamux, the
//! request, the verified receipt); jobs per second of the CPU-heavy job on one node; the DHT
//! capability lookup with 10 and 30 nodes (`capability::bench`).

use super::admission::{Admission, NodeConfig, Rate};
use super::serve::JobServer;
use super::submit::{self, Job, Nonces, Target};
use crate::cli::job::DEFAULT_LIMITS;
use crate::cli::{parsed, positive, Args, Parsed};
use crate::discover::dht::{self, Dht, DhtConfig};
use crate::node::executor::{Executor, ExecutorConfig};
use libp2p::multiaddr::Protocol;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

pub const USAGE: &str = "\
Usage: phase node bench [--jobs-dir DIR] [--warm N] [--fresh N] [--heavy N]
                        [--lookup-nodes N,N...] [--lookups N]
  Loopback figures of the job protocol, printed as one JSON line:
  warm_ms (median, p99 of N hello jobs, connection reused, module by digest; goal median
  <= 1 ms), fresh_ms (median of N first jobs on a new connection), heavy_jobs_per_s (N sieve
  jobs, two at a time on a node with two workers); then one line per --lookup-nodes
  count: the DHT capability lookup (providers of the offer key, each node's signed record
  read and verified, ranked) from a requester over that many nodes on loopback, median and
  p99 of --lookups lookups.
  --jobs-dir DIR  the example jobs (default out/jobs)   defaults: --warm 1000 --fresh 10
  --heavy 20 --lookup-nodes 10,30 --lookups 100";

/// The warm-latency goal.
pub const WARM_GOAL_MS: f64 = 1.0;

struct Opts {
    jobs_dir: PathBuf,
    warm: usize,
    fresh: usize,
    heavy: usize,
    lookup_nodes: Vec<usize>,
    lookups: usize,
}

fn parse(args: Args) -> Result<Parsed<Opts>, lexopt::Error> {
    use lexopt::prelude::*;
    let mut o = Opts {
        jobs_dir: "out/jobs".into(),
        warm: 1000,
        fresh: 10,
        heavy: 20,
        lookup_nodes: vec![10, 30],
        lookups: 100,
    };
    let mut p = lexopt::Parser::from_args(args);
    while let Some(arg) = p.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Parsed::Help),
            Long("jobs-dir") => o.jobs_dir = p.value()?.into(),
            Long("warm") => o.warm = p.value()?.parse_with(positive::<usize>)?,
            Long("fresh") => o.fresh = p.value()?.parse_with(positive::<usize>)?,
            Long("heavy") => o.heavy = p.value()?.parse_with(positive::<usize>)?,
            Long("lookups") => o.lookups = p.value()?.parse_with(positive::<usize>)?,
            Long("lookup-nodes") => {
                o.lookup_nodes = p.value()?.parse_with(|s: &str| {
                    s.split(',')
                        .map(positive::<usize>)
                        .collect::<Result<_, _>>()
                })?
            }
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(Parsed::Run(o))
}

pub fn run(args: Args) -> i32 {
    parsed("node bench", USAGE, parse(args), run_bench)
}

fn run_bench(o: Opts) -> i32 {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("phase node bench: tokio runtime: {e}");
            return 1;
        }
    };
    let (nodes, lookups) = (o.lookup_nodes.clone(), o.lookups);
    match rt.block_on(bench(o)) {
        Ok(v) => {
            let f = |k: &str, q: &str| v[k][q].as_f64().unwrap_or(f64::NAN);
            println!(
                "job protocol, loopback: warm job (submit -> verified receipt, connection reused) \
                 median {:.3} ms, p99 {:.3} ms over {} jobs: {:.2}x the {WARM_GOAL_MS} ms goal; \
                 fresh connection's first job median {:.3} ms; sieve {:.1} jobs/s on one node",
                f("warm_ms", "median"),
                f("warm_ms", "p99"),
                v["warm_jobs"],
                v["warm_median_to_goal"].as_f64().unwrap_or(f64::NAN),
                f("fresh_ms", "median"),
                v["heavy_jobs_per_s"].as_f64().unwrap_or(f64::NAN),
            );
            println!("{v}");
        }
        Err(e) => {
            eprintln!("phase node bench: {e}");
            return 1;
        }
    }
    for n in nodes {
        match rt.block_on(super::capability::bench::lookup_figures(n, lookups)) {
            Ok(v) => {
                let f = |q: &str| v["lookup_ms"][q].as_f64().unwrap_or(f64::NAN);
                println!(
                    "DHT capability lookup, {n} nodes on loopback: median {:.2} ms, p99 {:.2} ms \
                     over {lookups} lookups ({} missed a node); every record visible {:.0} ms \
                     after the last node started",
                    f("median"),
                    f("p99"),
                    v["lookups_missing_a_node"],
                    v["all_visible_ms"].as_f64().unwrap_or(f64::NAN),
                );
                println!("{v}");
            }
            Err(e) => {
                eprintln!("phase node bench: capability lookup, {n} nodes: {e}");
                return 1;
            }
        }
    }
    0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn job(o: &Opts, name: &str, args: &[&str]) -> Result<Job, String> {
    let path = o.jobs_dir.join(format!("{name}.wasm"));
    Ok(Job {
        id: name.into(),
        module: std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?,
        args: args.iter().map(|s| s.to_string()).collect(),
        env: Vec::new(),
        stdin: Vec::new(),
        limits: DEFAULT_LIMITS,
    })
}

async fn one(
    host: &Dht,
    t: &[Target],
    job: &Job,
    key: &phase_release::keys::Keypair,
    nonces: &mut Nonces,
    send_module: bool,
) -> Result<f64, String> {
    let t0 = Instant::now();
    submit::submit(host, t, job, key, nonces, send_module)
        .await
        .map_err(|a| format!("job {} failed: {a:?}", job.id))?;
    Ok(t0.elapsed().as_secs_f64() * 1000.0)
}

async fn requester() -> Result<(Dht, phase_release::keys::Keypair), String> {
    let kp = libp2p::identity::Keypair::generate_ed25519();
    let signer = crate::node::receipt::node_signer(&kp).ok_or("key")?;
    let host = submit::requester_host(kp)
        .await
        .map_err(|e| e.to_string())?;
    Ok((host, signer))
}

async fn bench(o: Opts) -> Result<serde_json::Value, String> {
    let key = libp2p::identity::Keypair::generate_ed25519();
    let executor = Arc::new(
        Executor::new(ExecutorConfig::default())
            .map_err(|e| format!("executor: {} ({e})", e.reason()))?,
    );
    let policy = NodeConfig {
        admission: Admission::Open,
        rate: Rate {
            burst: u32::MAX,
            per_second: u32::MAX,
        },
    };
    let server = JobServer::new(executor, &key, policy, None).ok_or("node key")?;
    let mut cfg = DhtConfig::new(key);
    cfg.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().map_err(|e| format!("{e}"))?];
    cfg.jobs = Some(Arc::new(server));
    let node = dht::start(cfg).await.map_err(|e| e.to_string())?;
    let addr = node
        .listen_addrs()
        .first()
        .cloned()
        .ok_or("the node listens nowhere")?
        .with(Protocol::P2p(node.peer_id()));
    let targets = vec![Target::parse(&addr)?];
    let hello = job(&o, "hello", &[])?;
    let sieve = job(&o, "sieve", &[])?;
    let mut nonces = Nonces::new()?;

    // Warm: one requester, one connection; the first job sends the module (and compiles it).
    let (host, signer) = requester().await?;
    one(&host, &targets, &hello, &signer, &mut nonces, true).await?;
    let mut warm = Vec::with_capacity(o.warm);
    for _ in 0..o.warm {
        warm.push(one(&host, &targets, &hello, &signer, &mut nonces, false).await?);
    }
    warm.sort_by(f64::total_cmp);

    // Fresh: a new requester host (new key, new connection) per job.
    let mut fresh = Vec::with_capacity(o.fresh);
    for _ in 0..o.fresh {
        let (h, s) = requester().await?;
        fresh.push(one(&h, &targets, &hello, &s, &mut nonces, true).await?);
        h.shutdown().await;
    }
    fresh.sort_by(f64::total_cmp);

    // Heavy: sieve, compiled once, then two in flight at a time.
    one(&host, &targets, &sieve, &signer, &mut nonces, true).await?;
    let t0 = Instant::now();
    let host = Arc::new(host);
    let signer = Arc::new(signer);
    let mut done = 0usize;
    while done < o.heavy {
        let batch = (o.heavy - done).min(2);
        let mut tasks = Vec::new();
        for _ in 0..batch {
            let (h, t, j, s) = (host.clone(), targets.clone(), sieve.clone(), signer.clone());
            let mut n = Nonces::new()?;
            tasks.push(tokio::spawn(async move {
                submit::submit(&h, &t, &j, &s, &mut n, false).await.is_ok()
            }));
        }
        for t in tasks {
            if !t.await.unwrap_or(false) {
                return Err("a sieve job failed".into());
            }
        }
        done += batch;
    }
    let heavy_s = t0.elapsed().as_secs_f64();
    if let Ok(h) = Arc::try_unwrap(host) {
        h.shutdown().await;
    }
    node.shutdown().await;
    let median = percentile(&warm, 0.5);
    Ok(serde_json::json!({
        "bench": "job_protocol",
        "warm_jobs": o.warm,
        "warm_ms": {"median": median, "p99": percentile(&warm, 0.99), "max": warm.last()},
        "warm_goal_ms": WARM_GOAL_MS,
        "warm_median_to_goal": median / WARM_GOAL_MS,
        "fresh_jobs": o.fresh,
        "fresh_ms": {"median": percentile(&fresh, 0.5), "max": fresh.last()},
        "fresh_to_warm": percentile(&fresh, 0.5) / median.max(f64::MIN_POSITIVE),
        "heavy_jobs": o.heavy,
        "heavy_jobs_per_s": o.heavy as f64 / heavy_s,
    }))
}
