//! Every `phase-image …` command line in the operator docs (README, docs/usb.md, netboot.md,
//! provider.md, jobs.md, architecture.md) names commands and options `phase-image` has, each
//! checked against the generated `--help` of the command it is given to.
//! (`phase` and `make` lines: init/tests/docs_commands.rs.)

use phase_cli_args::docs::{check, command_lines, OPERATOR_DOCS};
use std::path::Path;
use std::process::Command;

#[test]
fn documented_phase_image_commands_exist() {
    let top = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let mut help = |path: &[&str]| -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_phase-image"))
            .args(path)
            .arg("--help")
            .output()
            .expect("run phase-image");
        if out.status.success() {
            String::from_utf8_lossy(&out.stdout).into_owned()
        } else {
            String::new()
        }
    };
    let (mut lines, mut wrong) = (0, Vec::new());
    for doc in OPERATOR_DOCS {
        let text = std::fs::read_to_string(top.join(doc)).expect(doc);
        for c in command_lines(&text, &["phase-image"]) {
            lines += 1;
            if let Err(e) = check(&c.words, &mut help) {
                wrong.push(format!("{doc}:{}: `{}`: {e}", c.line, c.words.join(" ")));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(lines >= 8, "{lines} phase-image command lines");
}
