//! The host CLI: what `phase` does when it is not PID 1.
//!
//! One dispatch table, [`COMMANDS`], from which `phase --help` is generated; each command
//! lives in its own file with its `USAGE` and a `run(args) -> i32`, and parses its arguments
//! with the one parser (`lexopt`). A command with subcommands dispatches through a [`Sub`]
//! table the same way ([`subcommand`]), so `phase CMD --help` lists them. Every command and
//! subcommand answers `-h`/`--help` with a `Usage:` line on stdout and exit 0 (a host test
//! walks both tables through the binary). Exit status: 0 success, 1 failed, 2 usage error.

pub mod cmdline;
pub mod discover;
pub mod keys;
pub mod net;
pub mod provider;

use std::ffi::OsString;

/// A command's arguments after its name (and after the subcommand's name, for subcommands).
pub type Args = Vec<OsString>;

/// One entry of a dispatch table: `phase NAME` (or `phase CMD NAME`).
pub struct Command {
    pub name: &'static str,
    /// What follows the name in the one-line summary (`[FILE]`, `serve DIR [OPTIONS]`).
    pub synopsis: &'static str,
    /// One line: what it does.
    pub about: &'static str,
    pub run: fn(Args) -> i32,
}

/// A subcommand; the same shape as a command.
pub type Sub = Command;

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
        run: version,
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
        run: help_command,
    },
];

const ABOUT: &str = "phase: Phase Boot's init (as PID 1) and its host tool (otherwise)";

const FOOTER: &str = "\
Run `phase COMMAND --help` for a command's usage and options.
As PID 1 (the kernel's /init) it boots the machine; see docs/cmdline.md for phase.* keys.
Exit status: 0 on success, 1 on a failed command, 2 on a usage error.";

/// `phase --help`, generated from [`COMMANDS`].
pub fn top_help() -> String {
    format!(
        "{ABOUT}\n\nUsage: phase <COMMAND> [ARGS]...\n\nCommands:\n{}\n{FOOTER}",
        table(COMMANDS)
    )
}

/// The `Commands:` lines of a help text: four spaces, the name, its synopsis, what it does.
fn table(commands: &[Command]) -> String {
    let mut s = String::new();
    for c in commands {
        let head = format!("{} {}", c.name, c.synopsis);
        let head = head.trim_end();
        if head.len() > 30 {
            s.push_str(&format!("    {head}\n    {:<30} {}\n", "", c.about));
        } else {
            s.push_str(&format!("    {head:<30} {}\n", c.about));
        }
    }
    s
}

pub fn run(args: Args) -> i32 {
    let mut it = args.into_iter();
    let Some(first) = it.next() else {
        help(&top_help());
        return 2;
    };
    let name = first.to_string_lossy();
    match name.as_ref() {
        "-h" | "--help" => help_command(Vec::new()),
        "-V" | "--version" => version(Vec::new()),
        _ => match COMMANDS.iter().find(|c| c.name == name) {
            Some(c) => (c.run)(it.collect()),
            None => {
                eprintln!("phase: unknown command {name:?}; see phase --help");
                2
            }
        },
    }
}

/// `phase CMD SUB ...`: dispatch `args` (starting at SUB) through `subs`; `phase CMD` alone is
/// a usage error, `phase CMD --help` lists the subcommands.
pub fn subcommand(cmd: &str, about: &str, subs: &[Sub], args: Args) -> i32 {
    let usage = format!(
        "Usage: phase {cmd} <COMMAND> [OPTIONS]\n\n{about}\n\nCommands:\n{}\n\
         Run `phase {cmd} COMMAND --help` for its options.",
        table(subs)
    );
    let mut it = args.into_iter();
    let Some(first) = it.next() else {
        eprintln!("{usage}");
        return 2;
    };
    let name = first.to_string_lossy();
    if matches!(name.as_ref(), "-h" | "--help" | "help") {
        return help(&usage);
    }
    match subs.iter().find(|s| s.name == name) {
        Some(s) => (s.run)(it.collect()),
        None => usage_error(cmd, &usage, format!("unknown command {name:?}")),
    }
}

/// What a command's parser found: options to run with, or a request for its usage.
pub enum Parsed<T> {
    Run(T),
    Help,
}

/// Print a usage on stdout (it was asked for): exit 0.
pub fn help(usage: &str) -> i32 {
    use std::io::Write;
    // A closed pipe (`phase --help | head`) is not worth a panic message.
    let _ = writeln!(std::io::stdout(), "{usage}");
    0
}

/// A usage error: what was wrong, then the usage, on stderr: exit 2.
pub fn usage_error(cmd: &str, usage: &str, e: impl std::fmt::Display) -> i32 {
    eprintln!("phase {cmd}: {e}\n\n{usage}");
    2
}

/// A command whose parser answered: run it, print its usage, or name the usage error.
pub fn parsed<T>(
    cmd: &str,
    usage: &str,
    p: Result<Parsed<T>, lexopt::Error>,
    go: impl FnOnce(T) -> i32,
) -> i32 {
    match p {
        Ok(Parsed::Run(o)) => go(o),
        Ok(Parsed::Help) => help(usage),
        Err(e) => usage_error(cmd, usage, e),
    }
}

/// For commands without options: `--help` or nothing.
pub fn no_options(args: Args) -> Result<Parsed<()>, lexopt::Error> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    match p.next()? {
        None => Ok(Parsed::Run(())),
        Some(Short('h') | Long("help")) => Ok(Parsed::Help),
        Some(a) => Err(a.unexpected()),
    }
}

/// A positive integer option value (`--max-connections 0` means nothing useful).
pub fn positive<T: std::str::FromStr + PartialOrd + Default>(s: &str) -> Result<T, String> {
    match s.parse::<T>() {
        Ok(n) if n > T::default() => Ok(n),
        _ => Err(format!("{s:?} is not a positive number")),
    }
}

fn help_command(args: Args) -> i32 {
    const USAGE: &str = "Usage: phase help\n\nPrint the list of commands.";
    parsed("help", USAGE, no_options(args), |()| help(&top_help()))
}

fn version(args: Args) -> i32 {
    const USAGE: &str = "Usage: phase version\n\nPrint the version of this phase binary.";
    parsed("version", USAGE, no_options(args), |()| {
        println!("phase {}", env!("CARGO_PKG_VERSION"));
        0
    })
}

/// `phase job` (src/node/job_cli.rs), when the executor is built in.
fn job(args: Args) -> i32 {
    #[cfg(feature = "executor")]
    {
        crate::node::job_cli::job(args)
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

/// `phase receipt` (src/node/job_cli.rs), when the executor is built in.
fn receipt(args: Args) -> i32 {
    #[cfg(feature = "executor")]
    {
        crate::node::job_cli::receipt(args)
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
