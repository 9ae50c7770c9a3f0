//! Canonical JSON (specified in docs/release-format.md).
//!
//! A document is accepted only if it is exactly the canonical encoding of its own value:
//! object keys sorted by their UTF-8 bytes and unique, no whitespace outside strings, strings
//! escaped as serde_json's compact writer does (`\"`, `\\`, `\b \f \n \r \t`, other control
//! characters as `\u00xx`, everything else literal UTF-8), numbers only as integers in the
//! i64/u64 range without leading zeros, signs or exponents (except `-` for negatives), and
//! nesting at most 32 deep. [`parse`] enforces all of this; [`encode`] produces it.

use serde_json::{Map, Number, Value};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanonicalError {
    #[error("duplicate key {0:?}")]
    DuplicateKey(String),
    #[error("not canonical JSON at byte {0}")]
    NotCanonical(usize),
    #[error("invalid JSON at byte {0}: {1}")]
    Syntax(usize, &'static str),
    #[error("non-integer number at byte {0}")]
    NotInteger(usize),
    #[error("nesting deeper than {MAX_DEPTH}")]
    TooDeep,
}

pub const MAX_DEPTH: usize = 32;

/// The canonical bytes of a value. Objects in serde_json's default `Map` are sorted.
pub fn encode(v: &Value) -> Vec<u8> {
    // Serialising a Value to a Vec cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

/// Parse canonical JSON: strict syntax, duplicate keys rejected, integers only, and the
/// bytes must equal the canonical encoding of the result.
pub fn parse(bytes: &[u8]) -> Result<Value, CanonicalError> {
    let mut p = Parser { b: bytes, i: 0 };
    let v = p.value(0)?;
    if p.i != bytes.len() {
        return Err(CanonicalError::Syntax(p.i, "trailing data"));
    }
    let again = encode(&v);
    if again != bytes {
        let at = again
            .iter()
            .zip(bytes)
            .position(|(a, b)| a != b)
            .unwrap_or(again.len().min(bytes.len()));
        return Err(CanonicalError::NotCanonical(at));
    }
    Ok(v)
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn err<T>(&self, what: &'static str) -> Result<T, CanonicalError> {
        Err(CanonicalError::Syntax(self.i, what))
    }
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }
    fn eat(&mut self, c: u8) -> Result<(), CanonicalError> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            self.err("unexpected byte")
        }
    }
    fn lit(&mut self, word: &'static [u8], v: Value) -> Result<Value, CanonicalError> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(v)
        } else {
            self.err("invalid literal")
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, CanonicalError> {
        if depth > MAX_DEPTH {
            return Err(CanonicalError::TooDeep);
        }
        match self.peek() {
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'"') => Ok(Value::String(self.string()?)),
            Some(b't') => self.lit(b"true", Value::Bool(true)),
            Some(b'f') => self.lit(b"false", Value::Bool(false)),
            Some(b'n') => self.lit(b"null", Value::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => self.err("unexpected byte"),
            None => self.err("unexpected end"),
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, CanonicalError> {
        self.eat(b'{')?;
        let mut map = Map::new();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(Value::Object(map));
        }
        loop {
            if self.peek() != Some(b'"') {
                return self.err("expected a string key");
            }
            let k = self.string()?;
            self.eat(b':')?;
            let v = self.value(depth + 1)?;
            if map.contains_key(&k) {
                return Err(CanonicalError::DuplicateKey(k));
            }
            map.insert(k, v);
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(Value::Object(map));
                }
                _ => return self.err("expected , or }"),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value, CanonicalError> {
        self.eat(b'[')?;
        let mut out = Vec::new();
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(Value::Array(out));
        }
        loop {
            out.push(self.value(depth + 1)?);
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    return Ok(Value::Array(out));
                }
                _ => return self.err("expected , or ]"),
            }
        }
    }

    fn number(&mut self) -> Result<Value, CanonicalError> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        let digits = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        if self.i == digits {
            return self.err("expected digits");
        }
        if matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
            return Err(CanonicalError::NotInteger(start));
        }
        // Safe: only ASCII digits and '-' were consumed.
        let text = std::str::from_utf8(&self.b[start..self.i]).unwrap_or("");
        let n: Number = if let Ok(u) = text.parse::<u64>() {
            u.into()
        } else if let Ok(i) = text.parse::<i64>() {
            i.into()
        } else {
            return Err(CanonicalError::NotInteger(start));
        };
        Ok(Value::Number(n))
    }

    fn string(&mut self) -> Result<String, CanonicalError> {
        self.eat(b'"')?;
        let mut out: Vec<u8> = Vec::new();
        loop {
            let Some(c) = self.peek() else {
                return self.err("unterminated string");
            };
            self.i += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    let Some(e) = self.peek() else {
                        return self.err("unterminated escape");
                    };
                    self.i += 1;
                    let ch = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hi = self.hex4()?;
                            if (0xd800..0xdc00).contains(&hi) {
                                if !self.b[self.i..].starts_with(b"\\u") {
                                    return self.err("lone surrogate");
                                }
                                self.i += 2;
                                let lo = self.hex4()?;
                                if !(0xdc00..0xe000).contains(&lo) {
                                    return self.err("bad surrogate pair");
                                }
                                let cp = 0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00);
                                char::from_u32(cp)
                                    .ok_or(CanonicalError::Syntax(self.i, "bad code point"))?
                            } else {
                                char::from_u32(hi)
                                    .ok_or(CanonicalError::Syntax(self.i, "lone surrogate"))?
                            }
                        }
                        _ => return self.err("invalid escape"),
                    };
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                }
                0..=0x1f => return self.err("control character in string"),
                _ => out.push(c),
            }
        }
        String::from_utf8(out).map_err(|_| CanonicalError::Syntax(self.i, "invalid UTF-8"))
    }

    fn hex4(&mut self) -> Result<u32, CanonicalError> {
        let s = self
            .b
            .get(self.i..self.i + 4)
            .ok_or(CanonicalError::Syntax(self.i, "short \\u escape"))?;
        let s =
            std::str::from_utf8(s).map_err(|_| CanonicalError::Syntax(self.i, "bad \\u escape"))?;
        let v = u32::from_str_radix(s, 16)
            .map_err(|_| CanonicalError::Syntax(self.i, "bad \\u escape"))?;
        self.i += 4;
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_canonical() {
        for ok in [
            r#"{"a":1,"b":[true,false,null],"c":{"d":"e"}}"#,
            r#"{}"#,
            r#"[]"#,
            r#"-5"#,
            r#"18446744073709551615"#,
            r#""\"\\\n\u0001é☃""#,
            r#"{"A":1,"a":2,"é":3}"#,
        ] {
            let v = parse(ok.as_bytes()).unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert_eq!(encode(&v), ok.as_bytes());
        }
    }

    #[test]
    fn rejects_each_deviation() {
        use CanonicalError::*;
        type Check = fn(&CanonicalError) -> bool;
        let cases: &[(&str, Check)] = &[
            (
                r#"{"a":1,"a":2}"#,
                |e| matches!(e, DuplicateKey(k) if k == "a"),
            ),
            (r#"{"b":1,"a":2}"#, |e| matches!(e, NotCanonical(_))),
            (r#"{"a": 1}"#, |e| matches!(e, Syntax(..))),
            (r#" {"a":1}"#, |e| matches!(e, Syntax(..))),
            (r#"{"a":1}\n"#, |e| matches!(e, Syntax(..))),
            (r#"{"a":1.5}"#, |e| matches!(e, NotInteger(_))),
            (r#"{"a":1e3}"#, |e| matches!(e, NotInteger(_))),
            (r#"{"a":01}"#, |e| matches!(e, NotCanonical(_))),
            (r#"{"a":-0}"#, |e| matches!(e, NotCanonical(_))),
            (r#"{"a":99999999999999999999}"#, |e| {
                matches!(e, NotInteger(_))
            }),
            (r#""\u0041""#, |e| matches!(e, NotCanonical(_))),
            (r#""\/""#, |e| matches!(e, NotCanonical(_))),
            (r#""\ud800""#, |e| matches!(e, Syntax(..))),
            ("\"\u{1}\"", |e| matches!(e, Syntax(..))),
            (r#"{"a":tru}"#, |e| matches!(e, Syntax(..))),
            (r#"{"a":1"#, |e| matches!(e, Syntax(..))),
            (r#"{"a":1}{}"#, |e| matches!(e, Syntax(..))),
        ];
        for (input, want) in cases {
            let e = parse(input.as_bytes()).expect_err(input);
            assert!(want(&e), "{input}: got {e:?}");
        }
        let deep = "[".repeat(40) + &"]".repeat(40);
        assert_eq!(parse(deep.as_bytes()), Err(CanonicalError::TooDeep));
        assert!(parse(&[b'"', 0xff, b'"']).is_err());
    }

    #[test]
    fn encoding_sorts_keys() {
        let v: Value = serde_json::from_str(r#"{"b":1,"a":{"z":1,"y":2}}"#).unwrap();
        assert_eq!(encode(&v), br#"{"a":{"y":2,"z":1},"b":1}"#);
    }
}
