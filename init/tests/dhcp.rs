//! `phase net up` gets a DHCP lease from dnsmasq. Both run in network namespaces this test
//! creates, joined by a veth pair (10.214.0.0/24, which exists only between them).
//! Needs root, iproute2 and dnsmasq.

use std::process::{Child, Command, Stdio};

fn sh(args: &[&str]) {
    let st = Command::new(args[0]).args(&args[1..]).status().unwrap();
    assert!(st.success(), "{args:?}");
}

struct Cleanup(Vec<String>, Option<Child>);
impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(c) = self.1.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

#[test]
fn lease_from_dnsmasq() {
    let id = std::process::id() % 10000;
    let (srv, cli) = (format!("phase-d{id}-s"), format!("phase-d{id}-c"));
    let mut guard = Cleanup(vec![srv.clone(), cli.clone()], None);
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
        .args([
            "--bind-interfaces",
            &format!("--interface={vs}"),
            "--dhcp-range=10.214.0.50,10.214.0.60,255.255.255.0,1h",
        ])
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
    guard.1 = Some(dnsmasq);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &cli,
            env!("CARGO_BIN_EXE_phase"),
            "net",
            "up",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ev: serde_json::Value = serde_json::from_str(
        text.lines()
            .find_map(|l| l.strip_prefix("PHASE-EVENT "))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(ev["event"], "net.up");
    assert_eq!(ev["method"], "dhcp");
    assert_eq!(ev["iface"], vc.as_str());
    assert_eq!(ev["router"], "10.214.0.1");
    let addr = ev["addr"].as_str().unwrap();
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
    assert!(String::from_utf8_lossy(&a.stdout).contains(addr));
    let r = Command::new("ip")
        .args(["-n", &cli, "route"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&r.stdout).contains("default via 10.214.0.1"),
        "{}",
        String::from_utf8_lossy(&r.stdout)
    );
    drop(guard);
}
