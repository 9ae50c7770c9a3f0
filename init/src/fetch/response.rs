//! HTTP/1.1 response heads (PURE), parsed by `httparse`: status, length, and what a Range
//! request got back. Anything `httparse` refuses, or a length or range we cannot read
//! exactly, is a malformed response: the provider is left, never guessed at.

/// Most headers a response head may carry.
const MAX_HEADERS: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub content_length: Option<u64>,
    /// `Content-Range: bytes start-end/total` → start.
    pub range_start: Option<u64>,
    pub chunked: bool,
}

/// What the bytes received so far hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// The head is not complete yet: read more.
    Partial,
    /// The head, and where the body starts in the buffer.
    Done(Head, usize),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    #[error("malformed response head: {0}")]
    Malformed(String),
    #[error("unreadable {0} header")]
    BadHeader(&'static str),
}

/// Parse the start of a response.
pub fn parse(buf: &[u8]) -> Result<Parsed, ResponseError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut r = httparse::Response::new(&mut headers);
    let body_at = match r.parse(buf) {
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Ok(httparse::Status::Complete(n)) => n,
        Err(e) => return Err(ResponseError::Malformed(e.to_string())),
    };
    let status = r.code.ok_or(ResponseError::Malformed("no status".into()))?;
    let mut h = Head {
        status,
        content_length: None,
        range_start: None,
        chunked: false,
    };
    for hd in r.headers.iter() {
        let v = std::str::from_utf8(hd.value).map(str::trim);
        if hd.name.eq_ignore_ascii_case("content-length") {
            let n = v.ok().and_then(decimal);
            // Two different lengths: a smuggling attempt or a broken server.
            if n.is_none() || h.content_length.is_some_and(|l| Some(l) != n) {
                return Err(ResponseError::BadHeader("Content-Length"));
            }
            h.content_length = n;
        } else if hd.name.eq_ignore_ascii_case("content-range") {
            h.range_start = Some(
                v.ok()
                    .and_then(|v| v.strip_prefix("bytes "))
                    .and_then(|r| r.split('-').next())
                    .and_then(decimal)
                    .ok_or(ResponseError::BadHeader("Content-Range"))?,
            );
        } else if hd.name.eq_ignore_ascii_case("transfer-encoding") {
            h.chunked |= v.is_ok_and(|v| v.to_ascii_lowercase().contains("chunked"));
        }
    }
    Ok(Parsed::Done(h, body_at))
}

/// Digits only (no sign, no spaces inside), as HTTP lengths are.
fn decimal(s: &str) -> Option<u64> {
    (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(b: &[u8]) -> Head {
        match parse(b) {
            Ok(Parsed::Done(h, _)) => h,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn heads() {
        let raw = b"HTTP/1.1 206 Partial Content\r\nContent-Length: 10\r\nContent-Range: bytes 90-99/100\r\n\r\nbody";
        let h = head(raw);
        assert_eq!(
            (h.status, h.content_length, h.range_start, h.chunked),
            (206, Some(10), Some(90), false)
        );
        assert_eq!(parse(raw), Ok(Parsed::Done(h, raw.len() - 4)));
        let h = head(b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(h.chunked && h.content_length.is_none());
        assert_eq!(parse(b"HTTP/1.1 200 OK\r\nContent-Le"), Ok(Parsed::Partial));
    }

    #[test]
    fn malformed_heads_are_refused() {
        for bad in [
            &b"SSH-2.0 hello\r\n\r\n"[..],
            b"HTTP/1.1 abc\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            b"HTTP/1.1 206 OK\r\nContent-Range: bytes x-9/10\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n",
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let many = format!(
            "HTTP/1.1 200 OK\r\n{}\r\n",
            "X: y\r\n".repeat(MAX_HEADERS + 1)
        );
        assert!(parse(many.as_bytes()).is_err());
    }
}
