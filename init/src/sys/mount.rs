//! Mounting, one typed call per intent.

use rustix::io::Errno;
use rustix::mount::MountFlags;
use std::ffi::CString;

/// One filesystem to mount: what, where, how. Describes itself for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mount {
    pub source: &'static str,
    pub target: &'static str,
    pub fstype: &'static str,
    pub flags: MountFlags,
    pub data: &'static str,
}

impl std::fmt::Display for Mount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} on {} type {}", self.source, self.target, self.fstype)?;
        if !self.data.is_empty() {
            write!(f, " ({})", self.data)?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("mkdir {target}: {source}")]
    Mkdir {
        target: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("mount {what}: {errno}")]
    Mount {
        what: String,
        #[source]
        errno: Errno,
    },
}

impl MountError {
    /// Stable snake_case reason for events.
    pub fn reason(&self) -> &'static str {
        match self {
            MountError::Mkdir { .. } => "mkdir_failed",
            MountError::Mount { .. } => "mount_failed",
        }
    }
}

/// Outcome of an idempotent mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mounted {
    Now,
    AlreadyThere,
}

/// `mkdir -p target` then `mount(source, target, fstype, flags, data)`.
/// `EBUSY` means something is already mounted there (e.g. a kernel automount): not an error.
pub fn mount(m: &Mount) -> Result<Mounted, MountError> {
    std::fs::create_dir_all(m.target).map_err(|source| MountError::Mkdir {
        target: m.target,
        source,
    })?;
    let data = CString::new(m.data).unwrap_or_default();
    let data = if m.data.is_empty() {
        None
    } else {
        Some(data.as_c_str())
    };
    match rustix::mount::mount(m.source, m.target, m.fstype, m.flags, data) {
        Ok(()) => Ok(Mounted::Now),
        Err(Errno::BUSY) => Ok(Mounted::AlreadyThere),
        Err(errno) => Err(MountError::Mount {
            what: m.to_string(),
            errno,
        }),
    }
}

/// `mkdir -p target`, `mount(source, target, NULL, MS_BIND, NULL)`, then
/// `mount(NULL, target, NULL, MS_REMOUNT|MS_BIND|MS_RDONLY, NULL)`: `source` seen at
/// `target`, read-only there.
#[doc(alias = "MS_BIND")]
pub fn bind_readonly(source: &str, target: &str) -> Result<(), String> {
    std::fs::create_dir_all(target).map_err(|e| format!("mkdir {target}: {e}"))?;
    rustix::mount::mount_bind(source, target)
        .map_err(|e| format!("mount --bind {source} {target}: {e}"))?;
    rustix::mount::mount_remount(target, MountFlags::BIND | MountFlags::RDONLY, "")
        .map_err(|e| format!("mount -o remount,bind,ro {target}: {e}"))
}
