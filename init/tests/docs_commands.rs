//! Every `phase …` and `make …` command line in the operator docs (README, docs/usb.md,
//! netboot.md, provider.md, jobs.md, architecture.md) names commands and options the binary
//! and the Makefile have: each word is checked against the generated `--help` of the command
//! it is given to, so a renamed command or flag fails here until the docs follow.
//! (`phase-image` lines: image-builder/tests/docs_commands.rs.)

use phase_cli_args::docs::{check, check_make, command_lines, OPERATOR_DOCS};
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

fn top() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

#[test]
fn documented_phase_and_make_commands_exist() {
    let makefile = std::fs::read_to_string(top().join("Makefile")).expect("Makefile");
    let mut cache: HashMap<Vec<String>, String> = HashMap::new();
    let mut help = |path: &[&str]| -> String {
        let key: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        cache
            .entry(key)
            .or_insert_with(|| {
                let out = Command::new(env!("CARGO_BIN_EXE_phase"))
                    .args(path)
                    .arg("--help")
                    .output()
                    .expect("run phase");
                if out.status.success() {
                    String::from_utf8_lossy(&out.stdout).into_owned()
                } else {
                    String::new()
                }
            })
            .clone()
    };
    let (mut phase_lines, mut make_lines, mut wrong) = (0, 0, Vec::new());
    for doc in OPERATOR_DOCS {
        let text = std::fs::read_to_string(top().join(doc)).expect(doc);
        for c in command_lines(&text, &["phase", "make"]) {
            let verdict = if c.words[0] == "make" {
                make_lines += 1;
                check_make(&c.words, &makefile)
            } else {
                phase_lines += 1;
                check(&c.words, &mut help)
            };
            if let Err(e) = verdict {
                wrong.push(format!("{doc}:{}: `{}`: {e}", c.line, c.words.join(" ")));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // The docs do show commands (a reader that finds none would pass anything).
    assert!(
        phase_lines >= 20 && make_lines >= 10,
        "{phase_lines} phase, {make_lines} make"
    );
}
