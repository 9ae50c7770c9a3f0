//! Every `phase …` and `make …` command line in the operator docs (README, docs/usb.md,
//! netboot.md, provider.md, jobs.md, architecture.md) names commands and options the binary
//! and the Makefile have: each word is checked against the generated `--help` of the command
//! it is given to, so a renamed command or flag fails here until the docs follow.
//! (`phase-image` lines: image-builder/tests/docs_commands.rs.)

use phase_cli_args::docs::{check_docs, help_of};
use std::path::Path;

#[test]
fn documented_phase_and_make_commands_exist() {
    let top = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let bin = Path::new(env!("CARGO_BIN_EXE_phase"));
    let (phase, mut wrong) = check_docs(top, "phase", &mut help_of(bin));
    let (make, wrong_make) = check_docs(top, "make", &mut |_| String::new());
    wrong.extend(wrong_make);
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // The docs do show commands (a reader that finds none would pass anything).
    assert!(phase >= 20 && make >= 10, "{phase} phase, {make} make");
}
