//! Loop devices: attach a file (already verified, in RAM) as a read-only block device.

use rustix::io::Errno;
use std::os::fd::AsRawFd;

const LOOP_SET_FD: rustix::ioctl::Opcode = 0x4C00;

/// `ioctl(/dev/loopN, LOOP_SET_FD, fd)` on the first free of /dev/loop0..7. The backing
/// file is opened read-only, so the loop device is read-only. Returns `/dev/loopN`.
pub fn attach_readonly(path: &std::path::Path) -> Result<String, String> {
    let backing = std::fs::File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
    for n in 0..8 {
        let dev = format!("/dev/loop{n}");
        let Ok(lo) = std::fs::OpenOptions::new().read(true).open(&dev) else {
            continue;
        };
        // SAFETY: LOOP_SET_FD takes a file descriptor as its integer argument.
        let r = unsafe {
            rustix::ioctl::ioctl(
                &lo,
                rustix::ioctl::IntegerSetter::<LOOP_SET_FD>::new_usize(backing.as_raw_fd() as usize),
            )
        };
        match r {
            Ok(()) => return Ok(dev),
            Err(Errno::BUSY) => continue,
            Err(e) => return Err(format!("LOOP_SET_FD {dev} ← {}: {e}", path.display())),
        }
    }
    Err("no free loop device among /dev/loop0..7".into())
}
