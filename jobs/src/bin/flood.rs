//! `flood`: writes lines to stdout forever. The executor keeps what fits its output cap, stops
//! the job there and reports the truncation.
use std::io::Write;

fn main() {
    let mut out = std::io::stdout().lock();
    let mut line = 0u64;
    loop {
        if writeln!(out, "flood line {line}").is_err() {
            std::process::exit(3);
        }
        line += 1;
    }
}
