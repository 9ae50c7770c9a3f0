//! `phase-bench`: boot timings against Debian's initramfs-tools baseline.
//!
//! Boots `out/vmlinuz` + `out/initramfs.img` RUNS times (default 5) with
//! `phase.poweroff=init.ready` and prints medians of kernel start → `init.start` and
//! `init.start` → `init.ready` (guest CLOCK_BOOTTIME), the wall time and the initramfs size;
//! before each of those boots, the floor (`phase_qemu::floor`: a static probe as `/init`,
//! same Vm and command line) and the ratio to it (`BENCH_ONLY=start` stops there);
//! and for each kind of boot the step table of its median boot, with an SVG boot chart in
//! `out/bench/` (`phase_qemu::chart`).
//! Then LAN discovery (`net.up` -> `provider.found` by mDNS, on a test bridge) and DHT
//! lookups with 10 and 30 nodes on loopback (`BENCH_ONLY=discovery` runs only those). The
//! initramfs's size and unpack time per compressor (`BENCH_ONLY=compressors` runs only that).
//! Then the kexec upgrade (`BENCH_ONLY=kexec` runs only it): diskless release N offered
//! out/release-next, `kexec.start` -> `stage2.start` (guest clock of the new kernel, and
//! wall between the two console lines), and the whole upgrade path to `init.ready` against
//! a cold diskless boot of N+1's own kernel and initramfs from the same provider.
//! If BASELINE_LOG names the output of ../shared/bench/debian-initrd-baseline.sh, it also
//! prints Debian's figures and the ratios. `BENCH_ONLY=acceptance` runs the boots, the
//! compressors and the ratios only (what `scripts/bench.sh` summarises first). A boot that
//! fails is named and left out of the medians; the others still count.

use phase_qemu::chart::{median_boot, Chart};
use phase_qemu::{accel, artifact, floor, Boot, Outcome, Vm};

/// The 1, 5 and 15 minute load averages, as /proc/loadavg has them.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// Print the boot chart of the median boot (by the `until` event's time) and write its SVG
/// to `out/bench/<file>`.
fn chart(boots: &[Boot], until: &str, what: &str, file: &str) {
    let Some(b) = median_boot(boots, |b| b.event(until).map(|e| e.t_ms)) else {
        return;
    };
    let c = Chart::from_events(&b.events);
    println!("boot chart, median {what} boot (guest ms; kernel = boot to init.start):");
    print!("{}", c.table());
    let dir = phase_qemu::out_dir().join("bench");
    let path = dir.join(file);
    let svg = c.svg(&format!(
        "Phase Boot: {what}, median of {} boots",
        boots.len()
    ));
    match std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, svg)) {
        Ok(()) => println!("boot chart SVG: {}", path.display()),
        Err(e) => eprintln!("{}: {e}", path.display()),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

/// Medians of PROBE-UPTIME (seconds) per baseline name.
fn baseline(log: &str, name: &str) -> Option<(f64, f64)> {
    let (mut up, mut wall) = (Vec::new(), Vec::new());
    for l in log.lines().filter(|l| l.starts_with(name)) {
        let w = l
            .split("wall_ms=")
            .nth(1)?
            .split_whitespace()
            .next()?
            .parse::<f64>()
            .ok()?;
        if let Some(u) = l
            .split("PROBE-UPTIME ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
        {
            up.push(u.parse::<f64>().ok()?);
            wall.push(w);
        }
    }
    (!up.is_empty()).then(|| (median(up), median(wall)))
}

fn main() {
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    // BENCH_ONLY=discovery: only the discovery figures (mDNS on a test LAN, DHT lookups).
    if std::env::var("BENCH_ONLY").as_deref() == Ok("compressors") {
        compressors(runs);
        return;
    }
    if std::env::var("BENCH_ONLY").as_deref() == Ok("kexec") {
        kexec_upgrade(runs);
        return;
    }
    if std::env::var("BENCH_ONLY").as_deref() == Ok("discovery") {
        mdns_discovery(runs);
        for n in [10, 30] {
            dht_lookup(n, runs);
        }
        return;
    }
    // BENCH_ONLY=acceptance: the boot figures, the compressors and the Debian ratios only.
    let all = std::env::var("BENCH_ONLY").as_deref() != Ok("acceptance");
    let size = std::fs::metadata(artifact("initramfs.img"))
        .map(|m| m.len())
        .unwrap_or(0);
    let (mut start, mut ready_d, mut ready, mut wall) = (vec![], vec![], vec![], vec![]);
    let mut boots = vec![];
    println!(
        "phase-bench: {runs} boots, accelerator {:?}, load average {}",
        accel(),
        load_average()
    );
    // The floor: the static probe as /init under the same Vm and command line, booted
    // right before each phase boot (the machine is shared; batches apart would compare
    // two different loads).
    let floor_dir = phase_qemu::tempdir("bench-floor");
    let probe = match floor::probe_initramfs(&floor::probe_source(), &floor_dir) {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!(
                "floor: cannot build the probe from {}: {e}",
                floor::probe_source().display()
            );
            None
        }
    };
    let mut floor_ms = vec![];
    for i in 0..runs {
        if let Some(probe) = &probe {
            match Vm::new(&artifact("vmlinuz"), probe)
                .append("phase.poweroff=init.ready")
                .run()
            {
                Ok(b) => match floor::probe_uptime_ms(&b.console) {
                    Some(ms) => floor_ms.push(ms),
                    None => eprintln!("floor run {i}: no PROBE-UPTIME line\n{}", b.explain()),
                },
                Err(e) => eprintln!("floor run {i}: qemu failed: {e}"),
            }
        }
        let b = match Vm::default_artifacts()
            .append("phase.poweroff=init.ready")
            .run()
        {
            Ok(b) => b,
            Err(e) => {
                eprintln!("run {i}: qemu failed: {e}");
                continue;
            }
        };
        let (Some(s), Some(r)) = (b.event("init.start"), b.event("init.ready")) else {
            eprintln!("run {i}: no init.start/init.ready\n{}", b.explain());
            continue;
        };
        if b.outcome != Outcome::PowerOff {
            eprintln!("run {i}: ended {:?}", b.outcome);
        }
        start.push(s.t_ms as f64);
        ready_d.push(r.t_ms.saturating_sub(s.t_ms) as f64);
        ready.push(r.t_ms as f64);
        wall.push(b.wall.as_secs_f64() * 1000.0);
        boots.push(b);
    }
    let (m_start, m_work, m_ready, m_wall) =
        (median(start), median(ready_d), median(ready), median(wall));
    println!("kernel start -> init.start   median {m_start:.0} ms (guest)");
    let m_floor = median(floor_ms.clone());
    if !floor_ms.is_empty() {
        println!(
            "floor kernel start -> /init   median {m_floor:.0} ms (guest; static probe as /init, same Vm, interleaved, {} boots)",
            floor_ms.len()
        );
        println!(
            "ratio kernel->init start   phase/floor  = {:.2} (floor interleaved in this run; goal <= 1.10)",
            m_start / m_floor
        );
    }
    let _ = std::fs::remove_dir_all(&floor_dir);
    if std::env::var("BENCH_ONLY").as_deref() == Ok("start") {
        return;
    }
    println!("init.start -> init.ready     median {m_work:.0} ms (guest)");
    println!("kernel start -> init.ready   median {m_ready:.0} ms (guest), {m_wall:.0} ms wall incl. firmware+poweroff");
    println!(
        "initramfs.img                {size} bytes ({:.1} MiB)",
        size as f64 / 1048576.0
    );
    chart(&boots, "init.ready", "initramfs-only", "boot-chart.svg");

    // With the rootfs disk: init.start -> rootfs.mounted (private mode: the disk is never
    // written, so every run boots the same image).
    let disk = phase_qemu::out_dir().join("rootfs-disk.img");
    let mut m_rootfs = f64::NAN;
    if disk.exists() {
        let (mut mounted, mut boots) = (vec![], vec![]);
        for i in 0..runs {
            let b = match Vm::default_artifacts()
                .disk(&disk)
                .append("phase.mode=private phase.poweroff=rootfs.mounted")
                .run()
            {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("rootfs run {i}: qemu failed: {e}");
                    continue;
                }
            };
            let (Some(s), Some(m)) = (b.event("init.start"), b.event("rootfs.mounted")) else {
                eprintln!("rootfs run {i}: no rootfs.mounted\n{}", b.explain());
                continue;
            };
            mounted.push(m.t_ms.saturating_sub(s.t_ms) as f64);
            boots.push(b);
        }
        m_rootfs = median(mounted);
        println!(
            "init.start -> rootfs.mounted median {m_rootfs:.0} ms (guest, dm-verity rootfs disk)"
        );
        chart(
            &boots,
            "rootfs.mounted",
            "dm-verity rootfs disk",
            "boot-chart-rootfs.svg",
        );
    }

    // Diskless: net.up -> artifacts.verified, fetching the rootfs from `phase provider
    // serve out/release` through QEMU user networking (restrict=on, one guestfwd).
    if let Ok(mut srv) = std::process::Command::new(artifact("phase"))
        .args(["provider", "serve"])
        .arg(artifact("release"))
        .args(["--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
    {
        let mut line = String::new();
        if let Some(out) = srv.stdout.take() {
            let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line);
        }
        let port: u16 = line
            .rsplit(':')
            .next()
            .unwrap_or("")
            .trim()
            .trim_end_matches('/')
            .parse()
            .unwrap_or(0);
        let (mut fetch, mut boots, mut net_up) = (vec![], vec![], vec![]);
        for i in 0..runs {
            let Ok(b) = Vm::default_artifacts()
                .user_net_to(port)
                .append("phase.provider=http://10.0.2.100:8080/ phase.diskless phase.poweroff=artifacts.verified")
                .run()
            else {
                eprintln!("diskless run {i}: qemu failed");
                break;
            };
            match (b.event("net.up"), b.event("artifacts.verified")) {
                (Some(n), Some(a)) => {
                    fetch.push(a.t_ms.saturating_sub(n.t_ms) as f64);
                    if let Some(s) = b.event("init.start") {
                        net_up.push(n.t_ms.saturating_sub(s.t_ms) as f64);
                    }
                    boots.push(b);
                }
                _ => eprintln!("diskless run {i}: incomplete\n{}", b.explain()),
            }
        }
        let _ = srv.kill();
        let _ = srv.wait();
        if !fetch.is_empty() {
            let size = std::fs::metadata(artifact("release").join("rootfs.squashfs"))
                .map(|m| m.len())
                .unwrap_or(0);
            println!(
                "diskless init.start -> net.up median {:.0} ms (guest, phase.diskless, DHCP from QEMU)",
                median(net_up)
            );
            let m = median(fetch);
            println!(
                "diskless net.up -> artifacts.verified median {m:.0} ms (guest) for the {:.1} MiB rootfs = {:.1} MiB/s through QEMU user networking",
                size as f64 / 1048576.0,
                size as f64 / 1048576.0 / (m / 1000.0)
            );
            chart(
                &boots,
                "artifacts.verified",
                "diskless fetch",
                "boot-chart-diskless.svg",
            );
        }
    }

    compressors(runs);
    if all {
        mdns_discovery(runs);
        for n in [10, 30] {
            dht_lookup(n, runs);
        }
        kexec_upgrade(runs);
    }

    let Some(log) = std::env::var_os("BASELINE_LOG").and_then(|p| std::fs::read_to_string(p).ok())
    else {
        println!("(no BASELINE_LOG: Debian baseline not run)");
        return;
    };
    let (Some((floor_up, floor_wall)), Some((deb_up, deb_wall))) =
        (baseline(&log, "floor"), baseline(&log, "debian-initrd"))
    else {
        println!("BASELINE_LOG has no floor/debian-initrd figures:\n{log}");
        return;
    };
    let deb_work = (deb_up - floor_up) * 1000.0;
    println!(
        "debian floor (static probe as /init)  uptime {:.0} ms, wall {floor_wall:.0} ms",
        floor_up * 1000.0
    );
    println!(
        "debian initramfs-tools -> root init   uptime {:.0} ms, wall {deb_wall:.0} ms",
        deb_up * 1000.0
    );
    println!("debian initramfs work (minus floor)   {deb_work:.0} ms");
    if let Some(deb_size) = log.lines().find_map(|l| {
        l.split("debian-initrd=")
            .nth(1)?
            .split_whitespace()
            .next()?
            .parse::<f64>()
            .ok()
    }) {
        println!(
            "ratio initramfs size  debian/phase = {:.1}x",
            deb_size / size as f64
        );
    }
    println!(
        "ratio kernel->init start   phase/debian-floor = {:.2} (the script's floor: other QEMU line, booted before)",
        m_start / (floor_up * 1000.0)
    );
    println!("ratio boot to ready        debian/phase = {:.2}x (kernel start -> root init vs -> init.ready)", deb_up * 1000.0 / m_ready);
    println!("ratio initramfs work       debian/phase = {:.1}x (debian {deb_work:.0} ms vs phase init.start->init.ready {m_work:.0} ms)", deb_work / m_work.max(1.0));
    if m_rootfs.is_finite() {
        println!(
            "ratio to mounted root      debian/phase = {:.1}x (debian initramfs work {deb_work:.0} ms vs phase init.start->rootfs.mounted {m_rootfs:.0} ms; goal: phase <= 350 ms, 20x)",
            deb_work / m_rootfs.max(1.0)
        );
    }
}

/// LAN discovery: `net.up` -> `provider.found` for a diskless guest on a test bridge (a
/// network namespace) with `phase provider serve --mdns` on it and no `phase.provider=`.
fn mdns_discovery(runs: usize) {
    use phase_qemu::lan::{wait_for_line, Lan};
    let mut lan = Lan::new("bench");
    lan.dhcp();
    let ns = lan.member(3);
    let Ok(mut srv) = lan
        .command(&ns, artifact("phase"))
        .args(["provider", "serve"])
        .arg(artifact("release"))
        .args(["--listen", "10.216.0.3:8080", "--mdns"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
    else {
        eprintln!("mdns bench: cannot start the provider");
        return;
    };
    let out = srv.stdout.take();
    lan.keep(srv);
    if out
        .map(|o| wait_for_line(o, "announcing", std::time::Duration::from_secs(20)))
        .is_none_or(|r| r.is_err())
    {
        eprintln!("mdns bench: the provider did not announce");
        return;
    }
    let tap = lan.tap(0);
    let (mut found, mut browse) = (vec![], vec![]);
    for i in 0..runs {
        let Ok(b) = Vm::default_artifacts()
            .on_lan(&lan, &tap)
            .append("phase.mode=local phase.poweroff=provider.found")
            .run()
        else {
            eprintln!("mdns run {i}: qemu failed");
            return;
        };
        match (
            b.event("net.up"),
            b.event("provider.found"),
            b.event("discovery.done"),
        ) {
            (Some(n), Some(f), Some(d)) if f.str("how") == Some("mdns") => {
                found.push(f.t_ms.saturating_sub(n.t_ms) as f64);
                browse.push(d.fields["ms"].as_f64().unwrap_or(f64::NAN));
            }
            _ => eprintln!("mdns run {i}: incomplete\n{}", b.explain()),
        }
    }
    if !found.is_empty() {
        println!(
            "LAN discovery net.up -> provider.found (mdns) median {:.0} ms (guest; browse {:.0} ms of it, metadata fetch+verify the rest)",
            median(found),
            median(browse)
        );
    }
}

/// DHT lookup time with `n` nodes on loopback (`phase dht node` processes chained off the
/// first), one provider announced: medians of the bootstrap and the lookup as measured by
/// `phase dht lookup` (a fresh client each run, bootstrapping off a different node).
fn dht_lookup(n: usize, runs: usize) {
    use phase_qemu::lan::wait_for_line;
    use std::process::{Child, Command, Stdio};
    struct Nodes(Vec<Child>);
    impl Drop for Nodes {
        fn drop(&mut self) {
            for c in &mut self.0 {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
    let dir = phase_qemu::tempdir("bench-dht");
    let phase = artifact("phase");
    let mut nodes = Nodes(Vec::new());
    let mut addrs: Vec<String> = Vec::new();
    let spawn = |args: &[String]| {
        Command::new(&phase)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
    };
    for i in 0..n {
        let mut args: Vec<String> = vec![
            "dht".into(),
            "node".into(),
            "--create-key".into(),
            "--key".into(),
            dir.join(format!("n{i}.key")).display().to_string(),
            "--listen".into(),
            "/ip4/127.0.0.1/tcp/0".into(),
        ];
        if let Some(first) = addrs.first() {
            args.extend(["--bootstrap".into(), first.clone()]);
        }
        let Ok(mut c) = spawn(&args) else {
            eprintln!("dht bench: cannot start node {i}");
            return;
        };
        let line = c
            .stdout
            .take()
            .map(|o| wait_for_line(o, "peer_id", std::time::Duration::from_secs(20)));
        nodes.0.push(c);
        let addr = line
            .and_then(|l| l.ok())
            .and_then(|l| serde_json::from_str::<serde_json::Value>(&l).ok())
            .and_then(|v| v["listen"][0].as_str().map(str::to_string));
        match addr {
            Some(a) => addrs.push(a),
            None => {
                eprintln!("dht bench: node {i} did not listen");
                return;
            }
        }
    }
    let args: Vec<String> = [
        "dht",
        "announce",
        "--create-key",
        "--key",
        &dir.join("provider.key").display().to_string(),
        // Never fetched (the bench only looks the record up); not loopback, which nodes
        // refuse in DHT records: TEST-NET-1 (RFC 5737).
        "--url",
        "http://192.0.2.1:9/",
        "--version",
        "1",
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--bootstrap",
        &addrs[0],
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let Ok(mut c) = spawn(&args) else {
        eprintln!("dht bench: cannot announce");
        return;
    };
    let announced = c
        .stdout
        .take()
        .map(|o| wait_for_line(o, "announced", std::time::Duration::from_secs(30)));
    nodes.0.push(c);
    if !matches!(announced, Some(Ok(_))) {
        eprintln!("dht bench: the provider was not announced");
        return;
    }
    let (mut boot, mut look, mut queried) = (vec![], vec![], vec![]);
    for r in 0..runs {
        let via = &addrs[(r * 7 + 3) % n];
        let Ok(out) = Command::new(&phase)
            .args(["dht", "lookup", "--bootstrap", via])
            .stderr(Stdio::null())
            .output()
        else {
            continue;
        };
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let found = text.lines().any(|l| l.contains("\"found\""));
        if let Some(s) = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find_map(|v| v.get("summary").cloned())
        {
            if found {
                boot.push(s["bootstrap_ms"].as_f64().unwrap_or(f64::NAN));
                look.push(s["lookup_ms"].as_f64().unwrap_or(f64::NAN));
                queried.push(s["peers_queried"].as_f64().unwrap_or(f64::NAN));
            }
        }
    }
    println!(
        "DHT lookup, {n} nodes on loopback: {}/{runs} found; median bootstrap {:.0} ms, lookup {:.0} ms, {:.0} peers queried",
        look.len(),
        median(boot),
        median(look),
        median(queried)
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// What compressed `img` is, by its magic: the name and the command that unpacks it.
fn compression_of(img: &[u8]) -> (&'static str, &'static [&'static str]) {
    match img {
        [0x1f, 0x8b, ..] => ("gzip", &["gzip", "-dc"]),
        [0x02, 0x21, 0x4c, 0x18, ..] => ("lz4 (legacy)", &["lz4", "-dc"]),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => ("zstd", &["zstd", "-dc"]),
        [0xfd, b'7', b'z', b'X', b'Z', ..] => ("xz", &["xz", "-dc"]),
        _ => ("uncompressed", &["cat"]),
    }
}

/// The initramfs under each compressor the kernel unpacks (gzip, lz4 in the legacy format
/// the kernel reads, zstd, xz; `none` is the bare cpio): its size and the median kernel
/// start -> `init.start`, and the unpack time as the difference to the bare cpio. The
/// variants boot in rounds (one boot of each per round), so a change of load on the
/// shared machine hits them all alike. Picks the fastest that stays within 4 MiB.
fn compressors(runs: usize) {
    use std::process::{Command, Stdio};
    const LIMIT: u64 = 4 << 20;
    let dir = phase_qemu::tempdir("bench-compress");
    let cpio = dir.join("initramfs.cpio");
    let current = std::fs::read(artifact("initramfs.img")).unwrap_or_default();
    let (current_kind, unpack) = compression_of(&current);
    // phase-image ends an lz4 initramfs with a zero chunk size, which the kernel reads as
    // the end and the lz4 tool as an error: unpack what comes before it.
    let body = match current.strip_suffix(&[0u8; 4]) {
        Some(b) if unpack[0] == "lz4" => b,
        _ => &current[..],
    };
    let current_img = dir.join("current.img");
    let unpacked = std::fs::write(&current_img, body)
        .and_then(|()| std::fs::File::open(&current_img))
        .and_then(|input| {
            Command::new(unpack[0])
                .args(&unpack[1..])
                .stdin(input)
                .stderr(Stdio::null())
                .output()
        });
    match unpacked {
        Ok(out) if out.status.success() && std::fs::write(&cpio, &out.stdout).is_ok() => {}
        _ => {
            eprintln!(
                "compressor bench: cannot unpack out/initramfs.img ({current_kind}) with {}",
                unpack[0]
            );
            return;
        }
    }
    // The kernel's xz decoder wants CRC32 checks (docs: filesystems/ramfs-rootfs-initramfs);
    // its lz4 decoder reads only the legacy format (`lz4 -l`).
    let variants: [(&str, &[&str]); 5] = [
        ("none", &[]),
        ("gzip -9", &["gzip", "-9", "-n", "-c"]),
        ("lz4 -l -9", &["lz4", "-l", "-9", "-c"]),
        ("zstd -19", &["zstd", "-19", "-q", "-c"]),
        ("xz -9", &["xz", "--check=crc32", "-9", "-c"]),
    ];
    let mut made: Vec<(&str, std::path::PathBuf, u64)> = Vec::new();
    for (name, cmd) in variants {
        let img = dir.join(format!(
            "initramfs-{}.img",
            name.split(' ').next().unwrap_or(name)
        ));
        if cmd.is_empty() {
            let _ = std::fs::copy(&cpio, &img);
        } else {
            let ok = std::fs::File::open(&cpio).and_then(|input| {
                Command::new(cmd[0])
                    .args(&cmd[1..])
                    .stdin(input)
                    .stdout(std::fs::File::create(&img)?)
                    .stderr(Stdio::null())
                    .status()
            });
            if !ok.is_ok_and(|s| s.success()) {
                eprintln!("compressor bench: {} failed", cmd[0]);
                continue;
            }
        }
        let size = std::fs::metadata(&img).map(|m| m.len()).unwrap_or(0);
        made.push((name, img, size));
    }
    let mut start: Vec<Vec<f64>> = vec![Vec::new(); made.len()];
    for _ in 0..runs {
        for (i, (_, img, _)) in made.iter().enumerate() {
            let b = Vm::new(&artifact("vmlinuz"), img)
                .append("phase.mode=private phase.poweroff=init.start")
                .run();
            if let Some(s) = b.ok().and_then(|b| b.event("init.start").map(|e| e.t_ms)) {
                start[i].push(s as f64);
            }
        }
    }
    let rows: Vec<(&str, u64, f64)> = made
        .iter()
        .zip(start)
        .filter(|(_, s)| !s.is_empty())
        .map(|((name, _, size), s)| (*name, *size, median(s)))
        .collect();
    let bare = rows.iter().find(|r| r.0 == "none").map(|r| r.2);
    for (name, size, t) in &rows {
        let unpack = bare.map(|b| format!("{:.0}", t - b)).unwrap_or("?".into());
        println!(
            "initramfs {name:<9} {:>5.2} MiB  kernel start -> init.start median {t:.0} ms  unpack ~ {unpack} ms vs the bare cpio",
            *size as f64 / 1048576.0
        );
    }
    if let Some(best) = rows
        .iter()
        .filter(|r| r.0 != "none" && r.1 <= LIMIT)
        .min_by(|a, b| a.2.total_cmp(&b.2))
    {
        println!(
            "fastest compressor within 4 MiB: {} (out/initramfs.img is {current_kind}, {:.2} MiB)",
            best.0,
            current.len() as f64 / 1048576.0
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// `phase provider serve DIR` on 127.0.0.1: the child and its port.
fn provider(dir: &std::path::Path) -> Option<(std::process::Child, u16)> {
    let mut srv = std::process::Command::new(artifact("phase"))
        .args(["provider", "serve"])
        .arg(dir)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let mut line = String::new();
    let _ =
        std::io::BufRead::read_line(&mut std::io::BufReader::new(srv.stdout.take()?), &mut line);
    let port = line
        .rsplit(':')
        .next()?
        .trim()
        .trim_end_matches('/')
        .parse()
        .ok()?;
    Some((srv, port))
}

/// The kexec upgrade against a cold boot of N+1 (see the module docs).
fn kexec_upgrade(runs: usize) {
    let Some((mut srv, port)) = provider(&artifact("release-next")) else {
        eprintln!("kexec bench: cannot start the provider");
        return;
    };
    let next = phase_qemu::out_dir().join("next");
    let (mut guest, mut wall_gap, mut upgrade, mut cold) = (vec![], vec![], vec![], vec![]);
    for i in 0..runs {
        let (tx, rx) = std::sync::mpsc::channel();
        // Stamp each event as its line arrives, for the wall time across the kexec.
        let stamps = std::thread::spawn(move || {
            rx.iter()
                .map(|e: phase_qemu::Event| (e.name, std::time::Instant::now()))
                .collect::<Vec<_>>()
        });
        let b = Vm::default_artifacts()
            .user_net_to(port)
            .append("phase.provider=http://10.0.2.100:8080/ phase.poweroff=init.ready")
            .timeout(std::time::Duration::from_secs(300))
            .live_events(tx)
            .run();
        let stamps = stamps.join().unwrap_or_default();
        let at = |n: &str| stamps.iter().find(|(name, _)| name == n).map(|(_, t)| *t);
        match (&b, at("kexec.start"), at("stage2.start")) {
            (Ok(b), Some(k), Some(s)) if b.event("init.ready").is_some() => {
                if let Some(s2) = b.event("stage2.start") {
                    guest.push(s2.t_ms as f64);
                }
                wall_gap.push(s.duration_since(k).as_secs_f64() * 1000.0);
                upgrade.push(b.wall.as_secs_f64() * 1000.0);
            }
            (Ok(b), ..) => eprintln!("kexec run {i}: incomplete\n{}", b.explain()),
            (Err(e), ..) => eprintln!("kexec run {i}: qemu failed: {e}"),
        }
        match Vm::new(&next.join("vmlinuz"), &next.join("initramfs.img"))
            .user_net_to(port)
            .append("phase.provider=http://10.0.2.100:8080/ phase.poweroff=init.ready")
            .run()
        {
            Ok(b) if b.event("init.ready").is_some() && b.event("kexec.start").is_none() => {
                cold.push(b.wall.as_secs_f64() * 1000.0)
            }
            Ok(b) => eprintln!("cold N+1 run {i}: incomplete\n{}", b.explain()),
            Err(e) => eprintln!("cold N+1 run {i}: qemu failed: {e}"),
        }
    }
    let _ = srv.kill();
    let _ = srv.wait();
    if guest.is_empty() || cold.is_empty() {
        return;
    }
    let (g, w, u, c) = (
        median(guest),
        median(wall_gap),
        median(upgrade),
        median(cold),
    );
    println!("kexec.start -> stage2.start  median {g:.0} ms (guest clock of the new kernel), {w:.0} ms wall");
    println!(
        "upgrade N -> N+1 by kexec    median {u:.0} ms wall to init.ready (diskless, one download)"
    );
    println!("cold boot of N+1             median {c:.0} ms wall to init.ready (diskless, same provider)");
    println!("ratio upgrade/cold           = {:.2}", u / c.max(1.0));
}
