//! PURE: what a kexec load needs. The x86 bzImage setup header gives `init_size`, the
//! memory the kernel claims while it decompresses and starts (Documentation/arch/x86/
//! boot.rst); the loader also holds the whole initramfs (with the carried release) until
//! the new kernel has unpacked it.

/// The setup header fields read here, at their offsets in the bzImage.
const HDRS_MAGIC_AT: usize = 0x202;
const VERSION_AT: usize = 0x206;
const INIT_SIZE_AT: usize = 0x260;
/// `init_size` exists from boot protocol 2.10 on.
const INIT_SIZE_SINCE: u16 = 0x020a;
/// Bytes of the image to read for [`init_size`].
pub const HEADER_BYTES: usize = INIT_SIZE_AT + 4;
/// Headroom beyond the sums (page tables, the loader's own copies, the first allocations
/// of the new kernel before it frees the initramfs).
pub const HEADROOM: u64 = 32 << 20;

/// `init_size` from the first [`HEADER_BYTES`] of a bzImage.
pub fn init_size(header: &[u8]) -> Result<u64, &'static str> {
    if header.len() < HEADER_BYTES {
        return Err("shorter than the setup header");
    }
    if &header[HDRS_MAGIC_AT..HDRS_MAGIC_AT + 4] != b"HdrS" {
        return Err("no HdrS magic");
    }
    let version = u16::from_le_bytes([header[VERSION_AT], header[VERSION_AT + 1]]);
    if version < INIT_SIZE_SINCE {
        return Err("boot protocol older than 2.10");
    }
    let b = &header[INIT_SIZE_AT..INIT_SIZE_AT + 4];
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u64)
}

/// Free memory a load of this kernel and initramfs needs: the kernel's `init_size`, the
/// kernel file and the initramfs (the loader's copies), the initramfs once more (the new
/// kernel unpacks it into its rootfs before freeing it), plus [`HEADROOM`].
pub fn memory_needed(init_size: u64, kernel_bytes: u64, initramfs_bytes: u64) -> u64 {
    init_size
        .saturating_add(kernel_bytes)
        .saturating_add(initramfs_bytes.saturating_mul(2))
        .saturating_add(HEADROOM)
}

/// `MemAvailable` from /proc/meminfo, in bytes.
pub fn mem_available(meminfo: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| {
        let rest = l.strip_prefix("MemAvailable:")?;
        let kib: u64 = rest.trim().strip_suffix("kB")?.trim().parse().ok()?;
        kib.checked_mul(1024)
    })
}

/// The setup header's `kernel_version` pointer (boot protocol 2.00+).
const KERNEL_VERSION_AT: usize = 0x20e;
/// Bytes of the image to read for [`kernel_release`]: the string sits in the setup code.
pub const VERSION_BYTES: usize = 64 << 10;

/// The kernel's release string (`uname -r` once booted, e.g. `6.1.0-54-amd64`) from the
/// bzImage's `kernel_version` string, or `None` when the header has none.
pub fn kernel_release(image: &[u8]) -> Option<String> {
    let at = image.get(KERNEL_VERSION_AT..KERNEL_VERSION_AT + 2)?;
    let off = u16::from_le_bytes([at[0], at[1]]) as usize;
    if off == 0 {
        return None;
    }
    let s = image.get(off + 0x200..)?;
    let end = s.iter().take(256).position(|b| *b == 0 || *b == b' ')?;
    let r = std::str::from_utf8(&s[..end]).ok()?;
    (!r.is_empty() && r.bytes().all(|b| b.is_ascii_graphic())).then(|| r.to_string())
}
