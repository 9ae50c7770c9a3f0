//! `phase provider serve DIR`: serve a release directory over HTTP (src/provider/), fair
//! under load, optionally announced on the LAN (mDNS) and in the DHT, until SIGTERM/SIGINT.

use super::{parsed, positive, subcommand, Args, Parsed, Sub};
use libp2p::Multiaddr;
use std::path::PathBuf;

const SUBS: &[Sub] = &[Sub {
    name: "serve",
    synopsis: "DIR [OPTIONS]",
    about: "serve a release directory (GET, HEAD, ranges, SHA-256 ETags)",
    run: serve,
}];

pub fn run(args: Args) -> i32 {
    subcommand(
        "provider",
        "Serve this machine's release to others (docs/provider.md).",
        SUBS,
        args,
    )
}

pub const SERVE_USAGE: &str = "\
Usage: phase provider serve DIR [OPTIONS]

Serve a release directory (out/release) over HTTP: GET, HEAD, byte ranges, ETag = SHA-256,
paths confined to DIR. Prints `phase provider: serving DIR on http://ADDR/` once listening;
runs until SIGTERM/SIGINT (docs/provider.md, docs/network.md).
  --listen ADDR              listen address (default 127.0.0.1:8080; port 0 picks one)
  --max-connections N        transfer slots (default 64; 16 more are kept for metadata)
  --per-client N             connections per client address (default 8; then 503)
  --min-send-rate BYTES_PER_S  drop a reader slower than this (default 32768) ...
  --send-window-secs S       ... over any window of S seconds (default 10)
  --mdns                     announce on the LAN as DNS-SD _phase-boot._tcp (TXT: channel,
                             arch, version, path); goodbye packets on SIGTERM/SIGINT; needs
                             a LAN --listen address
  --dht-key FILE             publish a signed provider record in the DHT with this node key
                             (created if missing), refreshed every 30 min
  --bootstrap MULTIADDR      DHT bootstrap peer (repeatable; needs --dht-key)
  --bootstrap-file FILE      DHT bootstrap peers, one multiaddr a line
  --dht-listen MULTIADDR     libp2p listen address (default /ip4/IP/tcp/4001 of --listen)";

struct Opts {
    dir: PathBuf,
    cfg: crate::provider::serve::Config,
    listen: String,
    mdns: bool,
    dht_key: Option<PathBuf>,
    bootstrap: Vec<Multiaddr>,
    dht_listen: Vec<Multiaddr>,
}

fn parse(args: Args) -> Result<Parsed<Opts>, lexopt::Error> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let (mut dir, mut listen, mut mdns) = (None, "127.0.0.1:8080".to_string(), false);
    let (mut dht_key, mut bootstrap, mut dht_listen) = (None, Vec::new(), Vec::new());
    // Limits are kept until DIR is known (Config::new takes it).
    let (mut max, mut per_client, mut min_rate, mut window) = (None, None, None, None);
    while let Some(arg) = p.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Parsed::Help),
            Long("listen") => listen = p.value()?.string()?,
            Long("mdns") => mdns = true,
            Long("dht-key") => dht_key = Some(PathBuf::from(p.value()?)),
            Long("bootstrap") => bootstrap.push(p.value()?.parse()?),
            Long("dht-listen") => dht_listen.push(p.value()?.parse()?),
            Long("bootstrap-file") => {
                let v = PathBuf::from(p.value()?);
                let list = std::fs::read_to_string(&v)
                    .map_err(|e| e.to_string())
                    .and_then(|t| {
                        crate::discover::dht::parse_bootstrap(&t)
                            .map_err(|(line, why)| format!("line {line}: {why}"))
                    })
                    .map_err(|e| format!("{}: {e}", v.display()))?;
                bootstrap.extend(list);
            }
            Long("max-connections") => max = Some(p.value()?.parse_with(positive::<usize>)?),
            Long("per-client") => per_client = Some(p.value()?.parse_with(positive::<usize>)?),
            Long("min-send-rate") => min_rate = Some(p.value()?.parse_with(positive::<u64>)?),
            Long("send-window-secs") => window = Some(p.value()?.parse_with(positive::<u64>)?),
            Value(v) if dir.is_none() => dir = Some(PathBuf::from(v)),
            _ => return Err(arg.unexpected()),
        }
    }
    let dir = dir.ok_or("needs the release directory DIR")?;
    let mut cfg = crate::provider::serve::Config::new(&dir);
    cfg.max_connections = max.unwrap_or(cfg.max_connections);
    cfg.per_client = per_client.unwrap_or(cfg.per_client);
    cfg.min_send_rate = min_rate.unwrap_or(cfg.min_send_rate);
    if let Some(s) = window {
        cfg.send_window = std::time::Duration::from_secs(s);
    }
    let loopback = listen
        .parse::<std::net::SocketAddr>()
        .is_ok_and(|a| a.ip().is_loopback());
    if mdns && loopback {
        return Err(format!(
            "--mdns needs a LAN address (--listen IP:PORT or 0.0.0.0:PORT), not {listen}"
        )
        .into());
    }
    if dht_key.is_none() && !(bootstrap.is_empty() && dht_listen.is_empty()) {
        return Err("--bootstrap/--dht-listen need --dht-key".into());
    }
    Ok(Parsed::Run(Opts {
        dir,
        cfg,
        listen,
        mdns,
        dht_key,
        bootstrap,
        dht_listen,
    }))
}

fn serve(args: Args) -> i32 {
    parsed("provider serve", SERVE_USAGE, parse(args), serve_dir)
}

fn serve_dir(o: Opts) -> i32 {
    let Opts {
        dir,
        cfg,
        listen,
        mdns,
        dht_key,
        bootstrap,
        dht_listen,
    } = o;
    if !dir.is_dir() {
        eprintln!("phase provider: {} is not a directory", dir.display());
        return 1;
    }
    let txt = if mdns || dht_key.is_some() {
        match crate::provider::announce::summary(&dir) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("phase provider: cannot announce: {e}");
                return 1;
            }
        }
    } else {
        None
    };
    crate::log::init();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("phase provider: {e}");
            return 1;
        }
    };
    rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            eprintln!("phase provider: cannot handle SIGTERM/SIGINT");
            return 1;
        };
        let listener = match tokio::net::TcpListener::bind(&listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("phase provider: listen on {listen}: {e}");
                return 1;
            }
        };
        let etags = crate::provider::serve::warm(&cfg).await;
        let Ok(addr) = listener.local_addr() else {
            eprintln!("phase provider: no local address for {listen}");
            return 1;
        };
        // Tests and scripts read this first line for the address.
        println!(
            "phase provider: serving {} on http://{addr}/",
            dir.display()
        );
        let dht_node = match (&dht_key, &txt) {
            (Some(k), Some(t)) => match announce_dht(k, bootstrap, dht_listen, addr, t).await {
                Ok(n) => Some(n),
                Err(e) => {
                    eprintln!("phase provider: DHT: {e}");
                    return 1;
                }
            },
            _ => None,
        };
        let announcer = match txt.filter(|_| mdns) {
            None => None,
            Some(t) => match crate::discover::mdns::announce(addr.ip(), addr.port(), &t) {
                Ok(a) => {
                    println!("phase provider: announcing {} on the LAN (mDNS)", a.name());
                    Some(a)
                }
                Err(e) => {
                    eprintln!("phase provider: {e}");
                    return 1;
                }
            },
        };
        let rc = tokio::select! {
            r = crate::provider::serve::serve(listener, cfg, etags) => match r {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("phase provider: {e}");
                    1
                }
            },
            _ = term.recv() => 0,
            _ = int.recv() => 0,
        };
        if let Some(n) = dht_node {
            n.shutdown().await;
            println!("phase provider: DHT record no longer refreshed");
        }
        // Say goodbye on the LAN so browsers drop us now rather than after the TTL.
        if let Some(a) = announcer {
            tokio::task::spawn_blocking(move || a.stop()).await.ok();
            println!("phase provider: announcement withdrawn");
        }
        rc
    })
}

/// Publish this provider in the DHT (record refreshed every 30 min, valid 1 h).
async fn announce_dht(
    key: &std::path::Path,
    bootstrap: Vec<libp2p::Multiaddr>,
    listen: Vec<libp2p::Multiaddr>,
    addr: std::net::SocketAddr,
    txt: &crate::discover::mdns::Txt,
) -> Result<crate::discover::dht::Dht, String> {
    use crate::discover::dht;
    const TTL_S: u64 = 3600;
    if addr.ip().is_unspecified() {
        return Err(format!(
            "the DHT record needs a reachable address, not {addr} (--listen IP:PORT)"
        ));
    }
    let kp = dht::load_or_create_key(key).map_err(|e| e.to_string())?;
    let url = format!("http://{addr}/");
    let record = dht::provider_record(&kp, &url, &txt.channel, &txt.arch, txt.version, TTL_S)
        .map_err(|e| e.to_string())?;
    let mut cfg = dht::DhtConfig::new(kp);
    cfg.listen = if listen.is_empty() {
        vec![format!("/ip4/{}/tcp/4001", addr.ip())
            .parse()
            .map_err(|e| format!("listen address: {e}"))?]
    } else {
        listen
    };
    cfg.bootstrap = bootstrap;
    cfg.refresh = std::time::Duration::from_secs(TTL_S / 2);
    let (node, published) = dht::publish(cfg, record).await.map_err(|e| e.to_string())?;
    match published {
        Ok(()) => println!(
            "phase provider: announcing {url} in the DHT as {}",
            node.peer_id()
        ),
        Err(e) => {
            eprintln!("phase provider: DHT: {e}; the record is published again every refresh")
        }
    }
    Ok(node)
}
