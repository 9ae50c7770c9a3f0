//! The dispatch tables and the help they generate (the binary is walked by
//! tests/cli_help.rs).

use super::*;

fn names_in(help: &str) -> Vec<String> {
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

#[test]
fn top_help_lists_every_command_once_in_table_order() {
    let listed = names_in(&top_help());
    let table: Vec<_> = COMMANDS.iter().map(|c| c.name.to_string()).collect();
    assert_eq!(listed, table);
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
