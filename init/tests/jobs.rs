//! `phase job run --local` and `phase receipt verify` end to end (the example jobs in out/jobs,
//! built by `make build`): output, exit codes, receipts verified and re-executed, a receipt
//! whose claimed fuel or output differs from the re-execution rejected, the compile cache
//! used by the second run.

use base64::Engine as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn jobs(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../out/jobs")
        .join(format!("{name}.wasm"))
}

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("phase-jobs-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn phase(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_phase"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn summary(out: &Output) -> serde_json::Value {
    let err = String::from_utf8_lossy(&out.stderr);
    serde_json::from_str(err.lines().last().unwrap_or("")).unwrap_or_else(|e| panic!("{e}: {err}"))
}

fn verify(receipt: &Path, state: &Path, stdin: &Path, stdout: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "receipt",
        "verify",
        receipt.to_str().unwrap(),
        "--module",
        jobs("hello").to_str().unwrap().to_owned().leak(),
        "--state-dir",
        state.to_str().unwrap(),
        "--stdin",
        stdin.to_str().unwrap(),
        "--stdout",
        stdout.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    phase(&args, b"")
}

fn verdict(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn job_runs_and_its_receipt_verifies_and_reexecutes() {
    let dir = tempdir("run");
    let state = dir.join("state");
    let receipt = dir.join("receipt.json");
    let args = |r: &Path| {
        vec![
            "job".to_owned(),
            "run".into(),
            "--local".into(),
            jobs("hello").to_str().unwrap().into(),
            "--state-dir".into(),
            state.to_str().unwrap().into(),
            "--receipt".into(),
            r.to_str().unwrap().into(),
            "--nonce".into(),
            "0011".into(),
            "--summary".into(),
        ]
    };
    let a: Vec<String> = args(&receipt);
    let first = phase(&a.iter().map(String::as_str).collect::<Vec<_>>(), b"hello");
    assert_eq!(first.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&first.stdout), "olleh\n");
    assert_eq!(summary(&first)["compiled"], "fresh");
    // The second run (a new process) takes the compiled module from the cache.
    let receipt2 = dir.join("receipt2.json");
    let a2 = args(&receipt2);
    let second = phase(&a2.iter().map(String::as_str).collect::<Vec<_>>(), b"hello");
    assert_eq!(summary(&second)["compiled"], "disk_cache");
    assert_eq!(summary(&first)["fuel"], summary(&second)["fuel"]);
    let statement = |p: &Path| -> serde_json::Value {
        let env: serde_json::Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD;
        serde_json::from_slice(&b64.decode(env["payload"].as_str().unwrap()).unwrap()).unwrap()
    };
    assert_eq!(
        statement(&receipt)["subject"],
        statement(&receipt2)["subject"]
    );

    let stdin = dir.join("stdin");
    std::fs::write(&stdin, b"hello").unwrap();
    let stdout = dir.join("stdout");
    std::fs::write(&stdout, b"olleh\n").unwrap();
    let ok = verify(&receipt, &state, &stdin, &stdout, &["--reexec"]);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    assert_eq!(verdict(&ok)["verified"], true);
    assert_eq!(verdict(&ok)["reexec"], true);

    // Output the node did not produce.
    let wrong = dir.join("wrong");
    std::fs::write(&wrong, b"hello\n").unwrap();
    let bad = verify(&receipt, &state, &stdin, &wrong, &[]);
    assert_eq!(
        (bad.status.code(), verdict(&bad)["reason"].clone()),
        (Some(1), "output_mismatch".into())
    );
    // Another stdin.
    let bad = verify(&receipt, &state, &stdout, &stdout, &[]);
    assert_eq!(verdict(&bad)["reason"], "job_mismatch");

    // The node signs a receipt claiming other fuel, or other output: the signature and the
    // job check pass, re-execution catches it.
    let key = phase_node_key(&state.join("node.key"));
    for (field, value) in [
        ("fuel", serde_json::json!(1)),
        ("stdout", serde_json::json!("00".repeat(32))),
    ] {
        let mut st = statement(&receipt);
        if field == "fuel" {
            st["predicate"]["usage"]["fuel"] = value;
        } else {
            st["subject"][0]["digest"]["sha256"] = value;
        }
        let st: phase_release::receipt::Statement = serde_json::from_value(st).unwrap();
        let forged = dir.join(format!("forged-{field}.json"));
        std::fs::write(&forged, phase_release::receipt::sign_receipt(&st, &key)).unwrap();
        let digest_only = verify(&forged, &state, &stdin, &stdout, &[]);
        let expect = if field == "fuel" { Some(0) } else { Some(1) };
        assert_eq!(digest_only.status.code(), expect, "{field}");
        let no_output_given = phase(
            &[
                "receipt",
                "verify",
                forged.to_str().unwrap(),
                "--module",
                jobs("hello").to_str().unwrap(),
                "--state-dir",
                state.to_str().unwrap(),
                "--stdin",
                stdin.to_str().unwrap(),
                "--reexec",
            ],
            b"",
        );
        assert_eq!(no_output_given.status.code(), Some(1), "{field}");
        assert_eq!(
            verdict(&no_output_given)["reason"],
            "reexec_mismatch",
            "{field}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn phase_node_key(path: &Path) -> phase_release::keys::Keypair {
    let f: phase_release::keys::PrivateKeyFile =
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    phase_release::keys::Keypair::from_file(&f).unwrap()
}

#[test]
fn exit_codes_say_how_the_job_ended() {
    let dir = tempdir("codes");
    let state = dir.join("state");
    let run = |job: &str, extra: &[&str]| {
        let path = jobs(job);
        let mut a = vec![
            "job",
            "run",
            "--local",
            path.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
        ];
        a.extend_from_slice(extra);
        phase(&a, b"").status.code()
    };
    assert_eq!(run("sieve", &["--", "NaN"]), Some(2));
    assert_eq!(run("trap", &[]), Some(125));
    assert_eq!(run("spin", &["--fuel", "1000"]), Some(125));
    assert_eq!(run("hello", &["--memory-bytes", "99999999999"]), Some(126));
    let _ = std::fs::remove_dir_all(&dir);
}
