//! The kernel's uevent broadcast: a `NETLINK_KOBJECT_UEVENT` socket bound to the kernel's
//! multicast group, read with a bound. Decisions about what an event means live in
//! `crate::uevent`.

use rustix::fd::OwnedFd;
use rustix::io::Errno;
use rustix::net::netlink::{SocketAddrNetlink, KOBJECT_UEVENT};
use rustix::net::sockopt::{set_socket_timeout, Timeout};
use rustix::net::{bind, recv, socket, AddressFamily, RecvFlags, SocketType};
use std::time::Duration;

/// The kernel's uevent multicast group.
const KERNEL_GROUP: u32 = 1;

/// A subscription to kernel uevents; open it before looking at /sys, so nothing that
/// appears in between is missed.
pub struct Uevents {
    fd: OwnedFd,
}

impl Uevents {
    /// `socket(AF_NETLINK, SOCK_DGRAM|SOCK_CLOEXEC, NETLINK_KOBJECT_UEVENT)` + `bind(groups=1)`.
    pub fn open() -> Result<Uevents, Errno> {
        let fd = socket(
            AddressFamily::NETLINK,
            SocketType::DGRAM,
            Some(KOBJECT_UEVENT),
        )?;
        bind(&fd, &SocketAddrNetlink::new(0, KERNEL_GROUP))?;
        Ok(Uevents { fd })
    }

    /// The next datagram, or `None` once `within` has passed without one (a zero bound
    /// returns at once: `SO_RCVTIMEO` of zero would mean "forever").
    pub fn next(&self, within: Duration) -> Result<Option<Vec<u8>>, Errno> {
        if within.is_zero() {
            return Ok(None);
        }
        set_socket_timeout(&self.fd, Timeout::Recv, Some(within))?;
        let mut buf = vec![0u8; 8192];
        match recv(&self.fd, &mut buf[..], RecvFlags::empty()) {
            Ok((n, _)) => {
                buf.truncate(n);
                Ok(Some(buf))
            }
            Err(Errno::AGAIN) => Ok(None),
            Err(e) => Err(e),
        }
    }
}
