//! Tests of `phase-image` against the real inputs `make build` fetched: Debian's kernel
//! modules and config, and the built `phase` binary.

use std::path::{Path, PathBuf};
use std::process::Command;

fn top() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn need(p: PathBuf) -> PathBuf {
    assert!(
        p.exists(),
        "{} is missing: run `make build` first",
        p.display()
    );
    p
}

fn release() -> String {
    std::fs::read_to_string(need(top().join("out/kernel.version")))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("release=").map(str::to_string))
        .expect("release= line")
}

fn build_initramfs(out: &Path, epoch: &str) {
    let st = Command::new(env!("CARGO_BIN_EXE_phase-image"))
        .env("SOURCE_DATE_EPOCH", epoch)
        .args(["initramfs", "--strict", "--init"])
        .arg(need(top().join("out/phase")))
        .arg("--modules-dir")
        .arg(need(top().join("build/kernel/lib/modules").join(release())))
        .arg("--modules-list")
        .arg(top().join("initramfs/modules.txt"))
        .arg("-o")
        .arg(out)
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn initramfs_is_reproducible() {
    let dir = std::env::temp_dir().join(format!("phase-repro-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (a, b, c) = (dir.join("a.img"), dir.join("b.img"), dir.join("c.img"));
    build_initramfs(&a, "1700000000");
    build_initramfs(&b, "1700000000");
    build_initramfs(&c, "1700000001");
    let read = |p: &Path| std::fs::read(p).unwrap();
    let (a, b, c) = (read(&a), read(&b), read(&c));
    assert_eq!(a, b, "two builds from the same inputs differ");
    // The comparison can fail: a different timestamp gives different bytes.
    assert_ne!(a, c);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn strict_build_names_a_missing_module() {
    let dir = std::env::temp_dir().join(format!("phase-strict-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("list"), "loop\nno_such_module\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_phase-image"))
        .args(["initramfs", "--strict", "--init"])
        .arg(need(top().join("out/phase")))
        .arg("--modules-dir")
        .arg(top().join("build/kernel/lib/modules").join(release()))
        .arg("--modules-list")
        .arg(dir.join("list"))
        .arg("-o")
        .arg(dir.join("x.img"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing modules: no_such_module"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn debian_kernel_config_meets_requirements() {
    let run = |config: &Path| {
        Command::new(env!("CARGO_BIN_EXE_phase-image"))
            .args(["kernel-config", "--config"])
            .arg(config)
            .arg("--required")
            .arg(top().join("kernel-config/required.txt"))
            .output()
            .unwrap()
    };
    let ok = run(&need(top().join("out/kernel.config")));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // Without KEXEC_FILE the same check fails and names the option.
    let cfg = std::fs::read_to_string(top().join("out/kernel.config")).unwrap();
    let bad = std::env::temp_dir().join(format!("phase-kconfig-{}", std::process::id()));
    let broken = cfg.replace("CONFIG_KEXEC_FILE=y", "# CONFIG_KEXEC_FILE is not set");
    std::fs::write(&bad, broken).unwrap();
    let out = run(&bad);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("CONFIG_KEXEC_FILE: want y, have not set"),
        "{err}"
    );
    let _ = std::fs::remove_file(bad);
}
