//! Every `phase-image` command answers `--help` and `-h` with a `Usage:` line and exit 0;
//! the list is read from `phase-image --help`, so a command added later is covered too.
//! A usage error (unknown command or option, a required option missing) exits 2 with the
//! usage on stderr and nothing on stdout.

use phase_cli_args::commands_in;
use std::process::{Command, Output};

fn phase_image(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_phase-image"))
        .args(args)
        .output()
        .expect("run phase-image")
}

fn help(args: &[&str]) -> String {
    let out = phase_image(args);
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
    let commands = commands_in(&help(&["--help"]));
    assert!(commands.len() >= 13, "{commands:?}");
    for cmd in &commands {
        for flag in ["--help", "-h"] {
            help(&[cmd, flag]);
        }
    }
}

#[test]
fn usage_errors_exit_2_with_the_usage_on_stderr() {
    for (args, says) in [
        (&["frobnicate"][..], "unknown command"),
        (&["disk", "--frob"], "--frob"),
        (
            &["disk", "--rootfs", "r", "--verity", "v", "-o", "d"],
            "--release-dir is required",
        ),
        (
            &[
                "disk",
                "--release-dir",
                "r",
                "--rootfs",
                "r",
                "--verity",
                "v",
                "-o",
                "d",
                "--bootable",
            ],
            "--bootable needs --trusted-root",
        ),
        (&["release", "--root", "r", "--version", "seven"], "seven"),
        (
            &[
                "release",
                "--root",
                "r",
                "--version",
                "1",
                "--kernel",
                "k",
                "--initramfs",
                "i",
                "--out-dir",
                "o",
                "--rootfs-verity",
                "v",
            ],
            "--rootfs-verity needs --rootfs",
        ),
        (
            &["root", "--release-key", "p", "--sign", "k", "-o", "r"],
            "--root-key is required",
        ),
        (
            &[
                "initramfs",
                "--init",
                "i",
                "--modules-dir",
                "m",
                "--modules-list",
                "l",
                "-o",
                "o",
                "--file",
                "nodest",
            ],
            "DEST=SRC",
        ),
        (&["verify", "--root", "r"], "DIR is required"),
        (&["write", "a", "b", "c"], "c"),
    ] {
        let out = phase_image(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "phase-image {args:?}: {err}");
        assert!(
            out.stdout.is_empty(),
            "phase-image {args:?} wrote to stdout"
        );
        assert!(err.contains(says), "phase-image {args:?}: {err}");
        assert!(
            err.contains("Usage: phase-image"),
            "phase-image {args:?}: {err}"
        );
    }
}

#[test]
fn version_is_the_crates() {
    for args in [&["--version"][..], &["-V"], &["version"]] {
        let out = phase_image(args);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            concat!("phase-image ", env!("CARGO_PKG_VERSION")),
            "{args:?}"
        );
    }
}
