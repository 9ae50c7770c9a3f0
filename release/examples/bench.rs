//! `make bench` part for signed releases: time to verify a release, and SHA-256 streaming
//! throughput of the artifact verifier against `sha256sum` on the same file.
//!
//! Usage: cargo run --release -p phase-release --example bench [FILE]
//! FILE defaults to a 512 MiB file of pseudo-random bytes made in the temp directory.

use phase_release::doc::{new_root, Artifact, Artifacts, Envelope, Release};
use phase_release::keys::Keypair;
use phase_release::verify::{verify_release, Policy};
use std::time::Instant;

fn main() {
    // Release verification: a 2-of-3 release role, like a real deployment.
    let root_key = Keypair::from_seed(&[1; 32]);
    let rel_keys: Vec<Keypair> = (0..3).map(|i| Keypair::from_seed(&[10 + i; 32])).collect();
    let pubs: Vec<_> = rel_keys.iter().map(|k| k.public()).collect();
    let root = new_root(1, u64::MAX, &[root_key.public()], 1, &pubs, 2).expect("root");
    let art = |p: &str| Artifact {
        path: p.into(),
        size: 1,
        sha256: "00".repeat(32),
        verity: None,
    };
    let rel = Release {
        doc_type: "release".into(),
        spec_version: 1,
        version: 7,
        channel: "stable".into(),
        arch: "x86_64".into(),
        expires: u64::MAX,
        cmdline: "console=ttyS0 quiet".into(),
        artifacts: Artifacts {
            kernel: art("vmlinuz"),
            initramfs: art("initramfs.img"),
            rootfs: Some(art("rootfs.squashfs")),
        },
    };
    let mut env = Envelope::new(&rel).expect("envelope");
    env.sign(&rel_keys[0]).expect("sign");
    env.sign(&rel_keys[1]).expect("sign");
    let bytes = env.to_bytes();
    let policy = Policy {
        arch: "x86_64".into(),
        channel: "stable".into(),
        now: 1_800_000_000,
        floor: 0,
        trusted: None,
    };
    let n = 500;
    let t = Instant::now();
    for _ in 0..n {
        verify_release(&bytes, &root, &policy).expect("verifies");
    }
    let per = t.elapsed().as_secs_f64() / n as f64;
    println!(
        "verify release (2-of-3 signatures, {} bytes): {:.0} us per release ({n} runs)",
        bytes.len(),
        per * 1e6
    );

    // SHA-256 streaming throughput.
    let path = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(make_file);
    let size = std::fs::metadata(&path).expect("bench file").len();
    let out = std::process::Command::new("sha256sum")
        .arg(&path)
        .output()
        .expect("sha256sum");
    let digest = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string();
    let artifact = Artifact {
        path: "x".into(),
        size,
        sha256: digest,
        verity: None,
    };
    let best = |f: &dyn Fn()| {
        (0..3)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .fold(f64::MAX, f64::min)
    };
    let ours = best(&|| {
        let f = std::fs::File::open(&path).expect("open");
        phase_release::stream::verify_reader("bench", &artifact, f)
            .expect("hash matches sha256sum");
    });
    let theirs = best(&|| {
        let st = std::process::Command::new("sha256sum")
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("sha256sum");
        assert!(st.success());
    });
    let mib = size as f64 / 1048576.0;
    println!(
        "sha256 stream, {mib:.0} MiB (page cache warm, best of 3): phase {:.0} MiB/s, sha256sum {:.0} MiB/s, ratio {:.2} (goal >= 0.9)",
        mib / ours,
        mib / theirs,
        theirs / ours
    );
}

fn make_file() -> std::path::PathBuf {
    let p = std::env::temp_dir().join("phase-bench-512MiB.bin");
    if std::fs::metadata(&p).map(|m| m.len()).ok() != Some(512 << 20) {
        let mut data = vec![0u8; 512 << 20];
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for chunk in data.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        std::fs::write(&p, &data).expect("write bench file");
    }
    p
}
