//! Provider URLs (PURE): `http://host[:port][/base/]`. Stage 1 speaks plain HTTP only:
//! integrity and authenticity come from the signed metadata, not the transport, and a TLS
//! stack would double the init. `https://` URLs are refused with a named reason.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub host: String,
    pub port: u16,
    /// Always ends with `/`.
    pub base: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("https is not supported in stage 1 (use http: metadata is signed)")]
    HttpsUnsupported,
    #[error("not an http:// URL")]
    NotHttp,
    #[error("bad host or port")]
    BadAuthority,
}

impl Url {
    pub fn parse(s: &str) -> Result<Url, UrlError> {
        if s.starts_with("https://") {
            return Err(UrlError::HttpsUnsupported);
        }
        let rest = s.strip_prefix("http://").ok_or(UrlError::NotHttp)?;
        let (auth, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match auth.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                (h, p.parse::<u16>().map_err(|_| UrlError::BadAuthority)?)
            }
            _ => (auth, 80),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains(['@', ' ', '/']) || port == 0 {
            return Err(UrlError::BadAuthority);
        }
        let mut base = path.split(['?', '#']).next().unwrap_or("/").to_string();
        if !base.ends_with('/') {
            base.push('/');
        }
        Ok(Url {
            host: host.to_string(),
            port,
            base,
        })
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
        assert_eq!(Url::parse("https://a/"), Err(UrlError::HttpsUnsupported));
        assert_eq!(Url::parse("ftp://a/"), Err(UrlError::NotHttp));
        for bad in [
            "http://",
            "http://a:0/",
            "http://a:x/",
            "http://u@h/",
            "http://a:99999/",
        ] {
            assert_eq!(Url::parse(bad), Err(UrlError::BadAuthority), "{bad}");
        }
    }
}
