//! The one typed handover between boots and stages: [`Carry`]. The side that ends writes
//! it once (stage 1 before switching root, into `paths::CARRY`; the old kernel's init
//! before a kexec, into the carry archive) and the side that starts reads it once, instead
//! of loose files under /run/phase. It holds what a boot learned and the next one needs:
//! the version of the release stage 2 runs, the network configuration with its DHCP
//! lease, and the DHT bootstrap list.
//!
//! Nothing in it decides what is trusted: after a kexec the release is verified again
//! from the new initramfs's own root, and the carry only spares a second DHCP exchange.
//! The lease arithmetic across kernels is pure ([`carried_lease`]): the new kernel's
//! CLOCK_BOOTTIME starts again at 0, so the lease's age is carried over by the wall clock
//! and the lease is shortened, never stretched, when it is older than the new uptime.

use crate::boot::network::Held;
use crate::net::Config;
use std::io::Read;
use std::path::Path;

/// A carry larger than this is not one we wrote.
pub const MAX_BYTES: u64 = 64 * 1024;
/// Bootstrap entries kept (the initramfs's own first).
pub const MAX_BOOTSTRAP: usize = 64;

/// What one boot or stage hands to the next.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Carry {
    /// The verified release whose rootfs stage 2 runs (set at the switch root; a kexec
    /// carry leaves it empty: the new kernel's init verifies the release itself).
    pub release: Option<u64>,
    /// The configured interface, if the network came up.
    pub net: Option<Net>,
    /// DHT bootstrap peers (multiaddrs), the initramfs's own first.
    pub bootstrap: Vec<String>,
    /// When and in which boot this was written.
    pub written: Stamp,
}

/// A configured interface.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Net {
    pub iface: String,
    pub config: Config,
    /// How stage 1 got the address: `dhcp`, `static`, or `carried` (from a kexec).
    pub method: String,
    /// The DHCP lease held for it.
    pub lease: Option<Held>,
}

/// A point in time, as each clock of one boot sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stamp {
    /// `/proc/sys/kernel/random/boot_id`: new for every kernel, kexec included.
    pub boot_id: String,
    /// CLOCK_BOOTTIME, ms.
    pub boottime_ms: u64,
    /// CLOCK_REALTIME, ms since the epoch (the RTC carries it across a kexec).
    pub unix_ms: u64,
}

impl Stamp {
    pub fn now() -> Stamp {
        Stamp {
            boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .unwrap_or_default()
                .trim()
                .to_string(),
            boottime_ms: crate::sys::clock::boottime_ms(),
            unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        }
    }
}

/// Why a carry could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum CarryError {
    #[error("{path}: {source}")]
    Unreadable {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: over {MAX_BYTES} bytes")]
    TooLarge { path: String },
    #[error("{path}: {source}")]
    Malformed {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: {source}")]
    Unwritable {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl CarryError {
    /// Stable snake_case reason for events and tests.
    pub fn reason(&self) -> &'static str {
        match self {
            CarryError::Unreadable { .. } => "carry_unreadable",
            CarryError::TooLarge { .. } => "carry_too_large",
            CarryError::Malformed { .. } => "carry_malformed",
            CarryError::Unwritable { .. } => "carry_unwritable",
        }
    }
}

impl Carry {
    /// The bytes written into the kexec carry archive or [`Carry::write`]'s file.
    pub fn to_bytes(&self) -> Vec<u8> {
        // A struct of plain fields: serialising it cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_bytes(path: &str, bytes: &[u8]) -> Result<Carry, CarryError> {
        serde_json::from_slice(bytes).map_err(|source| CarryError::Malformed {
            path: path.into(),
            source,
        })
    }

    /// Write to `path` (its directory is created).
    pub fn write(&self, path: &str) -> Result<(), CarryError> {
        let unwritable = |source| CarryError::Unwritable {
            path: path.into(),
            source,
        };
        if let Some(dir) = Path::new(path).parent() {
            std::fs::create_dir_all(dir).map_err(unwritable)?;
        }
        std::fs::write(path, self.to_bytes()).map_err(unwritable)
    }

    /// Read from `path`, bounded by [`MAX_BYTES`].
    pub fn read(path: &str) -> Result<Carry, CarryError> {
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_BYTES + 1).read_to_end(&mut bytes))
            .map_err(|source| CarryError::Unreadable {
                path: path.into(),
                source,
            })?;
        if bytes.len() as u64 > MAX_BYTES {
            return Err(CarryError::TooLarge { path: path.into() });
        }
        Carry::from_bytes(path, &bytes)
    }
}

/// The lease `held` (stamped by the boot that wrote `written`) as seen from `now`.
/// In the same boot it is unchanged. Across a kexec its age is the age it had when
/// written plus the wall-clock time since (0 if the clock went back); if that age is
/// more than the new uptime, the lease is shortened by the difference (renewal comes
/// early, never late). `None`: it has expired.
pub fn carried_lease(held: &Held, written: &Stamp, now: &Stamp) -> Option<Held> {
    if written.boot_id == now.boot_id && !now.boot_id.is_empty() {
        return Some(held.clone());
    }
    let age_ms = written.boottime_ms.saturating_sub(held.obtained_ms)
        + now.unix_ms.saturating_sub(written.unix_ms);
    let lease_ms = u64::from(held.lease.lease_secs) * 1000;
    if age_ms >= lease_ms {
        return None;
    }
    let mut out = held.clone();
    if age_ms <= now.boottime_ms {
        out.obtained_ms = now.boottime_ms - age_ms;
    } else {
        // Round the shortening up to whole seconds: the lease ends no later than it did.
        let short_s = (age_ms - now.boottime_ms).div_ceil(1000);
        let left = u64::from(held.lease.lease_secs).checked_sub(short_s)?;
        if left == 0 {
            return None;
        }
        out.lease.lease_secs = u32::try_from(left).ok()?;
        out.obtained_ms = 0;
    }
    Some(out)
}

/// The bootstrap entries of a list in the initramfs's format (one multiaddr per line,
/// `#` comments), then `carried` ones not already there, at most [`MAX_BOOTSTRAP`].
pub fn merge_bootstrap(own: &str, carried: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let lines = own
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim());
    for e in lines.chain(carried.iter().map(|s| s.trim())) {
        if !e.is_empty() && !out.iter().any(|o| o == e) && out.len() < MAX_BOOTSTRAP {
            out.push(e.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::dhcp::Lease;
    use std::net::Ipv4Addr;

    fn held(obtained_ms: u64, lease_secs: u32) -> Held {
        Held {
            iface: "eth0".into(),
            mac: [2, 0, 0, 0, 0, 1],
            lease: Lease {
                config: Config {
                    addr: Ipv4Addr::new(10, 0, 2, 15),
                    prefix: 24,
                    router: Some(Ipv4Addr::new(10, 0, 2, 2)),
                    dns: vec![],
                },
                server: Ipv4Addr::new(10, 0, 2, 2),
                lease_secs,
            },
            obtained_ms,
        }
    }

    fn stamp(boot: &str, boottime_ms: u64, unix_ms: u64) -> Stamp {
        Stamp {
            boot_id: boot.into(),
            boottime_ms,
            unix_ms,
        }
    }

    #[test]
    fn lease_across_boots() {
        // (lease obtained at, lease secs, written, now) → (obtained_ms, lease_secs) or expired
        let w = stamp("a", 30_000, 1_000_000);
        type Case = (u64, u32, Stamp, Option<(u64, u32)>);
        let cases: &[Case] = &[
            // Same boot (a switch root): unchanged.
            (
                20_000,
                100,
                stamp("a", 90_000, 1_060_000),
                Some((20_000, 100)),
            ),
            // Kexec, age 10 s at writing + 20 s since = 30 s, new uptime 40 s.
            (
                20_000,
                100,
                stamp("b", 40_000, 1_020_000),
                Some((10_000, 100)),
            ),
            // Age 30 s, new uptime 3 s: 27 s shorter, stamped at 0.
            (20_000, 100, stamp("b", 3_000, 1_020_000), Some((0, 73))),
            // A shortening of 26.5 s rounds up to 27.
            (20_000, 100, stamp("b", 3_500, 1_020_000), Some((0, 73))),
            // The wall clock went back: no time counted since writing.
            (20_000, 100, stamp("b", 15_000, 900_000), Some((5_000, 100))),
            // Expired during the kexec, or exactly at it.
            (20_000, 100, stamp("b", 3_000, 1_091_000), None),
            (20_000, 100, stamp("b", 3_000, 1_090_000), None),
            // One second left, less than one of uptime: what is left of it, no more.
            (20_000, 100, stamp("b", 500, 1_089_000), Some((0, 1))),
            (20_000, 100, stamp("b", 500, 1_089_600), None),
        ];
        for (obtained, secs, now, want) in cases {
            let got = carried_lease(&held(*obtained, *secs), &w, now)
                .map(|h| (h.obtained_ms, h.lease.lease_secs));
            assert_eq!(got, *want, "obtained {obtained}, {secs} s, now {now:?}");
        }
    }

    #[test]
    fn an_unknown_boot_id_is_never_the_same_boot() {
        let w = stamp("", 30_000, 1_000_000);
        let got = carried_lease(&held(20_000, 100), &w, &stamp("", 3_000, 1_000_000));
        assert_eq!(
            got.map(|h| (h.obtained_ms, h.lease.lease_secs)),
            Some((0, 93))
        );
    }

    #[test]
    fn bootstrap_lists_merge_own_first_without_duplicates() {
        let own = "# peers\n/ip4/10.0.0.1/tcp/4001/p2p/A\n\n/ip4/10.0.0.2/tcp/4001/p2p/B # lab\n";
        let carried = vec![
            "/ip4/10.0.0.2/tcp/4001/p2p/B".to_string(),
            " /ip4/10.0.0.3/tcp/4001/p2p/C ".to_string(),
            "".to_string(),
        ];
        assert_eq!(
            merge_bootstrap(own, &carried),
            [
                "/ip4/10.0.0.1/tcp/4001/p2p/A",
                "/ip4/10.0.0.2/tcp/4001/p2p/B",
                "/ip4/10.0.0.3/tcp/4001/p2p/C"
            ]
        );
        let many: Vec<String> = (0..100).map(|i| format!("/ip4/10.1.0.{i}/tcp/1")).collect();
        assert_eq!(merge_bootstrap("", &many).len(), MAX_BOOTSTRAP);
    }

    #[test]
    fn carry_round_trips_and_rejects_what_is_not_one() {
        let c = Carry {
            release: Some(2),
            net: Some(Net {
                iface: "eth0".into(),
                config: held(0, 1).lease.config,
                method: "dhcp".into(),
                lease: Some(held(5, 60)),
            }),
            bootstrap: vec!["/ip4/10.0.0.1/tcp/4001".into()],
            written: stamp("a", 1, 2),
        };
        assert_eq!(Carry::from_bytes("t", &c.to_bytes()).unwrap(), c);
        let e = Carry::from_bytes("t", b"{\"release\": \"two\"}").unwrap_err();
        assert_eq!(e.reason(), "carry_malformed");
        let dir = std::env::temp_dir().join(format!("phase-carry-{}", std::process::id()));
        let p = dir.join("carry.json");
        let p = p.to_str().unwrap();
        c.write(p).unwrap();
        assert_eq!(Carry::read(p).unwrap(), c);
        std::fs::write(p, vec![b' '; MAX_BYTES as usize + 1]).unwrap();
        assert_eq!(Carry::read(p).unwrap_err().reason(), "carry_too_large");
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(Carry::read(p).unwrap_err().reason(), "carry_unreadable");
    }
}
