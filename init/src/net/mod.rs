//! Network configuration (PURE parts): the DHCPv4 client's packets and decisions, and the
//! kernel's `ip=` syntax. Sockets and netlink live in `sys`; the step in `boot::network`.

pub mod dhcp;
pub mod ipconfig;
pub mod link;

use std::net::Ipv4Addr;

/// An IPv4 configuration to apply to one interface.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Config {
    pub addr: Ipv4Addr,
    pub prefix: u8,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
}

/// `255.255.255.0` → 24; `None` for a non-contiguous mask.
pub fn prefix_len(mask: Ipv4Addr) -> Option<u8> {
    let m = u32::from(mask);
    let p = m.leading_ones();
    (m.checked_shl(p).unwrap_or(0) == 0).then_some(p as u8)
}

/// The `/etc/resolv.conf` text for these name servers.
pub fn resolv_conf(dns: &[Ipv4Addr]) -> String {
    dns.iter().map(|d| format!("nameserver {d}\n")).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn prefixes() {
        assert_eq!(super::prefix_len([255, 255, 255, 0].into()), Some(24));
        assert_eq!(super::prefix_len([255, 255, 252, 0].into()), Some(22));
        assert_eq!(super::prefix_len([0, 0, 0, 0].into()), Some(0));
        assert_eq!(super::prefix_len([255, 255, 255, 255].into()), Some(32));
        assert_eq!(super::prefix_len([255, 0, 255, 0].into()), None);
        assert_eq!(
            super::resolv_conf(&[[10, 0, 2, 3].into()]),
            "nameserver 10.0.2.3\n"
        );
    }
}
