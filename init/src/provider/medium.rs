//! A disk-booted node's release, gathered into a directory its provider serves (called by
//! stage 1 once the local step verified and mounted the release). Nothing goes in that was
//! not verified:
//! - `release.json` and the `N.root.json` chain: the bytes the local step verified;
//! - the kernel and initramfs: read from the ESP's FAT filesystem (`fatfs`, through a
//!   reader that refuses every write: no mount, no kernel module) into RAM, each checked
//!   against the size and SHA-256 that `release.json` signs, and deleted if it differs;
//! - the verity hash device: the first `hash_size` bytes of its partition into RAM,
//!   checked the same way;
//! - the rootfs: not copied, a symlink to the device the boot mounted (dm-verity, which
//!   checks every block read against the signed root hash, or the RAM copy checked by its
//!   tree); the provider serves it with its signed size and SHA-256 (see
//!   [`super::serve::Pinned`]).
//!
//! The metadata goes in last: a directory with `release.json` is complete.

use phase_release::doc::{Artifact, Release};
use phase_release::stream::ArtifactVerifier;
use phase_release::verify::TrustError;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// Where each file of the release comes from.
pub struct Sources<'a> {
    /// The verified metadata, exactly as on the meta partition.
    pub release_json: &'a [u8],
    pub release: &'a Release,
    /// The verified root chain (`(version, N.root.json)`), served so peers can rotate.
    pub chain: &'a [(u64, Vec<u8>)],
    /// The ESP (a partition device, or in tests a FAT image file).
    pub esp: &'a Path,
    /// The verity hash partition.
    pub verity: &'a Path,
    /// The verified device the rootfs is mounted from.
    pub rootfs: &'a Path,
}

#[derive(Debug, thiserror::Error)]
pub enum GatherError {
    #[error("{device}: not a readable FAT filesystem: {detail}")]
    EspUnreadable { device: String, detail: String },
    #[error("{device}: {path}: {detail}")]
    EspFileMissing {
        device: String,
        path: String,
        detail: String,
    },
    #[error("{source_path}: {detail}")]
    Read { source_path: String, detail: String },
    #[error("{source_path}: {source}")]
    Verify {
        source_path: String,
        #[source]
        source: TrustError,
    },
    #[error("{path}: {detail}")]
    Write { path: String, detail: String },
    #[error("release {0} carries no rootfs")]
    NoRootfs(u64),
}

impl GatherError {
    pub fn reason(&self) -> &'static str {
        match self {
            GatherError::EspUnreadable { .. } => "esp_unreadable",
            GatherError::EspFileMissing { .. } => "esp_file_missing",
            GatherError::Read { .. } => "read_failed",
            GatherError::Verify { source, .. } => source.reason(),
            GatherError::Write { .. } => "write_failed",
            GatherError::NoRootfs(_) => "no_rootfs",
        }
    }
    /// The artifact this error is about, for `verify.failed`.
    pub fn artifact(&self) -> Option<&str> {
        match self {
            GatherError::Verify { source_path, .. } => Some(source_path),
            _ => None,
        }
    }
}

/// Gather the release of `src` into `out` (created empty). Returns the bytes copied into RAM.
/// On any error `out` is removed: a node serves its whole verified release or nothing.
pub fn gather(src: &Sources, out: &Path) -> Result<u64, GatherError> {
    let _ = std::fs::remove_dir_all(out);
    let r = gather_into(src, out);
    if r.is_err() {
        let _ = std::fs::remove_dir_all(out);
    }
    r
}

fn gather_into(src: &Sources, out: &Path) -> Result<u64, GatherError> {
    let write_err = |p: &Path, e: std::io::Error| GatherError::Write {
        path: p.display().to_string(),
        detail: e.to_string(),
    };
    std::fs::create_dir_all(out).map_err(|e| write_err(out, e))?;
    let rel = src.release;
    let rootfs = rel
        .artifacts
        .rootfs
        .as_ref()
        .ok_or(GatherError::NoRootfs(rel.version))?;
    let mut copied = 0;
    // The kernel and initramfs, from the ESP.
    let esp_name = src.esp.display().to_string();
    let device = std::fs::File::open(src.esp).map_err(|e| GatherError::EspUnreadable {
        device: esp_name.clone(),
        detail: e.to_string(),
    })?;
    let fs = fatfs::FileSystem::new(ReadOnly(device), fatfs::FsOptions::new()).map_err(|e| {
        GatherError::EspUnreadable {
            device: esp_name.clone(),
            detail: e.to_string(),
        }
    })?;
    for (on_esp, a) in [
        (phase_layout::esp::KERNEL, &rel.artifacts.kernel),
        (phase_layout::esp::INITRAMFS, &rel.artifacts.initramfs),
    ] {
        let file = fs
            .root_dir()
            .open_file(on_esp)
            .map_err(|e| GatherError::EspFileMissing {
                device: esp_name.clone(),
                path: on_esp.into(),
                detail: e.to_string(),
            })?;
        let from = format!("{esp_name}:{on_esp}");
        // One byte past the signed size is enough to tell a longer file.
        copied += copy_verified(file.take(a.size + 1), &from, a, &out.join(&a.path))?;
    }
    drop(fs);
    // The verity hash device: the partition is padded past it.
    if let Some(v) = &rootfs.verity {
        let a = Artifact {
            path: v.hash_path.clone(),
            size: v.hash_size,
            sha256: v.hash_sha256.clone(),
            verity: None,
        };
        let from = src.verity.display().to_string();
        let f = std::fs::File::open(src.verity).map_err(|e| GatherError::Read {
            source_path: from.clone(),
            detail: e.to_string(),
        })?;
        copied += copy_verified(f.take(v.hash_size), &from, &a, &out.join(&a.path))?;
    }
    // The rootfs: served from the verified device itself.
    let link = out.join(&rootfs.path);
    std::os::unix::fs::symlink(src.rootfs, &link).map_err(|e| write_err(&link, e))?;
    for (v, bytes) in src.chain {
        let p = out.join(format!("{v}.root.json"));
        std::fs::write(&p, bytes).map_err(|e| write_err(&p, e))?;
    }
    let p = out.join(crate::paths::RELEASE_JSON);
    std::fs::write(&p, src.release_json).map_err(|e| write_err(&p, e))?;
    Ok(copied)
}

/// Copy `from` into `to` through a verifier of `a`; `to` is deleted unless it matches.
fn copy_verified(from: impl Read, name: &str, a: &Artifact, to: &Path) -> Result<u64, GatherError> {
    let r = pump(from, name, a, to);
    if r.is_err() {
        let _ = std::fs::remove_file(to);
    }
    r.map(|()| a.size)
}

fn pump(mut from: impl Read, name: &str, a: &Artifact, to: &Path) -> Result<(), GatherError> {
    let verify = |source: TrustError| GatherError::Verify {
        source_path: name.to_string(),
        source,
    };
    let write = |e: std::io::Error| GatherError::Write {
        path: to.display().to_string(),
        detail: e.to_string(),
    };
    let mut v = ArtifactVerifier::new(name, a).map_err(verify)?;
    let mut out = std::fs::File::create(to).map_err(write)?;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(GatherError::Read {
                    source_path: name.to_string(),
                    detail: e.to_string(),
                })
            }
        };
        v.update(&buf[..n]).map_err(verify)?;
        out.write_all(&buf[..n]).map_err(write)?;
    }
    v.finish().map_err(verify)
}

/// A device opened for reading, which `fatfs` may only read: every write fails.
struct ReadOnly(std::fs::File);

impl Read for ReadOnly {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl Seek for ReadOnly {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.0.seek(pos)
    }
}

impl Write for ReadOnly {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        Err(std::io::Error::from_raw_os_error(
            rustix::io::Errno::ROFS.raw_os_error(),
        ))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
