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
    // Domain separation: the very bytes of a valid next root, signed by the right keys,
    // but under the `release` tag (a release signature replayed as a root signature), are
    // refused; the same signatures under the `root` tag verify, so this can fail.
    let new_keys = keys(40, 1);
    let v2 = new_root(
        2,
        NOW + DAY,
        &[new_keys[0].public()],
        1,
        &[f.rel_keys[0].public()],
        1,
    )
    .unwrap();
    let under = |tag: &str| {
        let mut env = Envelope::new(&v2).unwrap();
        let input = crate::doc::signing_input(tag, &env.signed_bytes());
        for k in [&f.root_keys[0], &new_keys[0]] {
            env.signatures.push(crate::doc::SignatureEntry {
                keyid: k.key_id(),
                sig: crate::hex::encode(&k.sign(&input)),
            });
        }
        env.signatures.sort_by(|a, b| a.keyid.cmp(&b.keyid));
        env.to_bytes()
    };
    assert_eq!(
        verify_root_update(&f.root, &under("root"))
            .unwrap()
            .doc
            .version,
        2
    );
    assert_eq!(
        verify_root_update(&f.root, &under("release"))
            .unwrap_err()
            .reason(),
        "invalid_signature"
    );
    // And a root signature replayed as a release signature.
    let rel = release(1);
    let mut env = Envelope::new(&rel).unwrap();
    let input = crate::doc::signing_input("root", &env.signed_bytes());
    env.signatures.push(crate::doc::SignatureEntry {
        keyid: f.rel_keys[0].key_id(),
        sig: crate::hex::encode(&f.rel_keys[0].sign(&input)),
    });
    assert_eq!(
        reason(verify_release(&env.to_bytes(), &f.root, &policy())),
        "invalid_signature"
    );
}

#[test]
fn hash_path_outside_the_release_directory_is_refused() {
    let f = fx(1, 1);
    let mut r = release(1);
    r.artifacts.rootfs = Some(Artifact {
        verity: Some(crate::doc::Verity {
            hash_path: "../rootfs.verity".into(),
            hash_size: 4096,
            hash_sha256: "00".repeat(32),
            root_hash: "00".repeat(32),
            salt: "00".repeat(32),
            data_blocks: 1,
            data_block_size: 4096,
            hash_block_size: 4096,
            algorithm: "sha256".into(),
        }),
        ..artifact("rootfs.squashfs", &[0; 4096])
    });
    let bytes = sign(&r, &[&f.rel_keys[0]]).to_bytes();
    assert_eq!(
        reason(verify_release(&bytes, &f.root, &policy())),
        "bad_artifact_path"
    );
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

/// One value of every variant: the exhaustive match in `index` fails to compile when a
/// variant is added, and the test fails until the value list covers it.
fn every_error() -> Vec<TrustError> {
    use TrustError::*;
    let s = String::new;
    vec![
        Oversized { size: 0, max: 0 },
        DuplicateKey(s()),
        NonCanonical(crate::canonical::CanonicalError::NotCanonical(0)),
        Malformed(s()),
        WrongType {
            expected: "",
            found: s(),
        },
        UnsupportedSpec(0),
        UnknownKey { role: "" },
        InvalidSignature { keyid: s() },
        DuplicateSignature { keyid: s() },
        BelowThreshold {
            role: "",
            valid: 0,
            threshold: 0,
        },
        ReleaseExpired { expires: 0, now: 0 },
        RootExpired {
            version: 0,
            expires: 0,
            now: 0,
        },
        Rollback {
            version: 0,
            trusted: 0,
        },
        BelowFloor {
            version: 0,
            floor: 0,
        },
        SameVersionDifferentContent { version: 0 },
        WrongArch {
            want: s(),
            found: s(),
        },
        WrongChannel {
            want: s(),
            found: s(),
        },
        RootNotNext {
            trusted: 0,
            found: 0,
        },
        RootChainTooLong { max: 0 },
        BadVerity {
            name: s(),
            field: "",
        },
        BadArtifactPath {
            name: s(),
            path: s(),
        },
        ArtifactSize {
            name: s(),
            expected: 0,
            got: 0,
        },
        ArtifactTooLong {
            name: s(),
            declared: 0,
        },
        ArtifactHash { name: s() },
        ArtifactVerity { name: s() },
    ]
}

fn index(e: &TrustError) -> usize {
    use TrustError::*;
    match e {
        Oversized { .. } => 0,
        DuplicateKey(_) => 1,
        NonCanonical(_) => 2,
        Malformed(_) => 3,
        WrongType { .. } => 4,
        UnsupportedSpec(_) => 5,
        UnknownKey { .. } => 6,
        InvalidSignature { .. } => 7,
        DuplicateSignature { .. } => 8,
        BelowThreshold { .. } => 9,
        ReleaseExpired { .. } => 10,
        RootExpired { .. } => 11,
        Rollback { .. } => 12,
        BelowFloor { .. } => 13,
        SameVersionDifferentContent { .. } => 14,
        WrongArch { .. } => 15,
        WrongChannel { .. } => 16,
        RootNotNext { .. } => 17,
        RootChainTooLong { .. } => 18,
        BadVerity { .. } => 19,
        BadArtifactPath { .. } => 20,
        ArtifactSize { .. } => 21,
        ArtifactTooLong { .. } => 22,
        ArtifactHash { .. } => 23,
        ArtifactVerity { .. } => 24,
    }
}

#[test]
fn every_reason_is_distinct_and_documented() {
    let all = every_error();
    let mut seen: Vec<usize> = all.iter().map(index).collect();
    seen.sort();
    assert_eq!(seen, (0..25).collect::<Vec<_>>(), "one value per variant");
    let mut reasons: Vec<&str> = all.iter().map(|e| e.reason()).collect();
    reasons.sort();
    reasons.dedup();
    assert_eq!(reasons.len(), all.len(), "two variants share a reason");
    let doc = include_str!("../../../docs/release-format.md");
    for r in reasons {
        assert!(
            doc.contains(&format!("`{r}`")),
            "{r} is not in docs/release-format.md"
        );
    }
}
