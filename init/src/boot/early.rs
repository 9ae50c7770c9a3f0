//! PID-1 basics: the pseudo filesystems, the kernel log, then `init.start`.

use super::{Boot, StepError};
use crate::events::Event;
use crate::sys::mount::{mount, Mount, Mounted};
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
    Mount {
        source: "tmpfs",
        target: "/run",
        fstype: "tmpfs",
        flags: F::NOSUID.union(F::NODEV),
        data: "mode=0755",
    },
    Mount {
        source: "tmpfs",
        target: "/tmp",
        fstype: "tmpfs",
        flags: F::NOSUID.union(F::NODEV),
        data: "mode=1777",
    },
];

pub fn run(boot: &mut Boot) -> Result<(), StepError> {
    let mut failed = Vec::new();
    for m in PSEUDO {
        match mount(m) {
            Ok(Mounted::Now) => tracing::debug!("mounted {m}"),
            Ok(Mounted::AlreadyThere) => tracing::debug!("already mounted: {m}"),
            Err(e) => {
                tracing::error!("{e}");
                failed.push(e);
            }
        }
    }
    match std::fs::OpenOptions::new().write(true).open("/dev/kmsg") {
        Ok(k) => {
            if let Ok(k2) = k.try_clone() {
                crate::log::attach_kmsg(k2);
            }
            boot.events.attach_kmsg(k);
        }
        Err(e) => tracing::warn!("open /dev/kmsg: {e}; events go to the console only"),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
