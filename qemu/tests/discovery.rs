//! Provider discovery on a LAN that exists only here: a bridge in a network namespace
//! (10.216.0.0/24), member namespaces on veth pairs, QEMU guests on tap devices, dnsmasq
//! for DHCP, and tcpdump on the bridge to check what a mode must not send.
//! Needs root, iproute2, dnsmasq, avahi-daemon and tcpdump (installed by `make test`).

use phase_qemu::lan::{wait_for_line, Lan};
use phase_qemu::{artifact, host_phase, Boot, Firmware, Vm};
use std::process::{Command, Stdio};
use std::time::Duration;

/// `phase provider serve out/release --mdns` in namespace `ns` at `ip:8080`.
fn announced_provider(lan: &mut Lan, ns: &str, ip: &str) -> u32 {
    let mut c = lan
        .command(ns, host_phase())
        .args(["provider", "serve"])
        .arg(artifact("release"))
        .args(["--listen", &format!("{ip}:8080"), "--mdns"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = c.stdout.take().unwrap();
    let pid = c.id();
    lan.keep(c);
    wait_for_line(out, "announcing", Duration::from_secs(20)).expect("provider announced");
    pid
}

/// A plain static HTTP server (python) serving out/release, announced by avahi.
fn avahi_provider(lan: &mut Lan, ns: &str, ip: &str) {
    let http = lan
        .command(ns, "python3")
        .args(["-m", "http.server", "8000", "--bind", ip, "--directory"])
        .arg(artifact("release"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3");
    lan.keep(http);
    lan.avahi(
        ns,
        r#"<?xml version="1.0" standalone='no'?>
<!DOCTYPE service-group SYSTEM "avahi-service.dtd">
<service-group>
  <name>plain static server</name>
  <service>
    <type>_phase-boot._tcp</type>
    <port>8000</port>
    <txt-record>txtvers=1</txt-record>
    <txt-record>channel=stable</txt-record>
    <txt-record>arch=x86_64</txt-record>
    <txt-record>version=1</txt-record>
    <txt-record>path=/</txt-record>
  </service>
</service-group>
"#,
    );
}

/// `phase discover` run in namespace `ns`: the URLs it printed.
fn discover(lan: &Lan, ns: &str) -> Vec<String> {
    let out = lan
        .command(ns, host_phase())
        // A long settle: under load a second responder can answer well after the first.
        .args(["discover", "--timeout-ms", "4000", "--settle-ms", "3000"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["url"].as_str().map(str::to_string))
        .collect()
}

/// Browse up to `attempts` times until the sorted URLs equal `want`; the last answer.
/// One browse settles 400 ms after its first answer, so under load a slower responder can
/// miss one browse: a responder that never answers (or never withdraws) misses them all.
fn discover_until(lan: &Lan, ns: &str, want: &[&str], attempts: u32) -> Vec<String> {
    let mut found = Vec::new();
    for _ in 0..attempts {
        found = discover(lan, ns);
        found.sort();
        if found == want {
            break;
        }
    }
    found
}

#[test]
fn mdns_finds_our_provider_and_an_avahi_announced_static_server() {
    let mut lan = Lan::new("md");
    let (p_avahi, p_ours, client) = (lan.member(2), lan.member(3), lan.member(4));
    avahi_provider(&mut lan, &p_avahi, "10.216.0.2");
    let ours = announced_provider(&mut lan, &p_ours, "10.216.0.3");
    let both = ["http://10.216.0.2:8000/", "http://10.216.0.3:8080/"];
    assert_eq!(
        discover_until(&lan, &client, &both, 3),
        both,
        "both providers on the LAN"
    );
    // Announcements stop on shutdown: SIGTERM withdraws ours (goodbye packets).
    assert!(Command::new("kill")
        .args(["-TERM", &ours.to_string()])
        .status()
        .unwrap()
        .success());
    std::thread::sleep(Duration::from_millis(1500));
    let avahi = ["http://10.216.0.2:8000/"];
    assert_eq!(discover_until(&lan, &client, &avahi, 3), avahi);
}

/// A diskless guest on a tap device on the test bridge, with no `phase.provider=`.
fn lan_guest(lan: &mut Lan, append: &str) -> Boot {
    let tap = lan.tap(0);
    Vm::default_artifacts()
        .on_lan(lan, &tap)
        .append(append)
        .run()
        .unwrap()
}

/// What each discovery method found: (how, count), in order.
fn discovered(b: &Boot) -> Vec<(&str, u64)> {
    b.all("discovery.done")
        .iter()
        .map(|d| {
            (
                d.str("how").unwrap_or("?"),
                d.fields["found"].as_u64().unwrap_or(u64::MAX),
            )
        })
        .collect()
}

/// The guest found its provider `how` at `url` and booted that release into stage 2.
fn assert_booted_from(b: &Boot, how: &str, url: &str) {
    let found = b.expect("provider.found");
    assert_eq!(
        (found.str("how"), found.str("url")),
        (Some(how), Some(url)),
        "{}",
        b.explain()
    );
    b.assert_order(&[
        "net.up",
        "provider.found",
        "release.verified",
        "artifacts.verified",
        "rootfs.mounted",
        "stage2.start",
        "init.ready",
    ]);
    assert_eq!(b.expect("init.ready").fields["stage"], 2);
}

#[test]
fn diskless_guest_discovers_a_provider_by_mdns_and_boots_its_release() {
    let mut lan = Lan::new("qm");
    lan.dhcp();
    let p = lan.member(3);
    announced_provider(&mut lan, &p, "10.216.0.3");
    let b = lan_guest(&mut lan, "phase.mode=local phase.poweroff=init.ready");
    b.assert_clean_poweroff();
    b.assert_order(&["net.up", "discovery.done", "provider.found"]);
    assert_booted_from(&b, "mdns", "http://10.216.0.3:8080/");
    assert_eq!(discovered(&b), [("mdns", 1)], "{}", b.explain());
    // Stage 2 announced what it serves, and withdrew it before shutting down.
    let a = b.expect("provider.announced");
    assert_eq!(a.str("how"), Some("mdns"), "{}", a.fields);
    assert!(a.str("url").unwrap().starts_with("http://10.216.0."));
    b.assert_order(&[
        "provider.announced",
        "init.ready",
        "provider.withdrawn",
        "shutdown",
    ]);
    assert_eq!(b.expect("provider.withdrawn").str("how"), Some("mdns"));
}

#[test]
fn private_mode_sends_no_mdns_packets() {
    let mut lan = Lan::new("pv");
    lan.dhcp();
    let p = lan.member(3);
    announced_provider(&mut lan, &p, "10.216.0.3");
    let cap = lan.capture();
    // A provider URL that answers, so the boot does reach the network and fetch.
    // Under UEFI (OVMF): the other LAN tests boot with SeaBIOS.
    let tap = lan.tap(0);
    let b = Vm::default_artifacts()
        .firmware(Firmware::Uefi)
        .on_lan(&lan, &tap)
        .append(
            "phase.mode=private phase.provider=http://10.216.0.3:8080/ phase.poweroff=init.ready",
        )
        .run()
        .unwrap();
    let seen = cap.stop();
    b.assert_clean_poweroff();
    assert_eq!(b.expect("provider.found").str("how"), Some("url"));
    assert!(b.event("discovery.done").is_none(), "{}", b.explain());
    // A private node serves and announces nothing.
    assert!(b.event("provider.announced").is_none(), "{}", b.explain());
    let guest = phase_qemu::lan::mac("tap0");
    let mdns_from_guest = seen.packets(&format!("ether src {guest} and udp port 5353"));
    assert!(mdns_from_guest.is_empty(), "{mdns_from_guest:#?}");
    // The capture did see the guest's traffic (DHCP and the fetch): it was looking.
    assert!(!seen
        .packets(&format!("ether src {guest} and udp port 67"))
        .is_empty());
    assert!(!seen
        .packets(&format!("ether src {guest} and tcp port 8080"))
        .is_empty());
}

/// A farm boots from its peers: guest A boots from the host's provider (found by mDNS),
/// then serves and announces its own verified release. The host's provider leaves (with
/// goodbye packets); guest B finds A by mDNS and boots from it.
#[test]
fn a_booted_node_serves_its_release_and_the_next_boots_from_it() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{mpsc, Arc};
    let mut lan = Lan::new("fm");
    lan.dhcp();
    let p = lan.member(3);
    let host_provider = announced_provider(&mut lan, &p, "10.216.0.3");
    let (tap_a, tap_b) = (lan.tap(0), lan.tap(1));
    let (tx, rx) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let vm_a = Vm::default_artifacts()
        .on_lan(&lan, &tap_a)
        .append("phase.mode=local")
        .live_events(tx)
        .stop_when(stop.clone())
        .timeout(Duration::from_secs(400));
    let a = std::thread::spawn(move || vm_a.run().unwrap());
    let announced = loop {
        let e = rx
            .recv_timeout(phase_qemu::scaled(Duration::from_secs(200)))
            .expect("guest A announces its release");
        if e.name == "provider.announced" {
            break e;
        }
    };
    assert_eq!(announced.str("how"), Some("mdns"), "{}", announced.fields);
    let a_url = announced.str("url").unwrap().to_string();
    assert!(a_url.starts_with("http://10.216.0."), "{a_url}");
    assert!(Command::new("kill")
        .args(["-TERM", &host_provider.to_string()])
        .status()
        .unwrap()
        .success());
    let b = Vm::default_artifacts()
        .on_lan(&lan, &tap_b)
        .append("phase.mode=local phase.poweroff=init.ready")
        .run()
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    let a = a.join().unwrap();
    b.assert_clean_poweroff();
    assert_booted_from(&b, "mdns", &a_url);
    // A served the whole time without failing.
    assert!(
        a.event("task.failed").is_none() && a.event("panic").is_none(),
        "{}",
        a.explain()
    );
    assert_eq!(a.expect("init.ready").fields["stage"], 2);
}

/// A test LAN with DHCP, the DHT bootstrap node of the test list baked into the initramfs
/// (10.216.0.1:4001, keys/test/TEST-dht-bootstrap.key), and a provider at 10.216.0.3 that
/// is announced only in the DHT (`phase provider serve --dht-key`, no mDNS).
fn dht_lan(name: &str) -> Lan {
    let mut lan = Lan::new(name);
    lan.dhcp();
    let top = artifact("phase").parent().unwrap().join("..");
    let mut node = lan
        .command(&lan.hub.clone(), host_phase())
        .args(["dht", "node", "--key"])
        .arg(top.join("keys/test/TEST-dht-bootstrap.key"))
        .args(["--listen", "/ip4/10.216.0.1/tcp/4001"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = node.stdout.take().unwrap();
    lan.keep(node);
    wait_for_line(out, "peer_id", Duration::from_secs(20)).expect("bootstrap node listening");
    let p = lan.member(3);
    let key = lan.dir().join("provider-node.key");
    let mut serve = lan
        .command(&p, host_phase())
        .args(["provider", "serve"])
        .arg(artifact("release"))
        .args(["--listen", "10.216.0.3:8080", "--dht-key"])
        .arg(&key)
        .arg("--bootstrap-file")
        .arg(artifact("bootstrap-peers"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = serve.stdout.take().unwrap();
    lan.keep(serve);
    wait_for_line(out, "in the DHT", Duration::from_secs(30)).expect("provider in the DHT");
    lan
}

/// Internet mode: the LAN first (nothing there), then the DHT, which has the provider; the
/// booted node then publishes its own signed record in the DHT, which a lookup from another
/// machine finds and verifies.
#[test]
fn internet_mode_tries_the_lan_then_the_dht_and_the_node_then_announces_itself() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{mpsc, Arc};
    let mut lan = dht_lan("di");
    let cap = lan.capture();
    let tap = lan.tap(0);
    let (tx, rx) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let vm = Vm::default_artifacts()
        .on_lan(&lan, &tap)
        .append("phase.mode=internet")
        .live_events(tx)
        .stop_when(stop.clone());
    let guest = std::thread::spawn(move || vm.run().unwrap());
    let announced = loop {
        match rx.recv_timeout(phase_qemu::scaled(Duration::from_secs(200))) {
            Ok(e) if e.name == "provider.announced" && e.str("how") == Some("dht") => {
                break Some(e)
            }
            Ok(e) if e.name == "fallback" || e.name == "task.failed" => {
                eprintln!("guest: {} {}", e.name, e.fields)
            }
            Ok(_) => {}
            Err(_) => break None,
        }
    };
    // Another machine on the LAN looks the channel up: both records verify.
    let lookup = lan
        .command(&lan.member_name(3), host_phase())
        .args(["dht", "lookup", "--bootstrap-file"])
        .arg(artifact("bootstrap-peers"))
        .output()
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    let b = guest.join().unwrap();
    let seen = cap.stop();
    let announced = announced.unwrap_or_else(|| panic!("no DHT announcement\n{}", b.explain()));
    assert_eq!(discovered(&b), [("mdns", 0), ("dht", 1)], "{}", b.explain());
    assert_booted_from(&b, "dht", "http://10.216.0.3:8080/");
    let own = announced.str("url").unwrap().to_string();
    let urls: Vec<String> = String::from_utf8_lossy(&lookup.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["found"]["url"].as_str().map(str::to_string))
        .collect();
    assert!(
        urls.contains(&own) && urls.contains(&"http://10.216.0.3:8080/".to_string()),
        "{urls:?} should hold the guest's {own} and the host provider"
    );
    // The capture sees the guest talk to the bootstrap peer (the control for the next test).
    let mac = phase_qemu::lan::mac("tap0");
    assert!(!seen
        .packets(&format!(
            "ether src {mac} and dst host 10.216.0.1 and tcp dst port 4001"
        ))
        .is_empty());
}

#[test]
fn local_mode_sends_nothing_to_bootstrap_peers() {
    let mut lan = dht_lan("dl");
    let cap = lan.capture();
    let b = lan_guest(
        &mut lan,
        "phase.mode=local phase.fetch.attempts=1 phase.poweroff=init.ready",
    );
    let seen = cap.stop();
    b.assert_clean_poweroff();
    assert_eq!(discovered(&b), [("mdns", 0)], "{}", b.explain());
    // The DHT had a provider; local mode must not have used it.
    assert!(b.event("provider.found").is_none(), "{}", b.explain());
    let f = b.all("fallback");
    assert!(
        f.iter()
            .any(|e| e.str("step") == Some("fetch")
                && e.str("reason") == Some("no_verified_release")),
        "{}",
        b.explain()
    );
    let guest = phase_qemu::lan::mac("tap0");
    let to_bootstrap = seen.packets(&format!(
        "ether src {guest} and ip dst host 10.216.0.1 and not udp port 67"
    ));
    assert!(to_bootstrap.is_empty(), "{to_bootstrap:#?}");
    let to_dht = seen.packets(&format!("ether src {guest} and tcp port 4001"));
    assert!(to_dht.is_empty(), "{to_dht:#?}");
    // It was on the LAN and browsing (the capture was working).
    assert!(!seen
        .packets(&format!("ether src {guest} and udp port 5353"))
        .is_empty());
}

/// The same release on the LAN (mDNS) and in the DHT: both verify, and the tie goes to the
/// LAN, which comes first in the list the artifacts are fetched from.
#[test]
fn internet_mode_ties_prefer_the_lan() {
    let mut lan = dht_lan("dt");
    let m = lan.member(4);
    announced_provider(&mut lan, &m, "10.216.0.4");
    let b = lan_guest(
        &mut lan,
        "phase.mode=internet phase.poweroff=release.verified",
    );
    b.assert_clean_poweroff();
    assert_eq!(discovered(&b), [("mdns", 1), ("dht", 1)], "{}", b.explain());
    let found: Vec<_> = b
        .all("provider.found")
        .iter()
        .map(|f| (f.str("how"), f.str("url")))
        .collect();
    assert_eq!(
        found,
        [
            (Some("mdns"), Some("http://10.216.0.4:8080/")),
            (Some("dht"), Some("http://10.216.0.3:8080/"))
        ]
    );
    let v = b.expect("release.verified");
    assert_eq!(
        v.fields["providers"],
        serde_json::json!(["http://10.216.0.4:8080/", "http://10.216.0.3:8080/"]),
        "{}",
        v.fields
    );
}

/// Internet mode with the DHT unreachable (no node at the bootstrap address): the DHT step
/// falls back, named, and the boot goes on with what the LAN offered.
#[test]
fn internet_mode_without_the_dht_still_boots_from_the_lan() {
    let mut lan = Lan::new("nd");
    lan.dhcp();
    let p = lan.member(3);
    announced_provider(&mut lan, &p, "10.216.0.3");
    let b = lan_guest(
        &mut lan,
        "phase.mode=internet phase.poweroff=release.verified",
    );
    b.assert_clean_poweroff();
    let dht: Vec<_> = b
        .all("fallback")
        .iter()
        .filter(|f| f.str("step") == Some("dht"))
        .map(|f| f.str("reason"))
        .collect();
    assert_eq!(dht, [Some("bootstrap_unreachable")], "{}", b.explain());
    assert_eq!(
        b.expect("provider.found").str("how"),
        Some("mdns"),
        "{}",
        b.explain()
    );
    b.assert_order(&[
        "discovery.done",
        "fallback",
        "provider.found",
        "release.verified",
    ]);
}
