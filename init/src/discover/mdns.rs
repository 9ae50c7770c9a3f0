//! DNS-SD over mDNS (RFC 6762/6763) on the LAN: browse for providers, announce our own.
//!
//! Service type `_phase-boot._tcp`. A provider is an HTTP server whose `path` holds a
//! release directory (`release.json`, `N.root.json`, artifacts). TXT keys:
//!
//! | key | value |
//! | --- | --- |
//! | `txtvers` | `1` |
//! | `channel` | release channel, e.g. `stable` |
//! | `arch` | e.g. `x86_64` |
//! | `version` | release version served (a hint: only the signed metadata counts) |
//! | `path` | URL path of the release directory, `/` if absent |
//!
//! Anything that can publish a DNS-SD service (avahi's static service files, `dns-sd -R`)
//! in front of any static HTTP server is a provider. Nothing advertised here is trusted:
//! the candidate URL goes to the verified fetch like a `phase.provider=` URL.
//!
//! The protocol engine is the `mdns-sd` crate (a small pure-Rust responder/querier on its
//! own thread); this module only maps candidates and announcements onto it.

use super::{Candidate, How};
use mdns_sd::{ServiceDaemon, ServiceEvent, ServiceInfo};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

/// The DNS-SD service type of a Phase Boot provider.
pub const SERVICE: &str = "_phase-boot._tcp.local.";

/// What a provider announces in its TXT record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Txt {
    pub channel: String,
    pub arch: String,
    pub version: u64,
    pub path: String,
}

impl Txt {
    pub fn pairs(&self) -> Vec<(String, String)> {
        vec![
            ("txtvers".into(), "1".into()),
            ("channel".into(), self.channel.clone()),
            ("arch".into(), self.arch.clone()),
            ("version".into(), self.version.to_string()),
            ("path".into(), self.path.clone()),
        ]
    }
}

/// Why a service instance seen on the LAN is not a candidate.
pub fn candidate(
    txt: &HashMap<String, String>,
    addr: Ipv4Addr,
    port: u16,
    channel: &str,
    arch: &str,
) -> Result<Candidate, &'static str> {
    if txt.get("txtvers").is_some_and(|v| v != "1") {
        return Err("unknown_txtvers");
    }
    if txt.get("channel").map(String::as_str) != Some(channel) {
        return Err("wrong_channel");
    }
    if txt.get("arch").map(String::as_str) != Some(arch) {
        return Err("wrong_arch");
    }
    let advertised = match txt.get("version") {
        None => None,
        Some(v) => Some(v.parse::<u64>().map_err(|_| "bad_version")?),
    };
    let path = txt.get("path").map(String::as_str).unwrap_or("/");
    let path_ok = path.starts_with('/')
        && path.len() <= 200
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-._~".contains(&b))
        && !path.split('/').any(|s| s == "..");
    if !path_ok {
        return Err("bad_path");
    }
    if port == 0
        || addr.is_unspecified()
        || addr.is_loopback()
        || addr.is_multicast()
        || addr.is_broadcast()
    {
        return Err("bad_address");
    }
    let sep = if path.ends_with('/') { "" } else { "/" };
    Ok(Candidate {
        url: format!("http://{addr}:{port}{path}{sep}"),
        how: How::Mdns,
        advertised,
    })
}

/// How long to browse.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Give up after this long with whatever was found.
    pub total: Duration,
    /// Once something was found, wait this much longer for other providers.
    pub settle: Duration,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            total: Duration::from_millis(3000),
            settle: Duration::from_millis(400),
        }
    }
}

/// What one browse saw.
#[derive(Debug, Default)]
pub struct Browse {
    pub found: Vec<Candidate>,
    /// Instances seen but not usable: (instance name, reason).
    pub skipped: Vec<(String, &'static str)>,
}

/// Browse the LAN for `SERVICE` (blocking, at most `bounds.total`).
pub fn browse(channel: &str, arch: &str, bounds: Bounds) -> Result<Browse, String> {
    let daemon = ServiceDaemon::new().map_err(|e| format!("mdns: {e}"))?;
    let rx = daemon
        .browse(SERVICE)
        .map_err(|e| format!("mdns browse: {e}"))?;
    let start = Instant::now();
    let mut deadline = start + bounds.total;
    let mut out = Browse::default();
    while let Ok(ev) = rx.recv_deadline(deadline) {
        let ServiceEvent::ServiceResolved(s) = ev else {
            continue;
        };
        let txt: HashMap<String, String> = s
            .get_properties()
            .iter()
            .map(|p| (p.key().to_ascii_lowercase(), p.val_str().to_string()))
            .collect();
        let mut addrs: Vec<Ipv4Addr> = s.get_addresses_v4().into_iter().collect();
        addrs.sort();
        for a in addrs {
            match candidate(&txt, a, s.get_port(), channel, arch) {
                Ok(c) => {
                    if !out.found.contains(&c) {
                        out.found.push(c);
                    }
                    deadline = deadline.min(Instant::now() + bounds.settle);
                }
                Err(r) => out.skipped.push((s.get_fullname().to_string(), r)),
            }
        }
    }
    let _ = daemon.stop_browse(SERVICE);
    shutdown(&daemon);
    Ok(out)
}

fn shutdown(daemon: &ServiceDaemon) {
    if let Ok(rx) = daemon.shutdown() {
        let _ = rx.recv_timeout(Duration::from_millis(500));
    }
}

/// A provider announced on the LAN until [`Announcer::stop`] (or drop) says goodbye.
pub struct Announcer {
    daemon: ServiceDaemon,
    fullname: String,
    stopped: bool,
}

/// Announce a release directory served at `ip:port` with `txt`.
pub fn announce(ip: IpAddr, port: u16, txt: &Txt) -> Result<Announcer, String> {
    let dashed = ip.to_string().replace(['.', ':'], "-");
    let instance = format!(
        "phase-boot {} v{} {dashed}-{port}",
        txt.channel, txt.version
    );
    register(SERVICE, &instance, ip, port, &txt.pairs())
}

/// Announce `instance` of DNS-SD `service` at `ip:port` with TXT `pairs` (an unspecified
/// `ip`: every interface's address) until the announcer stops.
pub fn register(
    service: &str,
    instance: &str,
    ip: IpAddr,
    port: u16,
    pairs: &[(String, String)],
) -> Result<Announcer, String> {
    let daemon = ServiceDaemon::new().map_err(|e| format!("mdns: {e}"))?;
    let dashed = ip.to_string().replace(['.', ':'], "-");
    let host = format!("phase-{dashed}.local.");
    // An unspecified listen address serves on every interface: announce all of them.
    let info = if ip.is_unspecified() {
        ServiceInfo::new(service, instance, &host, (), port, pairs).map(|i| i.enable_addr_auto())
    } else {
        ServiceInfo::new(service, instance, &host, ip, port, pairs)
    }
    .map_err(|e| format!("mdns service {instance:?}: {e}"))?;
    let fullname = info.get_fullname().to_string();
    daemon
        .register(info)
        .map_err(|e| format!("mdns register {instance:?}: {e}"))?;
    Ok(Announcer {
        daemon,
        fullname,
        stopped: false,
    })
}

impl Announcer {
    pub fn name(&self) -> &str {
        &self.fullname
    }

    /// Send goodbye packets (TTL 0) so browsers forget us now, then stop the responder.
    pub fn stop(mut self) {
        self.goodbye();
    }

    fn goodbye(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        if let Ok(rx) = self.daemon.unregister(&self.fullname) {
            let _ = rx.recv_timeout(Duration::from_secs(2));
        }
        shutdown(&self.daemon);
    }
}

impl Drop for Announcer {
    fn drop(&mut self) {
        self.goodbye();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txt(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    #[test]
    fn announced_txt_round_trips_to_a_candidate() {
        let t = Txt {
            channel: "stable".into(),
            arch: "x86_64".into(),
            version: 7,
            path: "/rel".into(),
        };
        let m: HashMap<String, String> = t.pairs().into_iter().collect();
        let c = candidate(&m, A, 8080, "stable", "x86_64").unwrap();
        assert_eq!(c.url, "http://10.0.0.2:8080/rel/");
        assert_eq!(c.advertised, Some(7));
        assert_eq!(c.how, How::Mdns);
    }

    #[test]
    fn path_defaults_to_root_and_version_is_optional() {
        let m = txt(&[("channel", "stable"), ("arch", "x86_64")]);
        let c = candidate(&m, A, 80, "stable", "x86_64").unwrap();
        assert_eq!(c.url, "http://10.0.0.2:80/");
        assert_eq!(c.advertised, None);
    }

    #[test]
    fn refuses_what_does_not_fit() {
        let ok = [("channel", "stable"), ("arch", "x86_64")];
        let with = |extra: (&'static str, &'static str)| {
            let mut m = txt(&ok);
            m.insert(extra.0.into(), extra.1.into());
            candidate(&m, A, 80, "stable", "x86_64")
        };
        assert_eq!(with(("channel", "beta")), Err("wrong_channel"));
        assert_eq!(with(("arch", "aarch64")), Err("wrong_arch"));
        assert_eq!(with(("version", "x")), Err("bad_version"));
        assert_eq!(with(("path", "/../etc")), Err("bad_path"));
        assert_eq!(with(("path", "rel")), Err("bad_path"));
        assert_eq!(with(("path", "/a b")), Err("bad_path"));
        assert_eq!(with(("txtvers", "2")), Err("unknown_txtvers"));
        assert_eq!(
            candidate(&txt(&[("arch", "x86_64")]), A, 80, "stable", "x86_64"),
            Err("wrong_channel")
        );
        let m = txt(&ok);
        assert_eq!(
            candidate(&m, Ipv4Addr::UNSPECIFIED, 80, "stable", "x86_64"),
            Err("bad_address")
        );
        assert_eq!(candidate(&m, A, 0, "stable", "x86_64"), Err("bad_address"));
        assert_eq!(
            candidate(&m, Ipv4Addr::LOCALHOST, 80, "stable", "x86_64"),
            Err("bad_address")
        );
    }
}
