//! rtnetlink, the three requests the network step needs: set a link up, add an IPv4
//! address, add an IPv4 route. Each waits for the kernel's ACK and returns its errno. And
//! the link broadcasts ([`LinkEvents`]) the carrier wait sleeps on.

use rustix::io::Errno;
use rustix::net::{recv, send, socket, AddressFamily, RecvFlags, SendFlags, SocketType};
use std::net::Ipv4Addr;

const RTM_NEWLINK: u16 = 16;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const AF_INET: u8 = 2;
const IFF_UP: u32 = 1;

/// Append an rtattr (PURE helper).
fn attr(buf: &mut Vec<u8>, kind: u16, data: &[u8]) {
    buf.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(data);
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

/// A complete message: nlmsghdr + body (PURE).
fn message(kind: u16, flags: u16, seq: u32, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(16 + body.len());
    m.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(body);
    m
}

fn request(msg: &[u8]) -> Result<(), Errno> {
    // Protocol 0 is NETLINK_ROUTE (rustix spells protocol 0 as None).
    let fd = socket(AddressFamily::NETLINK, SocketType::RAW, None)?;
    send(&fd, msg, SendFlags::empty())?;
    let mut buf = [0u8; 4096];
    let (n, _) = recv(&fd, &mut buf[..], RecvFlags::empty())?;
    // nlmsghdr(16) then, for NLMSG_ERROR, a negative errno (0 = ACK).
    if n >= 20 && u16::from_ne_bytes([buf[4], buf[5]]) == NLMSG_ERROR {
        let err = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
        return if err == 0 {
            Ok(())
        } else {
            Err(Errno::from_raw_os_error(-err))
        };
    }
    Err(Errno::PROTO)
}

/// `ip link set dev <ifindex> up`
pub fn link_up(ifindex: u32) -> Result<(), Errno> {
    let mut body = vec![0u8; 16]; // ifinfomsg
    body[4..8].copy_from_slice(&(ifindex as i32).to_ne_bytes());
    body[8..12].copy_from_slice(&IFF_UP.to_ne_bytes());
    body[12..16].copy_from_slice(&IFF_UP.to_ne_bytes());
    request(&message(RTM_NEWLINK, 0, 1, &body))
}

/// `ip addr add <addr>/<prefix> dev <ifindex>`; EEXIST (already there) is success.
pub fn add_addr(ifindex: u32, addr: Ipv4Addr, prefix: u8) -> Result<(), Errno> {
    let mut body = vec![AF_INET, prefix, 0, 0];
    body.extend_from_slice(&ifindex.to_ne_bytes());
    attr(&mut body, 2, &addr.octets()); // IFA_LOCAL
    attr(&mut body, 1, &addr.octets()); // IFA_ADDRESS
    match request(&message(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, 2, &body)) {
        Err(Errno::EXIST) => Ok(()),
        r => r,
    }
}

/// `ip route add <dst>/<prefix> [via <gw>] dev <ifindex>`; EEXIST is success.
pub fn add_route(
    ifindex: u32,
    dst: Ipv4Addr,
    prefix: u8,
    gw: Option<Ipv4Addr>,
) -> Result<(), Errno> {
    // rtmsg: family, dst_len, src_len, tos, table=main, protocol=boot, scope, type=unicast
    let scope = if gw.is_some() { 0 } else { 253 }; // universe / link
    let mut body = vec![AF_INET, prefix, 0, 0, 254, 3, scope, 1, 0, 0, 0, 0];
    if prefix > 0 {
        attr(&mut body, 1, &dst.octets()); // RTA_DST
    }
    if let Some(g) = gw {
        attr(&mut body, 5, &g.octets()); // RTA_GATEWAY
    }
    attr(&mut body, 4, &ifindex.to_ne_bytes()); // RTA_OIF
    match request(&message(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, 3, &body)) {
        Err(Errno::EXIST) => Ok(()),
        r => r,
    }
}

/// `RTMGRP_LINK`: the multicast group of link changes.
const RTMGRP_LINK: u32 = 1;

/// A subscription to link changes (`RTM_NEWLINK` broadcasts), read with a bound. Open it
/// before looking at a link's state, so a change in between is not missed.
pub struct LinkEvents {
    fd: rustix::fd::OwnedFd,
}

impl LinkEvents {
    /// `socket(AF_NETLINK, SOCK_RAW|SOCK_CLOEXEC, NETLINK_ROUTE)` + `bind(groups=RTMGRP_LINK)`.
    pub fn open() -> Result<LinkEvents, Errno> {
        use rustix::net::bind;
        use rustix::net::netlink::SocketAddrNetlink;
        let fd = socket(AddressFamily::NETLINK, SocketType::RAW, None)?;
        bind(&fd, &SocketAddrNetlink::new(0, RTMGRP_LINK))?;
        Ok(LinkEvents { fd })
    }

    /// The next datagram, or `None` once `within` has passed without one (a zero bound
    /// returns at once). `ENOBUFS` (the kernel dropped broadcasts) comes back as an empty
    /// datagram: the caller looks at the links again.
    pub fn next(&self, within: std::time::Duration) -> Result<Option<Vec<u8>>, Errno> {
        use rustix::net::sockopt::{set_socket_timeout, Timeout};
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
            Err(Errno::NOBUFS) => Ok(Some(Vec::new())),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings() {
        let m = message(RTM_NEWLINK, 0, 7, &[0; 16]);
        assert_eq!(m.len(), 32);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()), 32);
        assert_eq!(
            u16::from_ne_bytes(m[6..8].try_into().unwrap()),
            NLM_F_REQUEST | NLM_F_ACK
        );
        let mut b = Vec::new();
        attr(&mut b, 5, &[10, 0, 2, 2]);
        assert_eq!(b, [8u8, 0, 5, 0, 10, 0, 2, 2]);
        let mut c = Vec::new();
        attr(&mut c, 1, &[1]);
        assert_eq!(c.len(), 8);
    }
}
