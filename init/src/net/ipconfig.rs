//! The kernel's `ip=` parameter (Documentation/admin-guide/nfs/nfsroot.rst):
//! `ip=<client>:<server>:<gw>:<netmask>:<hostname>:<device>:<autoconf>:<dns0>:<dns1>`,
//! or just `ip=dhcp|on|any|off|none`.

use super::Config;
use std::net::Ipv4Addr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpParam {
    /// DHCP on the first interface with a link (also `on`, `any`, or no `ip=` at all).
    Dhcp { device: Option<String> },
    /// No network configuration.
    Off,
    Static {
        device: Option<String>,
        config: Config,
    },
}

/// Parse `ip=`'s value. Unusable values are errors (the caller warns and uses DHCP).
pub fn parse(v: Option<&str>) -> Result<IpParam, String> {
    let Some(v) = v else {
        return Ok(IpParam::Dhcp { device: None });
    };
    match v {
        "dhcp" | "on" | "any" | "both" | "" => return Ok(IpParam::Dhcp { device: None }),
        "off" | "none" => return Ok(IpParam::Off),
        _ => {}
    }
    let f: Vec<&str> = v.split(':').collect();
    let field = |i: usize| f.get(i).copied().filter(|s| !s.is_empty());
    let ip = |i: usize| -> Result<Option<Ipv4Addr>, String> {
        field(i)
            .map(|s| {
                s.parse::<Ipv4Addr>()
                    .map_err(|_| format!("ip=: {s:?} is not an IPv4 address"))
            })
            .transpose()
    };
    let device = field(5).map(str::to_string);
    let autoconf = field(6).unwrap_or("");
    let Some(addr) = ip(0)? else {
        return match autoconf {
            "" | "dhcp" | "on" | "any" | "both" => Ok(IpParam::Dhcp { device }),
            "off" | "none" => Ok(IpParam::Off),
            other => Err(format!(
                "ip=: autoconf {other:?} is not supported (dhcp, off)"
            )),
        };
    };
    let prefix = match ip(3)? {
        Some(mask) => super::prefix_len(mask)
            .ok_or_else(|| format!("ip=: netmask {mask} is not contiguous"))?,
        None => 24,
    };
    let dns = [ip(7)?, ip(8)?].into_iter().flatten().collect();
    Ok(IpParam::Static {
        device,
        config: Config {
            addr,
            prefix,
            router: ip(2)?,
            dns,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(parse(None), Ok(IpParam::Dhcp { device: None }));
        assert_eq!(parse(Some("dhcp")), Ok(IpParam::Dhcp { device: None }));
        assert_eq!(parse(Some("off")), Ok(IpParam::Off));
        assert_eq!(
            parse(Some(":::::eth1:dhcp")),
            Ok(IpParam::Dhcp {
                device: Some("eth1".into())
            })
        );
        assert_eq!(
            parse(Some(
                "10.0.2.15::10.0.2.2:255.255.255.0:node:eth0:off:10.0.2.3"
            )),
            Ok(IpParam::Static {
                device: Some("eth0".into()),
                config: Config {
                    addr: [10, 0, 2, 15].into(),
                    prefix: 24,
                    router: Some([10, 0, 2, 2].into()),
                    dns: vec![[10, 0, 2, 3].into()]
                }
            })
        );
        assert_eq!(
            parse(Some("192.168.1.9")),
            Ok(IpParam::Static {
                device: None,
                config: Config {
                    addr: [192, 168, 1, 9].into(),
                    prefix: 24,
                    router: None,
                    dns: vec![]
                }
            })
        );
        assert!(parse(Some("10.0.0.300")).is_err());
        assert!(parse(Some("10.0.0.1::::::bootp")).is_ok());
        assert!(parse(Some(":::::eth0:rarp")).is_err());
        assert!(parse(Some("10.0.0.1:::255.0.255.0")).is_err());
    }
}
