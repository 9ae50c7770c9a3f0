//! Every `phase` command and subcommand answers `--help` and `-h` with a `Usage:` line on
//! stdout and exit 0. The list is read from `phase --help` and each `phase CMD --help`, which
//! are generated from the dispatch tables, so a command added later is covered too.

use phase_cli_args::commands_in;
use std::process::{Command, Output};

fn phase(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_phase"))
        .args(args)
        .output()
        .expect("run phase")
}

fn assert_help(path: &[&str]) -> String {
    let mut last = String::new();
    for flag in ["--help", "-h"] {
        let mut args = path.to_vec();
        args.push(flag);
        let out = phase(&args);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(out.status.code(), Some(0), "phase {args:?}: {text}");
        assert!(
            text.lines().any(|l| l.starts_with("Usage: phase")),
            "phase {args:?} has no Usage: line:\n{text}"
        );
        last = text;
    }
    last
}

#[test]
fn every_command_and_subcommand_answers_help() {
    let top = assert_help(&[]);
    let commands = commands_in(&top);
    assert!(commands.len() >= 10, "{commands:?}");
    let mut subs_seen = 0;
    for cmd in &commands {
        let help = assert_help(&[cmd]);
        for sub in commands_in(&help) {
            assert_help(&[cmd, &sub]);
            subs_seen += 1;
        }
    }
    // provider serve, net up, dht ×4, job run/bench, receipt verify at least.
    assert!(subs_seen >= 9, "{subs_seen} subcommands");
}

#[test]
fn usage_errors_exit_2_with_the_usage_on_stderr() {
    for args in [
        &["frobnicate"][..],
        &["provider"],
        &["provider", "serve"],
        &["provider", "serve", "/tmp", "--frob"],
        &["provider", "serve", "/tmp", "--max-connections", "0"],
        &["net", "up", "--frob"],
        &["fetch", "--root", "r.json"],
        &["discover", "--timeout-ms", "soon"],
        &["keys", "extra"],
    ] {
        let out = phase(args);
        assert_eq!(out.status.code(), Some(2), "phase {args:?}");
        assert!(out.stdout.is_empty(), "phase {args:?} wrote to stdout");
    }
}

#[test]
fn provider_serve_help_is_not_taken_for_a_directory() {
    let out = phase(&["provider", "serve", "--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("--max-connections"), "{text}");
    assert!(out.stderr.is_empty());
}
