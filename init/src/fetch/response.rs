//! HTTP/1.1 response heads (PURE): status, length, and what a Range request got back.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub content_length: Option<u64>,
    /// `Content-Range: bytes start-end/total` → start.
    pub range_start: Option<u64>,
    pub chunked: bool,
}

pub fn parse(head: &[u8]) -> Option<Head> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next()?;
    let mut parts = status_line.split(' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let status: u16 = parts.next()?.parse().ok()?;
    let mut h = Head {
        status,
        content_length: None,
        range_start: None,
        chunked: false,
    };
    for l in lines {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let v = v.trim();
        match k.trim().to_ascii_lowercase().as_str() {
            "content-length" => h.content_length = v.parse().ok(),
            "content-range" => {
                h.range_start = v
                    .strip_prefix("bytes ")
                    .and_then(|r| r.split('-').next())
                    .and_then(|s| s.parse().ok())
            }
            "transfer-encoding" => h.chunked = v.to_ascii_lowercase().contains("chunked"),
            _ => {}
        }
    }
    Some(h)
}

#[cfg(test)]
mod tests {
    #[test]
    fn heads() {
        let h = super::parse(
            b"HTTP/1.1 206 Partial Content\r\nContent-Length: 10\r\nContent-Range: bytes 90-99/100",
        )
        .unwrap();
        assert_eq!(
            (h.status, h.content_length, h.range_start, h.chunked),
            (206, Some(10), Some(90), false)
        );
        let h = super::parse(b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked").unwrap();
        assert!(h.chunked && h.content_length.is_none());
        assert!(super::parse(b"SSH-2.0 hello").is_none());
        assert!(super::parse(b"HTTP/1.1 abc").is_none());
    }
}
