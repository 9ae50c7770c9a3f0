//! Network bring-up: links up over netlink, then DHCPv4 (or the kernel's `ip=` static
//! form), a default route and /etc/resolv.conf. Every wait is bounded: a link has
//! `CARRIER_WAIT` to come up (woken by rtnetlink link broadcasts, not polled), DHCP has
//! `DHCP_BOUND` in all. Emits `net.up`, or fails with a named reason (`no_interface`,
//! `no_carrier`, `no_dhcp_answer`, `dhcp_nak`, …) and the boot goes on without a network.

use super::{Boot, StepError};
use crate::events::Event;
use crate::net::dhcp::{self, Reply};
use crate::net::ipconfig::IpParam;
use crate::net::Config;
use crate::sys::netlink;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;
use tokio::time::Instant;

pub const CARRIER_WAIT: Duration = Duration::from_secs(3);
/// How often the links are looked at when the link broadcast socket cannot be opened.
const CARRIER_TICK: Duration = Duration::from_millis(50);
pub const DHCP_BOUND: Duration = Duration::from_secs(12);

/// A configured interface.
#[derive(Debug, Clone)]
pub struct Up {
    pub iface: String,
    pub config: Config,
    pub method: &'static str,
    /// The DHCP lease and the MAC it was obtained for, when DHCP was used.
    pub lease: Option<Held>,
}

/// A DHCP lease this machine holds (carried into stage 2 and across a kexec in
/// `handover::Carry`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Held {
    pub iface: String,
    pub mac: [u8; 6],
    pub lease: dhcp::Lease,
    /// CLOCK_BOOTTIME (ms) when the lease was granted.
    pub obtained_ms: u64,
}

#[derive(Debug)]
pub struct NetError {
    pub reason: &'static str,
    pub message: String,
}

fn err(reason: &'static str, message: String) -> NetError {
    NetError { reason, message }
}

struct Iface {
    name: String,
    index: u32,
    mac: [u8; 6],
}

/// Ethernet interfaces from /sys/class/net, sorted by name.
fn ifaces() -> Vec<Iface> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/sys/class/net") else {
        return out;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let read = |f: &str| {
            std::fs::read_to_string(e.path().join(f))
                .unwrap_or_default()
                .trim()
                .to_string()
        };
        if read("type") != "1" {
            continue; // ARPHRD_ETHER only: not lo, not tunnels
        }
        let Ok(index) = read("ifindex").parse() else {
            continue;
        };
        let mut mac = [0u8; 6];
        for (i, b) in read("address").split(':').take(6).enumerate() {
            mac[i] = u8::from_str_radix(b, 16).unwrap_or(0);
        }
        out.push(Iface { name, index, mac });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn carrier(name: &str) -> bool {
    std::fs::read_to_string(format!("/sys/class/net/{name}/carrier"))
        .map(|s| s.trim() == "1")
        .unwrap_or(false)
}

/// The first of `links` (name, index) with carrier, by its position; `None` when none has
/// one within `bound`. Looks at sysfs, then sleeps until a link broadcast names one of them
/// with carrier, and looks again; without the broadcast socket, looks once a tick.
fn wait_carrier(
    events: Option<netlink::LinkEvents>,
    links: &[(String, u32)],
    bound: Duration,
) -> Option<usize> {
    let started = std::time::Instant::now();
    loop {
        if let Some(n) = links.iter().position(|(name, _)| carrier(name)) {
            return Some(n);
        }
        let left = bound.saturating_sub(started.elapsed());
        if left.is_zero() {
            return None;
        }
        let Some(ev) = &events else {
            std::thread::sleep(CARRIER_TICK.min(left));
            continue;
        };
        // Until a broadcast names one of ours with carrier (an empty one: look again).
        loop {
            match ev.next(bound.saturating_sub(started.elapsed())) {
                Ok(Some(d)) => {
                    let up = crate::net::link::with_carrier(&d);
                    if d.is_empty() || links.iter().any(|(_, i)| up.contains(i)) {
                        break;
                    }
                }
                // A socket timeout may round below the bound: wait out the rest.
                Ok(None) if started.elapsed() >= bound => break,
                Ok(None) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => {
                    tracing::warn!("link broadcasts: {e}; looking once a tick");
                    std::thread::sleep(CARRIER_TICK);
                    break;
                }
            }
        }
    }
}

/// Bring up the network as `ip` says. Used by the boot step and by `phase net up`; only
/// the boot step (`write_resolv`) writes /etc/resolv.conf.
pub async fn configure(ip: &IpParam, write_resolv: bool) -> Result<Up, NetError> {
    let device = match ip {
        IpParam::Off => return Err(err("ip_off", "ip=off: no network".into())),
        IpParam::Dhcp { device } | IpParam::Static { device, .. } => device.clone(),
    };
    let all: Vec<Iface> = ifaces()
        .into_iter()
        .filter(|i| device.as_ref().is_none_or(|d| *d == i.name))
        .collect();
    if all.is_empty() {
        return Err(err(
            "no_interface",
            format!(
                "no ethernet interface{}",
                device.map(|d| format!(" named {d}")).unwrap_or_default()
            ),
        ));
    }
    // Subscribe before the links go up, so a carrier that comes in between is not missed.
    let links = netlink::LinkEvents::open()
        .map_err(|e| tracing::warn!("link broadcasts: {e}; looking at the links once a tick"))
        .ok();
    if let Ok(lo) = std::fs::read_to_string("/sys/class/net/lo/ifindex") {
        let _ = netlink::link_up(lo.trim().parse().unwrap_or(1));
    }
    for i in &all {
        netlink::link_up(i.index)
            .map_err(|e| err("netlink_failed", format!("link up {}: {e}", i.name)))?;
    }
    // The wait blocks on a socket with a bound: off the runtime's thread.
    let names: Vec<(String, u32)> = all.iter().map(|i| (i.name.clone(), i.index)).collect();
    let first = tokio::task::spawn_blocking(move || wait_carrier(links, &names, CARRIER_WAIT))
        .await
        .ok()
        .flatten();
    let Some(iface) = first.and_then(|n| all.get(n)) else {
        return Err(err(
            "no_carrier",
            format!(
                "no link on {} within {CARRIER_WAIT:?}",
                all.iter()
                    .map(|i| i.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    };
    let (config, method, lease) = match ip {
        IpParam::Static { config, .. } => (config.clone(), "static", None),
        _ => {
            let l = dhcp_lease(iface).await?;
            let held = Held {
                iface: iface.name.clone(),
                mac: iface.mac,
                lease: l.clone(),
                obtained_ms: crate::sys::clock::boottime_ms(),
            };
            (l.config, "dhcp", Some(held))
        }
    };
    apply(iface, &config, write_resolv)?;
    Ok(Up {
        iface: iface.name.clone(),
        config,
        method,
        lease,
    })
}

fn apply(i: &Iface, c: &Config, write_resolv: bool) -> Result<(), NetError> {
    netlink::add_addr(i.index, c.addr, c.prefix).map_err(|e| {
        err(
            "netlink_failed",
            format!("address {} on {}: {e}", c.addr, i.name),
        )
    })?;
    if let Some(gw) = c.router {
        netlink::add_route(i.index, Ipv4Addr::UNSPECIFIED, 0, Some(gw))
            .map_err(|e| err("netlink_failed", format!("default route via {gw}: {e}")))?;
    }
    if write_resolv && !c.dns.is_empty() {
        let _ = std::fs::create_dir_all("/etc");
        if let Err(e) = std::fs::write("/etc/resolv.conf", crate::net::resolv_conf(&c.dns)) {
            tracing::warn!("write /etc/resolv.conf: {e}");
        }
    }
    Ok(())
}

/// The DHCP client's socket: UDP 0.0.0.0:68, broadcast allowed.
fn client_socket() -> std::io::Result<tokio::net::UdpSocket> {
    let s = std::net::UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68))?;
    s.set_broadcast(true)?;
    s.set_nonblocking(true)?;
    tokio::net::UdpSocket::from_std(s)
}

/// DISCOVER/OFFER/REQUEST/ACK with retransmission, within DHCP_BOUND.
async fn dhcp_lease(i: &Iface) -> Result<dhcp::Lease, NetError> {
    // Limited broadcast needs a route on an interface with no address yet.
    netlink::add_route(i.index, Ipv4Addr::BROADCAST, 32, None).map_err(|e| {
        err(
            "netlink_failed",
            format!("broadcast route on {}: {e}", i.name),
        )
    })?;
    let sock = client_socket().map_err(|e| err("dhcp_socket", format!("udp 0.0.0.0:68: {e}")))?;
    let server = SocketAddrV4::new(Ipv4Addr::BROADCAST, 67);
    let deadline = Instant::now() + DHCP_BOUND;
    let mut attempt = 0u32;
    let mut offer: Option<dhcp::Lease> = None;
    let mut buf = vec![0u8; 1500];
    while Instant::now() < deadline {
        let x = dhcp::xid(
            &i.mac,
            crate::sys::clock::boottime_ms() ^ u64::from(attempt),
        );
        let pkt = match &offer {
            None => dhcp::discover(x, &i.mac),
            Some(o) => dhcp::request(x, &i.mac, o),
        };
        if let Err(e) = sock.send_to(&pkt, server).await {
            tracing::warn!("dhcp send on {}: {e}", i.name);
        }
        let wait_until = (Instant::now() + dhcp::retransmit_after(attempt)).min(deadline);
        attempt += 1;
        while let Ok(r) = tokio::time::timeout_at(wait_until, sock.recv_from(&mut buf)).await {
            let Ok((n, _)) = r else { break };
            match (dhcp::parse_reply(&buf[..n], x, &i.mac), &offer) {
                (Some(Reply::Offer(l)), None) => {
                    tracing::info!(
                        "dhcp: offer {} from {} on {}",
                        l.config.addr,
                        l.server,
                        i.name
                    );
                    offer = Some(l);
                    attempt = 0;
                    break;
                }
                (Some(Reply::Ack(l)), Some(_)) => return Ok(l),
                (Some(Reply::Nak), Some(_)) => {
                    tracing::warn!("dhcp: NAK on {}; starting over", i.name);
                    offer = None;
                    break;
                }
                _ => {}
            }
        }
    }
    Err(err(
        if offer.is_some() {
            "dhcp_no_ack"
        } else {
            "no_dhcp_answer"
        },
        format!("no DHCP lease on {} within {DHCP_BOUND:?}", i.name),
    ))
}

/// The boot step: skipped in private mode without a provider URL, and when `ip=off`.
/// After a kexec it configures what the previous kernel carried, without DHCP.
pub async fn run(boot: &mut Boot) -> Result<(), StepError> {
    if let Some(net) = boot.carried_net.take() {
        return carried(boot, net).await;
    }
    if boot.root.is_some() && boot.config.providers.is_empty() {
        // Booting the local release; the network comes up in stage 2. With
        // `phase.provider=` a local release is still compared with the provider's.
        return Ok(());
    }
    if boot.config.providers.is_empty() && !boot.config.mode.allows_lan() {
        // Private mode without a provider URL: nothing to reach, nothing to discover.
        return Ok(());
    }
    bring_up(boot).await
}

/// Links up, then DHCP or `ip=`: `net.up`, or the reason it failed. Also used by stage 2's
/// serve step on a disk-booted node, which had no need of the network in stage 1.
pub(super) async fn bring_up(boot: &mut Boot) -> Result<(), StepError> {
    // The network drivers have been loading since the modules step.
    super::modules::settle(boot, crate::kmod::Need::Network);
    let ip = match crate::net::ipconfig::parse(boot.config.ip.as_deref()) {
        Ok(ip) => ip,
        Err(e) => {
            tracing::warn!("{e}; using DHCP");
            IpParam::Dhcp { device: None }
        }
    };
    match configure(&ip, true).await {
        Ok(up) => {
            up_event(boot, up);
            Ok(())
        }
        Err(e) => Err(StepError {
            reason: e.reason,
            message: e.message,
        }),
    }
}

/// `net.up`, and the interface kept for the rest of the boot (and carried on).
fn up_event(boot: &mut Boot, up: Up) {
    boot.events.emit(Event::NetUp {
        iface: up.iface.clone(),
        addr: format!("{}/{}", up.config.addr, up.config.prefix),
        method: up.method.into(),
        router: up.config.router.map(|r| r.to_string()),
    });
    boot.net = Some(up);
}

/// After a kexec: the address, route and DNS the previous kernel's init configured, on
/// the interface with the lease's MAC (interface names are the kernel's and may differ),
/// and the lease kept from there (`net.up {method: carried}`). A carried lease that
/// expired on the way (`handover::carried_lease`) means asking DHCP again.
async fn carried(boot: &mut Boot, net: crate::handover::Net) -> Result<(), StepError> {
    super::modules::settle(boot, crate::kmod::Need::Network);
    let device = net
        .lease
        .as_ref()
        .and_then(|h| ifaces().into_iter().find(|i| i.mac == h.mac))
        .map(|i| i.name)
        .unwrap_or_else(|| net.iface.clone());
    let dhcp_lost = net.method == "dhcp" && net.lease.is_none();
    let ip = if dhcp_lost {
        tracing::warn!("the carried DHCP lease expired; asking again on {device}");
        IpParam::Dhcp {
            device: Some(device),
        }
    } else {
        IpParam::Static {
            device: Some(device),
            config: net.config.clone(),
        }
    };
    match configure(&ip, true).await {
        Ok(mut up) => {
            if !dhcp_lost {
                up.method = "carried";
                up.lease = net.lease;
            }
            up_event(boot, up);
            Ok(())
        }
        Err(e) => Err(StepError {
            reason: e.reason,
            message: e.message,
        }),
    }
}

/// Keep a DHCP lease for the life of the node (RFC 2131 §4.4.5): at T1 unicast REQUESTs to
/// the server that granted it (RENEWING), from T2 broadcast them (REBINDING), until an ACK
/// extends the lease (`net.renewed`) or it expires (an error: the supervisor restarts
/// this task, which starts over). A NAK means the address must go: an error too.
pub async fn keep_lease(
    mut held: Held,
    events: std::sync::Arc<crate::events::EventLog>,
) -> Result<(), String> {
    let sock = client_socket().map_err(|e| format!("udp 0.0.0.0:68: {e}"))?;
    let mut buf = vec![0u8; 1500];
    loop {
        let (t1, t2) = dhcp::timers(held.lease.lease_secs);
        let at = |secs: u64| {
            let due = held.obtained_ms + secs * 1000;
            Instant::now()
                + Duration::from_millis(due.saturating_sub(crate::sys::clock::boottime_ms()))
        };
        let (renew_at, rebind_at, expire_at) =
            (at(t1), at(t2), at(u64::from(held.lease.lease_secs)));
        tokio::time::sleep_until(renew_at).await;
        let mut attempt = 0u32;
        let renewed = loop {
            let now = Instant::now();
            if now >= expire_at {
                break None;
            }
            let to = if now < rebind_at {
                SocketAddrV4::new(held.lease.server, 67)
            } else {
                SocketAddrV4::new(Ipv4Addr::BROADCAST, 67)
            };
            let x = dhcp::xid(
                &held.mac,
                crate::sys::clock::boottime_ms() ^ u64::from(attempt),
            );
            if let Err(e) = sock
                .send_to(&dhcp::renew(x, &held.mac, &held.lease), to)
                .await
            {
                tracing::warn!("dhcp renew to {to}: {e}");
            }
            // Retry at most every 60 s, and never past the next deadline.
            let next = (Instant::now()
                + Duration::from_secs(60).min(dhcp::retransmit_after(attempt) * 4))
            .min(if now < rebind_at {
                rebind_at
            } else {
                expire_at
            });
            attempt += 1;
            let mut got = None;
            while let Ok(Ok((n, _))) = tokio::time::timeout_at(next, sock.recv_from(&mut buf)).await
            {
                match dhcp::parse_reply(&buf[..n], x, &held.mac) {
                    Some(Reply::Ack(l)) if l.config.addr == held.lease.config.addr => {
                        got = Some(Ok(l));
                        break;
                    }
                    Some(Reply::Nak) => {
                        got = Some(Err("dhcp_nak"));
                        break;
                    }
                    _ => {}
                }
            }
            match got {
                Some(Ok(l)) => break Some(l),
                Some(Err(r)) => return Err(r.into()),
                None => continue,
            }
        };
        let Some(l) = renewed else {
            return Err(format!("lease on {} expired", held.iface));
        };
        held.lease = l;
        held.obtained_ms = crate::sys::clock::boottime_ms();
        events.emit(Event::NetRenewed {
            iface: held.iface.clone(),
            addr: held.lease.config.addr.to_string(),
            lease_secs: held.lease.lease_secs,
        });
    }
}
