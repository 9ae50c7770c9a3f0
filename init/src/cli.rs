//! The host CLI: what `phase` does when it is not PID 1.

use crate::config;

const HELP: &str = "\
phase — Phase Boot's init (as PID 1) and its host tool (otherwise)

USAGE:
    phase <COMMAND> [ARGS]

COMMANDS:
    cmdline [FILE]    Parse a kernel command line (default /proc/cmdline; - for stdin)
                      and print the resulting configuration and any warnings.
    keys              Print the table of phase.* kernel command-line keys (markdown).
    fetch --root ROOT --provider URL... --out DIR [--channel C] [--floor N]
          [--idle-secs S] [--min-rate BYTES_PER_S] [--rate-window-secs S] [--total-secs S]
                      Choose the newest release the providers serve that verifies against
                      ROOT, and download it verified (the stage-1 client, on a host). A
                      provider that is silent, too slow or sends a short or bad body is
                      left for the next (docs/network.md).
    net up [IP] [--keep]
                      Bring up the network as the init does (IP: the kernel's ip= value;
                      default dhcp) and print the net.up event; with --keep, stay and renew
                      the DHCP lease (net.renewed events). Changes this host's (or network
                      namespace's) interfaces; never writes /etc/resolv.conf.
    provider serve DIR [--listen ADDR] [--max-connections N] [--mdns]
                      [--per-client N] [--min-send-rate BYTES_PER_S] [--send-window-secs S]
                      [--dht-key FILE [--bootstrap MULTIADDR]... [--bootstrap-file FILE]
                      [--dht-listen MULTIADDR]]
                      Serve a release directory (out/release) over HTTP: GET, HEAD,
                      byte ranges, ETag = SHA-256. Default listen address 127.0.0.1:8080.
                      Fair under load: per-client cap, slots kept for metadata, slow
                      readers dropped (docs/network.md).
                      --mdns announces it on the LAN as DNS-SD service _phase-boot._tcp
                      (TXT: channel, arch, version, path) until SIGTERM/SIGINT, which
                      sends goodbye packets. --dht-key FILE (created if missing) publishes
                      a signed provider record in the DHT via the --bootstrap peers
                      (libp2p listening on --dht-listen, default IP:4001 of --listen),
                      refreshed every 30 min, no longer refreshed after SIGTERM/SIGINT.
    discover [--channel C] [--arch A] [--timeout-ms N] [--settle-ms M]
                      Browse the LAN (mDNS) for providers of channel C (default stable)
                      and arch A (default this machine's) for at most N ms (default
                      3000), and at most M ms after the first answer (default 400, as
                      the init); print one JSON line per candidate. Exit 1 if none.
    dht node --key FILE [--create-key] [--listen MULTIADDR]... [--bootstrap MULTIADDR]...
             [--bootstrap-file FILE]
                      Run a Kademlia DHT node (default listen /ip4/0.0.0.0/tcp/4001) until
                      SIGTERM/SIGINT; once listening prints one JSON line: peer_id and
                      listen (addresses ending in /p2p/<peer id>, ready for --bootstrap).
    dht peer-id --key FILE [--create-key]
                      Print the node key's libp2p peer id.
    dht announce --key FILE --url URL --version N [--channel C] [--arch A] [--ttl SECS]
             [--listen MULTIADDR]... [--bootstrap MULTIADDR]... [--bootstrap-file FILE]
                      Announce a signed provider record in the DHT and keep it fresh until
                      SIGTERM/SIGINT.
    dht lookup [--channel C] [--arch A] (--bootstrap MULTIADDR... | --bootstrap-file FILE)
             [--timeout-ms N]
                      Find the providers of C/A (default stable, this arch); one JSON line
                      per verified record (found) and per rejected entry (rejected: node,
                      reason), then a summary line (counts, bootstrap_ms, lookup_ms).
                      Exit 1 if none found.
    job run --local MODULE.wasm [--receipt FILE] [--state-dir DIR] [...] [-- ARGS]
                      Run a WASM job (wasm32-wasip1) in this process with every limit
                      enforced; stdin is piped in, stdout/stderr printed, exit status the
                      job's; --receipt writes a signed receipt (docs/jobs.md).
                      `phase job run --help` lists the limits and options.
    receipt verify FILE --module MODULE.wasm [--stdin F] [--stdout F] [--reexec] [-- ARGS]
                      Verify a job receipt (signature, module, input, output); --reexec
                      also runs the job again and compares outcome, fuel and output.
    version           Print the version.
    selftest ARGS     Child side of the boot-time fault drills (used by PID 1 itself).
    help              Print this help.

As PID 1 (the kernel's /init) it boots the machine; see docs/cmdline.md for phase.* keys.
Exit status: 0 on success, 1 on a failed command, 2 on a usage error.";

pub fn run(args: Vec<String>) -> i32 {
    match args.first().map(String::as_str) {
        None | Some("help" | "--help" | "-h") => {
            println!("{HELP}");
            if args.is_empty() {
                2
            } else {
                0
            }
        }
        Some("version" | "--version" | "-V") => {
            println!("phase {}", env!("CARGO_PKG_VERSION"));
            0
        }
        Some("keys") => {
            print!("{}", keys_table());
            0
        }
        Some("cmdline") => cmdline(args.get(1).map(String::as_str)),
        Some("provider") => provider(&args[1..]),
        Some("net") => net(&args[1..]),
        Some("dht") => crate::discover::dht_cli::run(&args[1..]),
        Some("discover") => discover(&args[1..]),
        Some("fetch") => {
            crate::log::init();
            crate::fetch::cli::run(&args[1..])
        }
        Some("selftest") => crate::selftest::child_main(&args[1..]),
        Some(cmd @ ("job" | "receipt")) => node_command(cmd, &args[1..]),
        Some(other) => {
            eprintln!("phase: unknown command {other:?}; see phase --help");
            2
        }
    }
}

/// `phase job` / `phase receipt` (src/node/job_cli.rs), when the executor is built in.
fn node_command(cmd: &str, args: &[String]) -> i32 {
    #[cfg(feature = "executor")]
    {
        if cmd == "job" {
            crate::node::job_cli::job(args)
        } else {
            crate::node::job_cli::receipt_cmd(args)
        }
    }
    #[cfg(not(feature = "executor"))]
    {
        let _ = args;
        eprintln!("phase {cmd}: this phase binary was built without the executor (the initramfs build); use the rootfs's /usr/lib/phase/phase");
        1
    }
}

/// The markdown table of keys that docs/cmdline.md carries.
pub fn keys_table() -> String {
    let mut s = String::from("| key | default | meaning |\n| --- | --- | --- |\n");
    for k in config::KEYS {
        s.push_str(&format!("| `{}` | `{}` | {} |\n", k.name, k.default, k.doc));
    }
    s
}

fn provider(args: &[String]) -> i32 {
    let usage = "usage: phase provider serve DIR [--listen ADDR] [--max-connections N] [--mdns]\n\
                 \x20      [--per-client N] [--min-send-rate BYTES_PER_S] [--send-window-secs S]\n\
                 \x20      [--dht-key FILE [--bootstrap MULTIADDR]... [--bootstrap-file FILE] [--dht-listen MULTIADDR]]\n\
                 Fair under load: at most --per-client (8) connections per client address,\n\
                 --max-connections (64) transfer slots plus 16 kept for metadata, and a reader\n\
                 slower than --min-send-rate (32768) over a --send-window-secs (10) window is dropped.";
    let (Some("serve"), Some(dir)) = (args.first().map(String::as_str), args.get(1)) else {
        eprintln!("{usage}");
        return 2;
    };
    let dir = std::path::PathBuf::from(dir);
    if !dir.is_dir() {
        eprintln!("phase provider: {} is not a directory", dir.display());
        return 1;
    }
    let mut cfg = crate::provider::serve::Config::new(&dir);
    let mut listen = "127.0.0.1:8080".to_string();
    let mut mdns = false;
    let (mut dht_key, mut bootstrap, mut dht_listen) = (None, Vec::new(), Vec::new());
    let mut rest = args[2..].iter();
    while let Some(a) = rest.next() {
        if a == "--mdns" {
            mdns = true;
            continue;
        }
        let addr = |v: &str| {
            v.parse::<libp2p::Multiaddr>()
                .map_err(|e| format!("{a} {v}: {e}"))
        };
        match (a.as_str(), rest.next()) {
            ("--listen", Some(v)) => listen = v.clone(),
            ("--dht-key", Some(v)) => dht_key = Some(std::path::PathBuf::from(v)),
            ("--bootstrap" | "--dht-listen", Some(v)) => match addr(v) {
                Ok(m) if a == "--bootstrap" => bootstrap.push(m),
                Ok(m) => dht_listen.push(m),
                Err(e) => {
                    eprintln!("phase provider: {e}");
                    return 2;
                }
            },
            ("--bootstrap-file", Some(v)) => {
                match std::fs::read_to_string(v)
                    .map_err(|e| e.to_string())
                    .and_then(|t| {
                        crate::discover::dht::parse_bootstrap(&t)
                            .map_err(|(line, why)| format!("line {line}: {why}"))
                    }) {
                    Ok(list) => bootstrap.extend(list),
                    Err(e) => {
                        eprintln!("phase provider: {v}: {e}");
                        return 2;
                    }
                }
            }
            (
                "--max-connections" | "--per-client" | "--min-send-rate" | "--send-window-secs",
                Some(v),
            ) => match v.parse::<usize>() {
                Ok(n) if n > 0 => match a.as_str() {
                    "--max-connections" => cfg.max_connections = n,
                    "--per-client" => cfg.per_client = n,
                    "--min-send-rate" => cfg.min_send_rate = n as u64,
                    _ => cfg.send_window = std::time::Duration::from_secs(n as u64),
                },
                _ => {
                    eprintln!("phase provider: {a} needs a positive number");
                    return 2;
                }
            },
            _ => {
                eprintln!("{usage}");
                return 2;
            }
        }
    }
    let loopback = listen
        .parse::<std::net::SocketAddr>()
        .is_ok_and(|a| a.ip().is_loopback());
    if mdns && loopback {
        eprintln!(
            "phase provider: --mdns needs a LAN address (--listen IP:PORT or 0.0.0.0:PORT), not {listen}"
        );
        return 2;
    }
    if dht_key.is_none() && !(bootstrap.is_empty() && dht_listen.is_empty()) {
        eprintln!("phase provider: --bootstrap/--dht-listen need --dht-key\n{usage}");
        return 2;
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

fn discover(args: &[String]) -> i32 {
    let usage = "usage: phase discover [--channel C] [--arch A] [--timeout-ms N] [--settle-ms N]";
    let mut channel = "stable".to_string();
    let mut arch = std::env::consts::ARCH.to_string();
    let mut bounds = crate::discover::mdns::Bounds::default();
    let mut rest = args.iter();
    while let Some(a) = rest.next() {
        match (a.as_str(), rest.next()) {
            ("--channel", Some(v)) => channel = v.clone(),
            ("--arch", Some(v)) => arch = v.clone(),
            ("--timeout-ms", Some(v)) => match v.parse() {
                Ok(ms) => bounds.total = std::time::Duration::from_millis(ms),
                Err(_) => {
                    eprintln!("{usage}");
                    return 2;
                }
            },
            ("--settle-ms", Some(v)) => match v.parse() {
                Ok(ms) => bounds.settle = std::time::Duration::from_millis(ms),
                Err(_) => {
                    eprintln!("{usage}");
                    return 2;
                }
            },
            _ => {
                eprintln!("{usage}");
                return 2;
            }
        }
    }
    match crate::discover::mdns::browse(&channel, &arch, bounds) {
        Ok(b) => {
            for (name, reason) in &b.skipped {
                println!("{}", serde_json::json!({"skipped": name, "reason": reason}));
            }
            for c in &b.found {
                println!(
                    "{}",
                    serde_json::json!({"url": c.url, "how": c.how.name(), "version": c.advertised})
                );
            }
            if b.found.is_empty() {
                eprintln!("phase discover: no provider for {channel}/{arch} on the LAN");
                1
            } else {
                0
            }
        }
        Err(e) => {
            eprintln!("phase discover: {e}");
            1
        }
    }
}

fn net(args: &[String]) -> i32 {
    let keep = args.iter().any(|a| a == "--keep");
    let args: Vec<&String> = args.iter().filter(|a| *a != "--keep").collect();
    if args.first().map(|s| s.as_str()) != Some("up") || args.len() > 2 {
        eprintln!("usage: phase net up [IP] [--keep]");
        return 2;
    }
    let ip = match crate::net::ipconfig::parse(args.get(1).map(|s| s.as_str())) {
        Ok(ip) => ip,
        Err(e) => {
            eprintln!("phase net: {e}");
            return 2;
        }
    };
    crate::log::init();
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return 1;
    };
    let events = std::sync::Arc::new(crate::events::EventLog::new());
    match rt.block_on(crate::boot::network::configure(&ip, false)) {
        Ok(up) => {
            events.emit(crate::events::Event::NetUp {
                iface: up.iface,
                addr: format!("{}/{}", up.config.addr, up.config.prefix),
                method: up.method.into(),
                router: up.config.router.map(|r| r.to_string()),
            });
            match (keep, up.lease) {
                (true, Some(held)) => {
                    match rt.block_on(crate::boot::network::keep_lease(held, events)) {
                        Ok(()) => 0,
                        Err(e) => {
                            eprintln!("phase net: {e}");
                            1
                        }
                    }
                }
                _ => 0,
            }
        }
        Err(e) => {
            eprintln!("phase net: {}: {}", e.reason, e.message);
            1
        }
    }
}

fn cmdline(path: Option<&str>) -> i32 {
    use std::io::Read;
    let path = path.unwrap_or("/proc/cmdline");
    let mut raw = Vec::new();
    let read = if path == "-" {
        std::io::stdin().read_to_end(&mut raw).map(|_| ())
    } else {
        std::fs::read(path).map(|b| raw = b)
    };
    if let Err(e) = read {
        eprintln!("phase cmdline: read {path}: {e}");
        return 1;
    }
    let (cfg, warnings) = config::parse(&raw);
    println!("{cfg:#?}");
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    0
}
