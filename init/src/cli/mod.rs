//! The host CLI: what `phase` does when it is not PID 1.
//!
//! One dispatch table, [`COMMANDS`], from which `phase --help` is generated; each command
//! lives in its own file with its `USAGE` and a `run(args) -> i32`, and parses its arguments
//! with the one parser (`lexopt`). A command with subcommands dispatches through a [`Sub`]
//! table the same way ([`subcommand`]), so `phase CMD --help` lists them. Every command and
//! subcommand answers `-h`/`--help` with a `Usage:` line on stdout and exit 0 (a host test
//! walks both tables through the binary). Exit status: 0 success, 1 failed, 2 usage error.
//! The shape is `phase-cli-args`'s, which `phase-image` shares; the wrappers here name the
//! program.

pub mod cmdline;
pub mod discover;
#[cfg(feature = "executor")]
pub mod job;
pub mod keys;
pub mod net;
pub mod provider;
#[cfg(feature = "executor")]
pub mod receipt;

pub use phase_cli_args::{help, no_options, positive, Args, Command, Parsed};

/// A subcommand; the same shape as a command.
pub type Sub = Command;

/// `phase`: its name, its commands, its help.
pub const PHASE: phase_cli_args::Program = phase_cli_args::Program {
    name: "phase",
    about: "phase: Phase Boot's init (as PID 1) and its host tool (otherwise)",
    version: env!("CARGO_PKG_VERSION"),
    commands: COMMANDS,
    footer: "\
Run `phase COMMAND --help` for a command's usage and options.
As PID 1 (the kernel's /init) it boots the machine; see docs/cmdline.md for phase.* keys.
Exit status: 0 on success, 1 on a failed command, 2 on a usage error.",
};

/// Every `phase` command, in the order `phase --help` lists them.
pub const COMMANDS: &[Command] = &[
    Command {
        name: "cmdline",
        synopsis: "[FILE]",
        about: "parse a kernel command line and print the configuration and warnings",
        run: cmdline::run,
    },
    Command {
        name: "keys",
        synopsis: "",
        about: "print the table of phase.* kernel command-line keys (markdown)",
        run: keys::run,
    },
    Command {
        name: "fetch",
        synopsis: "--root ROOT --provider URL... --out DIR [OPTIONS]",
        about: "choose the newest release that verifies and download it verified",
        run: crate::fetch::cli::run,
    },
    Command {
        name: "net",
        synopsis: "up [IP] [--keep]",
        about: "bring up the network as the init does (DHCP or ip=)",
        run: net::run,
    },
    Command {
        name: "provider",
        synopsis: "serve DIR [OPTIONS]",
        about: "serve a release directory over HTTP (optionally announced by mDNS and DHT)",
        run: provider::run,
    },
    Command {
        name: "discover",
        synopsis: "[--channel C] [--arch A] [--timeout-ms N] [--settle-ms M]",
        about: "browse the LAN (mDNS) for providers; one JSON line per candidate",
        run: discover::run,
    },
    Command {
        name: "dht",
        synopsis: "node|peer-id|announce|lookup [OPTIONS]",
        about: "run a Kademlia DHT node, announce a provider, look providers up",
        run: crate::discover::dht_cli::run,
    },
    Command {
        name: "job",
        synopsis: "run|bench [OPTIONS]",
        about: "run a WASM job with every limit enforced and sign its receipt",
        run: job,
    },
    Command {
        name: "node",
        synopsis: "[--listen MULTIADDR]... [--bootstrap MULTIADDR]... [OPTIONS] | bench",
        about: "run a job node on this host (libp2p host + executor); node.ready, job.done",
        run: node,
    },
    Command {
        name: "receipt",
        synopsis: "verify RECEIPT --module MODULE.wasm [OPTIONS]",
        about: "verify a job receipt (signature, module, input, output; --reexec)",
        run: receipt,
    },
    Command {
        name: "status",
        synopsis: "[ADDR] [--json | --metrics]",
        about: "read a node's status endpoint: tasks, restarts, jobs, peers, boot timeline",
        run: crate::status::cli::run,
    },
    Command {
        name: "version",
        synopsis: "",
        about: "print the version",
        run: |args| PHASE.version_command(args),
    },
    Command {
        name: "selftest",
        synopsis: "DRILL [ARGS]",
        about: "child side of the boot-time fault drills (run by PID 1 itself)",
        run: crate::selftest::child_main,
    },
    Command {
        name: "help",
        synopsis: "",
        about: "print this help",
        run: |args| PHASE.help_command(args),
    },
];

/// `phase ARGS...` (the program's own name left out): the exit status.
pub fn run(args: Args) -> i32 {
    PHASE.run(args)
}

/// `phase CMD SUB ...` through the table `subs` (see [`phase_cli_args::Program::subcommand`]).
pub fn subcommand(cmd: &str, about: &str, subs: &[Sub], args: Args) -> i32 {
    PHASE.subcommand(cmd, about, subs, args)
}

/// A usage error of `phase CMD`: what was wrong, then the usage, on stderr: exit 2.
pub fn usage_error(cmd: &str, usage: &str, e: impl std::fmt::Display) -> i32 {
    PHASE.usage_error(cmd, usage, e)
}

/// `phase CMD`'s parser answered: run it, print its usage, or name the usage error.
pub fn parsed<T>(
    cmd: &str,
    usage: &str,
    p: Result<Parsed<T>, lexopt::Error>,
    go: impl FnOnce(T) -> i32,
) -> i32 {
    PHASE.parsed(cmd, usage, p, go)
}

/// `phase job` (job.rs), when the executor is built in.
fn job(args: Args) -> i32 {
    #[cfg(feature = "executor")]
    {
        job::job(args)
    }
    #[cfg(not(feature = "executor"))]
    {
        without_executor("job", args)
    }
}

/// `phase node` (src/p2p/node_cli.rs), when the executor is built in.
fn node(args: Args) -> i32 {
    #[cfg(feature = "executor")]
    {
        crate::p2p::node_cli::node(args)
    }
    #[cfg(not(feature = "executor"))]
    {
        without_executor("node", args)
    }
}

/// `phase receipt` (receipt.rs), when the executor is built in.
fn receipt(args: Args) -> i32 {
    #[cfg(feature = "executor")]
    {
        receipt::receipt(args)
    }
    #[cfg(not(feature = "executor"))]
    {
        without_executor("receipt", args)
    }
}

#[cfg(not(feature = "executor"))]
fn without_executor(cmd: &str, args: Args) -> i32 {
    let usage = format!(
        "Usage: phase {cmd} ...\n\nThis phase binary was built without the executor (the \
         initramfs build); use the rootfs's /usr/lib/phase/phase."
    );
    if args.iter().any(|a| a == "-h" || a == "--help") {
        return help(&usage);
    }
    eprintln!("phase {cmd}: {usage}");
    1
}

#[cfg(test)]
mod tests;
