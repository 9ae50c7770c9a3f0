//! The slice of HTTP/1.1 a release provider needs (PURE): request heads (parsed by
//! `httparse`), byte ranges, response heads, and confining request paths to the served
//! directory.

use std::path::{Component, Path, PathBuf};

/// Largest request head read; anything longer is refused (431).
pub const MAX_HEAD: usize = 8 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    /// The path as sent (still percent-encoded), without the query.
    pub path: String,
    pub range: Option<String>,
    pub if_none_match: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpError {
    /// 400
    BadRequest,
    /// 431
    HeadTooLarge,
}

/// Most headers a request may carry.
const MAX_HEADERS: usize = 32;

/// Parse a request head (up to and including the blank line) with `httparse`.
pub fn parse_request(head: &[u8]) -> Result<Request, HttpError> {
    if head.len() > MAX_HEAD {
        return Err(HttpError::HeadTooLarge);
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut r = httparse::Request::new(&mut headers);
    match r.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::HeadTooLarge),
        Ok(httparse::Status::Partial) | Err(_) => return Err(HttpError::BadRequest),
    }
    let (Some(m), Some(target)) = (r.method, r.path) else {
        return Err(HttpError::BadRequest);
    };
    if !target.starts_with('/') {
        return Err(HttpError::BadRequest);
    }
    let method = match m {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        _ => Method::Other,
    };
    let (mut range, mut inm) = (None, None);
    for h in r.headers.iter() {
        let v = || {
            std::str::from_utf8(h.value)
                .map(|v| v.trim().to_string())
                .map_err(|_| HttpError::BadRequest)
        };
        if h.name.eq_ignore_ascii_case("range") {
            range = Some(v()?);
        } else if h.name.eq_ignore_ascii_case("if-none-match") {
            inm = Some(v()?);
        }
    }
    let path = target.split(['?', '#']).next().unwrap_or("/").to_string();
    Ok(Request {
        method,
        path,
        range,
        if_none_match: inm,
    })
}

/// What to send of a file of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Span {
    /// 200, the whole file.
    Full,
    /// 206, bytes `start..=end`.
    Part { start: u64, end: u64 },
    /// 416.
    Unsatisfiable,
}

/// Interpret a `Range` header (RFC 9110 §14): `bytes=a-b`, `bytes=a-`, `bytes=-n`. A header
/// we do not understand, or several ranges, is ignored (the whole file is sent), as the RFC
/// allows.
pub fn span(range: Option<&str>, len: u64) -> Span {
    let Some(spec) = range.and_then(|r| r.trim().strip_prefix("bytes=")) else {
        return Span::Full;
    };
    if spec.contains(',') {
        return Span::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Span::Full;
    };
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit())).then(|| s.parse().ok())?
    };
    match (a.trim(), b.trim()) {
        ("", n) => match num(n) {
            Some(0) => Span::Unsatisfiable,
            Some(n) if len > 0 => Span::Part {
                start: len.saturating_sub(n),
                end: len - 1,
            },
            Some(_) => Span::Unsatisfiable,
            None => Span::Full,
        },
        (s, "") => match num(s) {
            Some(s) if s < len => Span::Part {
                start: s,
                end: len - 1,
            },
            Some(_) => Span::Unsatisfiable,
            None => Span::Full,
        },
        (s, e) => match (num(s), num(e)) {
            (Some(s), Some(e)) if s <= e && s < len => Span::Part {
                start: s,
                end: e.min(len - 1),
            },
            (Some(s), Some(e)) if s <= e => Span::Unsatisfiable,
            _ => Span::Full,
        },
    }
}

/// Map a request path to a file under `root`, or `None` if it would leave `root` (dot-dot,
/// encoded slashes or NULs, backslashes) or is malformed.
pub fn confine(root: &Path, url_path: &str) -> Option<PathBuf> {
    let decoded = percent_decode(url_path)?;
    if decoded.contains('\0') || decoded.contains('\\') {
        return None;
    }
    let rel = Path::new(decoded.trim_start_matches('/'));
    let mut out = root.to_path_buf();
    for c in rel.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(out)
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            let v = u8::from_str_radix(h, 16).ok()?;
            // An encoded '/' would smuggle a separator past the component check.
            if v == b'/' {
                return None;
            }
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A response head with `Connection: close`.
pub fn response_head(status: u16, headers: &[(&str, String)]) -> String {
    let reason = match status {
        200 => "OK",
        206 => "Partial Content",
        304 => "Not Modified",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        416 => "Range Not Satisfiable",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let mut s = format!("HTTP/1.1 {status} {reason}\r\n");
    for (k, v) in headers {
        s.push_str(&format!("{k}: {v}\r\n"));
    }
    s.push_str("Connection: close\r\nServer: phase-provider\r\n\r\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests() {
        let r = parse_request(b"GET /release.json?x=1 HTTP/1.1\r\nHost: a\r\nRange: bytes=0-9\r\nIf-None-Match: \"ab\"\r\n\r\n").unwrap();
        assert_eq!((r.method, r.path.as_str()), (Method::Get, "/release.json"));
        assert_eq!(r.range.as_deref(), Some("bytes=0-9"));
        assert_eq!(r.if_none_match.as_deref(), Some("\"ab\""));
        assert_eq!(
            parse_request(b"HEAD / HTTP/1.0\r\n\r\n").unwrap().method,
            Method::Head
        );
        assert_eq!(
            parse_request(b"POST / HTTP/1.1\r\n\r\n").unwrap().method,
            Method::Other
        );
        for bad in [
            &b"GET\r\n\r\n"[..],
            b"GET /\r\n\r\n",
            b"GET x HTTP/1.1\r\n\r\n",
            b"GET / SPDY/3\r\n\r\n",
            b"GET / HTTP/1.1 extra\r\n\r\n",
            b"GET / HTTP/1.1\r\nnocolon\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a",
            b"\xff\r\n\r\n",
            b"GET /a\rb HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(parse_request(bad), Err(HttpError::BadRequest), "{bad:?}");
        }
        assert_eq!(
            parse_request(&vec![b'a'; MAX_HEAD + 1]),
            Err(HttpError::HeadTooLarge)
        );
        let many = format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            "X: y\r\n".repeat(MAX_HEADERS + 1)
        );
        assert_eq!(parse_request(many.as_bytes()), Err(HttpError::HeadTooLarge));
    }

    #[test]
    fn ranges() {
        use Span::*;
        let cases = [
            (None, 10, Full),
            (Some("bytes=0-4"), 10, Part { start: 0, end: 4 }),
            (Some("bytes=5-"), 10, Part { start: 5, end: 9 }),
            (Some("bytes=-3"), 10, Part { start: 7, end: 9 }),
            (Some("bytes=-30"), 10, Part { start: 0, end: 9 }),
            (Some("bytes=8-100"), 10, Part { start: 8, end: 9 }),
            (Some("bytes=10-"), 10, Unsatisfiable),
            (Some("bytes=10-20"), 10, Unsatisfiable),
            (Some("bytes=-0"), 10, Unsatisfiable),
            (Some("bytes=0-"), 0, Unsatisfiable),
            (Some("bytes=5-3"), 10, Full),
            (Some("bytes=0-1,4-5"), 10, Full),
            (Some("items=0-1"), 10, Full),
            (Some("bytes=a-b"), 10, Full),
            (Some("bytes=+1-2"), 10, Full),
        ];
        for (h, len, want) in cases {
            assert_eq!(span(h, len), want, "{h:?} of {len}");
        }
    }

    #[test]
    fn paths_stay_inside_root() {
        let root = Path::new("/srv/rel");
        assert_eq!(
            confine(root, "/release.json"),
            Some(root.join("release.json"))
        );
        assert_eq!(confine(root, "/a/./b%20c"), Some(root.join("a/b c")));
        for bad in [
            "/../etc/passwd",
            "/a/../../x",
            "/%2e%2e/x",
            "/a%2fb",
            "/a%00",
            "/a\\b",
            "/%zz",
            "/%c3",
        ] {
            assert_eq!(confine(root, bad), None, "{bad}");
        }
    }
}
