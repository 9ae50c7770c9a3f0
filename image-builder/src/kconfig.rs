//! Check a kernel `.config` against `kernel-config/required.txt` (PURE).
//!
//! `required.txt` lines: `CONFIG_X=y` (must be built in) or `CONFIG_X=y|m` (built in or a
//! module the initramfs loads). `#` starts a comment that says why the option is needed.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub option: String,
    /// Accepted values, e.g. `["y"]` or `["y", "m"]`.
    pub accepted: Vec<String>,
}

pub fn parse_required(text: &str) -> Result<Vec<Requirement>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let (opt, vals) = line
            .split_once('=')
            .ok_or_else(|| format!("line {}: expected CONFIG_X=y or CONFIG_X=y|m", i + 1))?;
        if !opt.starts_with("CONFIG_") {
            return Err(format!("line {}: {opt} does not start with CONFIG_", i + 1));
        }
        out.push(Requirement {
            option: opt.trim().to_string(),
            accepted: vals.split('|').map(|v| v.trim().to_string()).collect(),
        });
    }
    Ok(out)
}

/// Parse a `.config` into option → value (`y`, `m`, a string or number). Options that are
/// "not set" are absent.
pub fn parse_config(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| l.starts_with("CONFIG_"))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Every requirement the config does not meet, as `CONFIG_X: want y|m, have <value>`.
pub fn check(required: &[Requirement], config: &BTreeMap<String, String>) -> Vec<String> {
    required
        .iter()
        .filter_map(|r| {
            let have = config.get(&r.option).map(String::as_str);
            match have {
                Some(v) if r.accepted.iter().any(|a| a == v) => None,
                _ => Some(format!(
                    "{}: want {}, have {}",
                    r.option,
                    r.accepted.join("|"),
                    have.unwrap_or("not set")
                )),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_reports_each_unmet_option() {
        let req = parse_required(
            "# comment\nCONFIG_A=y   # why\nCONFIG_B=y|m\nCONFIG_C=y|m\nCONFIG_D=y\n\n",
        )
        .unwrap();
        let cfg = parse_config("CONFIG_A=y\nCONFIG_B=m\n# CONFIG_C is not set\nCONFIG_D=m\n");
        assert_eq!(
            check(&req, &cfg),
            [
                "CONFIG_C: want y|m, have not set",
                "CONFIG_D: want y, have m"
            ]
        );
    }

    #[test]
    fn malformed_requirements_rejected() {
        assert!(parse_required("CONFIG_A").is_err());
        assert!(parse_required("A=y").is_err());
    }

    /// The committed fragment for a custom kernel builds every required option in.
    #[test]
    fn fragment_builds_everything_in() {
        let req = parse_required(include_str!("../../kernel-config/required.txt")).unwrap();
        let frag = parse_config(include_str!("../../kernel-config/phase.config"));
        for r in &req {
            assert_eq!(
                frag.get(&r.option).map(String::as_str),
                Some("y"),
                "kernel-config/phase.config must set {}=y",
                r.option
            );
        }
        assert_eq!(
            frag.len(),
            req.len(),
            "phase.config has options required.txt lacks"
        );
    }
}
