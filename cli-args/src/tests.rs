//! The generated help reads back as its table, and the shared value parsers refuse what they
//! should.

use super::*;

fn ok(_: Args) -> i32 {
    0
}

/// 0 when asked for its usage and nothing else, 3 otherwise.
fn usage_only(args: Args) -> i32 {
    if args == [OsString::from("--help")] {
        0
    } else {
        3
    }
}

const TABLE: &[Command] = &[
    Command {
        name: "short",
        synopsis: "[FILE]",
        about: "a short head",
        run: ok,
    },
    Command {
        name: "long-name",
        synopsis: "--with MANY --options AND --values THAT [WRAP]",
        about: "the about goes on the next line",
        run: ok,
    },
    Command {
        name: "bare",
        synopsis: "",
        about: "no synopsis",
        run: usage_only,
    },
];

const PROGRAM: Program = Program {
    name: "prog",
    about: "prog: a test program",
    version: "1.2.3",
    commands: TABLE,
    footer: "The footer.",
};

#[test]
fn help_lists_every_command_once_in_table_order() {
    let help = PROGRAM.help();
    assert_eq!(commands_in(&help), ["short", "long-name", "bare"]);
    assert!(help.starts_with("prog: a test program\n\nUsage: prog <COMMAND>"));
    assert!(help.ends_with("The footer."));
}

#[test]
fn a_wrapped_about_is_not_read_as_a_command() {
    let t = table(TABLE);
    assert!(t.contains(&format!("\n    {:30} the about goes", "")));
    assert_eq!(commands_in(&format!("Commands:\n{t}\nafter")).len(), 3);
}

#[test]
fn dispatch_runs_the_named_command_and_refuses_others() {
    let os = |v: &[&str]| v.iter().map(OsString::from).collect::<Args>();
    assert_eq!(PROGRAM.run(os(&["bare", "--help"])), 0);
    assert_eq!(PROGRAM.run(os(&["bare"])), 3);
    assert_eq!(PROGRAM.run(os(&["--help"])), 0);
    assert_eq!(PROGRAM.run(os(&["-V"])), 0);
    assert_eq!(PROGRAM.run(os(&[])), 2);
    assert_eq!(PROGRAM.run(os(&["frob"])), 2);
    assert_eq!(PROGRAM.help_command(os(&[])), 0);
    assert_eq!(PROGRAM.help_command(os(&["bare"])), 0);
    assert_eq!(PROGRAM.help_command(os(&["frob"])), 2);
    assert_eq!(PROGRAM.help_command(os(&["bare", "short"])), 2);
    assert_eq!(
        PROGRAM.subcommand("cmd", "about", TABLE, os(&["bare", "x"])),
        3
    );
    assert_eq!(PROGRAM.subcommand("cmd", "about", TABLE, os(&["help"])), 0);
    assert_eq!(PROGRAM.subcommand("cmd", "about", TABLE, os(&[])), 2);
    assert_eq!(PROGRAM.subcommand("cmd", "about", TABLE, os(&["frob"])), 2);
}

#[test]
fn positive_refuses_zero_and_garbage() {
    assert_eq!(positive::<usize>("8"), Ok(8));
    assert!(positive::<usize>("0").is_err());
    assert!(positive::<u64>("-1").is_err());
    assert!(positive::<u64>("x").is_err());
}

#[test]
fn no_options_takes_help_and_refuses_anything_else() {
    let os = |v: &[&str]| v.iter().map(OsString::from).collect::<Args>();
    assert!(matches!(no_options(os(&[])), Ok(Parsed::Run(()))));
    assert!(matches!(no_options(os(&["--help"])), Ok(Parsed::Help)));
    assert!(matches!(no_options(os(&["-h"])), Ok(Parsed::Help)));
    assert!(no_options(os(&["extra"])).is_err());
    assert!(no_options(os(&["--frob"])).is_err());
}
