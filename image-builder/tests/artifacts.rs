//! Tests of `phase-image` against the real inputs `make build` fetched: Debian's kernel
//! modules and config, and the built `phase` binary.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::top;

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

/// `phase-image rootfs` on the real modules tree: squashfs-tools' `unsquashfs` reads it
/// (zstd, owner root, the boot tests' marker file, the init, the modules the initramfs does
/// not carry), and `veritysetup verify` accepts its hash device and root hash.
#[test]
fn rootfs_holds_the_system_and_verifies() {
    let dir = std::env::temp_dir().join(format!("phase-rootfs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let img = dir.join("rootfs.squashfs");
    let out = Command::new(env!("CARGO_BIN_EXE_phase-image"))
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args(["rootfs", "--version", "9", "--init"])
        .arg(need(top().join("out/phase")))
        .arg("--modules-dir")
        .arg(need(top().join("build/kernel/lib/modules").join(release())))
        .arg("--initramfs-modules")
        .arg(top().join("initramfs/modules.txt"))
        .arg("--tree")
        .arg(top().join("rootfs"))
        .arg("-o")
        .arg(&img)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&img).unwrap();
    assert_eq!(bytes.len() % 4096, 0);

    let unsquashfs = |args: &[&str]| {
        let o = Command::new("unsquashfs")
            .env("TZ", "UTC")
            .args(args)
            .arg(&img)
            .output()
            .expect("unsquashfs (squashfs-tools): run scripts/setup.sh");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert!(unsquashfs(&["-s"]).contains("Compression zstd"));
    let cat = |path: &str| {
        let o = Command::new("unsquashfs")
            .arg("-cat")
            .arg(&img)
            .arg(path)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{path}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        o.stdout
    };
    assert_eq!(cat("usr/share/phase/hello.txt"), b"phase-rootfs-ok");
    assert!(String::from_utf8(cat("etc/os-release"))
        .unwrap()
        .contains("VERSION_ID=9\n"));
    assert!(cat("usr/lib/phase/phase") == std::fs::read(top().join("out/phase")).unwrap());
    let listing = unsquashfs(&["-lln"]);
    let base = format!("squashfs-root/lib/modules/{}", release());
    let mut modules = 0;
    for l in listing.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        assert_eq!(f[1], "0/0", "{l}");
        // SOURCE_DATE_EPOCH everywhere (backhand cannot stamp the root directory).
        if f[5] != "squashfs-root" {
            assert_eq!(f[3..5].join(" "), "2023-11-14 22:13", "{l}");
        }
        modules += usize::from(l.ends_with(".ko"));
    }
    let has = |suffix: &str| listing.lines().any(|l| l.ends_with(suffix));
    assert!(has(&format!("{base}/modules.dep")) && has(&format!("{base}/modules.builtin")));
    assert!(has("squashfs-root/usr/lib/phase/phase") && has("squashfs-root/var/lib/phase"));
    // In the initramfs, so not here; everything else is.
    assert!(!has("/virtio_blk.ko") && !has("/dm-verity.ko"));
    assert!(has("/e1000e.ko"));
    assert!(modules > 3000, "{modules} modules");

    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("rootfs.verity.json")).unwrap()).unwrap();
    assert_eq!(v["hash_path"], "rootfs.verity");
    assert_eq!(
        v["data_blocks"].as_u64().unwrap() * 4096,
        bytes.len() as u64
    );
    let st = Command::new("veritysetup")
        .arg("verify")
        .arg(&img)
        .arg(dir.join("rootfs.verity"))
        .arg(v["root_hash"].as_str().unwrap())
        .status()
        .expect("veritysetup (cryptsetup-bin): run scripts/setup.sh");
    assert!(st.success());
    let _ = std::fs::remove_dir_all(dir);
}
