//! DHCPv4 client packets and decisions (PURE), on dhcproto: DISCOVER → OFFER → REQUEST →
//! ACK (NAK restarts), with the broadcast flag set so replies reach a socket that has no
//! address yet. Retransmission follows RFC 2131 §4.1 (4 s doubling, capped), scaled down
//! because a boot must not wait a minute, and bounded overall by the caller.

use super::Config;
use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use std::net::Ipv4Addr;
use std::time::Duration;

/// A lease offered or granted.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Lease {
    pub config: Config,
    pub server: Ipv4Addr,
    pub lease_secs: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Offer(Lease),
    Ack(Lease),
    Nak,
}

fn base(xid: u32, mac: &[u8; 6], kind: MessageType) -> Message {
    let z = Ipv4Addr::UNSPECIFIED;
    let mut m = Message::new_with_id(xid, z, z, z, z, mac);
    m.set_opcode(Opcode::BootRequest);
    m.set_flags(Flags::default().set_broadcast());
    m.opts_mut().insert(DhcpOption::MessageType(kind));
    m.opts_mut().insert(DhcpOption::ParameterRequestList(vec![
        OptionCode::SubnetMask,
        OptionCode::Router,
        OptionCode::DomainNameServer,
        OptionCode::AddressLeaseTime,
    ]));
    m
}

fn encode(m: &Message) -> Vec<u8> {
    let mut buf = Vec::with_capacity(300);
    let mut e = Encoder::new(&mut buf);
    // Encoding a message we built cannot fail; an empty packet is simply never answered.
    if m.encode(&mut e).is_err() {
        return Vec::new();
    }
    buf
}

pub fn discover(xid: u32, mac: &[u8; 6]) -> Vec<u8> {
    encode(&base(xid, mac, MessageType::Discover))
}

/// REQUEST for an offered lease (SELECTING state: server id + requested address).
pub fn request(xid: u32, mac: &[u8; 6], offer: &Lease) -> Vec<u8> {
    let mut m = base(xid, mac, MessageType::Request);
    m.opts_mut()
        .insert(DhcpOption::RequestedIpAddress(offer.config.addr));
    m.opts_mut()
        .insert(DhcpOption::ServerIdentifier(offer.server));
    encode(&m)
}

/// REQUEST to extend a lease we hold (RFC 2131 §4.3.2 RENEWING/REBINDING): `ciaddr` is
/// our address, no requested-address or server-id option, no broadcast flag.
pub fn renew(xid: u32, mac: &[u8; 6], lease: &Lease) -> Vec<u8> {
    let mut m = base(xid, mac, MessageType::Request);
    m.set_flags(Flags::default());
    m.set_ciaddr(lease.config.addr);
    encode(&m)
}

/// Seconds after the lease was obtained at which to renew (T1 = ½) and rebind (T2 = ⅞).
pub fn timers(lease_secs: u32) -> (u64, u64) {
    let l = u64::from(lease_secs);
    (l / 2, l * 7 / 8)
}

/// Decode a reply meant for us (our xid and MAC); anything else is `None`.
pub fn parse_reply(bytes: &[u8], xid: u32, mac: &[u8; 6]) -> Option<Reply> {
    let m = Message::decode(&mut Decoder::new(bytes)).ok()?;
    if m.opcode() != Opcode::BootReply || m.xid() != xid || m.chaddr().get(..6) != Some(&mac[..]) {
        return None;
    }
    let opts = m.opts();
    let kind = opts.msg_type()?;
    if kind == MessageType::Nak {
        return Some(Reply::Nak);
    }
    let server = match opts.get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(s)) => *s,
        _ => return None,
    };
    let prefix = match opts.get(OptionCode::SubnetMask) {
        Some(DhcpOption::SubnetMask(mask)) => super::prefix_len(*mask)?,
        _ => 24,
    };
    let router = match opts.get(OptionCode::Router) {
        Some(DhcpOption::Router(r)) => r.first().copied(),
        _ => None,
    };
    let dns = match opts.get(OptionCode::DomainNameServer) {
        Some(DhcpOption::DomainNameServer(d)) => d.clone(),
        _ => vec![],
    };
    let lease_secs = match opts.get(OptionCode::AddressLeaseTime) {
        Some(DhcpOption::AddressLeaseTime(t)) => *t,
        _ => 3600,
    };
    let addr = m.yiaddr();
    if addr.is_unspecified() {
        return None;
    }
    let lease = Lease {
        config: Config {
            addr,
            prefix,
            router,
            dns,
        },
        server,
        lease_secs,
    };
    match kind {
        MessageType::Offer => Some(Reply::Offer(lease)),
        MessageType::Ack => Some(Reply::Ack(lease)),
        _ => None,
    }
}

/// Wait before retransmission number `n` (0-based): 1, 2, 4, 4, … seconds.
pub fn retransmit_after(n: u32) -> Duration {
    Duration::from_secs(1 << n.min(2))
}

/// A transaction ID from the MAC and the boot clock: distinct per machine and per try,
/// and no wait for entropy this early in boot.
pub fn xid(mac: &[u8; 6], salt: u64) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in mac.iter().chain(salt.to_le_bytes().iter()) {
        h = (h ^ *b as u64).wrapping_mul(0x100_0000_01b3);
    }
    (h >> 16) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

    fn reply(kind: MessageType, xid: u32, mac: &[u8; 6]) -> Vec<u8> {
        let z = Ipv4Addr::UNSPECIFIED;
        let mut m = Message::new_with_id(xid, z, [10, 0, 2, 15].into(), z, z, mac);
        m.set_opcode(Opcode::BootReply);
        m.opts_mut().insert(DhcpOption::MessageType(kind));
        m.opts_mut()
            .insert(DhcpOption::ServerIdentifier([10, 0, 2, 2].into()));
        m.opts_mut()
            .insert(DhcpOption::SubnetMask([255, 255, 255, 0].into()));
        m.opts_mut()
            .insert(DhcpOption::Router(vec![[10, 0, 2, 2].into()]));
        m.opts_mut()
            .insert(DhcpOption::DomainNameServer(vec![[10, 0, 2, 3].into()]));
        m.opts_mut().insert(DhcpOption::AddressLeaseTime(86400));
        encode(&m)
    }

    #[test]
    fn offer_request_ack() {
        let x = xid(&MAC, 1);
        let d = Message::decode(&mut Decoder::new(&discover(x, &MAC))).unwrap();
        assert_eq!(d.opts().msg_type(), Some(MessageType::Discover));
        assert!(d.flags().broadcast());
        let Some(Reply::Offer(lease)) = parse_reply(&reply(MessageType::Offer, x, &MAC), x, &MAC)
        else {
            panic!("no offer");
        };
        assert_eq!(
            lease.config,
            Config {
                addr: [10, 0, 2, 15].into(),
                prefix: 24,
                router: Some([10, 0, 2, 2].into()),
                dns: vec![[10, 0, 2, 3].into()]
            }
        );
        assert_eq!(
            (lease.server, lease.lease_secs),
            ([10, 0, 2, 2].into(), 86400)
        );
        let r = Message::decode(&mut Decoder::new(&request(x, &MAC, &lease))).unwrap();
        assert_eq!(
            r.opts().get(OptionCode::RequestedIpAddress),
            Some(&DhcpOption::RequestedIpAddress([10, 0, 2, 15].into()))
        );
        assert_eq!(
            r.opts().get(OptionCode::ServerIdentifier),
            Some(&DhcpOption::ServerIdentifier([10, 0, 2, 2].into()))
        );
        assert!(matches!(
            parse_reply(&reply(MessageType::Ack, x, &MAC), x, &MAC),
            Some(Reply::Ack(_))
        ));
        assert_eq!(
            parse_reply(&reply(MessageType::Nak, x, &MAC), x, &MAC),
            Some(Reply::Nak)
        );
    }

    #[test]
    fn foreign_and_garbage_replies_ignored() {
        let x = xid(&MAC, 1);
        assert!(parse_reply(&reply(MessageType::Offer, x + 1, &MAC), x, &MAC).is_none());
        assert!(parse_reply(&reply(MessageType::Offer, x, &[1, 2, 3, 4, 5, 6]), x, &MAC).is_none());
        assert!(parse_reply(&discover(x, &MAC), x, &MAC).is_none());
        assert!(parse_reply(b"garbage", x, &MAC).is_none());
        assert!(parse_reply(&[], x, &MAC).is_none());
    }

    #[test]
    fn renewal() {
        let x = xid(&MAC, 3);
        let Some(Reply::Offer(lease)) = parse_reply(&reply(MessageType::Offer, x, &MAC), x, &MAC)
        else {
            panic!("no offer");
        };
        let r = Message::decode(&mut Decoder::new(&renew(x, &MAC, &lease))).unwrap();
        assert_eq!(r.ciaddr(), Ipv4Addr::new(10, 0, 2, 15));
        assert!(!r.flags().broadcast());
        assert!(r.opts().get(OptionCode::ServerIdentifier).is_none());
        assert!(r.opts().get(OptionCode::RequestedIpAddress).is_none());
        assert_eq!(timers(86400), (43200, 75600));
        assert_eq!(timers(120), (60, 105));
    }

    #[test]
    fn retransmission_and_xids() {
        assert_eq!(
            [0, 1, 2, 3, 9].map(|n| retransmit_after(n).as_secs()),
            [1, 2, 4, 4, 4]
        );
        assert_ne!(xid(&MAC, 1), xid(&MAC, 2));
        assert_ne!(xid(&MAC, 1), xid(&[0; 6], 1));
    }
}
