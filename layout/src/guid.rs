//! The GUID type: 16 bytes in textual order, its text form, and GPT's mixed-endian
//! on-disk encoding.

/// A GUID as 16 bytes in textual order (`00112233-4455-...` is bytes 00 11 22 33 ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Guid(pub [u8; 16]);

const fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl Guid {
    /// Parse `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (either case); `None` otherwise.
    pub const fn parse(s: &str) -> Option<Guid> {
        let b = s.as_bytes();
        if b.len() != 36 {
            return None;
        }
        let mut out = [0u8; 16];
        let (mut i, mut n) = (0, 0);
        while i < 36 {
            if i == 8 || i == 13 || i == 18 || i == 23 {
                if b[i] != b'-' {
                    return None;
                }
                i += 1;
                continue;
            }
            let (Some(hi), Some(lo)) = (hex_digit(b[i]), hex_digit(b[i + 1])) else {
                return None;
            };
            out[n] = hi << 4 | lo;
            n += 1;
            i += 2;
        }
        Some(Guid(out))
    }

    /// A GUID constant from its text; a typo is a compile error (const evaluation), never
    /// a run-time panic.
    pub const fn from_text(s: &str) -> Guid {
        match Guid::parse(s) {
            Some(g) => g,
            None => panic!("not a GUID"),
        }
    }

    /// GPT's on-disk encoding: the first three fields little endian, the rest as is.
    pub const fn to_gpt(self) -> [u8; 16] {
        let b = self.0;
        let mut o = b;
        o[0] = b[3];
        o[1] = b[2];
        o[2] = b[1];
        o[3] = b[0];
        o[4] = b[5];
        o[5] = b[4];
        o[6] = b[7];
        o[7] = b[6];
        o
    }

    /// The inverse of [`Guid::to_gpt`] (the swap is its own inverse).
    pub const fn from_gpt(o: [u8; 16]) -> Guid {
        Guid(Guid(o).to_gpt())
    }
}

impl std::fmt::Display for Guid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_gpt_encoding() {
        let g = Guid::from_text("4f68bce3-e8cd-4db1-96e7-fbcaf984b709");
        assert_eq!(g.to_string(), "4f68bce3-e8cd-4db1-96e7-fbcaf984b709");
        assert_eq!(Guid::parse("4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"), Some(g));
        assert_eq!(
            g.to_gpt(),
            [
                0xe3, 0xbc, 0x68, 0x4f, 0xcd, 0xe8, 0xb1, 0x4d, 0x96, 0xe7, 0xfb, 0xca, 0xf9, 0x84,
                0xb7, 0x09
            ]
        );
        assert_eq!(Guid::from_gpt(g.to_gpt()), g);
    }

    #[test]
    fn malformed_text_is_refused() {
        for bad in [
            "4f68bce3e8cd4db196e7fbcaf984b709",
            "4f68bce3-e8cd-4db1-96e7-fbcaf984b70",
            "4f68bce3-e8cd-4db1-96e7-fbcaf984b70g",
            "4f68bce3-e8cd-4db1-96e7+fbcaf984b709",
            "",
        ] {
            assert_eq!(Guid::parse(bad), None, "{bad}");
        }
    }
}
