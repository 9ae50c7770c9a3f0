//! `phase dht`: run a DHT node, announce a provider, look providers up (host side of
//! [`super::dht`]). Machine-readable output only on stdout (one JSON object per line);
//! diagnostics on stderr.

use super::dht::{self, Dht, DhtConfig};
use crate::cli::{parsed, subcommand, usage_error, Args, Parsed, Sub};
use libp2p::identity::Keypair;
use libp2p::Multiaddr;
use std::path::PathBuf;
use std::time::Duration;

const SUBS: &[Sub] = &[
    Sub {
        name: "node",
        synopsis: "--key FILE [OPTIONS]",
        about: "run a Kademlia DHT node until SIGTERM/SIGINT",
        run: |a| sub("node", NODE_USAGE, a),
    },
    Sub {
        name: "peer-id",
        synopsis: "--key FILE [--create-key]",
        about: "print the node key's libp2p peer id",
        run: |a| sub("peer-id", PEER_ID_USAGE, a),
    },
    Sub {
        name: "announce",
        synopsis: "--key FILE --url URL --version N [OPTIONS]",
        about: "announce a signed provider record and keep it fresh",
        run: |a| sub("announce", ANNOUNCE_USAGE, a),
    },
    Sub {
        name: "lookup",
        synopsis: "(--bootstrap MULTIADDR... | --bootstrap-file FILE) [OPTIONS]",
        about: "find the providers of a channel/arch; one JSON line each",
        run: |a| sub("lookup", LOOKUP_USAGE, a),
    },
];

const NODE_USAGE: &str = "\
Usage: phase dht node --key FILE [--create-key] [--listen MULTIADDR]... [--bootstrap MULTIADDR]...
                      [--bootstrap-file FILE]

Run a Kademlia DHT node (default listen /ip4/0.0.0.0/tcp/4001) until SIGTERM/SIGINT; once
listening print one JSON line: peer_id and listen (addresses ending in /p2p/<peer id>, ready
for --bootstrap). With bootstrap peers, join through them (retrying with backoff).
  --key FILE            the node's ed25519 key (--create-key: create it if missing)
  --listen MULTIADDR    listen address (repeatable)
  --bootstrap MULTIADDR peer to join through (repeatable); --bootstrap-file: one a line";

const PEER_ID_USAGE: &str = "\
Usage: phase dht peer-id --key FILE [--create-key]

Print the libp2p peer id of the node key in FILE (--create-key: create it if missing).";

const ANNOUNCE_USAGE: &str = "\
Usage: phase dht announce --key FILE [--create-key] --url URL --version N [--channel C] [--arch A]
                          [--ttl SECS] [--listen MULTIADDR]... [--bootstrap MULTIADDR]...
                          [--bootstrap-file FILE]

Sign a provider record (URL serves release N of channel C, default stable, for arch A,
default this machine's; valid TTL seconds, default 3600) with the node key, publish it in
the DHT through the bootstrap peers, and re-sign it every TTL/2 (at most 10 min) until
SIGTERM/SIGINT. Prints one JSON line once announced.";

const LOOKUP_USAGE: &str = "\
Usage: phase dht lookup [--channel C] [--arch A] (--bootstrap MULTIADDR... | --bootstrap-file FILE)
                        [--timeout-ms N]

Find the providers of C/A (default stable, this arch) through the bootstrap peers; one JSON
line per verified record (found) and per rejected entry (rejected: node, reason), then a
summary line (counts, bootstrap_ms, lookup_ms). Exit 1 if none found.";

/// Where `phase dht node` listens unless told.
pub const DEFAULT_LISTEN: &str = "/ip4/0.0.0.0/tcp/4001";
/// Lifetime of an announced record unless told; it is re-signed well before it ends.
pub const DEFAULT_TTL_S: u64 = 3600;

#[derive(Default)]
struct Opts {
    key: Option<PathBuf>,
    create_key: bool,
    listen: Vec<Multiaddr>,
    bootstrap: Vec<Multiaddr>,
    url: Option<String>,
    version: Option<u64>,
    channel: Option<String>,
    arch: Option<String>,
    ttl: Option<u64>,
    timeout_ms: Option<u64>,
}

/// The options of every `phase dht` subcommand (each uses the ones its usage names).
fn parse(args: Args) -> Result<Parsed<Opts>, lexopt::Error> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let mut a = Opts::default();
    while let Some(arg) = p.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Parsed::Help),
            Long("create-key") => a.create_key = true,
            Long("key") => a.key = Some(PathBuf::from(p.value()?)),
            Long("listen") => a.listen.push(p.value()?.parse()?),
            Long("bootstrap") => a.bootstrap.push(p.value()?.parse()?),
            Long("bootstrap-file") => {
                let v = p.value()?.string()?;
                let text = std::fs::read_to_string(&v).map_err(|e| format!("{v}: {e}"))?;
                let list = dht::parse_bootstrap(&text)
                    .map_err(|(line, reason)| format!("{v}:{line}: {reason}"))?;
                a.bootstrap.extend(list);
            }
            Long("url") => a.url = Some(p.value()?.string()?),
            Long("version") => a.version = Some(p.value()?.parse()?),
            Long("channel") => a.channel = Some(p.value()?.string()?),
            Long("arch") => a.arch = Some(p.value()?.string()?),
            Long("ttl") => a.ttl = Some(p.value()?.parse()?).filter(|t| *t > 0),
            Long("timeout-ms") => a.timeout_ms = Some(p.value()?.parse()?).filter(|t| *t > 0),
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(Parsed::Run(a))
}

pub fn run(args: Args) -> i32 {
    subcommand(
        "dht",
        "Provider discovery over a libp2p Kademlia DHT (docs/discovery.md). Machine-readable\n\
         output on stdout, one JSON object a line; diagnostics on stderr.",
        SUBS,
        args,
    )
}

fn sub(cmd: &'static str, usage: &str, args: Args) -> i32 {
    parsed(&format!("dht {cmd}"), usage, parse(args), |a| {
        dispatch(cmd, usage, a)
    })
}

fn dispatch(cmd: &str, usage: &str, a: Opts) -> i32 {
    if cmd == "lookup" && a.bootstrap.is_empty() {
        return usage_error("dht lookup", usage, "needs --bootstrap or --bootstrap-file");
    }
    if cmd == "announce" && (a.url.is_none() || a.version.is_none()) {
        return usage_error("dht announce", usage, "needs --url and --version");
    }
    if cmd == "peer-id" {
        return match key(&a) {
            Ok(k) => {
                println!("{}", k.public().to_peer_id());
                0
            }
            Err(e) => fail(cmd, e),
        };
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(cmd, format!("tokio runtime: {e}")),
    };
    rt.block_on(async {
        match cmd {
            "node" => node(a).await,
            "announce" => announce(a).await,
            _ => lookup(a).await,
        }
    })
}

fn fail(cmd: &str, e: impl std::fmt::Display) -> i32 {
    eprintln!("phase dht {cmd}: {e}");
    1
}

fn key(a: &Opts) -> Result<Keypair, String> {
    let Some(path) = &a.key else {
        return Err("needs --key FILE".into());
    };
    let k = if a.create_key {
        dht::load_or_create_key(path)
    } else {
        dht::keypair_from_file(path)
    };
    k.map_err(|e| e.to_string())
}

fn channel_arch(a: &Opts) -> (String, String) {
    (
        a.channel.clone().unwrap_or_else(|| "stable".into()),
        a.arch
            .clone()
            .unwrap_or_else(|| std::env::consts::ARCH.into()),
    )
}

/// Listen addresses with `/p2p/<peer id>`: what another node passes as `--bootstrap`.
fn dialable(d: &Dht) -> Vec<String> {
    d.listen_addrs()
        .into_iter()
        .map(|a| {
            a.with(libp2p::multiaddr::Protocol::P2p(d.peer_id()))
                .to_string()
        })
        .collect()
}

/// Join through the bootstrap peers, retrying with backoff until it works or a signal comes.
async fn join(d: &Dht, signalled: &mut Signals) -> bool {
    let mut wait = Duration::from_secs(1);
    loop {
        match d.bootstrap().await {
            Ok(n) => {
                eprintln!("phase dht: bootstrapped, {n} peers in the routing table");
                return true;
            }
            Err(e) => eprintln!("phase dht: bootstrap: {e}; retrying in {wait:?}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = signalled.recv() => return false,
        }
        wait = (wait * 2).min(Duration::from_secs(30));
    }
}

struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Signals, String> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM: {e}"))?,
            int: signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT: {e}"))?,
        })
    }
    async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

async fn node(a: Opts) -> i32 {
    let mut sig = match Signals::new() {
        Ok(s) => s,
        Err(e) => return fail("node", e),
    };
    let k = match key(&a) {
        Ok(k) => k,
        Err(e) => return fail("node", e),
    };
    let mut cfg = DhtConfig::new(k);
    cfg.listen = if a.listen.is_empty() {
        DEFAULT_LISTEN.parse().into_iter().collect()
    } else {
        a.listen
    };
    cfg.bootstrap = a.bootstrap;
    let has_bootstrap = !cfg.bootstrap.is_empty();
    let d = match dht::start(cfg).await {
        Ok(d) => d,
        Err(e) => return fail("node", e),
    };
    println!(
        "{}",
        serde_json::json!({"peer_id": d.peer_id().to_string(), "listen": dialable(&d)})
    );
    if has_bootstrap && !join(&d, &mut sig).await {
        d.shutdown().await;
        return 0;
    }
    sig.recv().await;
    d.shutdown().await;
    0
}

async fn announce(a: Opts) -> i32 {
    let mut sig = match Signals::new() {
        Ok(s) => s,
        Err(e) => return fail("announce", e),
    };
    let (Some(url), Some(version)) = (a.url.clone(), a.version) else {
        return usage_error("dht announce", ANNOUNCE_USAGE, "needs --url and --version");
    };
    let k = match key(&a) {
        Ok(k) => k,
        Err(e) => return fail("announce", e),
    };
    let (channel, arch) = channel_arch(&a);
    let ttl = a.ttl.unwrap_or(DEFAULT_TTL_S);
    // Reject a bad record here, before joining anything.
    let signed = match dht::provider_record(&k, &url, &channel, &arch, version, ttl) {
        Ok(s) => s,
        Err(e) => return fail("announce", e),
    };
    let mut cfg = DhtConfig::new(k);
    cfg.listen = a.listen;
    cfg.bootstrap = a.bootstrap;
    // Re-sign well within the record's lifetime.
    cfg.refresh = Duration::from_secs((ttl / 2).clamp(1, 600));
    let has_bootstrap = !cfg.bootstrap.is_empty();
    let d = match dht::start(cfg).await {
        Ok(d) => d,
        Err(e) => return fail("announce", e),
    };
    if has_bootstrap && !join(&d, &mut sig).await {
        d.shutdown().await;
        return 0;
    }
    match d.announce(signed.clone()).await {
        Ok(()) => println!(
            "{}",
            serde_json::json!({
                "announced": signed.signed,
                "peer_id": d.peer_id().to_string(),
                "listen": dialable(&d),
            })
        ),
        // Not fatal: the record is published again every refresh.
        Err(e) if e.reason() != "bad_record" => eprintln!("phase dht announce: {e}; will retry"),
        Err(e) => {
            d.shutdown().await;
            return fail("announce", e);
        }
    }
    sig.recv().await;
    d.shutdown().await;
    0
}

async fn lookup(a: Opts) -> i32 {
    let (channel, arch) = channel_arch(&a);
    let mut cfg = DhtConfig::new(Keypair::generate_ed25519());
    cfg.bootstrap = a.bootstrap;
    if let Some(ms) = a.timeout_ms {
        cfg.query_timeout = Duration::from_millis(ms);
    }
    let d = match dht::start(cfg).await {
        Ok(d) => d,
        Err(e) => return fail("lookup", e),
    };
    let t0 = std::time::Instant::now();
    let mut bootstrap_ms = 0;
    let result = match d.bootstrap().await {
        Ok(_) => {
            bootstrap_ms = t0.elapsed().as_millis();
            d.lookup(&channel, &arch, dht::now_unix()).await
        }
        Err(e) => Err(e),
    };
    let lookup_ms = t0.elapsed().as_millis() - bootstrap_ms;
    d.shutdown().await;
    match result {
        Ok(l) => {
            for r in &l.found {
                println!("{}", serde_json::json!({ "found": r }));
            }
            for r in &l.rejected {
                println!("{}", serde_json::json!({ "rejected": r }));
            }
            println!(
                "{}",
                serde_json::json!({ "summary": {
                    "found": l.found.len(),
                    "rejected": l.rejected.len(),
                    "peers_queried": l.peers_queried,
                    "bootstrap_ms": bootstrap_ms,
                    "lookup_ms": lookup_ms,
                }})
            );
            eprintln!(
                "phase dht lookup: {} found, {} rejected, {} peers queried",
                l.found.len(),
                l.rejected.len(),
                l.peers_queried
            );
            if l.found.is_empty() {
                1
            } else {
                0
            }
        }
        Err(e) => fail("lookup", e),
    }
}
