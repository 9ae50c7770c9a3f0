//! Receipt tests: a good receipt verifies (ours and securesystemslib's DSSE verifier); every
//! bound field altered, another key, another payloadType, another job or output fails.

use super::*;
use serde_json::Value;

fn node() -> Keypair {
    Keypair::from_seed(&[7; 32])
}

fn job() -> Job {
    Job {
        id: "job-1".into(),
        nonce: "00112233445566778899aabbccddeeff".into(),
        requester: Some(hex::encode(&[9; 32])),
        module_sha256: [1; 32],
        args: vec!["hello".into(), "world".into()],
        env: vec![("LANG".into(), "C".into())],
        stdin_sha256: crate::sha256(b""),
        limits: Limits {
            memory_bytes: 64 << 20,
            fuel: 1_000_000,
            timeout_ms: 1000,
            stdout_bytes: 4096,
            stderr_bytes: 4096,
        },
        seed: [3; 32],
        clock_start_ns: 1_700_000_000_000_000_000,
    }
}

const STDOUT: &[u8] = b"dlrow olleh\n";

fn statement_for(job: &Job, node_public: &[u8; 32]) -> Statement {
    Statement::new(
        &crate::sha256(STDOUT),
        &crate::sha256(b""),
        Predicate {
            job: JobRef {
                id: job.id.clone(),
                nonce: job.nonce.clone(),
                requester: job.requester.clone(),
            },
            module: Digest {
                sha256: hex::encode(&job.module_sha256),
            },
            input: Input {
                sha256: hex::encode(&job.input_sha256()),
                stdin_sha256: hex::encode(&job.stdin_sha256),
            },
            limits: job.limits,
            determinism: Determinism {
                seed: hex::encode(&job.seed),
                clock_start_ns: job.clock_start_ns,
                clock_step_ns: 1000,
                nan_canonicalization: true,
                relaxed_simd_deterministic: true,
                target: "x86_64-unknown-linux baseline".into(),
            },
            outcome: Outcome::Exit { code: 0 },
            usage: Usage {
                fuel: 12345,
                wall_us: 321,
                memory_peak_bytes: 1 << 17,
            },
            executor: Executor {
                name: "phase".into(),
                version: "0.1.0".into(),
                wasmtime: "48.0.8".into(),
            },
            node: Node {
                public_key: hex::encode(node_public),
            },
            timestamps: Timestamps {
                started_unix_ms: 1_700_000_000_000,
                finished_unix_ms: 1_700_000_000_001,
            },
        },
    )
}

fn node_public(k: &Keypair) -> [u8; 32] {
    k.public().bytes().unwrap_or_default()
}

fn good() -> Vec<u8> {
    let k = node();
    sign_receipt(&statement_for(&job(), &node_public(&k)), &k)
}

fn output() -> OutputCheck {
    OutputCheck {
        stdout_sha256: Some(crate::sha256(STDOUT)),
        stderr_sha256: Some(crate::sha256(b"")),
    }
}

fn reason(r: Result<Statement, ReceiptError>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(e) => e.reason(),
    }
}

#[test]
fn good_receipt_verifies() {
    let k = node();
    let st = verify_receipt(&good(), &job(), &output(), Some(&node_public(&k)));
    assert_eq!(reason(st.clone()), "ok");
    assert_eq!(
        st.ok().map(|s| s.predicate.outcome),
        Some(Outcome::Exit { code: 0 })
    );
}

/// Every leaf of the statement (subject digests and every predicate field), changed in the
/// payload while the signature is kept, makes the receipt fail.
#[test]
fn every_bound_field_altered_fails() {
    let env: Envelope = serde_json::from_slice(&good()).unwrap_or_else(|e| panic!("{e}"));
    let b64 = base64::engine::general_purpose::STANDARD;
    let payload: Value =
        serde_json::from_slice(&b64.decode(&env.payload).unwrap_or_default()).unwrap_or_default();
    let mut paths = Vec::new();
    leaves(&payload, &mut Vec::new(), &mut paths);
    assert!(paths.len() >= 30, "only {} leaves", paths.len());
    for path in &paths {
        let mut altered = payload.clone();
        alter(&mut altered, path);
        let mut e = env.clone();
        e.payload = b64.encode(canonical::encode(&altered));
        let bytes = serde_json::to_vec(&e).unwrap_or_default();
        let r = verify_receipt(&bytes, &job(), &output(), None);
        assert!(r.is_err(), "altering {path:?} was accepted");
    }
}

fn leaves(v: &Value, at: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                at.push(k.clone());
                leaves(v, at, out);
                at.pop();
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                at.push(i.to_string());
                leaves(v, at, out);
                at.pop();
            }
        }
        _ => out.push(at.clone()),
    }
}

fn alter(v: &mut Value, path: &[String]) {
    let mut cur = v;
    for p in path {
        cur = match cur {
            Value::Object(m) => m.get_mut(p),
            Value::Array(a) => p.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
            _ => None,
        }
        .unwrap_or_else(|| panic!("no {p}"));
    }
    *cur = match cur.take() {
        Value::String(s) if s.ends_with('0') => Value::String(format!("{}1", &s[..s.len() - 1])),
        Value::String(s) if !s.is_empty() => Value::String(format!("{}0", &s[..s.len() - 1])),
        Value::String(_) => Value::String("x".into()),
        Value::Number(n) => Value::from(n.as_u64().map_or(1, |n| n ^ 1)),
        Value::Bool(b) => Value::Bool(!b),
        _ => Value::String("x".into()),
    };
}

/// The node re-signing a receipt for a different job or output is caught by the comparison.
#[test]
fn job_and_output_mismatches_are_named() {
    let k = node();
    type Change = Box<dyn Fn(&mut Job)>;
    let cases: Vec<(&str, Change)> = vec![
        ("job.id", Box::new(|j| j.id.push('x'))),
        ("job.nonce", Box::new(|j| j.nonce = "ff".into())),
        ("job.requester", Box::new(|j| j.requester = None)),
        ("module.sha256", Box::new(|j| j.module_sha256 = [2; 32])),
        ("input.sha256", Box::new(|j| j.args.push("x".into()))),
        ("input.sha256", Box::new(|j| j.env.clear())),
        ("input.sha256", Box::new(|j| j.stdin_sha256 = [4; 32])),
        ("limits", Box::new(|j| j.limits.fuel += 1)),
        ("limits", Box::new(|j| j.limits.memory_bytes += 1)),
        ("limits", Box::new(|j| j.limits.timeout_ms += 1)),
        ("limits", Box::new(|j| j.limits.stdout_bytes += 1)),
        ("determinism.seed", Box::new(|j| j.seed = [5; 32])),
        (
            "determinism.clock_start_ns",
            Box::new(|j| j.clock_start_ns += 1),
        ),
    ];
    let receipt = good();
    for (field, change) in cases {
        let mut j = job();
        change(&mut j);
        let r = verify_receipt(&receipt, &j, &output(), Some(&node_public(&k)));
        assert_eq!(r.err(), Some(ReceiptError::JobMismatch(field)));
    }
    let mut out = output();
    out.stdout_sha256 = Some(crate::sha256(b"other"));
    assert_eq!(
        verify_receipt(&receipt, &job(), &out, None).err(),
        Some(ReceiptError::OutputMismatch("stdout"))
    );
    let mut out = output();
    out.stderr_sha256 = Some(crate::sha256(b"other"));
    assert_eq!(
        verify_receipt(&receipt, &job(), &out, None).err(),
        Some(ReceiptError::OutputMismatch("stderr"))
    );
}

#[test]
fn another_key_fails() {
    let k = node();
    let other = Keypair::from_seed(&[8; 32]);
    // Signed by another key while naming the node: the signature does not verify.
    let forged = sign_receipt(&statement_for(&job(), &node_public(&k)), &other);
    assert_eq!(
        reason(verify_receipt(&forged, &job(), &output(), None)),
        "bad_signature"
    );
    // Signed by another key that names itself: not the node the requester asked.
    let own = sign_receipt(&statement_for(&job(), &node_public(&other)), &other);
    assert_eq!(
        reason(verify_receipt(
            &own,
            &job(),
            &output(),
            Some(&node_public(&k))
        )),
        "wrong_node"
    );
}

#[test]
fn changed_payload_type_fails() {
    let mut env: Envelope = serde_json::from_slice(&good()).unwrap_or_else(|e| panic!("{e}"));
    env.payload_type = "application/json".into();
    let bytes = serde_json::to_vec(&env).unwrap_or_default();
    assert_eq!(
        reason(verify_receipt(&bytes, &job(), &output(), None)),
        "payload_type"
    );
    // Even correctly signed under the other type, it is not a receipt.
    let b64 = base64::engine::general_purpose::STANDARD;
    let payload = b64.decode(&env.payload).unwrap_or_default();
    env.signatures[0].sig = b64.encode(node().sign(&pae("application/json", &payload)));
    let bytes = serde_json::to_vec(&env).unwrap_or_default();
    assert_eq!(
        reason(verify_receipt(&bytes, &job(), &output(), None)),
        "payload_type"
    );
}

#[test]
fn malformed_envelopes_are_rejected() {
    assert_eq!(reason(open_receipt(b"{}", None)), "not_dsse");
    assert_eq!(
        reason(open_receipt(&vec![b' '; MAX_RECEIPT_BYTES + 1], None)),
        "too_large"
    );
    let mut env: Envelope = serde_json::from_slice(&good()).unwrap_or_else(|e| panic!("{e}"));
    env.signatures.clear();
    let bytes = serde_json::to_vec(&env).unwrap_or_default();
    assert_eq!(reason(open_receipt(&bytes, None)), "bad_signature");
}

/// securesystemslib (Python, pinned in scripts/requirements-test.txt, installed by
/// scripts/setup.sh into build/pyenv) accepts our receipt and rejects an altered one.
#[test]
fn independent_dsse_verifier_agrees() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join("build/pyenv/bin/python3");
    assert!(
        python.exists(),
        "{} missing: run scripts/setup.sh",
        python.display()
    );
    let dir = std::env::temp_dir().join(format!("phase-receipt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let public = hex::encode(&node_public(&node()));
    let run = |bytes: &[u8]| {
        let f = dir.join("receipt.json");
        std::fs::write(&f, bytes).unwrap_or_else(|e| panic!("{e}"));
        std::process::Command::new(&python)
            .arg(root.join("scripts/dsse-verify.py"))
            .arg(&f)
            .arg(&public)
            .output()
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let ok = run(&good());
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), PREDICATE_TYPE);
    let mut env: Envelope = serde_json::from_slice(&good()).unwrap_or_else(|e| panic!("{e}"));
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut payload: Value =
        serde_json::from_slice(&b64.decode(&env.payload).unwrap_or_default()).unwrap_or_default();
    payload["predicate"]["usage"]["fuel"] = Value::from(1);
    env.payload = b64.encode(canonical::encode(&payload));
    let bad = run(&serde_json::to_vec(&env).unwrap_or_default());
    assert_eq!(
        bad.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
