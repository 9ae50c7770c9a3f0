//! Block-device ioctls for growing the state partition: the device's size, the kernel's
//! idea of one partition's extent, and ext4's online resize. No decisions here.

use rustix::io::Errno;
use std::fs::File;

// _IOR(0x12, 114, size_t)
const BLKGETSIZE64: rustix::ioctl::Opcode = 0x8008_1272;
// _IO(0x12, 105)
const BLKPG: rustix::ioctl::Opcode = 0x1269;
const BLKPG_RESIZE_PARTITION: i32 = 3;
// _IOW('f', 16, __u64)
const EXT4_IOC_RESIZE_FS: rustix::ioctl::Opcode = 0x4008_6610;

/// `struct blkpg_partition` from <linux/blkpg.h>.
#[repr(C)]
#[derive(Clone, Copy)]
struct BlkpgPartition {
    start: i64,
    length: i64,
    pno: i32,
    devname: [u8; 64],
    volname: [u8; 64],
}

/// `struct blkpg_ioctl_arg` from <linux/blkpg.h>.
#[repr(C)]
#[derive(Clone, Copy)]
struct BlkpgIoctlArg {
    op: i32,
    flags: i32,
    datalen: i32,
    data: *mut BlkpgPartition,
}

/// `ioctl(fd, BLKGETSIZE64, &u64)`: the device's size in bytes.
pub fn size_bytes(dev: &File) -> Result<u64, Errno> {
    // SAFETY: BLKGETSIZE64 writes one u64.
    unsafe { rustix::ioctl::ioctl(dev, rustix::ioctl::Getter::<BLKGETSIZE64, u64>::new()) }
}

/// `ioctl(disk, BLKPG, {BLKPG_RESIZE_PARTITION, {start, length, pno}})`: tell the kernel
/// partition `number` now spans `length` bytes from `start` (which must not change).
pub fn resize_partition(disk: &File, number: u32, start: u64, length: u64) -> Result<(), Errno> {
    let mut part = BlkpgPartition {
        start: i64::try_from(start).map_err(|_| Errno::INVAL)?,
        length: i64::try_from(length).map_err(|_| Errno::INVAL)?,
        pno: i32::try_from(number).map_err(|_| Errno::INVAL)?,
        devname: [0; 64],
        volname: [0; 64],
    };
    let arg = BlkpgIoctlArg {
        op: BLKPG_RESIZE_PARTITION,
        flags: 0,
        datalen: std::mem::size_of::<BlkpgPartition>() as i32,
        data: &mut part,
    };
    // SAFETY: BLKPG reads a blkpg_ioctl_arg whose data points at a live blkpg_partition of
    // datalen bytes; both outlive the call.
    unsafe {
        rustix::ioctl::ioctl(
            disk,
            rustix::ioctl::Setter::<BLKPG, BlkpgIoctlArg>::new(arg),
        )
    }
}

/// `ioctl(fd on the mounted ext4, EXT4_IOC_RESIZE_FS, &blocks)`: grow the mounted
/// filesystem to `blocks` filesystem blocks (a no-op if it already has that many).
pub fn resize_ext4(mounted: &File, blocks: u64) -> Result<(), Errno> {
    // SAFETY: EXT4_IOC_RESIZE_FS reads one u64.
    unsafe {
        rustix::ioctl::ioctl(
            mounted,
            rustix::ioctl::Setter::<EXT4_IOC_RESIZE_FS, u64>::new(blocks),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opcodes_and_layouts_match_the_kernel_headers() {
        // From <linux/fs.h>, <linux/blkpg.h> and <linux/ext4.h> on x86_64.
        assert_eq!(BLKGETSIZE64, 0x80081272);
        assert_eq!(BLKPG, 0x1269);
        assert_eq!(EXT4_IOC_RESIZE_FS, 0x40086610);
        assert_eq!(std::mem::size_of::<BlkpgPartition>(), 152);
        assert_eq!(std::mem::size_of::<BlkpgIoctlArg>(), 24);
    }
}
