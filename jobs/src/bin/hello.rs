//! `hello`: prints its arguments (joined by spaces) reversed, or stdin reversed when it has no
//! arguments. The smallest useful job: arguments, stdin and stdout all reach the receipt.
use std::io::{Read, Write};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let text = if args.is_empty() {
        let mut s = String::new();
        if std::io::stdin().read_to_string(&mut s).is_err() {
            std::process::exit(2);
        }
        s
    } else {
        args.join(" ")
    };
    let reversed: String = text.chars().rev().collect();
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{reversed}").is_err() {
        std::process::exit(2);
    }
}
