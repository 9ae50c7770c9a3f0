//! One test per attack; each rejection is a distinct error kind.

use super::*;
use crate::doc::{new_root, Artifact, Artifacts, Envelope, Release, Root};
use crate::keys::Keypair;

const NOW: u64 = 1_800_000_000;
const DAY: u64 = 86_400;

struct Fx {
    root_keys: Vec<Keypair>,
    rel_keys: Vec<Keypair>,
    root: Root,
}

fn keys(seed: u8, n: usize) -> Vec<Keypair> {
    (0..n)
        .map(|i| Keypair::from_seed(&[seed + i as u8; 32]))
        .collect()
}

fn fx(root_t: u64, rel_t: u64) -> Fx {
    let root_keys = keys(1, 3);
    let rel_keys = keys(10, 3);
    let pubs = |ks: &[Keypair]| ks.iter().map(|k| k.public()).collect::<Vec<_>>();
    let root = new_root(
        1,
        NOW + 365 * DAY,
        &pubs(&root_keys),
        root_t,
        &pubs(&rel_keys),
        rel_t,
    )
    .unwrap();
    Fx {
        root_keys,
        rel_keys,
        root,
    }
}

fn artifact(name: &str, data: &[u8]) -> Artifact {
    Artifact {
        path: name.into(),
        size: data.len() as u64,
        sha256: crate::hex::encode(&crate::sha256(data)),
        verity: None,
    }
}

fn release(version: u64) -> Release {
    Release {
        doc_type: "release".into(),
        spec_version: 1,
        version,
        channel: "stable".into(),
        arch: "x86_64".into(),
        expires: NOW + 30 * DAY,
        cmdline: "console=ttyS0".into(),
        artifacts: Artifacts {
            kernel: artifact("vmlinuz", b"kernel"),
            initramfs: artifact("initramfs.img", b"initramfs"),
            rootfs: None,
        },
    }
}

fn sign<D: crate::doc::Document>(doc: &D, by: &[&Keypair]) -> Envelope {
    let mut env = Envelope::new(doc).unwrap();
    for k in by {
        env.sign(k).unwrap();
    }
    env
}

fn policy() -> Policy {
    Policy {
        arch: "x86_64".into(),
        channel: "stable".into(),
        now: NOW,
        floor: 0,
        trusted: None,
    }
}

fn reason(r: Result<Verified<Release>, TrustError>) -> &'static str {
    r.map(|_| "accepted").unwrap_or_else(|e| e.reason())
}

#[test]
fn accepts_valid_release() {
    let f = fx(1, 2);
    let bytes = sign(&release(3), &[&f.rel_keys[0], &f.rel_keys[2]]).to_bytes();
    let v = verify_release(&bytes, &f.root, &policy()).unwrap();
    assert_eq!(v.doc, release(3));
    // Adding a signature does not change the content digest.
    let more = sign(
        &release(3),
        &[&f.rel_keys[0], &f.rel_keys[1], &f.rel_keys[2]],
    )
    .to_bytes();
    assert_eq!(
        verify_release(&more, &f.root, &policy()).unwrap().digest,
        v.digest
    );
}

#[test]
fn rejects_unknown_key() {
    let f = fx(1, 1);
    let stranger = Keypair::from_seed(&[99; 32]);
    // Root keys are not release keys either.
    for k in [&stranger, &f.root_keys[0]] {
        let bytes = sign(&release(1), &[k]).to_bytes();
        assert_eq!(
            reason(verify_release(&bytes, &f.root, &policy())),
            "unknown_key"
        );
    }
}

#[test]
fn rejects_below_threshold() {
    let f = fx(1, 2);
    let bytes = sign(&release(1), &[&f.rel_keys[0]]).to_bytes();
    assert_eq!(
        verify_release(&bytes, &f.root, &policy()).unwrap_err(),
        TrustError::BelowThreshold {
            role: "release",
            valid: 1,
            threshold: 2
        }
    );
}

#[test]
fn same_key_twice_counts_once() {
    let f = fx(1, 2);
    let mut env = sign(&release(1), &[&f.rel_keys[0]]);
    env.signatures.push(env.signatures[0].clone());
    let e = verify_release(&env.to_bytes(), &f.root, &policy()).unwrap_err();
    assert_eq!(e.reason(), "duplicate_signature");
}

#[test]
fn rejects_expired_release_and_root() {
    let f = fx(1, 1);
    let mut r = release(1);
    r.expires = NOW;
    let bytes = sign(&r, &[&f.rel_keys[0]]).to_bytes();
    assert_eq!(
        reason(verify_release(&bytes, &f.root, &policy())),
        "release_expired"
    );
    let bytes = sign(&release(1), &[&f.rel_keys[0]]).to_bytes();
    let mut late = policy();
    late.now = f.root.expires + 1;
    assert_eq!(
        reason(verify_release(&bytes, &f.root, &late)),
        "root_expired"
    );
}

#[test]
fn clock_policy_never_goes_below_what_was_seen() {
    assert_eq!(effective_now(0, NOW, 0), NOW); // RTC unset: build time
    assert_eq!(effective_now(NOW - DAY, NOW, NOW + 5), NOW + 5); // set back: ignored
    assert_eq!(effective_now(NOW + DAY, NOW, 0), NOW + DAY);
}

#[test]
fn rejects_rollback_and_floor() {
    let f = fx(1, 1);
    let v3 = verify_release(
        &sign(&release(3), &[&f.rel_keys[0]]).to_bytes(),
        &f.root,
        &policy(),
    )
    .unwrap();
    let mut p = policy();
    p.trusted = Some((3, v3.digest));
    let v2 = sign(&release(2), &[&f.rel_keys[0]]).to_bytes();
    assert_eq!(reason(verify_release(&v2, &f.root, &p)), "rollback");
    // The same release again is fine; a newer one too.
    assert_eq!(
        reason(verify_release(
            &sign(&release(3), &[&f.rel_keys[1]]).to_bytes(),
            &f.root,
            &p
        )),
        "accepted"
    );
    assert_eq!(
        reason(verify_release(
            &sign(&release(4), &[&f.rel_keys[0]]).to_bytes(),
            &f.root,
            &p
        )),
        "accepted"
    );
    let mut floor = policy();
    floor.floor = 3;
    assert_eq!(reason(verify_release(&v2, &f.root, &floor)), "below_floor");
}

#[test]
fn rejects_same_version_different_content() {
    let f = fx(1, 1);
    let v3 = verify_release(
        &sign(&release(3), &[&f.rel_keys[0]]).to_bytes(),
        &f.root,
        &policy(),
    )
    .unwrap();
    let mut p = policy();
    p.trusted = Some((3, v3.digest));
    let mut other = release(3);
    other.cmdline = "console=ttyS0 init=/bin/sh".into();
    let bytes = sign(&other, &[&f.rel_keys[0]]).to_bytes();
    assert_eq!(
        reason(verify_release(&bytes, &f.root, &p)),
        "same_version_different_content"
    );
}

#[test]
fn rejects_wrong_arch_and_channel() {
    let f = fx(1, 1);
    let mut r = release(1);
    r.arch = "aarch64".into();
    assert_eq!(
        reason(verify_release(
            &sign(&r, &[&f.rel_keys[0]]).to_bytes(),
            &f.root,
            &policy()
        )),
        "wrong_arch"
    );
    let mut r = release(1);
    r.channel = "beta".into();
    assert_eq!(
        reason(verify_release(
            &sign(&r, &[&f.rel_keys[0]]).to_bytes(),
            &f.root,
            &policy()
        )),
        "wrong_channel"
    );
}

#[test]
fn signature_moved_onto_altered_fields_is_rejected() {
    let f = fx(1, 1);
    let good = sign(&release(1), &[&f.rel_keys[0]]);
    for alter in [
        |r: &mut Release| r.artifacts.kernel.sha256 = crate::hex::encode(&[0; 32]),
        |r: &mut Release| r.artifacts.kernel.size += 1,
        |r: &mut Release| r.cmdline.push_str(" init=/bin/sh"),
        |r: &mut Release| r.version = 99,
        |r: &mut Release| r.expires += 1,
    ] {
        let mut r = release(1);
        alter(&mut r);
        let mut forged = Envelope::new(&r).unwrap();
        forged.signatures = good.signatures.clone();
        assert_eq!(
            reason(verify_release(&forged.to_bytes(), &f.root, &policy())),
            "invalid_signature"
        );
    }
    // A release signature replayed as a root (domain separation): invalid too.
    let root_sig_attempt = sign(&f.root, &[]);
    let mut forged = root_sig_attempt.clone();
    forged.signatures = sign(&f.root, &[&f.rel_keys[0]]).signatures;
    assert!(verify_root_update(&f.root, &forged.to_bytes()).is_err());
}

#[test]
fn artifact_hash_or_size_altered_in_transit() {
    use crate::stream::{verify_reader, StreamError};
    let f = fx(1, 1);
    let v = verify_release(
        &sign(&release(1), &[&f.rel_keys[0]]).to_bytes(),
        &f.root,
        &policy(),
    )
    .unwrap();
    let k = &v.doc.artifacts.kernel;
    assert_eq!(verify_reader("kernel", k, &b"kernel"[..]), Ok(6));
    let err = |r: Result<u64, StreamError>| match r {
        Err(StreamError::Trust(e)) => e.reason(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        err(verify_reader("kernel", k, &b"kernal"[..])),
        "artifact_hash"
    );
    assert_eq!(
        err(verify_reader("kernel", k, &b"kern"[..])),
        "artifact_size"
    );
    assert_eq!(
        err(verify_reader("kernel", k, std::io::repeat(0))),
        "artifact_too_long"
    );
}

#[test]
fn rejects_non_canonical_duplicate_keys_and_oversized() {
    let f = fx(1, 1);
    let bytes = sign(&release(1), &[&f.rel_keys[0]]).to_bytes();
    let text = String::from_utf8(bytes.clone()).unwrap();
    // Pretty-printed (same value, same signature): not canonical.
    let pretty =
        serde_json::to_vec_pretty(&serde_json::from_slice::<serde_json::Value>(&bytes).unwrap())
            .unwrap();
    assert_eq!(
        reason(verify_release(&pretty, &f.root, &policy())),
        "non_canonical"
    );
    // A duplicate key that a lax parser would resolve to the attacker's value.
    let dup = text.replacen(
        "\"channel\":\"stable\"",
        "\"channel\":\"stable\",\"channel\":\"beta\"",
        1,
    );
    assert_eq!(
        reason(verify_release(dup.as_bytes(), &f.root, &policy())),
        "duplicate_json_key"
    );
    // An unknown field is malformed (nothing unsigned or unknown is carried along).
    let extra = text.replacen("{\"signatures\"", "{\"note\":\"x\",\"signatures\"", 1);
    assert_eq!(
        reason(verify_release(extra.as_bytes(), &f.root, &policy())),
        "malformed"
    );
    let mut big = release(1);
    big.cmdline = "x".repeat(crate::doc::MAX_METADATA_BYTES);
    let bytes = sign(&big, &[&f.rel_keys[0]]).to_bytes();
    assert_eq!(
        reason(verify_release(&bytes, &f.root, &policy())),
        "oversized_metadata"
    );
    // A root handed in where a release is expected.
    let root_bytes = sign(&f.root, &[&f.root_keys[0]]).to_bytes();
    assert_eq!(
        reason(verify_release(&root_bytes, &f.root, &policy())),
        "wrong_type"
    );
}

#[test]
fn root_rotation_chain() {
    let f = fx(2, 1);
    let new_keys = keys(40, 2);
    let pubs = |ks: &[Keypair]| ks.iter().map(|k| k.public()).collect::<Vec<_>>();
    let mut v2 = new_root(
        2,
        NOW + 400 * DAY,
        &pubs(&new_keys),
        2,
        &pubs(&f.rel_keys),
        1,
    )
    .unwrap();
    let v2_ok = sign(
        &v2,
        &[&f.root_keys[0], &f.root_keys[1], &new_keys[0], &new_keys[1]],
    )
    .to_bytes();
    let mut v3 = v2.clone();
    v3.version = 3;
    let v3_ok = sign(&v3, &[&new_keys[0], &new_keys[1]]).to_bytes();

    // Valid chain 1 → 2 → 3.
    let chain = [v2_ok.clone(), v3_ok.clone()];
    let got =
        update_root_chain(f.root.clone(), |v| chain.get(v as usize - 2).cloned(), NOW).unwrap();
    assert_eq!(got.version, 3);

    // Missing link: 1 → 3 is refused.
    let skip =
        update_root_chain(f.root.clone(), |v| (v == 2).then(|| v3_ok.clone()), NOW).unwrap_err();
    assert_eq!(skip.reason(), "root_not_next");

    // New root lacking a threshold of the old root keys (only one old key of two).
    let weak = sign(&v2, &[&f.root_keys[0], &new_keys[0], &new_keys[1]]).to_bytes();
    assert_eq!(
        verify_root_update(&f.root, &weak).unwrap_err().reason(),
        "below_threshold"
    );
    // ... or of its own new keys.
    let unself = sign(&v2, &[&f.root_keys[0], &f.root_keys[1], &new_keys[0]]).to_bytes();
    assert_eq!(
        verify_root_update(&f.root, &unself).unwrap_err().reason(),
        "below_threshold"
    );

    // The final root of a chain must be unexpired.
    v2.expires = NOW - 1;
    let stale = sign(
        &v2,
        &[&f.root_keys[0], &f.root_keys[1], &new_keys[0], &new_keys[1]],
    )
    .to_bytes();
    let e =
        update_root_chain(f.root.clone(), |v| (v == 2).then(|| stale.clone()), NOW).unwrap_err();
    assert_eq!(e.reason(), "root_expired");

    // The baked-in root must meet its own threshold.
    assert!(
        verify_root_self(&sign(&f.root, &[&f.root_keys[0], &f.root_keys[2]]).to_bytes()).is_ok()
    );
    assert_eq!(
        verify_root_self(&sign(&f.root, &[&f.root_keys[0]]).to_bytes())
            .unwrap_err()
            .reason(),
        "below_threshold"
    );
}

#[test]
fn every_reason_is_distinct() {
    let all = [
        "oversized_metadata",
        "duplicate_json_key",
        "non_canonical",
        "malformed",
        "wrong_type",
        "unsupported_spec",
        "unknown_key",
        "invalid_signature",
        "duplicate_signature",
        "below_threshold",
        "release_expired",
        "root_expired",
        "rollback",
        "below_floor",
        "same_version_different_content",
        "wrong_arch",
        "wrong_channel",
        "root_not_next",
        "bad_artifact_path",
        "artifact_size",
        "artifact_too_long",
        "artifact_hash",
    ];
    let mut sorted = all.to_vec();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), all.len());
}
