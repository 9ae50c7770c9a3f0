//! Split a kernel command line into `key[=value]` parameters, as the kernel's own
//! `next_arg()` does: whitespace separates parameters, double quotes group text (and are
//! removed), and everything after a bare `--` belongs to init's argv, not to us.

/// Returns `(key, value)` pairs in order. Keys are returned as written; a parameter with no
/// `=` has no value. Never fails: an unterminated quote runs to the end of the line.
pub fn tokenize(line: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut param = String::new();
        let mut in_quote = false;
        let mut eq_at: Option<usize> = None;
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() && !in_quote {
                break;
            }
            chars.next();
            if c == '"' {
                in_quote = !in_quote;
                continue;
            }
            if c == '=' && eq_at.is_none() {
                eq_at = Some(param.len());
            }
            // Control characters are garbage on a command line; drop them.
            if c.is_control() {
                continue;
            }
            param.push(c);
        }
        if param == "--" && eq_at.is_none() {
            break;
        }
        if param.is_empty() {
            continue;
        }
        match eq_at {
            Some(i) => out.push((param[..i].to_string(), Some(param[i + 1..].to_string()))),
            None => out.push((param, None)),
        }
    }
    out
}
