//! `phase-image verity` against cryptsetup's `veritysetup`: the same bytes as `veritysetup
//! format` with the same salt and UUID, accepted by `veritysetup verify`, and rejected once
//! a data byte changes. Needs veritysetup (cryptsetup-bin, installed by scripts/setup.sh).

use std::process::{Command, Output};

mod common;
use common::{s, tmp};

fn veritysetup(args: &[&str]) -> Output {
    Command::new("veritysetup")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("veritysetup: {e} (install cryptsetup-bin: scripts/setup.sh)"))
}

/// A `Name: value` line of veritysetup's output.
fn field(text: &str, name: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {name:?} in {text}"))
        .trim()
        .to_string()
}

fn check(blocks: usize) {
    let d = tmp(&blocks.to_string());
    let data = d.join("data");
    let bytes: Vec<u8> = (0..blocks * 4096)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3])
        .collect();
    std::fs::write(&data, &bytes).unwrap();
    let hash = d.join("data.verity");
    let o = Command::new(env!("CARGO_BIN_EXE_phase-image"))
        .args(["verity", s(&data), "-o", s(&hash)])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("data.verity.json")).unwrap()).unwrap();
    let root = v["root_hash"].as_str().unwrap();
    let salt = v["salt"].as_str().unwrap();

    // Byte for byte what veritysetup writes with our salt and UUID.
    let dump = veritysetup(&["dump", s(&hash)]);
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let dump = String::from_utf8_lossy(&dump.stdout).into_owned();
    let uuid = field(&dump, "UUID");
    assert_eq!(field(&dump, "Data blocks"), blocks.to_string());
    assert_eq!(field(&dump, "Hash algorithm"), "sha256");
    let reference = d.join("reference");
    let f = veritysetup(&[
        "format",
        &format!("--salt={salt}"),
        &format!("--uuid={uuid}"),
        s(&data),
        s(&reference),
    ]);
    assert!(f.status.success(), "{}", String::from_utf8_lossy(&f.stderr));
    assert_eq!(
        field(&String::from_utf8_lossy(&f.stdout), "Root hash"),
        root
    );
    assert!(
        std::fs::read(&reference).unwrap() == std::fs::read(&hash).unwrap(),
        "hash device differs from veritysetup's for {blocks} blocks"
    );

    let ok = veritysetup(&["verify", s(&data), s(&hash), root]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 2] ^= 1;
    std::fs::write(&data, &flipped).unwrap();
    let bad = veritysetup(&["verify", s(&data), s(&hash), root]);
    assert!(!bad.status.success(), "a flipped data byte was accepted");
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn one_block() {
    check(1);
}

#[test]
fn one_full_leaf_block() {
    check(128);
}

#[test]
fn two_levels() {
    check(129);
}

#[test]
fn three_levels() {
    check(128 * 128 + 1);
}

#[test]
fn unpadded_data_is_refused() {
    let d = tmp("unpadded");
    std::fs::write(d.join("data"), [1u8; 4097]).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_phase-image"))
        .args(["verity", s(&d.join("data")), "-o", s(&d.join("h"))])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("multiple of 4096"));
    let _ = std::fs::remove_dir_all(d);
}
