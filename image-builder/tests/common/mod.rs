//! Helpers the `phase-image` integration tests share: paths, scratch directories, and
//! running the built binary with a fixed SOURCE_DATE_EPOCH.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn top() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A fresh scratch directory for one test.
pub fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("phase-image-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Run `phase-image ARGS` (SOURCE_DATE_EPOCH=1800000000).
pub fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_phase-image"))
        .env("SOURCE_DATE_EPOCH", "1800000000")
        .args(args)
        .output()
        .unwrap()
}

/// Run `phase-image ARGS`, which must succeed; its stdout.
pub fn ok(args: &[&str]) -> String {
    let o = run(args);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}
