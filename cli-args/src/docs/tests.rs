//! Command lines are found where the docs show them, and checked word by word against a
//! program's help: a renamed command, subcommand, option or make target is caught.

use super::*;

const PROGRAMS: &[&str] = &["phase", "phase-image", "make"];

fn words(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn finds_commands_in_shell_blocks_and_inline_code() {
    let md = "\
Run `make run ARGS=\"phase.debug\"` or `phase.mode=local` (a key, not a command).

```sh
echo -n hi | out/phase-node job run --local \\
    out/jobs/hello.wasm --receipt /tmp/r.json   # prints \"ih\"
sudo out/phase-image write out/phase-x86_64.img /dev/sdX && make test
out/phase receipt verify r.json --stdin <(echo -n hello) --reexec
```

```json
{\"phase provider serve\": 1}
```
```
 phase (initramfs) STAGE 1
```

   ```sh
   faketime '+730 days' make test
   ```
";
    let got = command_lines(md, PROGRAMS);
    let want = [
        (1, vec!["make", "run", "ARGS=\"phase.debug"]),
        (
            4,
            vec![
                "phase",
                "job",
                "run",
                "--local",
                "out/jobs/hello.wasm",
                "--receipt",
                "/tmp/r.json",
            ],
        ),
        (
            6,
            vec!["phase-image", "write", "out/phase-x86_64.img", "/dev/sdX"],
        ),
        (6, vec!["make", "test"]),
        (
            7,
            vec![
                "phase", "receipt", "verify", "r.json", "--stdin", "--reexec",
            ],
        ),
        (18, vec!["make", "test"]),
    ];
    let got: Vec<_> = got.iter().map(|c| (c.line, c.words.clone())).collect();
    let want: Vec<_> = want.iter().map(|(l, w)| (*l, words(w))).collect();
    assert_eq!(got, want);
}

/// A program with `job run|bench` and `receipt verify`, as generated help texts.
fn help(path: &[&str]) -> String {
    match path {
        [] => "Usage: prog\n\nCommands:\n    job run|bench    jobs\n    receipt verify    r\n    status [ADDR]    s\n".into(),
        ["job"] => "Usage: prog job\n\nCommands:\n    run --local    run\n    bench    b\n".into(),
        ["job", "run"] => "Usage: prog job run\n  --local  --node MULTIADDR  --node-key  --fuel N\n".into(),
        ["job", "bench"] => "Usage: prog job bench JOBS_DIR\n".into(),
        ["receipt"] => "Usage: prog receipt\n\nCommands:\n    verify    v\n".into(),
        ["receipt", "verify"] => "Usage: prog receipt verify\n  --stdin FILE  -o, --output FILE\n".into(),
        ["status"] => "Usage: prog status [ADDR] [--json]\n".into(),
        _ => String::new(),
    }
}

#[test]
fn check_accepts_what_the_help_lists() {
    for line in [
        &["prog"][..],
        &[
            "prog",
            "job",
            "run",
            "--local",
            "m.wasm",
            "--fuel=5",
            "--",
            "--anything",
        ],
        &["prog", "job", "run/bench"],
        &["prog", "job", "run", "--help"],
        &[
            "prog", "receipt", "verify", "r.json", "--stdin", "f", "-o", "x",
        ],
        &["prog", "status", "[ADDR]", "--json"],
        &["prog", "job"],
        &["prog", "…"],
        &["prog", "job", "run", "...", "--anything"],
    ] {
        assert_eq!(check(&words(line), &mut help), Ok(()), "{line:?}");
    }
}

#[test]
fn check_names_what_the_help_does_not_list() {
    for (line, says) in [
        (&["prog", "jobs", "run"][..], "no command jobs"),
        (
            &["prog", "job", "run", "--nodes", "a"],
            "job run: no option --nodes",
        ),
        (&["prog", "job", "run", "--node-k"], "no option --node-k"),
        (&["prog", "job", "run/frob"], "no command run/frob"),
        (
            &["prog", "receipt", "verify", "--reexec"],
            "receipt verify: no option --reexec",
        ),
        (&["prog", "status", "--metrics"], "no option --metrics"),
        (&["prog", "receipt", "-x"], "no option -x"),
    ] {
        match check(&words(line), &mut help) {
            Err(e) => assert!(e.contains(says), "{line:?}: {e}"),
            Ok(()) => panic!("{line:?} passed"),
        }
    }
}

#[test]
fn make_lines_need_a_rule_and_a_used_variable() {
    let makefile = ".PHONY: run test\n# lint: not a rule\nrun: build\n\ttarget/release/phase-run $(if $(KEEP),--keep) $(ARGS)\nbuild kernel: setup\n";
    for ok in [
        &["make", "run", "ARGS=\"phase.debug\""][..],
        &["make", "build"],
        &["make", "kernel", "KEEP=1"],
        &["make", "…"],
    ] {
        assert_eq!(check_make(&words(ok), makefile), Ok(()), "{ok:?}");
    }
    for (bad, says) in [
        (&["make", "lint"][..], "no target lint"),
        (&["make", "test"], "no target test"),
        (&["make", "run", "VERBOSE=1"], "does not use VERBOSE"),
    ] {
        match check_make(&words(bad), makefile) {
            Err(e) => assert!(e.contains(says), "{bad:?}: {e}"),
            Ok(()) => panic!("{bad:?} passed"),
        }
    }
}
