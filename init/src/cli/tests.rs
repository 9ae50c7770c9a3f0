//! The dispatch table and the help it generates (the binary is walked by tests/cli_help.rs;
//! the shared shape is tested in phase-cli-args).

use super::*;
use phase_cli_args::commands_in;

#[test]
fn top_help_lists_every_command_once_in_table_order() {
    let table: Vec<_> = COMMANDS.iter().map(|c| c.name.to_string()).collect();
    assert_eq!(commands_in(&PHASE.help()), table);
}

#[test]
fn command_names_are_unique_and_lowercase() {
    for (i, c) in COMMANDS.iter().enumerate() {
        assert!(
            c.name
                .chars()
                .all(|ch| ch.is_ascii_lowercase() || ch == '-'),
            "{}",
            c.name
        );
        assert!(
            !COMMANDS[i + 1..].iter().any(|d| d.name == c.name),
            "{}",
            c.name
        );
    }
}
