//! The kernel command line as typed configuration.
//!
//! PURE: `parse` takes the raw bytes of `/proc/cmdline` and returns a [`Config`] plus the
//! warnings to log. It never fails: garbage is tolerated, unknown `phase.*` keys and bad values
//! become [`Warning`]s and the documented default is used. Every `phase.*` key is defined once,
//! in [`KEYS`]; `docs/cmdline.md` is checked against that table by a test.

mod tokenize;

pub use tokenize::tokenize;

/// One documented `phase.*` key: its name, its default (with units) and what it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyDoc {
    pub name: &'static str,
    pub default: &'static str,
    pub doc: &'static str,
}

/// Every `phase.*` key the init understands. The docs table is generated from, and tested
/// against, this list.
pub const KEYS: &[KeyDoc] = &[
    KeyDoc {
        name: "phase.mode",
        default: "internet",
        doc: "internet, local or private: what the node may discover, persist and announce",
    },
    KeyDoc {
        name: "phase.channel",
        default: "stable",
        doc: "release channel to follow ([a-z0-9-], at most 32 characters)",
    },
    KeyDoc {
        name: "phase.provider",
        default: "(none)",
        doc: "URL of a release provider (http:// or https://); repeat the key for several",
    },
    KeyDoc {
        name: "phase.stage",
        default: "1",
        doc: "1 = choose and verify the system, 2 = run it (set by the init across kexec)",
    },
    KeyDoc {
        name: "phase.poweroff",
        default: "(none)",
        doc: "power off cleanly right after this PHASE-EVENT name (tests and benchmarks)",
    },
    KeyDoc {
        name: "phase.debug",
        default: "off",
        doc: "flag: log at debug level",
    },
    KeyDoc {
        name: "phase.shell",
        default: "off",
        doc: "flag: start a rescue shell on failure, if the rootfs has one",
    },
    KeyDoc {
        name: "phase.diskless",
        default: "off",
        doc: "flag: no boot medium is expected (netboot): the local step looks at the disks already there and does not wait for one to appear (otherwise it waits up to 1000 ms for a block device's uevent)",
    },
    KeyDoc {
        name: "phase.kexec",
        default: "auto",
        doc: "auto = kexec when the newest verified release has another kernel, always = even with the same kernel, never = only releases of the running kernel",
    },
    KeyDoc {
        name: "phase.selftest",
        default: "(none)",
        doc: "comma list of fault drills run at boot: faults (crashing child, orphans, panicking task), panic-boot, sigterm, kill-node / kill-status / kill-provider (abort that supervised task's run; it must restart)",
    },
    KeyDoc {
        name: "phase.status",
        default: "auto",
        doc: "the status endpoint (HTTP port 8090: /status JSON, /metrics Prometheus text; `phase status ADDR`): auto = on the node's address in internet and local modes (loopback without a network), none in private mode; on = also in private mode; off = none",
    },
    KeyDoc {
        name: "phase.fetch.attempts",
        default: "4",
        doc: "diskless boot: whole fetches (discovery, metadata, artifacts) tried before giving up, 5 s backoff doubling to 60 s; 0 = until one succeeds",
    },
    KeyDoc {
        name: "phase.scrub",
        default: "on",
        doc: "stage 2 reads the whole dm-verity rootfs once in the background (idle I/O priority, nice 19): on = at most 8 MiB/s, off, or a rate in MiB/s (1 to 1024)",
    },
];

/// What this node may do on the network and on disk (the mode table of the design).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Internet,
    Local,
    Private,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "internet" => Some(Mode::Internet),
            "local" => Some(Mode::Local),
            "private" => Some(Mode::Private),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Internet => "internet",
            Mode::Local => "local",
            Mode::Private => "private",
        }
    }
    /// LAN discovery (mDNS) and LAN announcements.
    pub fn allows_lan(self) -> bool {
        self != Mode::Private
    }
    /// The libp2p DHT and its bootstrap peers.
    pub fn allows_dht(self) -> bool {
        self == Mode::Internet
    }
    /// State written to the persistent partition (otherwise tmpfs only).
    pub fn persists(self) -> bool {
        self != Mode::Private
    }
}

/// Boot stage: 1 chooses and verifies the system, 2 runs it. The one notion of stage: the
/// command line's `phase.stage=2` (set across kexec: the new initramfs takes the carried
/// release), the argv marker stage 2's PID 1 is exec'd with, and `init.ready`'s number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Stage {
    #[default]
    One,
    Two,
}

impl Stage {
    /// argv[1] telling a PID 1 exec'd from the rootfs that it runs the system.
    pub const RUN_ARG: &'static str = "stage2";

    /// What a PID 1 runs, from its argv[1].
    pub fn from_argv(arg: Option<&str>) -> Stage {
        if arg == Some(Stage::RUN_ARG) {
            Stage::Two
        } else {
            Stage::One
        }
    }

    pub fn number(self) -> u8 {
        match self {
            Stage::One => 1,
            Stage::Two => 2,
        }
    }
}

/// When stage 1 may kexec into a verified release's own kernel (`phase.kexec=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KexecPolicy {
    /// When the newest verified release has a kernel other than the running one.
    #[default]
    Auto,
    /// Whenever a release is chosen, even with the running kernel (tests, benchmarks).
    Always,
    /// Never: only a release of the running kernel is booted.
    Never,
}

impl KexecPolicy {
    pub fn parse(s: &str) -> Option<KexecPolicy> {
        match s {
            "auto" => Some(KexecPolicy::Auto),
            "always" => Some(KexecPolicy::Always),
            "never" => Some(KexecPolicy::Never),
            _ => None,
        }
    }
}

/// Whether the status endpoint listens (`phase.status=`); where is `status::bind`'s call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StatusSetting {
    /// In internet and local modes, not in private mode.
    #[default]
    Auto,
    /// In every mode.
    On,
    Off,
}

impl StatusSetting {
    pub fn parse(s: &str) -> Option<StatusSetting> {
        match s {
            "auto" => Some(StatusSetting::Auto),
            "on" => Some(StatusSetting::On),
            "off" => Some(StatusSetting::Off),
            _ => None,
        }
    }
}

/// The background scrub of the verified rootfs (`phase.scrub=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scrub {
    Off,
    /// At most this many MiB read per second.
    MibPerSec(u32),
}

impl Scrub {
    /// `on`'s rate: well under a USB 2 stick's read speed, so boot-time reads keep the bus.
    pub const DEFAULT_MIB_S: u32 = 8;
    pub const MAX_MIB_S: u32 = 1024;

    pub fn parse(s: &str) -> Option<Scrub> {
        match s {
            "on" => Some(Scrub::MibPerSec(Scrub::DEFAULT_MIB_S)),
            "off" => Some(Scrub::Off),
            n if n.bytes().all(|b| b.is_ascii_digit()) => match n.parse::<u32>() {
                Ok(r) if (1..=Scrub::MAX_MIB_S).contains(&r) => Some(Scrub::MibPerSec(r)),
                _ => None,
            },
            _ => None,
        }
    }
}

impl Default for Scrub {
    fn default() -> Self {
        Scrub::MibPerSec(Scrub::DEFAULT_MIB_S)
    }
}

/// A fault drill the init runs at boot when asked (`phase.selftest=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selftest {
    /// A crashing child, orphaned grandchildren, and a panicking supervised task.
    Faults,
    /// The boot sequence itself panics (the init must log and reboot deliberately).
    PanicBoot,
    /// After `init.ready`, a child sends SIGTERM to PID 1 (which must power off in order).
    Sigterm,
    /// Abort the current run of the supervised task of this name (`kill-node`,
    /// `kill-status`): the supervisor must restart it.
    Kill(&'static str),
}

/// Tasks a `kill-TASK` drill may name.
pub const KILLABLE_TASKS: &[&str] = &["node", "status", "provider"];

/// The parsed command line. Fields hold typed values with the documented defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub mode: Mode,
    pub channel: String,
    pub providers: Vec<String>,
    pub stage: Stage,
    pub poweroff: Option<String>,
    pub debug: bool,
    pub shell: bool,
    /// `phase.diskless`: do not wait for a boot medium to appear.
    pub diskless: bool,
    pub selftest: Vec<Selftest>,
    /// Whole fetches a diskless boot tries; 0 = no limit.
    pub fetch_attempts: u32,
    pub kexec: KexecPolicy,
    pub status: StatusSetting,
    pub scrub: Scrub,
    /// Standard keys the init reads but does not own.
    pub consoles: Vec<String>,
    pub ip: Option<String>,
    pub quiet: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mode: Mode::default(),
            channel: "stable".to_string(),
            providers: Vec::new(),
            stage: Stage::default(),
            poweroff: None,
            debug: false,
            shell: false,
            diskless: false,
            selftest: Vec::new(),
            fetch_attempts: 4,
            kexec: KexecPolicy::default(),
            status: StatusSetting::default(),
            scrub: Scrub::default(),
            consoles: Vec::new(),
            ip: None,
            quiet: false,
        }
    }
}

/// Why a piece of the command line was ignored. Logged as a warning, never fatal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub key: String,
    pub reason: WarningReason,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WarningReason {
    UnknownKey,
    InvalidValue(String),
    MissingValue,
    /// A single-valued key given twice: the last one wins, as the kernel does.
    Repeated,
    NotUtf8,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.reason {
            WarningReason::UnknownKey => write!(f, "unknown key {} ignored", self.key),
            WarningReason::InvalidValue(v) => {
                write!(f, "invalid value {v:?} for {}; default kept", self.key)
            }
            WarningReason::MissingValue => write!(f, "{} needs a value; default kept", self.key),
            WarningReason::Repeated => write!(f, "{} given more than once; last wins", self.key),
            WarningReason::NotUtf8 => {
                write!(f, "command line is not UTF-8; invalid bytes replaced")
            }
        }
    }
}

/// Parse the raw command line. Never fails.
pub fn parse(raw: &[u8]) -> (Config, Vec<Warning>) {
    let mut warnings = Vec::new();
    let text = match std::str::from_utf8(raw) {
        Ok(t) => std::borrow::Cow::Borrowed(t),
        Err(_) => {
            warnings.push(Warning {
                key: String::new(),
                reason: WarningReason::NotUtf8,
            });
            String::from_utf8_lossy(raw)
        }
    };
    let mut cfg = Config::default();
    let mut seen: Vec<String> = Vec::new();
    for (key, value) in tokenize(&text) {
        let warn = |reason| Warning {
            key: key.clone(),
            reason,
        };
        // Standard keys first; they never warn.
        match key.as_str() {
            "console" => {
                if let Some(v) = value {
                    cfg.consoles.push(v);
                }
                continue;
            }
            "ip" => {
                cfg.ip = value;
                continue;
            }
            "quiet" => {
                cfg.quiet = true;
                continue;
            }
            _ => {}
        }
        if !key.starts_with("phase.") {
            continue;
        }
        let single_valued = !matches!(key.as_str(), "phase.provider" | "phase.selftest");
        if single_valued && KEYS.iter().any(|k| k.name == key) {
            if seen.contains(&key) {
                warnings.push(warn(WarningReason::Repeated));
            }
            seen.push(key.clone());
        }
        match (key.as_str(), value) {
            ("phase.debug", None) => cfg.debug = true,
            ("phase.shell", None) => cfg.shell = true,
            ("phase.diskless", None) => cfg.diskless = true,
            ("phase.debug" | "phase.shell" | "phase.diskless", Some(v)) => match parse_bool(&v) {
                Some(b) if key == "phase.debug" => cfg.debug = b,
                Some(b) if key == "phase.shell" => cfg.shell = b,
                Some(b) => cfg.diskless = b,
                None => warnings.push(warn(WarningReason::InvalidValue(v))),
            },
            (k, None) if KEYS.iter().any(|d| d.name == k) => {
                warnings.push(warn(WarningReason::MissingValue))
            }
            ("phase.mode", Some(v)) => match Mode::parse(&v) {
                Some(m) => cfg.mode = m,
                None => warnings.push(warn(WarningReason::InvalidValue(v))),
            },
            ("phase.channel", Some(v)) => {
                if valid_channel(&v) {
                    cfg.channel = v;
                } else {
                    warnings.push(warn(WarningReason::InvalidValue(v)));
                }
            }
            ("phase.provider", Some(v)) => {
                if v.starts_with("http://") || v.starts_with("https://") {
                    if !cfg.providers.contains(&v) {
                        cfg.providers.push(v);
                    }
                } else {
                    warnings.push(warn(WarningReason::InvalidValue(v)));
                }
            }
            ("phase.stage", Some(v)) => match v.as_str() {
                "1" => cfg.stage = Stage::One,
                "2" => cfg.stage = Stage::Two,
                _ => warnings.push(warn(WarningReason::InvalidValue(v))),
            },
            ("phase.kexec", Some(v)) => match KexecPolicy::parse(&v) {
                Some(p) => cfg.kexec = p,
                None => warnings.push(warn(WarningReason::InvalidValue(v))),
            },
            ("phase.status", Some(v)) => match StatusSetting::parse(&v) {
                Some(p) => cfg.status = p,
                None => warnings.push(warn(WarningReason::InvalidValue(v))),
            },
            ("phase.scrub", Some(v)) => match Scrub::parse(&v) {
                Some(s) => cfg.scrub = s,
                None => warnings.push(warn(WarningReason::InvalidValue(v))),
            },
            ("phase.poweroff", Some(v)) => {
                if valid_event_name(&v) {
                    cfg.poweroff = Some(v);
                } else {
                    warnings.push(warn(WarningReason::InvalidValue(v)));
                }
            }
            ("phase.fetch.attempts", Some(v)) => match v.parse::<u32>() {
                Ok(n) if v.bytes().all(|b| b.is_ascii_digit()) => cfg.fetch_attempts = n,
                _ => warnings.push(warn(WarningReason::InvalidValue(v))),
            },
            ("phase.selftest", Some(v)) => {
                for item in v.split(',').filter(|s| !s.is_empty()) {
                    let kill = item
                        .strip_prefix("kill-")
                        .and_then(|t| KILLABLE_TASKS.iter().find(|k| **k == t));
                    match item {
                        _ if kill.is_some() => {
                            if let Some(t) = kill {
                                if !cfg.selftest.contains(&Selftest::Kill(t)) {
                                    cfg.selftest.push(Selftest::Kill(t))
                                }
                            }
                        }
                        "faults" | "panic-boot" | "sigterm" => {
                            let drill = match item {
                                "faults" => Selftest::Faults,
                                "panic-boot" => Selftest::PanicBoot,
                                _ => Selftest::Sigterm,
                            };
                            if !cfg.selftest.contains(&drill) {
                                cfg.selftest.push(drill)
                            }
                        }
                        other => {
                            warnings.push(warn(WarningReason::InvalidValue(other.to_string())))
                        }
                    }
                }
            }
            _ => warnings.push(warn(WarningReason::UnknownKey)),
        }
    }
    (cfg, warnings)
}

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "on" | "yes" | "true" => Some(true),
        "0" | "off" | "no" | "false" => Some(false),
        _ => None,
    }
}

fn valid_channel(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 32
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn valid_event_name(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_')
}

#[cfg(test)]
mod tests;
