//! Lowercase hex, the only encoding of keys, key IDs, signatures and digests in metadata.

pub fn encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Decode exactly `N` bytes of lowercase hex; anything else is `None` (uppercase too, so
/// every value has one spelling).
pub fn decode<const N: usize>(s: &str) -> Option<[u8; N]> {
    let b = s.as_bytes();
    if b.len() != N * 2 {
        return None;
    }
    let nib = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = nib(b[2 * i])? << 4 | nib(b[2 * i + 1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn roundtrip_and_strictness() {
        assert_eq!(super::encode(&[0, 0xab, 0xff]), "00abff");
        assert_eq!(super::decode::<3>("00abff"), Some([0, 0xab, 0xff]));
        assert_eq!(super::decode::<3>("00ABff"), None);
        assert_eq!(super::decode::<3>("00abf"), None);
        assert_eq!(super::decode::<2>("00abff"), None);
        assert_eq!(super::decode::<1>("0g"), None);
    }
}
