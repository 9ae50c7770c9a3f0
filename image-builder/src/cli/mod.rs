//! The `phase-image` command line: one dispatch table, [`PROGRAM`], from which `phase-image
//! --help` is generated; each command lives in its own file with its `USAGE`, a `lexopt`
//! parser into its options, and a `run(args) -> i32`. The shape (help, usage errors, exit 2)
//! is `phase-cli-args`'s, shared with `phase`. Exit status: 0 built, 1 failed (with the
//! reason), 2 usage error.

mod disk;
mod initramfs;
mod kernel_config;
mod keygen;
mod netboot;
mod qcow2;
mod release;
mod root;
mod rootfs;
mod sign;
mod verify;
mod verity;
mod write;

use anyhow::{Context, Result};
pub use phase_cli_args::required;
use phase_cli_args::{Args, Command, Parsed, Program};

/// `phase-image`: its name, its commands, its help.
pub const PROGRAM: Program = Program {
    name: "phase-image",
    about: "phase-image: build Phase Boot images (initramfs, rootfs, releases, disks), \
            rootless and reproducibly",
    version: env!("CARGO_PKG_VERSION"),
    commands: COMMANDS,
    footer: "\
Run `phase-image COMMAND --help` for a command's usage and options.
Every build is deterministic: times are SOURCE_DATE_EPOCH (or 0), owners root, order sorted.
Exit status: 0 on success, 1 on a failed build (with the reason), 2 on a usage error.",
};

/// Every `phase-image` command, in the order `phase-image --help` lists them (the order
/// `make build` runs them).
const COMMANDS: &[Command] = &[
    Command {
        name: "initramfs",
        synopsis: "--init FILE --modules-dir DIR --modules-list FILE -o FILE",
        about: "the initramfs: /init, kernel modules with their dependencies, extra files",
        run: initramfs::run,
    },
    Command {
        name: "rootfs",
        synopsis: "--init FILE --modules-dir DIR --initramfs-modules FILE --version V -o FILE",
        about: "the root filesystem: a zstd squashfs with its dm-verity hash tree",
        run: rootfs::run,
    },
    Command {
        name: "verity",
        synopsis: "DATA -o FILE",
        about: "the dm-verity hash tree of a file, as veritysetup format would",
        run: verity::run,
    },
    Command {
        name: "keygen",
        synopsis: "--out-dir DIR --name NAME",
        about: "an Ed25519 key pair (never overwrites one)",
        run: keygen::run,
    },
    Command {
        name: "root",
        synopsis: "--root-key PUB... --release-key PUB... --sign KEY... -o FILE",
        about: "a signed root document, or the next one (--previous: rotation)",
        run: root::run,
    },
    Command {
        name: "release",
        synopsis: "--root FILE --version N --kernel F --initramfs F --out-dir DIR [OPTIONS]",
        about: "a signed release directory any static HTTP server can serve",
        run: release::run,
    },
    Command {
        name: "sign",
        synopsis: "--key KEY FILE",
        about: "add a signature to a root or release file in place",
        run: sign::run,
    },
    Command {
        name: "verify",
        synopsis: "--root FILE DIR [OPTIONS]",
        about: "verify a release directory against a trusted root, as the init does",
        run: verify::run,
    },
    Command {
        name: "disk",
        synopsis: "--release-dir DIR --rootfs F --verity F -o FILE [--bootable ...]",
        about: "the GPT disk image (hybrid BIOS + UEFI with --bootable)",
        run: disk::run,
    },
    Command {
        name: "netboot",
        synopsis: "--kernel F --initramfs F -o DIR",
        about: "the netboot TFTP root: kernel, initramfs, iPXE menu, GRUB network loader",
        run: netboot::run,
    },
    Command {
        name: "qcow2",
        synopsis: "IMAGE -o FILE",
        about: "convert a raw disk image to qcow2 (qemu-img)",
        run: qcow2::run,
    },
    Command {
        name: "write",
        synopsis: "IMAGE DEVICE [--yes]",
        about: "write an image to a whole disk (a USB stick) and read it back",
        run: write::run,
    },
    Command {
        name: "kernel-config",
        synopsis: "--config FILE --required FILE",
        about: "check a kernel .config against the options Phase Boot requires",
        run: kernel_config::run,
    },
    Command {
        name: "version",
        synopsis: "",
        about: "print the version",
        run: |args| PROGRAM.version_command(args),
    },
    Command {
        name: "help",
        synopsis: "",
        about: "print this help",
        run: |args| PROGRAM.help_command(args),
    },
];

/// A command's options, parsed: build with them, print its usage, or name the usage error;
/// a failed build prints its reason chain.
fn build<T>(
    cmd: &str,
    usage: &str,
    p: Result<Parsed<T>, lexopt::Error>,
    go: impl FnOnce(T) -> Result<()>,
) -> i32 {
    PROGRAM.parsed(cmd, usage, p, |o| go(o).map_or_else(failed, |()| 0))
}

/// A failed build: its reason chain on stderr, exit 1.
fn failed(e: anyhow::Error) -> i32 {
    eprintln!("phase-image: error: {e:#}");
    1
}

fn source_date_epoch() -> Result<u32> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds")),
        Err(_) => Ok(0),
    }
}

/// The time expiries count from: SOURCE_DATE_EPOCH if set (reproducible), else now.
fn base_time() -> Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(_) => Ok(u64::from(source_date_epoch()?)),
        Err(_) => now(),
    }
}

/// Unix seconds now.
fn now() -> Result<u64> {
    Ok(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs())
}
