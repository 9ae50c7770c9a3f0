//! The command lines an operator's documentation shows, checked against the programs: every
//! `phase …`, `phase-image …` and `make …` in a shell code block or an inline code span is
//! read ([`command_lines`]) and each word is checked ([`check`]): a command or subcommand must
//! be listed by its parent's generated `--help`, and every option must be in the `--help` of
//! the command it is given to; `make` targets and variables must be in the Makefile
//! ([`check_make`]). So renaming a command or a flag without the docs fails a test
//! ([`check_docs`], run by the tests of `phase` and `phase-image` on their binaries).

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

/// The documents whose commands are checked (issue 16: what an operator reads first).
pub const OPERATOR_DOCS: &[&str] = &[
    "README.md",
    "docs/usb.md",
    "docs/netboot.md",
    "docs/provider.md",
    "docs/jobs.md",
    "docs/architecture.md",
];

/// One command line found in a document: where, and its words from the program on.
#[derive(Debug, PartialEq)]
pub struct CommandLine {
    /// 1-based line of the document it starts on.
    pub line: usize,
    /// The program as written (`phase`, `phase-image`, `make`; a path's directory dropped,
    /// `phase-node`, the rootfs's build of `phase`, read as `phase`), then its words.
    pub words: Vec<String>,
}

/// Every command line of `programs` in `markdown`: in shell code blocks (```sh, ```bash,
/// ```console, ```shell; a block without one is output or a diagram), with `\` continuations joined and `#` comments dropped, each
/// pipeline or list split at `|`, `&&`, `||` and `;`; and in inline code spans.
pub fn command_lines(markdown: &str, programs: &[&str]) -> Vec<CommandLine> {
    let mut found = Vec::new();
    let mut block: Option<bool> = None; // Some(is shell) inside a fence
    let mut pending: Option<(usize, String)> = None;
    for (i, raw) in markdown.lines().enumerate() {
        let line = raw.trim_start();
        if let Some(info) = line.strip_prefix("```") {
            block = match block {
                Some(_) => None,
                None => Some(matches!(info.trim(), "sh" | "bash" | "console" | "shell")),
            };
            pending = None;
            continue;
        }
        match block {
            Some(true) => {
                let (start, mut text) = pending.take().unwrap_or((i + 1, String::new()));
                let code = strip_comment(line);
                match code.strip_suffix('\\') {
                    Some(head) => {
                        text.push_str(head);
                        text.push(' ');
                        pending = Some((start, text));
                    }
                    None => {
                        text.push_str(code);
                        found.extend(commands_in_text(&text, start, programs));
                    }
                }
            }
            Some(false) => {}
            None => {
                for span in raw.split('`').skip(1).step_by(2) {
                    found.extend(commands_in_text(span, i + 1, programs));
                }
            }
        }
    }
    found
}

/// `text` up to a `#` that starts a shell comment (at the start or after white space).
fn strip_comment(text: &str) -> &str {
    let mut prev = ' ';
    for (i, c) in text.char_indices() {
        if c == '#' && prev.is_whitespace() {
            return text[..i].trim_end();
        }
        prev = c;
    }
    text.trim_end()
}

/// `text` without process and command substitutions (`<(echo hello)`, `$(cat f)`): their
/// words belong to other commands.
fn without_substitutions(text: &str) -> String {
    let (mut out, mut depth, mut prev) = (String::new(), 0usize, ' ');
    for c in text.chars() {
        match c {
            '(' if depth > 0 || matches!(prev, '<' | '$') => {
                if depth == 0 {
                    out.pop();
                }
                depth += 1;
            }
            ')' if depth > 0 => depth -= 1,
            _ if depth > 0 => {}
            _ => out.push(c),
        }
        prev = c;
    }
    out
}

fn commands_in_text(text: &str, line: usize, programs: &[&str]) -> Vec<CommandLine> {
    let mut out = Vec::new();
    for segment in without_substitutions(text).split(['|', ';', '&']) {
        let mut words = segment
            .split_whitespace()
            .map(|w| w.trim_matches(['"', '\'']));
        // `sudo`, `faketime '+730 days'` and VAR=value prefixes: find the program's word.
        let Some(first) = words.by_ref().find_map(|w| program_of(w, programs)) else {
            continue;
        };
        let mut v = vec![first.to_string()];
        v.extend(words.map(str::to_string));
        out.push(CommandLine { line, words: v });
    }
    out
}

/// The program `word` runs, if it is one of `programs` (`out/phase` → `phase`).
fn program_of<'a>(word: &str, programs: &[&'a str]) -> Option<&'a str> {
    let name = word.rsplit('/').next().unwrap_or(word);
    let name = if name == "phase-node" { "phase" } else { name };
    programs.iter().copied().find(|p| *p == name)
}

/// Check one command line of a program against its help: `help(path)` is the stdout of
/// `PROGRAM PATH... --help` (empty if that failed). Commands are read from each help's
/// `Commands:` section; a word written `a/b/c` names alternatives, each checked. Options
/// (`--name`, `--name=value`, `-x`) must appear in the deepest command's help; other words
/// are values. Everything after `--` (the job's own) or an ellipsis is not checked. The
/// error names the word and the command it was given to.
pub fn check(words: &[String], help: &mut dyn FnMut(&[&str]) -> String) -> Result<(), String> {
    let Some((program, rest)) = words.split_first() else {
        return Ok(());
    };
    let mut path: Vec<&str> = Vec::new();
    let mut text = help(&path);
    if text.is_empty() {
        return Err(format!("{program} --help answered nothing"));
    }
    let mut options_seen = false;
    for w in rest {
        let w = w.as_str();
        // The job's own arguments, or an ellipsis standing for the rest.
        if matches!(w, "--" | "…" | "...") {
            break;
        }
        if w.starts_with('-') {
            options_seen = true;
            let name = w.split_once('=').map_or(w, |(n, _)| n);
            if name != "--help" && name != "-h" && !mentions(&text, name) {
                return Err(format!("{}: no option {name}", at(program, &path)));
            }
            continue;
        }
        let commands = crate::commands_in(&text);
        if options_seen || commands.is_empty() {
            continue; // a value or a positional argument
        }
        let alternatives: Vec<&str> = w.split('/').collect();
        if alternatives.iter().all(|a| commands.iter().any(|c| c == a)) {
            for a in &alternatives[1..] {
                let mut p = path.clone();
                p.push(a);
                if help(&p).is_empty() {
                    return Err(format!("{program} {}: no --help", p.join(" ")));
                }
            }
            path.push(alternatives[0]);
            text = help(&path);
            if text.is_empty() {
                return Err(format!("{program} {}: no --help", path.join(" ")));
            }
        } else {
            return Err(format!(
                "{}: no command {w} (commands: {commands:?})",
                at(program, &path)
            ));
        }
    }
    Ok(())
}

/// `PROGRAM CMD SUB`: where a word was given, for errors.
fn at(program: &str, path: &[&str]) -> String {
    let mut s = program.to_string();
    for p in path {
        s.push(' ');
        s.push_str(p);
    }
    s
}

/// Whether `help` names the option `name` as a whole word (`--node` is not `--node-key`).
fn mentions(help: &str, name: &str) -> bool {
    help.match_indices(name).any(|(i, _)| {
        let before = help[..i].chars().next_back();
        let after = help[i + name.len()..].chars().next();
        !before.is_some_and(|c| c.is_alphanumeric() || c == '-')
            && !after.is_some_and(|c| c.is_alphanumeric() || c == '-' || c == '_')
    })
}

/// Check a `make …` line against the Makefile: every target must have a rule, every
/// `VAR=value` must be used as `$(VAR)`.
pub fn check_make(words: &[String], makefile: &str) -> Result<(), String> {
    for w in words.iter().skip(1) {
        if matches!(w.as_str(), "…" | "...") {
            break;
        }
        if w.starts_with('-') {
            continue;
        }
        match w.split_once('=') {
            Some((var, _)) => {
                let used = format!("$({var})");
                if !makefile.contains(&used) {
                    return Err(format!("make: the Makefile does not use {var}"));
                }
            }
            None => {
                let rule = makefile.lines().any(|l| {
                    l.split_once(':').is_some_and(|(targets, _)| {
                        !targets.starts_with(['\t', '#', '.'])
                            && targets.split_whitespace().any(|t| t == w)
                    })
                });
                if !rule {
                    return Err(format!("make: no target {w}"));
                }
            }
        }
    }
    Ok(())
}

/// `BINARY PATH... --help` as [`check`] asks for it (empty when it fails), each path run once.
pub fn help_of(binary: &Path) -> impl FnMut(&[&str]) -> String + '_ {
    let mut asked: HashMap<Vec<String>, String> = HashMap::new();
    move |path| {
        let key = path.iter().map(|s| s.to_string()).collect();
        asked
            .entry(key)
            .or_insert_with(
                || match Command::new(binary).args(path).arg("--help").output() {
                    Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into(),
                    _ => String::new(),
                },
            )
            .clone()
    }
}

/// Check every `program` command line of the [`OPERATOR_DOCS`] under `top` (`make` lines
/// against `top`'s Makefile, others through `help`): how many were read, and each wrong one
/// as `DOC:LINE: `COMMAND`: what is wrong`.
pub fn check_docs(
    top: &Path,
    program: &str,
    help: &mut dyn FnMut(&[&str]) -> String,
) -> (usize, Vec<String>) {
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    let makefile = read(&top.join("Makefile"));
    let (mut lines, mut wrong) = (0, Vec::new());
    for doc in OPERATOR_DOCS {
        let text = read(&top.join(doc));
        if text.is_empty() {
            wrong.push(format!("{doc}: missing or empty"));
        }
        for c in command_lines(&text, &[program]) {
            lines += 1;
            let verdict = match program {
                "make" => check_make(&c.words, &makefile),
                _ => check(&c.words, help),
            };
            if let Err(e) = verdict {
                wrong.push(format!("{doc}:{}: `{}`: {e}", c.line, c.words.join(" ")));
            }
        }
    }
    (lines, wrong)
}

#[cfg(test)]
mod tests;
