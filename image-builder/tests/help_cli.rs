//! Every `phase-image` command answers `--help` and `-h` with a `Usage:` line and exit 0;
//! the list is read from `phase-image --help`, so a command added later is covered too.

use std::process::Command;

fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_phase-image"))
        .args(args)
        .output()
        .expect("run phase-image");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "phase-image {args:?}: {text}");
    assert!(
        text.lines().any(|l| l.starts_with("Usage: phase-image")),
        "phase-image {args:?} has no Usage: line:\n{text}"
    );
    text
}

#[test]
fn every_command_answers_help() {
    let top = help(&["--help"]);
    let commands: Vec<&str> = top
        .split_once("Commands:\n")
        .map(|(_, rest)| rest)
        .unwrap_or("")
        .lines()
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.strip_prefix("  ")?.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert!(commands.len() >= 12, "{commands:?}");
    for cmd in commands {
        for flag in ["--help", "-h"] {
            help(&[cmd, flag]);
        }
    }
}
