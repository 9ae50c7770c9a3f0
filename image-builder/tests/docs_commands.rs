//! Every `phase-image …` command line in the operator docs (README, docs/usb.md, netboot.md,
//! provider.md, jobs.md, architecture.md) names commands and options `phase-image` has, each
//! checked against the generated `--help` of the command it is given to.
//! (`phase` and `make` lines: init/tests/docs_commands.rs.)

use phase_cli_args::docs::{check_docs, help_of};
use std::path::Path;

#[test]
fn documented_phase_image_commands_exist() {
    let top = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let bin = Path::new(env!("CARGO_BIN_EXE_phase-image"));
    let (lines, wrong) = check_docs(top, "phase-image", &mut help_of(bin));
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(lines >= 8, "{lines} phase-image command lines");
}
