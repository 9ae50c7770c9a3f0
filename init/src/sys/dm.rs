//! Device-mapper through its ioctls on `/dev/mapper/control` (no dmsetup/veritysetup in the
//! initramfs). Only what a read-only verity target needs: create, load table, resume.

use rustix::io::Errno;
use std::os::fd::AsFd;

const DM_NAME_LEN: usize = 128;
const HEADER: usize = 312; // sizeof(struct dm_ioctl)
const SPEC: usize = 40; // sizeof(struct dm_target_spec)
const DM_READONLY_FLAG: u32 = 1;

// _IOWR(0xfd, cmd, struct dm_ioctl)
const fn dm_op(cmd: u32) -> rustix::ioctl::Opcode {
    (0xC000_0000 | ((HEADER as u32) << 16) | (0xfd << 8) | cmd) as rustix::ioctl::Opcode
}
const DM_DEV_CREATE: rustix::ioctl::Opcode = dm_op(3);
const DM_DEV_REMOVE: rustix::ioctl::Opcode = dm_op(4);
const DM_DEV_SUSPEND: rustix::ioctl::Opcode = dm_op(6);
const DM_TABLE_LOAD: rustix::ioctl::Opcode = dm_op(9);

#[repr(C, align(8))]
struct Buf([u8; 4096]);

#[derive(Debug, thiserror::Error)]
pub enum DmError {
    #[error("open /dev/mapper/control: {0}")]
    Control(#[source] std::io::Error),
    #[error("device-mapper {op} {name}: {errno}")]
    Ioctl {
        op: &'static str,
        name: String,
        #[source]
        errno: Errno,
    },
    #[error("device-mapper table for {0} too long")]
    TooLong(String),
}

/// One target line: `start length type params` (sectors).
pub struct Target<'a> {
    pub start: u64,
    pub sectors: u64,
    pub kind: &'a str,
    pub params: &'a str,
}

/// Fill a `struct dm_ioctl` header (PURE) with version 4.0.0.
fn header(buf: &mut [u8], name: &str, data_size: usize, targets: u32, flags: u32) {
    buf[..HEADER].fill(0);
    buf[0..4].copy_from_slice(&4u32.to_ne_bytes());
    buf[12..16].copy_from_slice(&(data_size as u32).to_ne_bytes());
    buf[16..20].copy_from_slice(&(HEADER as u32).to_ne_bytes());
    buf[20..24].copy_from_slice(&targets.to_ne_bytes());
    buf[28..32].copy_from_slice(&flags.to_ne_bytes());
    let n = name.len().min(DM_NAME_LEN - 1);
    buf[48..48 + n].copy_from_slice(&name.as_bytes()[..n]);
}

/// Encode a table load (PURE): header, one dm_target_spec, NUL-terminated params, 8-aligned.
fn table(buf: &mut [u8], name: &str, t: &Target) -> Option<usize> {
    let params_len = t.params.len() + 1;
    let size = (HEADER + SPEC + params_len).next_multiple_of(8);
    if size > buf.len() {
        return None;
    }
    header(buf, name, size, 1, DM_READONLY_FLAG);
    let s = &mut buf[HEADER..size];
    s.fill(0);
    s[0..8].copy_from_slice(&t.start.to_ne_bytes());
    s[8..16].copy_from_slice(&t.sectors.to_ne_bytes());
    // status (4 bytes) = 0; next (4 bytes) = 0: the only target.
    let k = t.kind.len().min(15);
    s[24..24 + k].copy_from_slice(&t.kind.as_bytes()[..k]);
    s[SPEC..SPEC + t.params.len()].copy_from_slice(t.params.as_bytes());
    Some(size)
}

fn call(
    fd: impl AsFd,
    op: rustix::ioctl::Opcode,
    opname: &'static str,
    name: &str,
    buf: &mut Buf,
) -> Result<(), DmError> {
    // SAFETY: `buf` starts with a correctly sized `struct dm_ioctl` whose data_size covers
    // only bytes inside `buf`; the kernel reads and writes within that size.
    let r = unsafe {
        match op {
            DM_DEV_CREATE => {
                rustix::ioctl::ioctl(fd, rustix::ioctl::Updater::<DM_DEV_CREATE, Buf>::new(buf))
            }
            DM_DEV_REMOVE => {
                rustix::ioctl::ioctl(fd, rustix::ioctl::Updater::<DM_DEV_REMOVE, Buf>::new(buf))
            }
            DM_DEV_SUSPEND => {
                rustix::ioctl::ioctl(fd, rustix::ioctl::Updater::<DM_DEV_SUSPEND, Buf>::new(buf))
            }
            _ => rustix::ioctl::ioctl(fd, rustix::ioctl::Updater::<DM_TABLE_LOAD, Buf>::new(buf)),
        }
    };
    r.map_err(|errno| DmError::Ioctl {
        op: opname,
        name: name.to_string(),
        errno,
    })
}

/// `DM_DEV_CREATE`, `DM_TABLE_LOAD` (read-only), `DM_DEV_SUSPEND` (resume): a live mapped
/// device. Returns its block device path (`/dev/dm-N`). On failure the device is removed.
pub fn create_readonly(name: &str, t: &Target) -> Result<String, DmError> {
    let ctl = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/mapper/control")
        .map_err(DmError::Control)?;
    let mut buf = Buf([0; 4096]);
    header(&mut buf.0, name, HEADER, 0, 0);
    call(&ctl, DM_DEV_CREATE, "create", name, &mut buf)?;
    let dev = u64::from_ne_bytes(buf.0[40..48].try_into().unwrap_or([0; 8]));
    let result = (|| {
        if table(&mut buf.0, name, t).is_none() {
            return Err(DmError::TooLong(name.to_string()));
        }
        call(&ctl, DM_TABLE_LOAD, "table load", name, &mut buf)?;
        header(&mut buf.0, name, HEADER, 0, 0);
        call(&ctl, DM_DEV_SUSPEND, "resume", name, &mut buf)
    })();
    if let Err(e) = result {
        remove(name);
        return Err(e);
    }
    // huge_encode_dev: minor = (dev & 0xff) | ((dev >> 12) & ~0xff)
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    Ok(format!("/dev/dm-{minor}"))
}

/// `DM_DEV_REMOVE`, best effort (used to undo a failed or abandoned mapping).
pub fn remove(name: &str) {
    if let Ok(ctl) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/mapper/control")
    {
        let mut buf = Buf([0; 4096]);
        header(&mut buf.0, name, HEADER, 0, 0);
        let _ = call(&ctl, DM_DEV_REMOVE, "remove", name, &mut buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opcodes_match_linux_headers() {
        // From <linux/dm-ioctl.h> on x86_64: DM_DEV_CREATE = 0xc138fd03, DM_TABLE_LOAD = 0xc138fd09.
        assert_eq!(DM_DEV_CREATE as u64 & 0xffff_ffff, 0xc138_fd03);
        assert_eq!(DM_TABLE_LOAD as u64 & 0xffff_ffff, 0xc138_fd09);
        assert_eq!(DM_DEV_SUSPEND as u64 & 0xffff_ffff, 0xc138_fd06);
    }

    #[test]
    fn table_encoding() {
        let mut buf = [0u8; 4096];
        let t = Target {
            start: 0,
            sectors: 2048,
            kind: "verity",
            params: "1 /dev/vda2 /dev/vda3 4096 4096 256 1 sha256 ab cd",
        };
        let size = table(&mut buf, "phase-root", &t).unwrap();
        assert_eq!(size % 8, 0);
        assert_eq!(
            u32::from_ne_bytes(buf[12..16].try_into().unwrap()) as usize,
            size
        );
        assert_eq!(u32::from_ne_bytes(buf[20..24].try_into().unwrap()), 1);
        assert_eq!(&buf[48..58], b"phase-root");
        assert_eq!(
            u64::from_ne_bytes(buf[HEADER + 8..HEADER + 16].try_into().unwrap()),
            2048
        );
        assert_eq!(&buf[HEADER + 24..HEADER + 30], b"verity");
        assert_eq!(&buf[HEADER + SPEC..HEADER + SPEC + 8], b"1 /dev/v");
        assert_eq!(buf[HEADER + SPEC + t.params.len()], 0);
        assert!(table(&mut [0u8; 400], "x", &t).is_none());
    }
}
