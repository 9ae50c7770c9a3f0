//! PURE: what the kexec handoff decides, apart from the syscalls (`sys::kexec`) and the
//! boot step that composes them (`boot::handoff`).
//!
//! - [`decide`]: `handoff(local, fetched, running, policy)` → switch root, kexec, or stay.
//! - [`cmdline`]: the new kernel's command line (signed + allowlist + `phase.stage=2`).
//! - [`image`]: the bzImage setup header (`init_size`) and the memory budget of a load.
//! - [`KexecError`]: every way a kexec can fail, each with a stable `reason()` that the
//!   `fallback` event carries; the errno table of `kexec_file_load` lives here.

pub mod cmdline;
pub mod decide;
pub mod image;

/// Why a kexec did not happen. Each is a named `fallback`: the boot continues on what
/// verified locally.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KexecError {
    #[error("the new command line is {len} bytes; the kernel takes at most {max}")]
    CmdlineTooLong { len: usize, max: usize },
    #[error("{path}: not a bzImage the x86 loader accepts ({why})")]
    NotBzImage { path: String, why: &'static str },
    #[error("kexec needs {need} bytes of free memory, {available} are available")]
    ShortOfMemory { need: u64, available: u64 },
    #[error("{what}: {detail}")]
    Io { what: String, detail: String },
    #[error("kexec_file_load: {errno} ({reason})", reason = errno_reason(*.errno))]
    Load { errno: i32 },
    #[error("reboot(LINUX_REBOOT_CMD_KEXEC): errno {errno}")]
    Reboot { errno: i32 },
}

impl KexecError {
    /// Stable snake_case reason for events and tests.
    pub fn reason(&self) -> &'static str {
        match self {
            KexecError::CmdlineTooLong { .. } => "kexec_cmdline_too_long",
            KexecError::NotBzImage { .. } => "kexec_bad_image",
            KexecError::ShortOfMemory { .. } => "kexec_short_of_memory",
            KexecError::Io { .. } => "kexec_io",
            KexecError::Load { errno } => errno_reason(*errno),
            KexecError::Reboot { .. } => "kexec_reboot_failed",
        }
    }
}

/// errno values of `kexec_file_load` on x86_64 Linux (asm-generic/errno*.h).
pub mod errno {
    pub const EPERM: i32 = 1;
    pub const ENOEXEC: i32 = 8;
    pub const ENOMEM: i32 = 12;
    pub const EBUSY: i32 = 16;
    pub const EINVAL: i32 = 22;
    pub const ENOSYS: i32 = 38;
    pub const EBADMSG: i32 = 74;
    pub const EKEYREJECTED: i32 = 129;
}

/// The `kexec_file_load` errno table (docs/kexec.md): each a stable fallback reason.
pub fn errno_reason(e: i32) -> &'static str {
    match e {
        // No CONFIG_KEXEC_FILE, or a seccomp filter.
        errno::ENOSYS => "kexec_unsupported",
        // Not CAP_SYS_BOOT, kernel.kexec_load_disabled=1, or lockdown (Secure Boot).
        errno::EPERM => "kexec_not_permitted",
        // Another kexec image is being loaded.
        errno::EBUSY => "kexec_busy",
        errno::ENOMEM => "kexec_no_memory",
        // KEXEC_SIG policy refused the kernel's signature (or it has none).
        errno::EKEYREJECTED | errno::EBADMSG => "kexec_signature_rejected",
        // The kernel loader did not recognise the image.
        errno::ENOEXEC => "kexec_bad_image",
        // Bad flags, or a command line the loader refused.
        errno::EINVAL => "kexec_invalid",
        _ => "kexec_failed",
    }
}

#[cfg(test)]
mod tests;
