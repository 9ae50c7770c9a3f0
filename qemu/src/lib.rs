//! The QEMU boot harness every boot test uses.
//!
//! [`Vm`] describes one boot (kernel, initramfs, command line, disks, firmware); [`Vm::run`]
//! starts `qemu-system-x86_64` under TCG (KVM only if a quick probe boot succeeds, see
//! [`accel`]), captures the serial console, parses `PHASE-EVENT` lines as they arrive, and
//! returns a [`Boot`]: the timeline, the console text and how the guest ended. Every
//! timeout is multiplied by `PHASE_TIMEOUT_SCALE` (default 1.0).
//!
//! Networking is off unless a test adds it: no test traffic leaves this machine.
//!
//! The guest's clock is the harness's: QEMU starts the guest RTC at this process's wall
//! clock (`-rtc base=`), or at [`Vm::guest_clock`]. So `make test-future`, which runs the test
//! binaries under libfaketime, moves every guest's date with them (docs/testing.md).

pub mod chart;
pub mod floor;
pub mod lan;
pub mod provider;
pub mod story;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Where the build put its artifacts: `$PHASE_OUT`, else `<workspace>/out`.
pub fn out_dir() -> PathBuf {
    std::env::var_os("PHASE_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../out"))
}

/// An artifact in [`out_dir`], which must exist (a test must not pass by skipping).
pub fn artifact(name: &str) -> PathBuf {
    let p = out_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: run `make build` (or `make test`, which builds first)",
        p.display()
    );
    p
}

/// A fresh scratch directory for one test, named after it and this process.
pub fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("phase-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    let _ = std::fs::create_dir_all(&d);
    d
}

/// The `phase` binary the tests run on this machine (providers, DHT nodes, fetches beside
/// the guests): `$PHASE_HOST_PHASE` if set, else `out/phase`. `make test-future` points it
/// at the dynamically linked build of the same source, because libfaketime (LD_PRELOAD)
/// cannot move the clock of the static `out/phase`.
pub fn host_phase() -> PathBuf {
    host_build_or("phase")
}

/// The `phase` that submits jobs to a guest's node from this host (`job run`, `receipt
/// verify`): `$PHASE_HOST_PHASE` if set (the debug build has the executor too), else
/// `out/phase-node`. A requester signs its request with its own clock and a node refuses
/// one more than five minutes off its clock, so under `make test-future` the requester
/// must see the moved clock as the guest does.
pub fn host_phase_node() -> PathBuf {
    host_build_or("phase-node")
}

/// `$PHASE_HOST_PHASE` if set, else `out/NAME`.
fn host_build_or(name: &str) -> PathBuf {
    match std::env::var_os("PHASE_HOST_PHASE") {
        Some(p) => PathBuf::from(p),
        None => artifact(name),
    }
}

/// `-rtc base=` for a guest whose clock reads `t`: UTC, `YYYY-MM-DDTHH:MM:SS`.
pub fn rtc_base(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(d) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            d.year(),
            d.month() as u8,
            d.day(),
            d.hour(),
            d.minute(),
            d.second()
        ),
        Err(_) => "utc".into(),
    }
}

/// The one global timeout multiplier, `PHASE_TIMEOUT_SCALE` (default 1.0).
pub fn timeout_scale() -> f64 {
    std::env::var("PHASE_TIMEOUT_SCALE")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|v| *v > 0.0)
        .unwrap_or(1.0)
}

/// `base` scaled by [`timeout_scale`].
pub fn scaled(base: Duration) -> Duration {
    base.mul_f64(timeout_scale())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    fn arg(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// The accelerator: `PHASE_ACCEL=kvm|tcg` if set; otherwise KVM only if `/dev/kvm` opens
/// and a probe boot powers off within 20 s (on these machines a KVM guest can hang), else
/// TCG. Probed once per build (`out/accel.probe`, removed by `make build`).
pub fn accel() -> Accel {
    static ACCEL: OnceLock<Accel> = OnceLock::new();
    *ACCEL.get_or_init(|| match std::env::var("PHASE_ACCEL").as_deref() {
        Ok("kvm") => Accel::Kvm,
        Ok("tcg") => Accel::Tcg,
        _ => {
            // The probe costs up to 20 s when KVM hangs: remember its verdict next to the
            // artifacts it booted, so each test process does not pay again.
            let cache = out_dir().join("accel.probe");
            match std::fs::read_to_string(&cache).as_deref().map(str::trim) {
                Ok("kvm") => Accel::Kvm,
                Ok("tcg") => Accel::Tcg,
                _ => {
                    let a = probe_kvm();
                    let _ = std::fs::write(&cache, a.arg());
                    a
                }
            }
        }
    })
}

fn probe_kvm() -> Accel {
    let kvm_opens = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    let (kernel, initrd) = (out_dir().join("vmlinuz"), out_dir().join("initramfs.img"));
    if !kvm_opens || !kernel.exists() || !initrd.exists() {
        return Accel::Tcg;
    }
    let vm = Vm::new(&kernel, &initrd)
        .append("phase.poweroff=init.start")
        .timeout_unscaled(Duration::from_secs(20));
    match vm.run_with(Accel::Kvm) {
        Ok(b) if b.outcome == Outcome::PowerOff && b.event("init.start").is_some() => {
            eprintln!("phase-qemu: KVM probe booted; using KVM");
            Accel::Kvm
        }
        Ok(b) => {
            eprintln!("phase-qemu: KVM probe ended {:?}; using TCG", b.outcome);
            Accel::Tcg
        }
        Err(e) => {
            eprintln!("phase-qemu: KVM probe failed to start ({e}); using TCG");
            Accel::Tcg
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS, QEMU's default.
    Bios,
    /// OVMF (x86_64 UEFI), read-only code with a scratch copy of the variable store.
    Uefi,
    /// OVMF IA32 (32-bit UEFI, 64-bit CPU, like the 2006–2009 Intel Macs): q35 with SMM,
    /// the Secure Boot build with no keys enrolled (so Secure Boot is off), and a scratch
    /// copy of its variable store per boot.
    UefiIa32,
}

const OVMF32_CODE: &str = "/usr/share/OVMF/OVMF32_CODE_4M.secboot.fd";
const OVMF32_VARS: &str = "/usr/share/OVMF/OVMF32_VARS_4M.fd";

/// A fresh copy of OVMF IA32's variable store for one boot (firmware writes to it).
fn scratch_vars() -> PathBuf {
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let p = std::env::temp_dir().join(format!(
        "phase-ovmf32-vars-{}-{}.fd",
        std::process::id(),
        SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    if let Err(e) = std::fs::copy(OVMF32_VARS, &p) {
        eprintln!("phase-qemu: copying {OVMF32_VARS}: {e} (install ovmf-ia32: scripts/setup.sh)");
    }
    p
}

/// One `PHASE-EVENT` line, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub name: String,
    pub t_ms: u64,
    pub fields: serde_json::Value,
}

impl Event {
    /// A field as a string, for terse assertions.
    pub fn str(&self, key: &str) -> Option<&str> {
        self.fields.get(key).and_then(|v| v.as_str())
    }
}

/// Parse one console line; only lines that *start* with `PHASE-EVENT ` count (the kernel's
/// echo of /dev/kmsg starts with a timestamp and is ignored). Terminal escape sequences that
/// firmware leaves on the serial line (OVMF clears the screen) are skipped first.
/// A carriage return starts the line over: what a boot loader left before it (GRUB ends its
/// last message with `\r`, no newline) is not part of the event line.
pub fn parse_event(line: &str) -> Option<Event> {
    let line = strip_escapes(line);
    let line = line.trim_end_matches('\r');
    let line = line.rsplit('\r').next().unwrap_or(line);
    let json = line.strip_prefix("PHASE-EVENT ")?;
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    Some(Event {
        name: v.get("event")?.as_str()?.to_string(),
        t_ms: v.get("t_ms")?.as_u64()?,
        fields: v,
    })
}

/// Remove ANSI/VT100 escape sequences (`ESC [ params final`, `ESC x`).
fn strip_escapes(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&'[') {
            chars.next();
            // Parameters and intermediates, then one final byte in @..~.
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        } else {
            chars.next();
        }
    }
    out
}

/// How the guest ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The kernel powered off ("reboot: Power down").
    PowerOff,
    /// The kernel restarted ("reboot: Restarting system"); QEMU exits thanks to -no-reboot.
    Reboot,
    /// The kernel panicked (for instance "Attempted to kill init").
    KernelPanic,
    /// The harness killed QEMU at the deadline.
    TimedOut,
    /// The test asked the harness to stop the guest (see [`Vm::stop_when`]).
    Stopped,
    /// QEMU exited some other way, with this status.
    Exited(i32),
}

/// The result of one boot.
#[derive(Debug, Clone)]
pub struct Boot {
    pub events: Vec<Event>,
    pub console: String,
    pub outcome: Outcome,
    pub accel: Accel,
    pub wall: Duration,
    pub qemu_status: Option<i32>,
}

impl Boot {
    pub fn event(&self, name: &str) -> Option<&Event> {
        self.events.iter().find(|e| e.name == name)
    }
    /// The first `name` event; fails the test with the timeline and console if absent.
    pub fn expect(&self, name: &str) -> &Event {
        self.event(name)
            .unwrap_or_else(|| panic!("no {name} event:\n{}", self.explain()))
    }
    pub fn all(&self, name: &str) -> Vec<&Event> {
        self.events.iter().filter(|e| e.name == name).collect()
    }
    /// The one `modules.loaded` event of module group `group` (panics, explaining the boot,
    /// unless there is exactly one).
    pub fn modules_group(&self, group: &str) -> &Event {
        let found: Vec<&Event> = self
            .all("modules.loaded")
            .into_iter()
            .filter(|e| e.str("group") == Some(group))
            .collect();
        match found[..] {
            [e] => e,
            _ => panic!("{} {group} groups:\n{}", found.len(), self.explain()),
        }
    }
    pub fn names(&self) -> Vec<&str> {
        self.events.iter().map(|e| e.name.as_str()).collect()
    }
    /// The kernel never panicked (in particular, never "Attempted to kill init").
    pub fn assert_no_kernel_panic(&self) {
        assert!(
            !self.console.contains("Attempted to kill init")
                && !self.console.contains("Kernel panic"),
            "the kernel panicked:\n{}",
            self.explain()
        );
    }

    /// No kernel panic, and the guest powered off cleanly after a `shutdown` event.
    pub fn assert_clean_poweroff(&self) {
        self.assert_no_kernel_panic();
        assert_eq!(self.outcome, Outcome::PowerOff, "{}", self.explain());
        assert_eq!(self.qemu_status, Some(0), "{}", self.explain());
        let action = self.event("shutdown").and_then(|e| e.str("action"));
        assert_eq!(action, Some("poweroff"), "{}", self.explain());
    }

    /// Each named event happened, in this order.
    pub fn assert_order(&self, names: &[&str]) {
        let mut last = 0;
        for n in names {
            let i = self
                .events
                .iter()
                .position(|e| e.name == *n)
                .unwrap_or_else(|| panic!("no {n} event:\n{}", self.explain()));
            assert!(i >= last, "{n} out of order:\n{}", self.explain());
            last = i;
        }
    }

    /// A readable dump for assertion messages: the events and the console's tail.
    pub fn explain(&self) -> String {
        let tail: Vec<&str> = self.console.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!(
            "outcome {:?} (qemu status {:?}, {:?}, {:.1}s wall)\nevents: {:?}\nconsole tail:\n{}",
            self.outcome,
            self.qemu_status,
            self.accel,
            self.wall.as_secs_f64(),
            self.names(),
            tail.join("\n")
        )
    }
}

/// One boot to run.
#[derive(Debug, Clone)]
pub struct Vm {
    /// `None`: no `-kernel`; the firmware boots what it finds: a disk ([`Vm::disk_boot`]) or
    /// the network ([`Vm::net_boot`]).
    kernel: Option<PathBuf>,
    initrd: Option<PathBuf>,
    append: Vec<String>,
    memory_mib: u32,
    disks: Vec<PathBuf>,
    firmware: Firmware,
    timeout: Duration,
    extra: Vec<String>,
    /// Human-monitor commands to send when an event is seen: (event, command).
    on_event: Vec<(String, String)>,
    /// QEMU network arguments; none by default.
    net: Vec<String>,
    /// Run QEMU inside this network namespace (for tap devices on a test LAN).
    netns: Option<String>,
    /// Each event as it arrives, for tests that run several guests at once.
    live: Option<mpsc::Sender<Event>>,
    /// Set by the test to stop the guest (QEMU is killed).
    stop: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    /// Set by the test to shut the guest down in order (ctrl-alt-del at its console).
    shutdown: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    /// QEMU's built-in TFTP root and boot file, for [`Vm::net_boot`].
    tftp: Option<(PathBuf, String)>,
    /// `hostfwd` of user networking: (port on 127.0.0.1, guest port).
    hostfwd: Vec<(u16, u16)>,
    /// Human-monitor commands the test sends whenever it wants (see [`Vm::monitor_from`]).
    monitor_rx: Option<std::sync::Arc<std::sync::Mutex<mpsc::Receiver<String>>>>,
    /// The guest's wall clock at start; `None`: this process's clock when QEMU starts.
    clock: Option<SystemTime>,
}

impl Vm {
    /// Direct kernel boot (`-kernel/-initrd`), serial console, 1 GiB, no network,
    /// virtio-rng, a 120 s (scaled) deadline. `no_timer_check`: under TCG on a loaded host
    /// the kernel's IO-APIC timer check can miss its ticks and panic before `/init` runs.
    pub fn new(kernel: &Path, initrd: &Path) -> Vm {
        Vm {
            kernel: Some(kernel.to_path_buf()),
            initrd: Some(initrd.to_path_buf()),
            append: vec![
                "console=ttyS0".into(),
                "panic=-1".into(),
                "quiet".into(),
                "no_timer_check".into(),
            ],
            memory_mib: 1024,
            disks: Vec::new(),
            firmware: Firmware::Bios,
            timeout: scaled(Duration::from_secs(120)),
            extra: Vec::new(),
            on_event: Vec::new(),
            net: vec!["-nic".into(), "none".into()],
            netns: None,
            live: None,
            stop: None,
            shutdown: None,
            tftp: None,
            hostfwd: Vec::new(),
            monitor_rx: None,
            clock: None,
        }
    }

    /// A guest with no disk and no `-kernel` that boots from the network: the firmware's
    /// PXE (SeaBIOS: QEMU's iPXE ROM; OVMF: its PXE/TFTP client) gets DHCP from QEMU's
    /// user networking (`restrict=on`) and fetches `bootfile` from its built-in TFTP server
    /// rooted at `tftp_root`. The provider is reached through [`Vm::user_net_to`], which
    /// must follow. Kernel words ([`Vm::append`]) are ignored: the boot files choose them.
    pub fn net_boot(tftp_root: &Path, bootfile: &str) -> Vm {
        let mut vm = Vm::new(Path::new(""), Path::new(""));
        vm.kernel = None;
        vm.initrd = None;
        vm.append.clear();
        vm.tftp = Some((tftp_root.to_path_buf(), bootfile.to_string()));
        vm
    }

    /// Boot `image` by itself: the firmware loads its boot loader, which loads the kernel
    /// (the kernel command line is the image's menu entry; [`Vm::append`] does nothing).
    pub fn disk_boot(image: &Path) -> Vm {
        let mut vm = Vm::new(Path::new(""), Path::new(""));
        vm.kernel = None;
        vm.initrd = None;
        vm.disks.push(image.to_path_buf());
        vm
    }

    /// The default artifacts: `out/vmlinuz` and `out/initramfs.img`.
    pub fn default_artifacts() -> Vm {
        Vm::new(&artifact("vmlinuz"), &artifact("initramfs.img"))
    }

    /// Add kernel command-line words (space separated).
    pub fn append(mut self, words: &str) -> Vm {
        self.append
            .extend(words.split_whitespace().map(str::to_string));
        self
    }
    /// Remove a default word such as `quiet`.
    pub fn without(mut self, word: &str) -> Vm {
        self.append.retain(|w| w != word);
        self
    }
    pub fn memory_mib(mut self, m: u32) -> Vm {
        self.memory_mib = m;
        self
    }
    pub fn disk(mut self, p: &Path) -> Vm {
        self.disks.push(p.to_path_buf());
        self
    }
    pub fn firmware(mut self, f: Firmware) -> Vm {
        self.firmware = f;
        self
    }
    /// Base timeout; scaled by [`timeout_scale`].
    pub fn timeout(mut self, base: Duration) -> Vm {
        self.timeout = scaled(base);
        self
    }
    fn timeout_unscaled(mut self, t: Duration) -> Vm {
        self.timeout = t;
        self
    }
    /// Start the guest's clock (its RTC, which the kernel reads at boot) at `t` instead of
    /// this process's wall clock.
    pub fn guest_clock(mut self, t: SystemTime) -> Vm {
        self.clock = Some(t);
        self
    }
    /// Raw extra QEMU arguments.
    pub fn qemu_args(mut self, args: &[&str]) -> Vm {
        self.extra.extend(args.iter().map(|s| s.to_string()));
        self
    }

    /// User networking restricted to this machine: the guest gets DHCP from QEMU
    /// (10.0.2.15) and can reach only `10.0.2.100:8080`, relayed to `127.0.0.1:port` on
    /// the host (`restrict=on` plus one `guestfwd`). Nothing else leaves the guest.
    pub fn user_net_to(mut self, port: u16) -> Vm {
        let fwd = artifact("phase-fwd");
        let tftp = match &self.tftp {
            Some((root, file)) => format!(",tftp={},bootfile={file}", root.display()),
            None => String::new(),
        };
        self.net = vec![
            "-nic".into(),
            format!("user,model=virtio-net-pci,restrict=on{tftp},guestfwd=tcp:10.0.2.100:8080-cmd:{} 127.0.0.1:{port}", fwd.display()),
        ];
        self
    }

    /// With [`Vm::user_net_to`]: forward `127.0.0.1:host` on this machine to the guest's
    /// TCP port `guest` (a `hostfwd`; loopback only).
    pub fn hostfwd(mut self, host: u16, guest: u16) -> Vm {
        self.hostfwd.push((host, guest));
        self
    }

    /// Send each command received on `rx` to the QEMU monitor as it arrives (e.g.
    /// `sendkey ctrl-alt-delete` once the test has done its part).
    pub fn monitor_from(mut self, rx: mpsc::Receiver<String>) -> Vm {
        self.monitor_rx = Some(std::sync::Arc::new(std::sync::Mutex::new(rx)));
        self
    }

    /// A virtio NIC on tap device `tap` of a test LAN (QEMU runs in the LAN's hub
    /// namespace): the guest is one more machine on the test bridge.
    pub fn on_lan(mut self, lan: &lan::Lan, tap: &str) -> Vm {
        self.netns = Some(lan.hub.clone());
        self.net = vec![
            "-netdev".into(),
            format!("tap,id=n0,ifname={tap},script=no,downscript=no"),
            "-device".into(),
            // A MAC of its own per tap: several guests may share the bridge.
            format!("virtio-net-pci,netdev=n0,mac={}", lan::mac(tap)),
        ];
        self
    }

    /// A NIC whose frames go to a UDP port on loopback where nobody answers: a link with
    /// no DHCP server.
    pub fn silent_net(mut self, port: u16) -> Vm {
        self.net = vec![
            "-netdev".into(),
            format!(
                "socket,id=n0,udp=127.0.0.1:{port},localaddr=127.0.0.1:{}",
                port + 1
            ),
            "-device".into(),
            "virtio-net-pci,netdev=n0".into(),
        ];
        self
    }

    /// Send each event to `tx` as it arrives (the guest keeps running).
    pub fn live_events(mut self, tx: mpsc::Sender<Event>) -> Vm {
        self.live = Some(tx);
        self
    }

    /// Kill the guest when `flag` becomes true (outcome [`Outcome::Stopped`]).
    pub fn stop_when(mut self, flag: std::sync::Arc<std::sync::atomic::AtomicBool>) -> Vm {
        self.stop = Some(flag);
        self
    }

    /// When `flag` becomes true, press ctrl-alt-del at the guest's console (the init stops
    /// its services, syncs and unmounts, then reboots, which ends QEMU: `-no-reboot`).
    pub fn shutdown_when(mut self, flag: std::sync::Arc<std::sync::atomic::AtomicBool>) -> Vm {
        self.shutdown = Some(flag);
        self
    }

    /// When `event` appears, send `command` to the QEMU monitor (e.g.
    /// `sendkey ctrl-alt-delete`): how a test plays an operator at the console.
    pub fn on_event(mut self, event: &str, command: &str) -> Vm {
        self.on_event.push((event.to_string(), command.to_string()));
        self
    }

    /// The QEMU command line (without the serial wiring, which differs for tests and
    /// interactive runs).
    pub fn command(&self, accel: Accel) -> Command {
        let mut c = match &self.netns {
            None => Command::new("qemu-system-x86_64"),
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "qemu-system-x86_64"]);
                c
            }
        };
        c.args([
            "-accel",
            accel.arg(),
            "-m",
            &self.memory_mib.to_string(),
            "-smp",
            "1",
        ]);
        c.args(["-display", "none", "-no-reboot"]);
        // The guest's date comes from here, not from QEMU's own clock: QEMU is started
        // without libfaketime (which would only slow its timers down).
        let clock = self.clock.unwrap_or_else(SystemTime::now);
        c.args(["-rtc", &format!("base={}", rtc_base(clock))]);
        if std::env::var("LD_PRELOAD").is_ok_and(|v| v.contains("faketime")) {
            c.env_remove("LD_PRELOAD");
        }
        let mut net = self.net.clone();
        if let Some(user) = net.iter_mut().find(|a| a.starts_with("user,")) {
            for (host, guest) in &self.hostfwd {
                user.push_str(&format!(",hostfwd=tcp:127.0.0.1:{host}-:{guest}"));
            }
        }
        c.args(&net);
        c.args(["-device", "virtio-rng-pci"]);
        match self.firmware {
            Firmware::Bios => {}
            Firmware::Uefi => {
                c.args(["-bios", "/usr/share/ovmf/OVMF.fd"]);
            }
            Firmware::UefiIa32 => {
                let vars = scratch_vars();
                c.args([
                    "-machine",
                    "q35,smm=on",
                    "-global",
                    "driver=cfi.pflash01,property=secure,value=on",
                    "-drive",
                    &format!("if=pflash,format=raw,readonly=on,file={OVMF32_CODE}"),
                    "-drive",
                    &format!("if=pflash,format=raw,file={}", vars.display()),
                ]);
            }
        }
        if let Some(k) = &self.kernel {
            c.arg("-kernel").arg(k);
            if let Some(i) = &self.initrd {
                c.arg("-initrd").arg(i);
            }
            c.arg("-append").arg(self.append.join(" "));
        }
        if self.tftp.is_some() {
            c.args(["-boot", "n"]);
        }
        for d in &self.disks {
            let format = match d.extension().and_then(|e| e.to_str()) {
                Some("qcow2") => "qcow2",
                _ => "raw",
            };
            c.arg("-drive")
                .arg(format!("file={},format={format},if=virtio", d.display()));
        }
        c.args(&self.extra);
        c
    }

    /// Boot with the process-wide accelerator.
    pub fn run(&self) -> std::io::Result<Boot> {
        self.run_with(accel())
    }

    pub fn run_with(&self, accel: Accel) -> std::io::Result<Boot> {
        let started = Instant::now();
        let mut cmd = self.command(accel);
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let monitor = std::env::temp_dir().join(format!(
            "phase-qemu-{}-{}.mon",
            std::process::id(),
            SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        cmd.args(["-serial", "stdio", "-monitor"]);
        if self.on_event.is_empty() && self.monitor_rx.is_none() && self.shutdown.is_none() {
            cmd.arg("none");
        } else {
            cmd.arg(format!("unix:{},server=on,wait=off", monitor.display()));
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn()?;
        let stdout = child.stdout.take().ok_or(std::io::ErrorKind::BrokenPipe)?;
        let mut stderr = child.stderr.take().ok_or(std::io::ErrorKind::BrokenPipe)?;
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut buf = Vec::new();
            while let Ok(n) = r.read_until(b'\n', &mut buf) {
                if n == 0 || tx.send(String::from_utf8_lossy(&buf).into_owned()).is_err() {
                    break;
                }
                buf.clear();
            }
        });
        let err_thread = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let deadline = started + self.timeout;
        let (mut console, mut events, mut timed_out) = (String::new(), Vec::new(), false);
        let (mut stopped, mut shut_down) = (false, false);
        loop {
            if !shut_down
                && self
                    .shutdown
                    .as_ref()
                    .is_some_and(|f| f.load(std::sync::atomic::Ordering::Relaxed))
            {
                shut_down = true;
                send_monitor(&monitor, "sendkey ctrl-alt-delete");
            }
            if self
                .stop
                .as_ref()
                .is_some_and(|f| f.load(std::sync::atomic::Ordering::Relaxed))
            {
                stopped = true;
                let _ = child.kill();
                break;
            }
            if let Some(commands) = &self.monitor_rx {
                while let Some(command) = commands.lock().ok().and_then(|r| r.try_recv().ok()) {
                    send_monitor(&monitor, &command);
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(line) => {
                    if let Some(e) = parse_event(line.trim_end_matches('\n')) {
                        for (_, command) in self.on_event.iter().filter(|(n, _)| *n == e.name) {
                            send_monitor(&monitor, command);
                        }
                        if let Some(tx) = &self.live {
                            let _ = tx.send(e.clone());
                        }
                        events.push(e);
                    }
                    console.push_str(&line);
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    timed_out = true;
                    let _ = child.kill();
                    break;
                }
            }
        }
        let status = child.wait()?;
        let _ = std::fs::remove_file(&monitor);
        let stderr = err_thread.join().unwrap_or_default();
        if !stderr.trim().is_empty() {
            console.push_str(&format!("\n[qemu stderr] {stderr}"));
        }
        let outcome = if timed_out {
            Outcome::TimedOut
        } else if stopped {
            Outcome::Stopped
        } else if console.contains("Kernel panic - not syncing") {
            Outcome::KernelPanic
        } else if console.contains("reboot: Power down") {
            Outcome::PowerOff
        } else if console.contains("reboot: Restarting system") {
            Outcome::Reboot
        } else {
            Outcome::Exited(status.code().unwrap_or(-1))
        };
        Ok(Boot {
            events,
            console,
            outcome,
            accel,
            wall: started.elapsed(),
            qemu_status: status.code(),
        })
    }
}

fn send_monitor(socket: &Path, command: &str) {
    use std::io::Write;
    match std::os::unix::net::UnixStream::connect(socket) {
        Ok(mut s) => {
            let _ = writeln!(s, "{command}");
            // Give QEMU a moment to read the command before the connection closes.
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(e) => eprintln!("phase-qemu: monitor {}: {e}", socket.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_lines() {
        let e = parse_event("PHASE-EVENT {\"event\":\"init.start\",\"t_ms\":2034,\"pid\":1}\r")
            .unwrap();
        assert_eq!((e.name.as_str(), e.t_ms), ("init.start", 2034));
        assert_eq!(e.fields["pid"], 1);
        let grub = "  Booting `Phase Boot: internet'\r\rPHASE-EVENT {\"event\":\"b\",\"t_ms\":4}\r";
        assert_eq!(parse_event(grub).map(|e| e.name), Some("b".to_string()));
        let ovmf = "\u{1b}[2J\u{1b}[01;01H\u{1b}[=3h\u{1b}[2J\u{1b}[01;01HPHASE-EVENT {\"event\":\"a\",\"t_ms\":3}";
        assert_eq!(parse_event(ovmf).map(|e| e.name), Some("a".to_string()));
        for not_event in [
            "[    2.1] PHASE-EVENT {\"event\":\"x\",\"t_ms\":1}",
            "\u{1b}[2Jjunk PHASE-EVENT {\"event\":\"x\",\"t_ms\":1}",
            "PHASE-EVENT {not json}",
            "PHASE-EVENT {\"t_ms\":1}",
            "PHASE-EVENT {\"event\":\"x\"}",
            "",
        ] {
            assert!(parse_event(not_event).is_none(), "{not_event:?}");
        }
    }

    #[test]
    fn guest_clock_is_the_rtc_base() {
        let at = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
        for (secs, want) in [
            (0, "1970-01-01T00:00:00"),
            (951_782_400, "2000-02-29T00:00:00"),
            (1_859_673_599, "2028-12-05T23:59:59"),
        ] {
            assert_eq!(rtc_base(at(secs)), want);
        }
        let vm = Vm::new(Path::new("/k"), Path::new("/i")).guest_clock(at(1_859_673_599));
        let args: Vec<String> = vm
            .command(Accel::Tcg)
            .get_args()
            .map(|a| a.to_string_lossy().into())
            .collect();
        assert!(args
            .windows(2)
            .any(|w| w == ["-rtc", "base=2028-12-05T23:59:59"]));
    }

    #[test]
    fn command_line_has_no_network_and_is_scaled() {
        let vm = Vm::new(Path::new("/k"), Path::new("/i")).append("phase.mode=private");
        let c = vm.command(Accel::Tcg);
        let args: Vec<String> = c.get_args().map(|a| a.to_string_lossy().into()).collect();
        assert!(args.windows(2).any(|w| w == ["-nic", "none"]));
        assert!(args.windows(2).any(|w| w == ["-accel", "tcg"]));
        assert!(args
            .iter()
            .any(|a| a.ends_with("quiet no_timer_check phase.mode=private")));
    }
}
