//! Provider URLs (PURE): `http://host[:port][/base/]`, parsed strictly, because most of them
//! come from the network (mDNS answers, DHT records anyone can publish). Stage 1 speaks
//! plain HTTP only: integrity and authenticity come from the signed metadata, not the
//! transport, and a TLS stack would double the init. `https://` URLs are refused.
//!
//! Strict means: the scheme `http://`; no userinfo; the host an IP literal or a DNS name of
//! letters, digits, `-` and `.`; a decimal port 1–65535; a path of unreserved characters
//! (`A–Z a–z 0–9 - . _ ~ /`) and `%XX`, with no `.`/`..` segment, query or fragment; no
//! control character, space or non-ASCII byte anywhere; at most [`MAX_URL`] bytes. So
//! nothing from a URL can split a request line or a log line. [`Url::check_origin`] adds
//! what depends on where the URL came from (no loopback or link-local from discovery).

use crate::discover::How;
use std::net::IpAddr;

/// Longest URL accepted.
pub const MAX_URL: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub host: String,
    pub port: u16,
    /// Always starts and ends with `/`.
    pub base: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("https is not supported in stage 1 (use http: metadata is signed)")]
    HttpsUnsupported,
    #[error("not an http:// URL")]
    NotHttp,
    #[error("a control character, space or non-ASCII byte")]
    UnsafeCharacter,
    #[error("longer than {MAX_URL} bytes")]
    TooLong,
    #[error("userinfo (user@) is not allowed")]
    Userinfo,
    #[error("bad host or port")]
    BadAuthority,
    #[error(
        "bad path (only A-Z a-z 0-9 - . _ ~ / and %XX; no . or .. segments, query or fragment)"
    )]
    BadPath,
    #[error("{0} is not acceptable from {1} discovery")]
    Origin(String, &'static str),
}

impl UrlError {
    /// Stable snake_case reason for events.
    pub fn reason(&self) -> &'static str {
        match self {
            UrlError::HttpsUnsupported => "https_unsupported",
            UrlError::NotHttp => "not_http",
            UrlError::UnsafeCharacter => "unsafe_character",
            UrlError::TooLong => "url_too_long",
            UrlError::Userinfo => "userinfo",
            UrlError::BadAuthority => "bad_authority",
            UrlError::BadPath => "bad_path",
            UrlError::Origin(..) => "address_not_allowed",
        }
    }
}

impl Url {
    pub fn parse(s: &str) -> Result<Url, UrlError> {
        if s.len() > MAX_URL {
            return Err(UrlError::TooLong);
        }
        if !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(UrlError::UnsafeCharacter);
        }
        if s.starts_with("https://") {
            return Err(UrlError::HttpsUnsupported);
        }
        let rest = s.strip_prefix("http://").ok_or(UrlError::NotHttp)?;
        let (auth, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if auth.contains('@') {
            return Err(UrlError::Userinfo);
        }
        let (host, port) = authority(auth).ok_or(UrlError::BadAuthority)?;
        if !safe_path(path) {
            return Err(UrlError::BadPath);
        }
        let mut base = path.to_string();
        if !base.ends_with('/') {
            base.push('/');
        }
        Ok(Url { host, port, base })
    }

    /// Refuse what a discovery method may not point at: from the DHT (anyone can publish)
    /// only an IP literal that is not loopback, link-local, unspecified, multicast or
    /// broadcast; from mDNS the same, except that link-local is a LAN address. The command line may name anything.
    pub fn check_origin(&self, how: How) -> Result<(), UrlError> {
        if how == How::Url {
            return Ok(());
        }
        let refuse = || Err(UrlError::Origin(self.host.clone(), how.name()));
        let Ok(ip) = self.host.parse::<IpAddr>() else {
            return refuse(); // a name could resolve to anything, loopback included
        };
        let link_local = match ip {
            IpAddr::V4(a) => a.is_link_local(),
            IpAddr::V6(a) => (a.segments()[0] & 0xffc0) == 0xfe80,
        };
        let mapped_loopback = match ip {
            IpAddr::V6(a) => a.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
            IpAddr::V4(_) => false,
        };
        let broadcast = matches!(ip, IpAddr::V4(a) if a.is_broadcast());
        if ip.is_loopback()
            || ip.is_unspecified()
            || ip.is_multicast()
            || mapped_loopback
            || broadcast
        {
            return refuse();
        }
        if how == How::Dht && link_local {
            return refuse();
        }
        Ok(())
    }

    /// The GET request for a file in the release directory, from byte `offset`. The file
    /// name comes from signed metadata; it is checked all the same, so that no byte of
    /// it can end the request line.
    pub fn request(&self, file: &str, offset: u64) -> Result<String, UrlError> {
        if file.starts_with('/') || !safe_path(&format!("/{file}")) {
            return Err(UrlError::BadPath);
        }
        let range = if offset > 0 {
            format!("Range: bytes={offset}-\r\n")
        } else {
            String::new()
        };
        Ok(format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: phase/{}\r\n{range}Connection: close\r\n\r\n",
            self.target(file),
            self.authority(),
            env!("CARGO_PKG_VERSION")
        ))
    }

    /// The request target for a file in the release directory.
    pub fn target(&self, file: &str) -> String {
        format!("{}{file}", self.base)
    }

    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// `host[:port]` or `[v6][:port]`: an IP literal or a DNS name, and a port 1–65535.
fn authority(auth: &str) -> Option<(String, u16)> {
    let (host, port) = if let Some(v6) = auth.strip_prefix('[') {
        let (h, after) = v6.split_once(']')?;
        h.parse::<std::net::Ipv6Addr>().ok()?;
        (h, after.strip_prefix(':'))
    } else {
        match auth.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (auth, None),
        }
    };
    let port = match port {
        None => 80,
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            p.parse::<u16>().ok().filter(|&p| p != 0)?
        }
        Some(_) => return None,
    };
    let name_ok = |h: &str| {
        h.len() <= 253
            && h.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            })
    };
    if !(host.contains(':') || name_ok(host)) {
        return None;
    }
    Some((host.to_ascii_lowercase(), port))
}

/// A path of unreserved characters and valid `%XX`, starting with `/`, without `.` or
/// `..` segments.
fn safe_path(p: &str) -> bool {
    let b = p.as_bytes();
    if b.first() != Some(&b'/') || p.split('/').any(|s| s == "." || s == "..") {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = |j: usize| b.get(j).is_some_and(|c| c.is_ascii_hexdigit());
                if !hex(i + 1) || !hex(i + 2) {
                    return false;
                }
                i += 3;
            }
            c if c.is_ascii_alphanumeric() || b"/-._~".contains(&c) => i += 1,
            _ => return false,
        }
    }
    true
}

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}{}", self.authority(), self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        let u = Url::parse("http://10.0.2.100:8080/rel").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.base.as_str()),
            ("10.0.2.100", 8080, "/rel/")
        );
        assert_eq!(u.target("release.json"), "/rel/release.json");
        assert_eq!(u.to_string(), "http://10.0.2.100:8080/rel/");
        let u = Url::parse("http://provider.lan").unwrap();
        assert_eq!((u.port, u.base.as_str()), (80, "/"));
        let u = Url::parse("http://[::1]:81/x/").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.authority()),
            ("::1", 81, "[::1]:81".to_string())
        );
        assert_eq!(
            Url::parse("http://h/a%20b/").unwrap().base,
            "/a%20b/".to_string()
        );
    }

    #[test]
    fn each_refusal_is_named() {
        let cases: &[(&str, &str)] = &[
            ("https://a/", "https_unsupported"),
            ("ftp://a/", "not_http"),
            ("http://a/x\r\nHost: evil", "unsafe_character"),
            ("http://a/x\nPHASE-EVENT {}", "unsafe_character"),
            ("http://a/x y", "unsafe_character"),
            ("http://a/\u{e9}", "unsafe_character"),
            ("http://a/\u{1b}[2J", "unsafe_character"),
            ("http://u@h/", "userinfo"),
            ("http://u:p@h/", "userinfo"),
            ("http://", "bad_authority"),
            ("http://a:0/", "bad_authority"),
            ("http://a:x/", "bad_authority"),
            ("http://a:99999/", "bad_authority"),
            ("http://a:+80/", "bad_authority"),
            ("http://a:/", "bad_authority"),
            ("http://a_b/", "bad_authority"),
            ("http://-a/", "bad_authority"),
            ("http://a..b/", "bad_authority"),
            ("http://[::1/", "bad_authority"),
            ("http://[zz]:80/", "bad_authority"),
            ("http://a:80:80/", "bad_authority"),
            ("http://a/x?y=1", "bad_path"),
            ("http://a/x#f", "bad_path"),
            ("http://a/../etc/", "bad_path"),
            ("http://a/./", "bad_path"),
            ("http://a/%zz", "bad_path"),
            ("http://a/%2", "bad_path"),
            ("http://a/<x>", "bad_path"),
        ];
        for (s, want) in cases {
            assert_eq!(Url::parse(s).map_err(|e| e.reason()), Err(*want), "{s:?}");
        }
        let long = format!("http://a/{}", "x".repeat(MAX_URL));
        assert_eq!(Url::parse(&long), Err(UrlError::TooLong));
    }

    #[test]
    fn origins() {
        let ok = |s: &str, how| Url::parse(s).unwrap().check_origin(how).is_ok();
        for (s, url, mdns, dht) in [
            ("http://10.0.0.5:8080/", true, true, true),
            ("http://192.0.2.7/", true, true, true),
            ("http://127.0.0.1:8080/", true, false, false),
            ("http://[::1]/", true, false, false),
            ("http://[::ffff:127.0.0.1]/", true, false, false),
            ("http://0.0.0.0/", true, false, false),
            ("http://169.254.1.1/", true, true, false),
            ("http://[fe80::1]/", true, true, false),
            ("http://224.0.0.251/", true, false, false),
            ("http://255.255.255.255/", true, false, false),
            ("http://localhost/", true, false, false),
            ("http://provider.example/", true, false, false),
        ] {
            assert_eq!(
                (ok(s, How::Url), ok(s, How::Mdns), ok(s, How::Dht)),
                (url, mdns, dht),
                "{s}"
            );
        }
    }

    #[test]
    fn requests_cannot_be_split() {
        let u = Url::parse("http://10.0.0.5:8080/rel/").unwrap();
        let r = u.request("vmlinuz", 10).unwrap();
        assert!(r.starts_with("GET /rel/vmlinuz HTTP/1.1\r\nHost: 10.0.0.5:8080\r\n"));
        assert!(r.contains("Range: bytes=10-\r\n"));
        for bad in ["a\r\nX: y", "a b", "/etc/passwd", "../x", "a?b"] {
            assert_eq!(u.request(bad, 0), Err(UrlError::BadPath), "{bad:?}");
        }
    }
}
