//! `phase keys`: the table of `phase.*` kernel command-line keys that docs/cmdline.md carries,
//! generated from [`config::KEYS`].

use super::{no_options, parsed, Args};
use crate::config;

pub const USAGE: &str = "\
Usage: phase keys

Print every phase.* kernel command-line key with its default and meaning, as the markdown
table docs/cmdline.md carries (a test checks the two agree).";

pub fn run(args: Args) -> i32 {
    parsed("keys", USAGE, no_options(args), |()| {
        print!("{}", table());
        0
    })
}

/// The markdown table of keys that docs/cmdline.md carries.
pub fn table() -> String {
    let mut s = String::from("| key | default | meaning |\n| --- | --- | --- |\n");
    for k in config::KEYS {
        s.push_str(&format!("| `{}` | `{}` | {} |\n", k.name, k.default, k.doc));
    }
    s
}
