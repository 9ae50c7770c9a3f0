//! The one check of a release's files, used by the init (at verification, before any byte
//! is fetched or mounted) and by `phase-image verify`: artifact and hash-device paths are
//! plain file names inside the release directory, digests are hex, and dm-verity
//! parameters are ones the kernel and our builder agree on. Also the one list of files a
//! release consists of.

use crate::doc::{Artifact, Release, Verity};
use crate::hex;
use crate::verify::TrustError;

/// Longest file name accepted (the common filesystem limit).
const MAX_NAME: usize = 255;
/// The only hash algorithm releases use.
pub const VERITY_ALGORITHM: &str = "sha256";

/// A plain file name in the release directory: not empty, no `/` or NUL, no leading `.`
/// (so no `..`, no hidden files), and none of the metadata file names.
pub fn plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.contains(['/', '\0', '\\'])
        && !name.starts_with('.')
        && name != "release.json"
        && name != "root.json"
        && !name.ends_with(".root.json")
}

fn block_size_ok(b: u64) -> bool {
    b.is_power_of_two() && (512..=65536).contains(&b)
}

/// The dm-verity parameters of artifact `name` (of `size` bytes), as the kernel will be
/// given them.
fn check_verity(name: &str, size: u64, v: &Verity) -> Result<(), TrustError> {
    let bad = |field: &'static str| TrustError::BadVerity {
        name: name.into(),
        field,
    };
    if !plain_file_name(&v.hash_path) {
        return Err(TrustError::BadArtifactPath {
            name: format!("{name}.verity"),
            path: v.hash_path.clone(),
        });
    }
    if v.algorithm != VERITY_ALGORITHM {
        return Err(bad("algorithm"));
    }
    if hex::decode::<32>(&v.root_hash).is_none() {
        return Err(bad("root_hash"));
    }
    if hex::decode::<32>(&v.salt).is_none() {
        return Err(bad("salt"));
    }
    if hex::decode::<32>(&v.hash_sha256).is_none() {
        return Err(bad("hash_sha256"));
    }
    if !block_size_ok(v.data_block_size) {
        return Err(bad("data_block_size"));
    }
    if !block_size_ok(v.hash_block_size) {
        return Err(bad("hash_block_size"));
    }
    if v.data_blocks.checked_mul(v.data_block_size) != Some(size) || v.data_blocks == 0 {
        return Err(bad("data_blocks"));
    }
    if v.hash_size == 0 || !v.hash_size.is_multiple_of(v.hash_block_size) {
        return Err(bad("hash_size"));
    }
    Ok(())
}

/// Every file name and parameter of `rel` (see the module docs); names are distinct.
pub fn check(rel: &Release) -> Result<(), TrustError> {
    let mut seen: Vec<&str> = Vec::new();
    for (name, a) in rel.artifacts.iter() {
        if !plain_file_name(&a.path) || hex::decode::<32>(&a.sha256).is_none() {
            return Err(TrustError::BadArtifactPath {
                name: name.into(),
                path: a.path.clone(),
            });
        }
        seen.push(&a.path);
        if let Some(v) = &a.verity {
            check_verity(name, a.size, v)?;
            seen.push(&v.hash_path);
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    if sorted.len() != seen.len() {
        return Err(TrustError::BadArtifactPath {
            name: "artifacts".into(),
            path: "a file name used twice".into(),
        });
    }
    Ok(())
}

/// Every file a release needs, as (name, artifact): kernel, initramfs, rootfs and its
/// verity hash device (fetched and checked like an artifact: its size and SHA-256 are
/// signed). Call on a release that passed [`check`].
pub fn files(rel: &Release) -> Vec<(String, Artifact)> {
    let mut out: Vec<(String, Artifact)> = Vec::new();
    for (name, a) in rel.artifacts.iter() {
        out.push((name.to_string(), a.clone()));
        if let Some(v) = &a.verity {
            out.push((
                format!("{name}.verity"),
                Artifact {
                    path: v.hash_path.clone(),
                    size: v.hash_size,
                    sha256: v.hash_sha256.clone(),
                    verity: None,
                },
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doc::Artifacts;

    fn verity() -> Verity {
        Verity {
            hash_path: "rootfs.verity".into(),
            hash_size: 3 * 4096,
            hash_sha256: "22".repeat(32),
            root_hash: "33".repeat(32),
            salt: "44".repeat(32),
            data_blocks: 4,
            data_block_size: 4096,
            hash_block_size: 4096,
            algorithm: "sha256".into(),
        }
    }

    fn release(v: Verity) -> Release {
        let art = |p: &str, size: u64| Artifact {
            path: p.into(),
            size,
            sha256: "11".repeat(32),
            verity: None,
        };
        Release {
            doc_type: "release".into(),
            spec_version: 1,
            version: 1,
            channel: "stable".into(),
            arch: "x86_64".into(),
            expires: 0,
            cmdline: String::new(),
            artifacts: Artifacts {
                kernel: art("vmlinuz", 10),
                initramfs: art("initramfs.img", 10),
                rootfs: Some(Artifact {
                    verity: Some(v),
                    ..art("rootfs.squashfs", 4 * 4096)
                }),
            },
        }
    }

    #[test]
    fn file_names() {
        for ok in ["vmlinuz", "rootfs.squashfs", "a..b"] {
            assert!(plain_file_name(ok), "{ok}");
        }
        for bad in [
            "",
            "..",
            ".",
            "../x",
            "a/b",
            "/abs",
            ".hidden",
            "a\0b",
            "a\\b",
            "release.json",
            "root.json",
            "2.root.json",
        ] {
            assert!(!plain_file_name(bad), "{bad:?}");
        }
        assert!(!plain_file_name(&"x".repeat(256)));
    }

    #[test]
    fn verity_parameters_table() {
        assert_eq!(check(&release(verity())), Ok(()));
        assert_eq!(files(&release(verity())).len(), 4);
        type Alter = fn(&mut Verity);
        let cases: Vec<(Alter, &str)> = vec![
            (
                |v| v.hash_path = "../rootfs.verity".into(),
                "bad_artifact_path",
            ),
            (
                |v| v.hash_path = "sub/rootfs.verity".into(),
                "bad_artifact_path",
            ),
            (|v| v.hash_path = "vmlinuz".into(), "bad_artifact_path"),
            (|v| v.algorithm = "md5".into(), "bad_verity_params"),
            (|v| v.salt = "zz".repeat(32), "bad_verity_params"),
            (|v| v.salt = "44".into(), "bad_verity_params"),
            (|v| v.root_hash = "33".repeat(31), "bad_verity_params"),
            (|v| v.hash_sha256 = String::new(), "bad_verity_params"),
            (|v| v.data_block_size = 1000, "bad_verity_params"),
            (|v| v.hash_block_size = 1 << 20, "bad_verity_params"),
            (|v| v.data_blocks = 5, "bad_verity_params"),
            (|v| v.data_blocks = u64::MAX, "bad_verity_params"),
            (|v| v.hash_size = 4097, "bad_verity_params"),
        ];
        for (alter, reason) in cases {
            let mut v = verity();
            alter(&mut v);
            let e = check(&release(v.clone())).unwrap_err();
            assert_eq!(e.reason(), reason, "{v:?}");
        }
    }
}
