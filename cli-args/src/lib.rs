//! The command-line shape `phase` and `phase-image` share, on `lexopt`.
//!
//! A [`Program`] is a name and a dispatch table of [`Command`]s, from which its `--help` is
//! generated; a command with subcommands dispatches through another table the same way
//! ([`Program::subcommand`]). Each command parses its own arguments with `lexopt` into a
//! [`Parsed`] value and hands it to [`Program::parsed`], so every command and subcommand
//! answers `-h`/`--help` with its `Usage:` text on stdout (exit 0), and a usage error says
//! what was wrong, then the usage, on stderr (exit 2). [`commands_in`] reads a generated
//! help back, for the tests that walk every command through the binary.

use std::ffi::OsString;

pub mod docs;

pub use lexopt;

/// A command's arguments after its name (and after the subcommand's name, for subcommands).
pub type Args = Vec<OsString>;

/// One entry of a dispatch table: `PROGRAM NAME` (or `PROGRAM CMD NAME`).
pub struct Command {
    pub name: &'static str,
    /// What follows the name in the one-line summary (`[FILE]`, `serve DIR [OPTIONS]`).
    pub synopsis: &'static str,
    /// One line: what it does.
    pub about: &'static str,
    /// Runs the command; its exit status.
    pub run: fn(Args) -> i32,
}

/// A program and its commands.
pub struct Program {
    pub name: &'static str,
    /// The first line of `--help`: what the program is.
    pub about: &'static str,
    pub version: &'static str,
    /// In the order `--help` lists them.
    pub commands: &'static [Command],
    /// The last lines of `--help`.
    pub footer: &'static str,
}

/// What a command's parser found: options to run with, or a request for its usage.
pub enum Parsed<T> {
    Run(T),
    Help,
}

impl Program {
    /// `PROGRAM --help`, generated from the table.
    pub fn help(&self) -> String {
        format!(
            "{}\n\nUsage: {} <COMMAND> [ARGS]...\n\nCommands:\n{}\n{}",
            self.about,
            self.name,
            table(self.commands),
            self.footer
        )
    }

    /// `PROGRAM help`: the list of commands (the table's `help` row runs this).
    /// `PROGRAM help COMMAND` is `PROGRAM COMMAND --help`.
    pub fn help_command(&self, args: Args) -> i32 {
        let usage = format!(
            "Usage: {0} help [COMMAND]\n\nPrint the list of commands, or COMMAND's usage \
             ({0} COMMAND --help).",
            self.name
        );
        let parsed = (|| {
            use lexopt::prelude::*;
            let mut p = lexopt::Parser::from_args(args);
            let mut command = None;
            while let Some(arg) = p.next()? {
                match arg {
                    Short('h') | Long("help") => return Ok(Parsed::Help),
                    Value(v) if command.is_none() => command = Some(v.string()?),
                    _ => return Err(arg.unexpected()),
                }
            }
            Ok(Parsed::Run(command))
        })();
        self.parsed("help", &usage, parsed, |command| match command {
            None => help(&self.help()),
            Some(name) => match self.commands.iter().find(|c| c.name == name) {
                Some(c) => (c.run)(vec!["--help".into()]),
                None => self.usage_error("help", &usage, format!("unknown command {name:?}")),
            },
        })
    }

    /// `PROGRAM version` (the table's `version` row runs this).
    pub fn version_command(&self, args: Args) -> i32 {
        let usage = format!("Usage: {0} version\n\nPrint the version of {0}.", self.name);
        self.parsed("version", &usage, no_options(args), |()| {
            help(&format!("{} {}", self.name, self.version))
        })
    }

    /// Dispatch `args` (after the program's name): the command's exit status; 2 for no or an
    /// unknown command.
    pub fn run(&self, args: Args) -> i32 {
        let mut it = args.into_iter();
        let Some(first) = it.next() else {
            eprintln!("{}", self.help());
            return 2;
        };
        let name = first.to_string_lossy();
        match name.as_ref() {
            "-h" | "--help" => help(&self.help()),
            "-V" | "--version" => help(&format!("{} {}", self.name, self.version)),
            _ => match self.commands.iter().find(|c| c.name == name) {
                Some(c) => (c.run)(it.collect()),
                None => {
                    eprintln!("{}: unknown command {name:?}\n\n{}", self.name, self.help());
                    2
                }
            },
        }
    }

    /// `PROGRAM CMD SUB ...`: dispatch `args` (starting at SUB) through `subs`; `PROGRAM CMD`
    /// alone is a usage error, `PROGRAM CMD --help` lists the subcommands.
    pub fn subcommand(&self, cmd: &str, about: &str, subs: &[Command], args: Args) -> i32 {
        let usage = format!(
            "Usage: {0} {cmd} <COMMAND> [OPTIONS]\n\n{about}\n\nCommands:\n{1}\n\
             Run `{0} {cmd} COMMAND --help` for its options.",
            self.name,
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
            None => self.usage_error(cmd, &usage, format!("unknown command {name:?}")),
        }
    }

    /// A usage error: what was wrong, then the usage, on stderr: exit 2.
    pub fn usage_error(&self, cmd: &str, usage: &str, e: impl std::fmt::Display) -> i32 {
        eprintln!("{} {cmd}: {e}\n\n{usage}", self.name);
        2
    }

    /// A command whose parser answered: run it, print its usage, or name the usage error.
    pub fn parsed<T>(
        &self,
        cmd: &str,
        usage: &str,
        p: Result<Parsed<T>, lexopt::Error>,
        go: impl FnOnce(T) -> i32,
    ) -> i32 {
        match p {
            Ok(Parsed::Run(o)) => go(o),
            Ok(Parsed::Help) => help(usage),
            Err(e) => self.usage_error(cmd, usage, e),
        }
    }
}

/// The `Commands:` lines of a help text: four spaces, the name, its synopsis, what it does
/// (on the next line, indented further, when the name and synopsis are long).
pub fn table(commands: &[Command]) -> String {
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

/// The command names in a help text's `Commands:` section, as [`table`] writes it.
pub fn commands_in(help: &str) -> Vec<String> {
    help.split_once("Commands:\n")
        .map(|(_, rest)| rest)
        .unwrap_or("")
        .lines()
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.strip_prefix("    "))
        .filter(|l| !l.starts_with(' '))
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect()
}

/// Print a usage on stdout (it was asked for): exit 0.
pub fn help(usage: &str) -> i32 {
    use std::io::Write;
    // A closed pipe (`phase --help | head`) is not worth a panic message.
    let _ = writeln!(std::io::stdout(), "{usage}");
    0
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

/// A required option's value, or the usage error naming it (`--output is required`).
pub fn required<T>(v: Option<T>, name: &str) -> Result<T, lexopt::Error> {
    v.ok_or_else(|| format!("{name} is required").into())
}

/// A positive integer option value (`--max-connections 0` means nothing useful).
pub fn positive<T: std::str::FromStr + PartialOrd + Default>(s: &str) -> Result<T, String> {
    match s.parse::<T>() {
        Ok(n) if n > T::default() => Ok(n),
        _ => Err(format!("{s:?} is not a positive number")),
    }
}

#[cfg(test)]
mod tests;
