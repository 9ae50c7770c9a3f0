//! `phase-image keygen | root | release | sign | verify`, end to end through the binary.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::{ok, run, s, tmp, top};

/// `verify` fails with exactly one line naming the reason.
fn verify_fails(root: &Path, dir: &Path, reason: &str) {
    let o = run(&["verify", "--now", "1800000100", "--root", s(root), s(dir)]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!("verify failed: {reason}: ")),
        "{err}"
    );
}

fn keygen(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let out = ok(&["keygen", "--out-dir", s(dir), "--name", name]);
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("key id      "))
        .unwrap()
        .to_string();
    let public: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join(format!("{name}.pub"))).unwrap()).unwrap();
    // The printed ID is the SHA-256 of the public key bytes.
    let pk = public["public"].as_str().unwrap();
    let bytes: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&pk[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let sha = Command::new("sha256sum")
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    let mut sha = sha;
    sha.stdin.take().unwrap().write_all(&bytes).unwrap();
    let digest = String::from_utf8(sha.wait_with_output().unwrap().stdout).unwrap();
    assert_eq!(digest.split_whitespace().next().unwrap(), id);
    (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.pub")),
    )
}

#[test]
fn keygen_writes_private_key_0600_and_never_overwrites() {
    use std::os::unix::fs::PermissionsExt;
    let d = tmp("keygen");
    let (k, _) = keygen(&d, "a");
    assert_eq!(
        std::fs::metadata(&k).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let again = run(&["keygen", "--out-dir", s(&d), "--name", "a"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("refusing to overwrite"));
}

#[test]
fn threshold_release_rotation_and_tampering() {
    let d = tmp("flow");
    let (r1k, r1p) = keygen(&d, "root1");
    let (a_k, a_p) = keygen(&d, "relA");
    let (b_k, b_p) = keygen(&d, "relB");
    let root1 = d.join("root1.json");
    ok(&[
        "root",
        "--root-key",
        s(&r1p),
        "--release-key",
        s(&a_p),
        "--release-key",
        s(&b_p),
        "--release-threshold",
        "2",
        "--sign",
        s(&r1k),
        "-o",
        s(&root1),
    ]);
    std::fs::write(d.join("vmlinuz"), b"kernel bytes").unwrap();
    std::fs::write(d.join("initramfs.img"), b"initramfs bytes").unwrap();
    let rel = d.join("rel");
    ok(&[
        "release",
        "--root",
        s(&root1),
        "--version",
        "5",
        "--kernel",
        s(&d.join("vmlinuz")),
        "--initramfs",
        s(&d.join("initramfs.img")),
        "--sign",
        s(&a_k),
        "--out-dir",
        s(&rel),
    ]);
    // One of two release signatures: below threshold until a second holder signs.
    verify_fails(&root1, &rel, "below_threshold");
    ok(&["sign", "--key", s(&b_k), s(&rel.join("release.json"))]);
    let good = ok(&[
        "verify",
        "--now",
        "1800000100",
        "--root",
        s(&root1),
        s(&rel),
    ]);
    assert!(good.contains("release 5"), "{good}");
    // Expired, wrong channel, below floor: named.
    let o = run(&[
        "verify",
        "--now",
        "1808640000",
        "--root",
        s(&root1),
        s(&rel),
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).starts_with("verify failed: release_expired"));
    let o = run(&[
        "verify",
        "--now",
        "1800000100",
        "--channel",
        "beta",
        "--root",
        s(&root1),
        s(&rel),
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).starts_with("verify failed: wrong_channel"));
    let o = run(&[
        "verify",
        "--now",
        "1800000100",
        "--floor",
        "6",
        "--root",
        s(&root1),
        s(&rel),
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).starts_with("verify failed: below_floor"));

    // A flipped byte in an artifact.
    let kernel = rel.join("vmlinuz");
    let mut bytes = std::fs::read(&kernel).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&kernel, &bytes).unwrap();
    verify_fails(&root1, &rel, "artifact_hash");
    bytes[0] ^= 1;
    std::fs::write(&kernel, &bytes).unwrap();

    // Rotation: root 2 with a new root key, signed by old and new.
    let (r2k, r2p) = keygen(&d, "root2");
    let root2 = d.join("root2.json");
    // Signed by the new key only: refused before anything is written.
    let o = run(&[
        "root",
        "--previous",
        s(&root1),
        "--root-key",
        s(&r2p),
        "--release-key",
        s(&a_p),
        "--sign",
        s(&r2k),
        "-o",
        s(&root2),
    ]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("unknown_key"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!root2.exists());
    ok(&[
        "root",
        "--previous",
        s(&root1),
        "--root-key",
        s(&r2p),
        "--release-key",
        s(&a_p),
        "--sign",
        s(&r1k),
        "--sign",
        s(&r2k),
        "-o",
        s(&root2),
    ]);
    // A release under root 2 (threshold 1, key A), published with the history.
    let rel2 = d.join("rel2");
    ok(&[
        "release",
        "--root",
        s(&root2),
        "--root-history",
        s(&root1),
        "--version",
        "6",
        "--kernel",
        s(&d.join("vmlinuz")),
        "--initramfs",
        s(&d.join("initramfs.img")),
        "--sign",
        s(&a_k),
        "--out-dir",
        s(&rel2),
    ]);
    // A client that trusts root 1 walks 1 → 2 and accepts it.
    let walked = ok(&[
        "verify",
        "--now",
        "1800000100",
        "--root",
        s(&root1),
        s(&rel2),
    ]);
    assert!(walked.contains("root version 2"), "{walked}");
    // Without 2.root.json the chain has a missing link: root 1 cannot vouch for key A alone.
    std::fs::remove_file(rel2.join("2.root.json")).unwrap();
    verify_fails(&root1, &rel2, "below_threshold");
}

/// The release `make build` signed with the test keys verifies against the root it wrote.
#[test]
fn built_release_verifies() {
    let root = top().join("out/trusted-root.json");
    let rel = top().join("out/release");
    assert!(root.exists() && rel.exists(), "run `make build` first");
    let out = ok(&["verify", "--root", s(&root), s(&rel)]);
    // kernel and initramfs, and the rootfs with its hash device once `make build` adds it.
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(rel.join("release.json")).unwrap()).unwrap();
    let artifacts = doc["signed"]["artifacts"].as_object().unwrap();
    assert!(
        out.contains(&format!("{} artifacts ok", artifacts.len())),
        "{out}"
    );
    if artifacts
        .get("rootfs")
        .is_some_and(|r| r.get("verity").is_some())
    {
        assert!(out.contains("1 verity hash device"), "{out}");
    }
}

/// Data of `blocks` 4096-byte blocks that differs per `seed`.
fn blocks(blocks: usize, seed: u8) -> Vec<u8> {
    (0..blocks * 4096)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed ^ (i / 4096) as u8)
        .collect()
}

/// A rootfs with its dm-verity tree: the release carries the root hash, ships the hash
/// device, and `verify` checks the hash device's size and SHA-256 like an artifact's.
#[test]
fn release_with_rootfs_verity() {
    let d = tmp("verity");
    let (rk, rp) = keygen(&d, "root");
    let root = d.join("root.json");
    ok(&[
        "root",
        "--root-key",
        s(&rp),
        "--release-key",
        s(&rp),
        "--sign",
        s(&rk),
        "-o",
        s(&root),
    ]);
    std::fs::write(d.join("vmlinuz"), b"kernel bytes").unwrap();
    std::fs::write(d.join("initramfs.img"), b"initramfs bytes").unwrap();
    let img = d.join("rootfs.squashfs");
    std::fs::write(&img, blocks(130, 1)).unwrap();
    ok(&["verity", s(&img), "-o", s(&d.join("rootfs.verity"))]);
    let json = d.join("rootfs.verity.json");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(v["hash_path"], "rootfs.verity");
    assert_eq!(v["data_blocks"], 130);
    // 130 blocks: superblock, top block, two leaf blocks.
    assert_eq!(v["hash_size"], 4 * 4096);

    let release = |out: &Path, verity: &Path| {
        run(&[
            "release",
            "--root",
            s(&root),
            "--version",
            "1",
            "--kernel",
            s(&d.join("vmlinuz")),
            "--initramfs",
            s(&d.join("initramfs.img")),
            "--rootfs",
            s(&img),
            "--rootfs-verity",
            s(verity),
            "--sign",
            s(&rk),
            "--out-dir",
            s(out),
        ])
    };
    let rel = d.join("rel");
    let o = release(&rel, &json);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout)
        .contains(&format!("root hash {}", v["root_hash"].as_str().unwrap())));
    let signed: serde_json::Value =
        serde_json::from_slice(&std::fs::read(rel.join("release.json")).unwrap()).unwrap();
    assert_eq!(signed["signed"]["artifacts"]["rootfs"]["verity"], v);
    let good = ok(&["verify", "--now", "1800000100", "--root", s(&root), s(&rel)]);
    assert!(
        good.contains("3 artifacts ok, 1 verity hash device"),
        "{good}"
    );

    // Signed metadata whose hash_path leaves the release directory is refused by the
    // check the init shares (phase_release::artifact), even with valid signatures.
    let original = std::fs::read(rel.join("release.json")).unwrap();
    for (field, value, reason) in [
        (
            "hash_path",
            serde_json::json!("../rootfs.verity"),
            "bad_artifact_path",
        ),
        ("salt", serde_json::json!("not hex"), "bad_verity_params"),
        ("algorithm", serde_json::json!("sha1"), "bad_verity_params"),
    ] {
        let mut env: serde_json::Value = serde_json::from_slice(&original).unwrap();
        env["signed"]["artifacts"]["rootfs"]["verity"][field] = value;
        env["signatures"] = serde_json::json!([]);
        std::fs::write(
            rel.join("release.json"),
            phase_release::canonical::encode(&env),
        )
        .unwrap();
        ok(&["sign", "--key", s(&rk), s(&rel.join("release.json"))]);
        verify_fails(&root, &rel, reason);
    }
    std::fs::write(rel.join("release.json"), &original).unwrap();

    // The hash device is checked like an artifact: altered, short, missing.
    let hash = rel.join("rootfs.verity");
    let bytes = std::fs::read(&hash).unwrap();
    let mut bad = bytes.clone();
    bad[4096] ^= 1;
    std::fs::write(&hash, &bad).unwrap();
    verify_fails(&root, &rel, "artifact_hash");
    std::fs::write(&hash, &bytes[..4096]).unwrap();
    verify_fails(&root, &rel, "artifact_size");
    std::fs::remove_file(&hash).unwrap();
    verify_fails(&root, &rel, "artifact_missing");

    // A tree of other data, or metadata that does not describe its hash file, is refused
    // before anything is signed.
    let other = d.join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("data"), blocks(130, 2)).unwrap();
    ok(&[
        "verity",
        s(&other.join("data")),
        "-o",
        s(&other.join("rootfs.verity")),
    ]);
    let o = release(&d.join("rel-other"), &other.join("rootfs.verity.json"));
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("does not match the rootfs"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let mut lying = v.clone();
    lying["hash_size"] = serde_json::json!(4096);
    std::fs::write(d.join("lying.json"), lying.to_string()).unwrap();
    let o = release(&d.join("rel-lying"), &d.join("lying.json"));
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("says 4096"));
    // --rootfs-verity needs --rootfs.
    let o = run(&[
        "release",
        "--root",
        s(&root),
        "--version",
        "1",
        "--kernel",
        s(&d.join("vmlinuz")),
        "--initramfs",
        s(&d.join("initramfs.img")),
        "--rootfs-verity",
        s(&json),
        "--out-dir",
        s(&d.join("rel-none")),
    ]);
    assert!(!o.status.success());
    let _ = std::fs::remove_dir_all(d);
}
