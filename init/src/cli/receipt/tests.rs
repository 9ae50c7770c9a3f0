//! `phase receipt verify` parses as documented: the job's description as `job run` reads
//! it, its own options, and the ones it refuses.

use super::*;
use std::ffi::OsString;

fn os(v: &[&str]) -> Args {
    v.iter().map(OsString::from).collect()
}

const NODE: &str =
    "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA";
const HEX32: &str = "0101010101010101010101010101010101010101010101010101010101010101";

#[test]
fn verify_shares_the_job_options_and_has_its_own() {
    let v = match parse_verify(os(&[
        "r.json",
        "--module",
        "m.wasm",
        "--stdin",
        "i",
        "--stdout",
        "o",
        "--node",
        HEX32,
        "--nonce",
        "00",
        "--env",
        "K=V",
        "--reexec",
        "--state-dir",
        "/s",
        "--",
        "a",
        "b",
    ])) {
        Ok(Parsed::Run(v)) => v,
        _ => panic!("did not parse"),
    };
    assert_eq!(v.receipt, PathBuf::from("r.json"));
    assert_eq!(v.module, PathBuf::from("m.wasm"));
    assert_eq!(v.node, Some([1; 32]));
    assert_eq!(v.job.args, ["a", "b"]);
    assert_eq!(v.job.env, [("K".to_string(), "V".to_string())]);
    assert_eq!(v.job.nonce.as_deref(), Some("00"));
    assert!(v.reexec && v.stderr.is_none());
    for (args, says) in [
        (&["r.json"][..], "--module"),
        (&["--module", "m.wasm"], "RECEIPT"),
        (&["r.json", "--module", "m", "--fuel", "1"], "--fuel"),
        (&["r.json", "--module", "m", "--node", NODE], "32 bytes"),
    ] {
        match parse_verify(os(args)) {
            Err(e) => assert!(e.to_string().contains(says), "{args:?}: {e}"),
            Ok(_) => panic!("{args:?} parsed"),
        }
    }
}

#[test]
fn help_is_asked_for() {
    assert!(matches!(parse_verify(os(&["-h"])), Ok(Parsed::Help)));
    assert!(matches!(
        parse_verify(os(&["r.json", "--help"])),
        Ok(Parsed::Help)
    ));
}
