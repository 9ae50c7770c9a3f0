//! PURE: the command line of the kernel stage 1 kexecs into. The signed release's own
//! command line, then only the allowlisted keys of the running boot (so the operator's
//! console, network and mode survive), then `phase.stage=2`. Nothing else unsigned
//! crosses: a provider URL, a selftest or an arbitrary kernel parameter does not.

use super::KexecError;

/// Keys of the running boot carried to the next kernel (the allowlist).
pub const CARRIED_KEYS: &[&str] = &[
    "console",
    "ip",
    "phase.mode",
    "phase.channel",
    "phase.poweroff",
    "phase.debug",
    "phase.kexec",
    "phase.scrub",
];

/// The x86 boot protocol's `cmdline_size` (COMMAND_LINE_SIZE - 1).
pub const X86_CMDLINE_SIZE: usize = 2047;
/// The bzImage kexec loader keeps room for an `elfcorehdr=` it may add
/// (MAX_ELFCOREHDR_STR_LEN in arch/x86/kernel/kexec-bzimage64.c).
pub const ELFCOREHDR_ROOM: usize = 30;
/// The longest command line (without its NUL) the loader takes:
/// `len + 1 (NUL) + 30 <= 2047`.
pub const MAX_LEN: usize = X86_CMDLINE_SIZE - ELFCOREHDR_ROOM - 1;

/// The new kernel's command line, or `CmdlineTooLong`.
pub fn next(signed: &str, running: &str) -> Result<String, KexecError> {
    let mut parts: Vec<String> = signed
        .split_whitespace()
        // The stage is ours to set, once, last.
        .filter(|p| !p.starts_with("phase.stage="))
        .map(str::to_string)
        .collect();
    for (key, value) in crate::config::tokenize(running) {
        if !CARRIED_KEYS.contains(&key.as_str()) {
            continue;
        }
        let is_console = key == "console";
        let param = match value {
            // Quote a value with spaces the way the kernel's parser reads it back.
            Some(v) if v.contains(char::is_whitespace) => format!("{key}=\"{v}\""),
            Some(v) => format!("{key}={v}"),
            None => key,
        };
        // The last `console=` becomes /dev/console, where the init writes its events: the
        // running boot's consoles keep their order, after whatever the signed line says.
        if is_console {
            parts.retain(|p| *p != param);
        }
        if !parts.contains(&param) {
            parts.push(param);
        }
    }
    parts.push("phase.stage=2".to_string());
    let line = parts.join(" ");
    if line.len() > MAX_LEN {
        return Err(KexecError::CmdlineTooLong {
            len: line.len(),
            max: MAX_LEN,
        });
    }
    Ok(line)
}
