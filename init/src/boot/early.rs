//! PID-1 basics: the pseudo filesystems, the kernel log, then `init.start`.

use super::{Boot, StepError};
use crate::events::Event;
use crate::sys::mount::{mount, Mount, MountError, Mounted};
use rustix::io::Errno;
use rustix::mount::MountFlags as F;

/// The pseudo filesystems, in mount order (each target's parent is mounted first).
pub const PSEUDO: &[Mount] = &[
    Mount {
        source: "proc",
        target: "/proc",
        fstype: "proc",
        flags: F::NOSUID.union(F::NODEV).union(F::NOEXEC),
        data: "",
    },
    Mount {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
        flags: F::NOSUID.union(F::NODEV).union(F::NOEXEC),
        data: "",
    },
    Mount {
        source: "devtmpfs",
        target: "/dev",
        fstype: "devtmpfs",
        flags: F::NOSUID,
        data: "mode=0755",
    },
    Mount {
        source: "devpts",
        target: "/dev/pts",
        fstype: "devpts",
        flags: F::NOSUID.union(F::NOEXEC),
        data: "gid=5,mode=0620,ptmxmode=0666",
    },
    // A fetched release lands in /run/phase/release: huge pages where a file fills them
    // (`within_size`) spare the kernel allocating and charging 512 pages one at a time,
    // most of the cost of storing a rootfs (docs/bench.md); small files stay in 4 KiB pages.
    Mount {
        source: "tmpfs",
        target: "/run",
        fstype: "tmpfs",
        flags: F::NOSUID.union(F::NODEV),
        data: "mode=0755,huge=within_size",
    },
    Mount {
        source: "tmpfs",
        target: "/tmp",
        fstype: "tmpfs",
        flags: F::NOSUID.union(F::NODEV),
        data: "mode=1777",
    },
];

/// Stage 2 starts in the rootfs with /proc, /sys, /dev and /run already moved in: attach
/// the kernel log and say where we are.
pub fn stage2(boot: &mut Boot) -> Result<(), StepError> {
    attach_kmsg(boot);
    // What stage 1 handed over, read once: the release, the network, the bootstrap list.
    let carry = crate::handover::Carry::read(crate::paths::CARRY)
        .map_err(|e| {
            tracing::warn!("{e}; stage 2 starts with no network or bootstrap peers");
            boot.events.emit(Event::Fallback {
                step: "stage2".into(),
                reason: e.reason().into(),
            });
        })
        .unwrap_or_default();
    boot.bootstrap = carry.bootstrap;
    boot.net = carry.net.map(|n| super::network::Up {
        iface: n.iface,
        config: n.config,
        method: "carried",
        lease: n.lease,
    });
    let exe = std::fs::read_link("/proc/self/exe")
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let os = std::fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_default();
    let motd = std::fs::read_to_string("/etc/motd")
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    let root_fs = std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(1) == Some(&"/")).then(|| f.get(2).unwrap_or(&"").to_string())
        })
        .unwrap_or_default();
    boot.events.emit(Event::Stage2Start {
        pid: rustix::process::getpid().as_raw_nonzero().get(),
        exe,
        os,
        motd,
        root_fs,
        kernel: rustix::system::uname()
            .release()
            .to_string_lossy()
            .into_owned(),
        release: carry.release,
        addr: boot
            .net
            .as_ref()
            .map(|n| format!("{}/{}", n.config.addr, n.config.prefix)),
        bootstrap_peers: boot.bootstrap.len(),
    });
    Ok(())
}

fn attach_kmsg(boot: &Boot) {
    match std::fs::OpenOptions::new().write(true).open("/dev/kmsg") {
        Ok(k) => {
            if let Ok(k2) = k.try_clone() {
                crate::log::attach_kmsg(k2);
            }
            boot.events.attach_kmsg(k);
        }
        Err(e) => tracing::warn!("open /dev/kmsg: {e}; events go to the console only"),
    }
}

pub fn run(boot: &mut Boot) -> Result<(), StepError> {
    let mut failed = Vec::new();
    for m in PSEUDO {
        match mount(m).or_else(|e| match (&e, without_huge_pages(m)) {
            // A kernel without transparent huge pages refuses the option: plain pages.
            (
                MountError::Mount {
                    errno: Errno::INVAL,
                    ..
                },
                Some(plain),
            ) => {
                tracing::info!("{e}: {} without huge pages", m.target);
                mount(&plain)
            }
            _ => Err(e),
        }) {
            Ok(Mounted::Now) => tracing::debug!("mounted {m}"),
            Ok(Mounted::AlreadyThere) => tracing::debug!("already mounted: {m}"),
            Err(e) => {
                tracing::error!("{e}");
                failed.push(e);
            }
        }
    }
    attach_kmsg(boot);
    boot.events.emit_at(
        Event::InitStart {
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: rustix::process::getpid().as_raw_nonzero().get(),
        },
        boot.t0_ms,
    );
    match failed.first() {
        None => Ok(()),
        Some(e) => Err(StepError {
            reason: e.reason(),
            message: failed
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; "),
        }),
    }
}

/// `m` with its `huge=` option left off, if it has one.
fn without_huge_pages(m: &Mount) -> Option<Mount> {
    let (plain, _) = m.data.split_once(",huge=")?;
    Some(Mount { data: plain, ..*m })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_falls_back_to_plain_pages_and_keeps_its_mode() {
        let run = PSEUDO.iter().find(|m| m.target == "/run").unwrap();
        assert_eq!(run.data, "mode=0755,huge=within_size");
        assert_eq!(without_huge_pages(run).unwrap().data, "mode=0755");
        let proc = PSEUDO.iter().find(|m| m.target == "/proc").unwrap();
        assert!(without_huge_pages(proc).is_none());
    }

    #[test]
    fn parents_mount_before_children() {
        for (i, m) in PSEUDO.iter().enumerate() {
            for later in &PSEUDO[i + 1..] {
                assert!(
                    !m.target.starts_with(&format!("{}/", later.target)),
                    "{} must come after {}",
                    m.target,
                    later.target
                );
            }
        }
    }
}
