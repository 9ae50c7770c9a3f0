//! EFFECT: `kexec_file_load(2)` and `reboot(LINUX_REBOOT_CMD_KEXEC)`. rustix has no wrapper
//! for the first, so this is the init's one raw syscall. What to load and whether to is
//! decided in `crate::kexec`; errno values are returned, named there.

use std::ffi::{c_int, c_long, c_ulong, CStr};
use std::fs::File;
use std::os::fd::AsRawFd;

/// `__NR_kexec_file_load` on x86_64.
const SYS_KEXEC_FILE_LOAD: c_long = 320;

extern "C" {
    /// libc's `syscall(2)` (musl's, in the static init).
    fn syscall(number: c_long, ...) -> c_long;
}

/// `kexec_file_load(kernel_fd, initrd_fd, cmdline_len, cmdline, 0)`: the kernel verifies
/// and stages the bzImage, the initramfs and the command line (`cmdline_len` counts the
/// trailing NUL, which the kernel requires). Returns the errno on failure.
#[doc(alias = "kexec_file_load")]
pub fn file_load(kernel: &File, initramfs: &File, cmdline: &CStr) -> Result<(), i32> {
    let line = cmdline.to_bytes_with_nul();
    // SAFETY: both fds are open for the duration of the call; the pointer and length
    // describe one live, NUL-terminated buffer; flags 0 (no unload, no crash kernel).
    let rc = unsafe {
        syscall(
            SYS_KEXEC_FILE_LOAD,
            kernel.as_raw_fd() as c_int,
            initramfs.as_raw_fd() as c_int,
            line.len() as c_ulong,
            line.as_ptr(),
            0 as c_ulong,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }
}

/// `kexec_file_load` with `KEXEC_FILE_UNLOAD`: drop a staged image (after a load that
/// must not be used, so that a later reboot goes through firmware).
pub fn unload() {
    const KEXEC_FILE_UNLOAD: c_ulong = 1;
    // SAFETY: no pointers are passed (the fds are ignored with UNLOAD).
    let _ = unsafe {
        syscall(
            SYS_KEXEC_FILE_LOAD,
            -1,
            -1,
            0 as c_ulong,
            0usize,
            KEXEC_FILE_UNLOAD,
        )
    };
}

/// `sync()` then `reboot(LINUX_REBOOT_CMD_KEXEC)`: jump into the staged kernel. Returns
/// only on failure, with the errno.
#[doc(alias = "LINUX_REBOOT_CMD_KEXEC")]
pub fn reboot_into_staged() -> i32 {
    rustix::fs::sync();
    match rustix::system::reboot(rustix::system::RebootCommand::Kexec) {
        Ok(()) => 0,
        Err(e) => e.raw_os_error(),
    }
}
