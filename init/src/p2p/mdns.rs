//! mDNS peer discovery for the libp2p host (internet and local modes; a private node neither
//! announces nor browses): each node that announces itself registers DNS-SD service
//! `_phase-node._tcp` on its libp2p TCP port with TXT `txtvers=1` and `peer=<peer id>`, and
//! browses for the others, adding each to Kademlia's routing table (so nodes on one LAN form
//! a DHT with no bootstrap list); a requester with no bootstrap list browses once for a node
//! to join through (`phase job run --discover`).
//!
//! The protocol engine is `mdns-sd`, already in the binary for release discovery
//! (`discover::mdns`), rather than libp2p's `mdns` feature (a second responder and more
//! code in the initramfs). Nothing announced is trusted: a peer id only names whom to dial,
//! and Noise proves it; a record found through it still has to verify.

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use mdns_sd::{ServiceDaemon, ServiceEvent};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

/// The DNS-SD service type of a Phase Boot job node.
pub const SERVICE: &str = "_phase-node._tcp.local.";
/// How long a one-shot browse waits in all, and after the first answer.
pub const BROWSE_TOTAL: Duration = Duration::from_millis(3000);
pub const BROWSE_SETTLE: Duration = Duration::from_millis(500);

/// The TXT record a node announces.
pub fn txt(peer: &PeerId) -> Vec<(String, String)> {
    vec![
        ("txtvers".into(), "1".into()),
        ("peer".into(), peer.to_string()),
    ]
}

/// The address to dial a node seen on the LAN at `addr:port` with `txt` (PURE), or why not.
pub fn peer_addr(
    txt: &HashMap<String, String>,
    addr: Ipv4Addr,
    port: u16,
) -> Result<(PeerId, Multiaddr), &'static str> {
    if txt.get("txtvers").is_some_and(|v| v != "1") {
        return Err("unknown_txtvers");
    }
    let peer: PeerId = txt
        .get("peer")
        .and_then(|p| p.parse().ok())
        .ok_or("bad_peer_id")?;
    if port == 0
        || addr.is_unspecified()
        || addr.is_loopback()
        || addr.is_multicast()
        || addr.is_broadcast()
    {
        return Err("bad_address");
    }
    let dial = Multiaddr::from(addr).with(Protocol::Tcp(port));
    Ok((peer, dial))
}

fn resolved(ev: ServiceEvent) -> Vec<(PeerId, Multiaddr)> {
    let ServiceEvent::ServiceResolved(s) = ev else {
        return Vec::new();
    };
    let txt: HashMap<String, String> = s
        .get_properties()
        .iter()
        .map(|p| (p.key().to_ascii_lowercase(), p.val_str().to_string()))
        .collect();
    let mut addrs: Vec<Ipv4Addr> = s.get_addresses_v4().into_iter().collect();
    addrs.sort();
    addrs
        .into_iter()
        .filter_map(|a| match peer_addr(&txt, a, s.get_port()) {
            Ok(p) => Some(p),
            Err(reason) => {
                tracing::debug!("mdns: {} skipped: {reason}", s.get_fullname());
                None
            }
        })
        .collect()
}

/// Browse once (blocking, at most [`BROWSE_TOTAL`]): every node seen, as `addr/p2p/<id>`.
pub fn browse() -> Result<Vec<Multiaddr>, String> {
    let daemon = ServiceDaemon::new().map_err(|e| format!("mdns: {e}"))?;
    let rx = daemon
        .browse(SERVICE)
        .map_err(|e| format!("mdns browse: {e}"))?;
    let mut deadline = Instant::now() + BROWSE_TOTAL;
    let mut found = Vec::new();
    while let Ok(ev) = rx.recv_deadline(deadline) {
        for (peer, addr) in resolved(ev) {
            let a = addr.with(Protocol::P2p(peer));
            if !found.contains(&a) {
                found.push(a);
            }
            deadline = deadline.min(Instant::now() + BROWSE_SETTLE);
        }
    }
    let _ = daemon.stop_browse(SERVICE);
    if let Ok(rx) = daemon.shutdown() {
        let _ = rx.recv_timeout(Duration::from_millis(500));
    }
    Ok(found)
}

/// A node's presence on the LAN: its announcement and the browser feeding its routing
/// table. [`Presence::stop`] says goodbye and ends the browser.
pub struct Presence {
    announcer: crate::discover::mdns::Announcer,
    browser: Option<(ServiceDaemon, std::thread::JoinHandle<()>)>,
}

/// The TCP port of the first listen address that is on a LAN (not loopback), if any.
pub fn lan_port(listen: &[Multiaddr]) -> Option<u16> {
    listen.iter().find_map(|a| {
        let mut it = a.iter();
        let lan = match it.next()? {
            Protocol::Ip4(ip) => !ip.is_loopback(),
            Protocol::Ip6(ip) => !ip.is_loopback(),
            _ => false,
        };
        match it.next()? {
            Protocol::Tcp(port) if lan => Some(port),
            _ => None,
        }
    })
}

/// Announce `peer` on every interface at `port`, and add every other node seen to the host
/// (through `found`, called from the browser's thread).
pub fn join(
    peer: PeerId,
    port: u16,
    found: impl Fn(PeerId, Multiaddr) + Send + 'static,
) -> Result<Presence, String> {
    let instance = format!("phase-node {peer}");
    let announcer = crate::discover::mdns::register(
        SERVICE,
        &instance,
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        port,
        &txt(&peer),
    )?;
    let daemon = ServiceDaemon::new().map_err(|e| format!("mdns: {e}"))?;
    let rx = daemon
        .browse(SERVICE)
        .map_err(|e| format!("mdns browse: {e}"))?;
    let thread = std::thread::Builder::new()
        .name("phase-mdns-peers".into())
        .spawn(move || {
            // Ends when the daemon shuts down (the channel closes).
            while let Ok(ev) = rx.recv() {
                for (p, addr) in resolved(ev) {
                    if p != peer {
                        found(p, addr);
                    }
                }
            }
        })
        .map_err(|e| format!("mdns browser thread: {e}"))?;
    Ok(Presence {
        announcer,
        browser: Some((daemon, thread)),
    })
}

impl Presence {
    /// Say goodbye (browsers forget this node now) and stop browsing.
    pub fn stop(mut self) {
        if let Some((daemon, thread)) = self.browser.take() {
            let _ = daemon.stop_browse(SERVICE);
            if let Ok(rx) = daemon.shutdown() {
                let _ = rx.recv_timeout(Duration::from_millis(500));
            }
            drop(thread);
        }
        self.announcer.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announced_txt_gives_the_peer_back() {
        let peer = PeerId::random();
        let m: HashMap<String, String> = txt(&peer).into_iter().collect();
        let (p, a) = peer_addr(&m, Ipv4Addr::new(10, 216, 0, 2), 4001).unwrap();
        assert_eq!(p, peer);
        assert_eq!(a, "/ip4/10.216.0.2/tcp/4001".parse::<Multiaddr>().unwrap());
    }

    #[test]
    fn refuses_what_does_not_name_a_peer_on_the_lan() {
        let peer = PeerId::random();
        let good: HashMap<String, String> = txt(&peer).into_iter().collect();
        let lan = Ipv4Addr::new(10, 0, 0, 2);
        let with = |k: &str, v: &str| {
            let mut m = good.clone();
            m.insert(k.into(), v.into());
            peer_addr(&m, lan, 4001).map(|_| ())
        };
        assert_eq!(with("txtvers", "2"), Err("unknown_txtvers"));
        assert_eq!(with("peer", "not-a-peer"), Err("bad_peer_id"));
        assert_eq!(
            peer_addr(&HashMap::new(), lan, 4001).map(|_| ()),
            Err("bad_peer_id")
        );
        for (addr, port) in [
            (Ipv4Addr::LOCALHOST, 4001),
            (Ipv4Addr::UNSPECIFIED, 4001),
            (Ipv4Addr::new(224, 0, 0, 251), 4001),
            (lan, 0),
        ] {
            assert_eq!(
                peer_addr(&good, addr, port).map(|_| ()),
                Err("bad_address"),
                "{addr}:{port}"
            );
        }
    }

    #[test]
    fn only_a_lan_listen_address_is_announced() {
        let a = |s: &str| s.parse::<Multiaddr>().unwrap();
        assert_eq!(lan_port(&[a("/ip4/127.0.0.1/tcp/4001")]), None);
        assert_eq!(
            lan_port(&[a("/ip4/127.0.0.1/tcp/4001"), a("/ip4/10.0.0.2/tcp/4002")]),
            Some(4002)
        );
        assert_eq!(lan_port(&[a("/ip4/0.0.0.0/tcp/4001")]), Some(4001));
        assert_eq!(lan_port(&[]), None);
    }
}
