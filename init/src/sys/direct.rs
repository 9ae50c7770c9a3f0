//! EFFECT: reading a block device past the page cache (`O_DIRECT`), so every block read
//! comes from the medium (through dm-verity's check) and not from what boot already
//! cached; and lowering the calling thread to background priority. No decisions here.

use rustix::fd::OwnedFd;
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use std::ffi::{c_int, c_long};

/// Alignment `O_DIRECT` needs for buffers, offsets and lengths (a page: at least any
/// device's logical block size).
const ALIGN: usize = 4096;

/// A block device opened `O_DIRECT`, with an aligned bounce buffer of `max` bytes.
pub struct DirectReader {
    fd: OwnedFd,
    buf: Vec<u8>,
    start: usize,
    max: usize,
}

impl DirectReader {
    /// `open(path, O_RDONLY | O_DIRECT | O_CLOEXEC)`; reads of up to `max` bytes.
    pub fn open(path: &str, max: usize) -> Result<DirectReader, Errno> {
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECT | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let buf = vec![0u8; max + ALIGN];
        let start = buf.as_ptr().align_offset(ALIGN);
        Ok(DirectReader {
            fd,
            buf,
            start,
            max,
        })
    }

    /// `ioctl(fd, BLKGETSIZE64)`: the device's size in bytes.
    pub fn size(&self) -> Result<u64, Errno> {
        let f = std::fs::File::from(
            self.fd
                .try_clone()
                .map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::BADF))?,
        );
        super::blkdev::size_bytes(&f)
    }
}

impl crate::scrub::ReadAt for DirectReader {
    /// `pread(fd, aligned, len, offset)`, then copied out; `len` rounded up to the
    /// alignment (the device's size is a multiple of it, so the kernel stops at the end).
    fn read_at(&mut self, offset: u64, out: &mut [u8]) -> std::io::Result<usize> {
        let len = out
            .len()
            .min(self.max)
            .next_multiple_of(ALIGN)
            .min(self.max);
        let aligned = &mut self.buf[self.start..self.start + len];
        let n = rustix::io::pread(&self.fd, &mut *aligned, offset)?;
        let n = n.min(out.len());
        out[..n].copy_from_slice(&aligned[..n]);
        Ok(n)
    }
}

/// `setpriority(PRIO_PROCESS, 0, 19)` and `ioprio_set(IOPRIO_WHO_PROCESS, 0,
/// IOPRIO_CLASS_IDLE)`: on Linux both act on the calling thread only, so a scrub thread
/// yields CPU and disk to everything else. Returns the first failure's errno.
pub fn background_thread() -> Result<(), Errno> {
    rustix::process::setpriority_process(None, 19)?;
    extern "C" {
        /// libc's `syscall(2)` (musl's, in the static init); rustix has no ioprio.
        fn syscall(number: c_long, ...) -> c_long;
    }
    const SYS_IOPRIO_SET: c_long = 251; // x86_64
    const IOPRIO_WHO_PROCESS: c_int = 1;
    const IOPRIO_CLASS_IDLE: c_int = 3;
    const IOPRIO_CLASS_SHIFT: c_int = 13;
    // SAFETY: three integer arguments, no pointers.
    let rc = unsafe {
        syscall(
            SYS_IOPRIO_SET,
            IOPRIO_WHO_PROCESS,
            0 as c_int,
            IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::INVAL))
    }
}
