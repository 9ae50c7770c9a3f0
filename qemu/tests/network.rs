//! Diskless boots from a provider (QEMU user networking, `restrict=on`, one guestfwd to a
//! server on 127.0.0.1), and the bounded failure paths of the network steps.

use phase_qemu::{artifact, host_phase, Boot, Vm};
use std::io::BufRead;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `phase provider serve out/release` on 127.0.0.1, returning its port.
fn our_provider() -> (Server, u16) {
    let mut c = Command::new(host_phase())
        .args(["provider", "serve"])
        .arg(artifact("release"))
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(c.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .rsplit(':')
        .next()
        .unwrap()
        .trim()
        .trim_end_matches('/')
        .parse()
        .unwrap();
    (Server(c), port)
}

/// Python's http.server: a plain static server that knows nothing of ranges or ETags.
fn static_server() -> (Server, u16) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let c = Command::new("python3")
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--directory",
        ])
        .arg(artifact("release"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 (installed by make test)");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (Server(c), port)
}

fn diskless(port: u16) -> Boot {
    Vm::default_artifacts()
        .user_net_to(port)
        .append("phase.provider=http://10.0.2.100:8080/ phase.diskless phase.poweroff=init.ready")
        .run()
        .unwrap()
}

fn assert_diskless_boot(b: &Boot) {
    b.assert_clean_poweroff();
    b.assert_order(&[
        "net.up",
        "provider.found",
        "release.verified",
        "artifacts.verified",
        "rootfs.verified",
        "rootfs.mounted",
        "stage2.start",
        "init.ready",
    ]);
    let net = b.expect("net.up");
    assert_eq!(
        (net.str("method"), net.str("addr")),
        (Some("dhcp"), Some("10.0.2.15/24")),
        "{}",
        net.fields
    );
    assert_eq!(b.expect("provider.found").str("how"), Some("url"));
    // The fetched rootfs was checked by its dm-verity tree as it arrived (every CPU).
    let v = b.expect("rootfs.verified");
    assert_eq!(v.str("method"), Some("verity-tree"), "{}", v.fields);
    // phase.diskless: the local step did not wait for a boot medium.
    let w = b.expect("disk.waited");
    assert_eq!(
        (
            w.fields["bound_ms"].as_u64(),
            w.str("ended"),
            w.str("medium")
        ),
        (Some(0), Some("bound"), None),
        "{}",
        w.fields
    );
    assert_eq!(b.expect("init.ready").fields["stage"], 2);
    assert_eq!(b.expect("stage2.start").str("root_fs"), Some("overlay"));
    assert_rng_bound_before_the_nic(b);
}

/// A diskless boot binds the RNG and loads its driver first, then binds the NIC, in one
/// thread: the two PCI probes never overlap (at once they contend in the kernel's ACPI
/// interpreter), and DHCP's first `getrandom` finds the RNG bound. Both before `net.up`.
fn assert_rng_bound_before_the_nic(b: &Boot) {
    let (entropy, network) = (b.modules_group("entropy"), b.modules_group("network"));
    let bound = |e: &phase_qemu::Event| e.fields["bound"].as_array().map_or(0, |a| a.len());
    assert_eq!((bound(entropy), bound(network)), (1, 1), "{}", b.explain());
    let span = |e: &phase_qemu::Event| (e.fields["from_ms"].as_u64(), e.fields["to_ms"].as_u64());
    let ((Some(rng_from), Some(rng_to)), (Some(nic_from), Some(nic_to))) =
        (span(entropy), span(network))
    else {
        panic!("modules.loaded without from_ms/to_ms:\n{}", b.explain());
    };
    assert!(
        rng_from <= rng_to && rng_to <= nic_from && nic_from <= nic_to,
        "RNG {rng_from}..{rng_to} ms, NIC {nic_from}..{nic_to} ms:\n{}",
        b.explain()
    );
    assert!(nic_to <= b.expect("net.up").t_ms, "{}", b.explain());
}

#[test]
fn diskless_boot_from_our_provider() {
    let (_s, port) = our_provider();
    assert_diskless_boot(&diskless(port));
}

#[test]
fn diskless_boot_from_a_plain_static_server() {
    let (_s, port) = static_server();
    assert_diskless_boot(&diskless(port));
}

/// No NIC at all: the network step fails at once, named, and the boot goes on.
#[test]
fn no_link_falls_back() {
    let b = Vm::default_artifacts()
        .append("phase.provider=http://10.0.2.100:8080/ phase.poweroff=init.ready")
        .run()
        .unwrap();
    b.assert_clean_poweroff();
    let f = b.expect("fallback");
    assert_eq!(
        (f.str("step"), f.str("reason")),
        (Some("network"), Some("no_interface"))
    );
    assert_eq!(b.expect("init.ready").fields["stage"], 1);
}

/// A link where no DHCP server answers: bounded by DHCP_BOUND (12 s), then fallback.
#[test]
fn no_dhcp_answer_falls_back_within_bound() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let b = Vm::default_artifacts()
        .silent_net(port)
        .append("phase.provider=http://10.0.2.100:8080/ phase.poweroff=init.ready")
        .run()
        .unwrap();
    b.assert_clean_poweroff();
    let f = b.expect("fallback");
    assert_eq!(
        (f.str("step"), f.str("reason")),
        (Some("network"), Some("no_dhcp_answer"))
    );
    let (start, end) = (b.expect("modules.loaded").t_ms, f.t_ms);
    assert!(
        end - start < 12_000 + 3_000 + 2_000,
        "took {} ms",
        end - start
    );
}

/// A provider that accepts connections and never answers, with `phase.fetch.attempts=2`:
/// each attempt asks it for the next root and for `release.json`, each left as stalled
/// within the idle bound (2 × 10 s, + 2 s of slack); the whole fetch is tried once more
/// after 5 s (`fetch.retry`), then the boot goes on. The bounds are read from the guest's
/// event times, not the test's clock.
#[test]
fn silent_provider_falls_back_within_bound() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming().flatten() {
            held.push(s); // accept, read nothing, say nothing
        }
    });
    let b = Vm::default_artifacts()
        .user_net_to(port)
        .append("phase.provider=http://10.0.2.100:8080/ phase.fetch.attempts=2")
        .append("phase.poweroff=init.ready")
        .run()
        .unwrap();
    b.assert_clean_poweroff();
    b.assert_order(&["net.up", "fallback", "fetch.retry", "init.ready"]);
    let stalled: Vec<_> = b
        .all("fallback")
        .into_iter()
        .filter(|e| e.str("reason") == Some("stalled"))
        .collect();
    assert_eq!(stalled.len(), 2, "one per attempt\n{}", b.explain());
    let retry = b.all("fetch.retry");
    assert_eq!(retry.len(), 1, "{}", b.explain());
    assert_eq!(
        (
            &retry[0].fields["attempt"],
            &retry[0].fields["reason"],
            &retry[0].fields["delay_ms"]
        ),
        (
            &serde_json::json!(1),
            &serde_json::json!("no_verified_release"),
            &serde_json::json!(5000)
        )
    );
    // Each attempt asks the named provider first: it is left within the idle bound.
    let starts = [
        b.expect("net.up").t_ms,
        retry[0].t_ms + retry[0].fields["delay_ms"].as_u64().unwrap(),
    ];
    for (start, stall) in starts.iter().zip(&stalled) {
        let took = stall.t_ms - start;
        assert!(
            took <= 2 * 10_000 + 2_000,
            "stalled after {took} ms\n{}",
            b.explain()
        );
    }
    let last = b.all("fallback").into_iter().last().unwrap();
    assert!(last.t_ms > retry[0].t_ms, "{}", b.explain());
    assert_eq!(
        (last.str("step"), last.str("reason")),
        (Some("fetch"), Some("no_verified_release"))
    );
    assert_eq!(b.expect("init.ready").fields["stage"], 1);
}
