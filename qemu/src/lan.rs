//! A LAN that exists only on this machine, for discovery tests: a "hub" network namespace
//! holding bridge `br0` (10.216.0.1/24), member namespaces joined to it by veth pairs
//! (10.216.0.N), tap devices for QEMU guests, dnsmasq for DHCP, and packet capture on the
//! bridge (tcpdump) so a test can prove what a guest did *not* send.
//!
//! Every test gets its own namespaces, so the same addresses can be reused in parallel
//! tests (the test bootstrap list baked into the initramfs names 10.216.0.1).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The hub's address on the bridge, where host-side services of a test listen.
pub const HUB_IP: &str = "10.216.0.1";

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The MAC address of the guest on tap device `tap` (unique per tap name).
pub fn mac(tap: &str) -> String {
    let h = tap
        .bytes()
        .fold(0u8, |a, b| a.wrapping_mul(31).wrapping_add(b));
    format!("52:54:00:16:00:{h:02x}")
}

/// The namespaces, devices and processes of one test LAN; all removed on drop.
pub struct Lan {
    tag: String,
    /// The hub namespace (bridge, taps, services at [`HUB_IP`]).
    pub hub: String,
    members: Vec<String>,
    procs: Vec<Child>,
    dir: PathBuf,
}

impl Lan {
    /// A new LAN; `name` is short and unique within the test binary.
    pub fn new(name: &str) -> Lan {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Interface names are at most 15 bytes: keep the tag short (veths are created in
        // the host namespace first, so it must be unique across processes).
        let tag = format!("p{}l{seq}", std::process::id() % 10_000);
        let _ = name;
        let hub = format!("{tag}-hub");
        let _ = Command::new("ip")
            .args(["netns", "del", &hub])
            .stderr(Stdio::null())
            .status();
        ip(&["netns", "add", &hub]);
        ip(&["-n", &hub, "link", "set", "lo", "up"]);
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"]);
        ip(&[
            "-n",
            &hub,
            "addr",
            "add",
            &format!("{HUB_IP}/24"),
            "dev",
            "br0",
        ]);
        ip(&["-n", &hub, "link", "set", "br0", "up"]);
        let dir = crate::tempdir(&format!("lan-{tag}"));
        Lan {
            tag,
            hub,
            members: Vec::new(),
            procs: Vec::new(),
            dir,
        }
    }

    /// A scratch directory removed with the LAN.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// A member namespace at 10.216.0.`host` on the bridge (its interface is `eth0`).
    pub fn member(&mut self, host: u8) -> String {
        let ns = self.member_name(host);
        let veth = format!("{}m{host}", self.tag);
        let _ = Command::new("ip")
            .args(["netns", "del", &ns])
            .stderr(Stdio::null())
            .status();
        ip(&["netns", "add", &ns]);
        ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]);
        ip(&["link", "set", &veth, "netns", &self.hub]);
        ip(&["-n", &self.hub, "link", "set", &veth, "master", "br0", "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("10.216.0.{host}/24"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        self.members.push(ns.clone());
        ns
    }

    /// The namespace of member `host` (see [`Lan::member`]).
    pub fn member_name(&self, host: u8) -> String {
        format!("{}-m{host}", self.tag)
    }

    /// A tap device on the bridge for a QEMU guest (see `Vm::on_lan`).
    pub fn tap(&mut self, n: u8) -> String {
        let tap = format!("tap{n}");
        ip(&["-n", &self.hub, "tuntap", "add", "dev", &tap, "mode", "tap"]);
        ip(&["-n", &self.hub, "link", "set", &tap, "master", "br0", "up"]);
        tap
    }

    /// A command run inside namespace `ns`.
    pub fn command(&self, ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).arg(program);
        c
    }

    /// Keep `child` running until the LAN is dropped.
    pub fn keep(&mut self, child: Child) {
        self.procs.push(child);
    }

    /// dnsmasq on the bridge: DHCP leases 10.216.0.50–99, no DNS, no router.
    pub fn dhcp(&mut self) {
        let c = self
            .command(&self.hub, "dnsmasq")
            .args([
                "--no-daemon",
                "--conf-file=/dev/null",
                "--interface=br0",
                "--bind-interfaces",
                "--port=0",
                "--no-resolv",
                "--no-hosts",
                "--leasefile-ro",
                "--dhcp-range=10.216.0.50,10.216.0.99,255.255.255.0,10m",
            ])
            .arg(format!(
                "--pid-file={}",
                self.dir.join("dnsmasq.pid").display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq (installed by make test)");
        self.keep(c);
    }

    /// avahi-daemon in `ns` announcing `service_xml` (an avahi static service file), with
    /// a private configuration: no D-Bus, this namespace's eth0 only. The host's
    /// /etc/avahi is untouched (the bind mounts live in the namespace's mount namespace).
    pub fn avahi(&mut self, ns: &str, service_xml: &str) {
        let services = self.dir.join(format!("avahi-{ns}"));
        std::fs::create_dir_all(&services).unwrap();
        std::fs::write(services.join("phase.service"), service_xml).unwrap();
        let conf = self.dir.join(format!("avahi-{ns}.conf"));
        std::fs::write(
            &conf,
            "[server]\nhost-name=avahi-provider\nuse-ipv4=yes\nuse-ipv6=no\n\
             allow-interfaces=eth0\nenable-dbus=no\n[wide-area]\nenable-wide-area=no\n\
             [publish]\npublish-hinfo=no\npublish-workstation=no\n",
        )
        .unwrap();
        let script = format!(
            "mount --bind {s} /etc/avahi/services && mkdir -p /run/avahi-daemon && \
             mount -t tmpfs tmpfs /run/avahi-daemon && \
             exec avahi-daemon -f {c} --no-drop-root --no-chroot --no-rlimits",
            s = services.display(),
            c = conf.display()
        );
        let mut c = self
            .command(ns, "sh")
            .args(["-c", &script])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("avahi-daemon (installed by make test)");
        let err = c.stderr.take().unwrap();
        self.keep(c);
        wait_for_line(err, "successfully established", Duration::from_secs(20))
            .expect("avahi-daemon established the service");
    }

    /// Start capturing every frame on the bridge.
    pub fn capture(&mut self) -> Capture {
        let file = self.dir.join(format!("capture-{}.pcap", self.procs.len()));
        let mut c = self
            .command(&self.hub, "tcpdump")
            .args(["-i", "br0", "-n", "-U", "-w"])
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tcpdump (installed by make test)");
        let err = c.stderr.take().unwrap();
        wait_for_line(err, "listening on", Duration::from_secs(10)).expect("tcpdump started");
        Capture { child: c, file }
    }
}

/// Wait until a line containing `needle` appears on `r` (keeps draining it afterwards).
pub fn wait_for_line(
    r: impl std::io::Read + Send + 'static,
    needle: &str,
    bound: Duration,
) -> Result<String, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let needle = needle.to_string();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            if !sent && line.contains(&needle) {
                sent = tx.send(line).is_ok();
            }
        }
    });
    rx.recv_timeout(bound)
        .map_err(|_| format!("no line containing the expected text within {bound:?}"))
}

impl Drop for Lan {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.kill();
            let _ = p.wait();
        }
        for ns in self.members.iter().chain(std::iter::once(&self.hub)) {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A running capture on the bridge.
pub struct Capture {
    child: Child,
    file: PathBuf,
}

/// The captured packets, readable with BPF filters.
pub struct Captured {
    file: PathBuf,
}

impl Capture {
    /// Stop capturing (tcpdump flushes on SIGINT).
    pub fn stop(mut self) -> Captured {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        Captured {
            file: self.file.clone(),
        }
    }
}

impl Captured {
    /// One summary line per packet matching the BPF `filter` (tcpdump syntax).
    pub fn packets(&self, filter: &str) -> Vec<String> {
        let out = Command::new("tcpdump")
            .args(["-r"])
            .arg(&self.file)
            .args(["-n", "-q", filter])
            .output()
            .expect("tcpdump -r");
        assert!(
            out.status.success(),
            "tcpdump -r {} {filter:?}: {}",
            self.file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }
}
