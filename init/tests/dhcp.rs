//! `phase net up --keep` gets a DHCP lease from dnsmasq and renews it at T1. Both run in
//! network namespaces this test creates, joined by a veth pair (10.214.0.0/24, which exists
//! only between them). Needs root, iproute2 and dnsmasq.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn sh(args: &[&str]) {
    let st = Command::new(args[0]).args(&args[1..]).status().unwrap();
    assert!(st.success(), "{args:?}");
}

struct Cleanup(Vec<String>, Vec<Child>);
impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &mut self.1 {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

#[test]
fn lease_from_dnsmasq_and_renewal() {
    let id = std::process::id() % 10000;
    let (srv, cli) = (format!("phase-d{id}-s"), format!("phase-d{id}-c"));
    let mut guard = Cleanup(vec![srv.clone(), cli.clone()], Vec::new());
    for ns in [&srv, &cli] {
        let _ = Command::new("ip").args(["netns", "del", ns]).status();
        sh(&["ip", "netns", "add", ns]);
    }
    let (vs, vc) = (format!("pd{id}s"), format!("pd{id}c"));
    sh(&[
        "ip", "-n", &srv, "link", "add", &vs, "type", "veth", "peer", "name", &vc, "netns", &cli,
    ]);
    sh(&["ip", "-n", &srv, "addr", "add", "10.214.0.1/24", "dev", &vs]);
    sh(&["ip", "-n", &srv, "link", "set", &vs, "up"]);
    // dnsmasq's shortest lease is 2 minutes: T1 (renewal) comes after 60 s.
    let dnsmasq = Command::new("ip")
        .args([
            "netns",
            "exec",
            &srv,
            "dnsmasq",
            "--no-daemon",
            "--port=0",
            "--no-resolv",
            "--no-hosts",
        ])
        .args(["--bind-interfaces", &format!("--interface={vs}")])
        .args(["--dhcp-range=10.214.0.50,10.214.0.60,255.255.255.0,2m"])
        .args([
            "--dhcp-option=3,10.214.0.1",
            "--dhcp-option=6,10.214.0.1",
            "--leasefile-ro",
            "--log-facility=-",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("dnsmasq (installed by make test)");
    guard.1.push(dnsmasq);
    std::thread::sleep(Duration::from_millis(300));
    let mut client = Command::new("ip")
        .args([
            "netns",
            "exec",
            &cli,
            env!("CARGO_BIN_EXE_phase"),
            "net",
            "up",
            "--keep",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = client.stdout.take().unwrap();
    guard.1.push(client);
    let (tx, rx) = std::sync::mpsc::channel::<serde_json::Value>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(j) = line.strip_prefix("PHASE-EVENT ") {
                let _ = tx.send(serde_json::from_str(j).unwrap());
            }
        }
    });
    let ev = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("net.up within the DHCP bound");
    assert_eq!(ev["event"], "net.up");
    assert_eq!(ev["method"], "dhcp");
    assert_eq!(ev["iface"], vc.as_str());
    assert_eq!(ev["router"], "10.214.0.1");
    let addr = ev["addr"].as_str().unwrap().to_string();
    let last: u8 = addr
        .trim_start_matches("10.214.0.")
        .trim_end_matches("/24")
        .parse()
        .unwrap();
    assert!((50..=60).contains(&last), "{addr}");
    // The address is really configured on the interface, with the default route.
    let a = Command::new("ip")
        .args(["-n", &cli, "-4", "addr", "show", &vc])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&a.stdout).contains(&addr));
    let r = Command::new("ip")
        .args(["-n", &cli, "route"])
        .output()
        .unwrap();
    let routes = String::from_utf8_lossy(&r.stdout).into_owned();
    assert!(routes.contains("default via 10.214.0.1"), "{routes}");

    let renewed = rx
        .recv_timeout(Duration::from_secs(100))
        .expect("net.renewed at T1");
    assert_eq!(renewed["event"], "net.renewed");
    assert_eq!(renewed["addr"].as_str(), Some(addr.trim_end_matches("/24")));
    assert_eq!(renewed["lease_secs"], 120);
    let waited = renewed["t_ms"].as_u64().unwrap() - ev["t_ms"].as_u64().unwrap();
    assert!(
        (55_000..80_000).contains(&waited),
        "renewed after {waited} ms; T1 is 60 s"
    );
    drop(guard);
}
