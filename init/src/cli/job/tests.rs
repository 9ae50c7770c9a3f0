//! `phase job run` parses as documented: where the job runs, the
//! options every run shares, the ones only a local run takes, and `--` ending the options.

use super::*;
use std::ffi::OsString;

fn os(v: &[&str]) -> Args {
    v.iter().map(OsString::from).collect()
}

fn run_ok(v: &[&str]) -> JobRun {
    match parse_run(os(v)) {
        Ok(Parsed::Run(o)) => o,
        Ok(Parsed::Help) => panic!("{v:?}: help"),
        Err(e) => panic!("{v:?}: {e}"),
    }
}

const NODE: &str =
    "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA";
const HEX32: &str = "0101010101010101010101010101010101010101010101010101010101010101";

#[test]
fn a_local_run_takes_every_option() {
    let o = run_ok(&[
        "--local",
        "m.wasm",
        "--state-dir",
        "/st",
        "--key",
        "k",
        "--receipt",
        "r",
        "--env",
        "A=b=c",
        "--job-id",
        "j",
        "--nonce",
        "0011",
        "--requester",
        HEX32,
        "--seed",
        HEX32,
        "--clock-start-ns",
        "7",
        "--fuel",
        "5",
        "--timeout-ms",
        "9",
        "--summary",
        "--",
        "x",
        "--fuel",
    ]);
    assert_eq!(o.module, PathBuf::from("m.wasm"));
    assert_eq!(
        o.on,
        Where::Local(Local {
            state_dir: Some("/st".into()),
            seed: Some([1; 32]),
            clock_start_ns: Some(7),
        })
    );
    assert_eq!(
        o.job,
        JobDesc {
            args: vec!["x".into(), "--fuel".into()],
            env: vec![("A".into(), "b=c".into())],
            id: Some("j".into()),
            nonce: Some("0011".into()),
            requester: Some(HEX32.into()),
        }
    );
    assert_eq!(o.limits.fuel, 5);
    assert_eq!(o.limits.timeout_ms, 9);
    assert_eq!(o.limits.memory_bytes, DEFAULT_LIMITS.memory_bytes);
    assert_eq!(
        (o.key, o.receipt, o.summary),
        (Some("k".into()), Some("r".into()), true)
    );
}

#[test]
fn a_node_run_takes_the_shared_options_and_repeats_node() {
    let o = run_ok(&[
        "--node",
        NODE,
        "--node",
        NODE,
        "m.wasm",
        "--stderr-bytes",
        "3",
        "--job-id",
        "first",
        "--",
        "a",
    ]);
    let n: Multiaddr = NODE.parse().unwrap();
    assert_eq!(o.on, Where::Nodes(vec![n.clone(), n]));
    assert_eq!(o.limits.stderr_bytes, 3);
    assert_eq!(o.limits.fuel, DEFAULT_LIMITS.fuel);
    assert_eq!(o.job.id.as_deref(), Some("first"));
    assert_eq!(o.job.args, ["a"]);
}

#[test]
fn a_discovering_run_takes_what_finds_nodes() {
    let o = run_ok(&[
        "--discover",
        "m.wasm",
        "--need",
        "wasm,cpus=2,memory=400",
        "--bootstrap",
        NODE,
        "--bootstrap-file",
        "peers",
        "--memory-bytes",
        "1048576",
    ]);
    let Where::Discover(d) = o.on else {
        panic!("{:?}", o.on)
    };
    assert_eq!(d.need, Some(Need::parse("wasm,cpus=2,memory=400").unwrap()));
    assert_eq!(d.bootstrap, vec![NODE.parse::<Multiaddr>().unwrap()]);
    assert_eq!(d.bootstrap_file, Some("peers".into()));
    assert_eq!(o.limits.memory_bytes, 1 << 20);
}

#[test]
fn usage_errors_name_what_is_wrong() {
    for (args, says) in [
        (&["m.wasm"][..], "--local, --node MULTIADDR or --discover"),
        (&["--discover", "--node", NODE, "m.wasm"], "exclude"),
        (
            &["--node", NODE, "m.wasm", "--need", "cpus=2"],
            "--need is only for --discover",
        ),
        (
            &["--local", "m.wasm", "--bootstrap", NODE],
            "--bootstrap is only for --discover",
        ),
        (
            &["--discover", "m.wasm", "--seed", HEX32],
            "--seed is only for --local",
        ),
        (&["--discover", "m.wasm", "--need", "cpus=many"], "many"),
        (&["--local", "--node", NODE, "m.wasm"], "exclude"),
        (&["--local"], "MODULE"),
        (&["--local", "a.wasm", "b.wasm"], "b.wasm"),
        (
            &["--node", NODE, "m.wasm", "--seed", HEX32],
            "--seed is only for --local",
        ),
        (
            &["--node", NODE, "m.wasm", "--nonce", "00"],
            "--nonce is only for --local",
        ),
        (
            &["--node", NODE, "m.wasm", "--state-dir", "/s"],
            "--state-dir",
        ),
        (&["--node", "not-an-address", "m.wasm"], "not-an-address"),
        (&["--local", "m.wasm", "--frob"], "--frob"),
        (&["--local", "m.wasm", "--env", "NOEQUALS"], "K=V"),
        (&["--local", "m.wasm", "--requester", "00"], "32 bytes"),
        (&["--local", "m.wasm", "--fuel", "lots"], "lots"),
        (&["--local", "m.wasm", "--stdin", "f"], "--stdin"),
    ] {
        match parse_run(os(args)) {
            Err(e) => assert!(e.to_string().contains(says), "{args:?}: {e}"),
            Ok(_) => panic!("{args:?} parsed"),
        }
    }
}

#[test]
fn help_wins_wherever_it_stands() {
    for args in [
        &["--help"][..],
        &["--local", "-h"],
        &["--node", NODE, "m.wasm", "--help"],
    ] {
        assert!(matches!(parse_run(os(args)), Ok(Parsed::Help)), "{args:?}");
    }
}
