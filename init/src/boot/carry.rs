//! Both ends of the handover between boots and stages.
//!
//! - [`run`] (the `carry` step, stage 1 after a kexec, `phase.stage=2`): the previous
//!   kernel's init appended the release it verified to this initramfs (`/phase-carry`).
//!   Nothing carried is trusted as such: the carried root chain is walked again from this
//!   initramfs's own baked-in anchor and the metadata verified against where it ends, its kernel must be the one this initramfs was built
//!   for, the verity tree's SHA-256 must match and dm-verity checks the rootfs (or, without
//!   dm-verity, the whole rootfs is hashed against its signed SHA-256). Then the rootfs is
//!   mounted and the boot goes straight to the handoff: no network, no second download.
//! - [`Handover`]: the one typed value stage 1 writes before exec'ing stage 2 and stage 2
//!   reads once.

use super::local::{assemble, fail, teardown, verity_params, wait_for};
use super::{Boot, StepError};
use crate::config::Stage;
use crate::events::Event;
use crate::kexec::decide::Offer;
use crate::paths;
use phase_release::doc::Release;
use std::io::Read;
use std::path::Path;

/// The dm-verity device over the carried rootfs.
const DM_NAME: &str = "phase-carried";

/// What stage 1 tells stage 2 (written to `paths::HANDOVER` just before the switch).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Handover {
    /// The version of the verified release whose rootfs stage 2 runs.
    pub release: u64,
}

impl Handover {
    pub fn write(&self) {
        let _ = std::fs::create_dir_all("/run/phase");
        if let Err(e) = serde_json::to_vec(self)
            .map_err(|e| e.to_string())
            .and_then(|b| std::fs::write(paths::HANDOVER, b).map_err(|e| e.to_string()))
        {
            tracing::warn!("{}: {e}", paths::HANDOVER);
        }
    }
    /// Read once by stage 2; `None` (logged) if stage 1 wrote none.
    pub fn read() -> Option<Handover> {
        let b = std::fs::read(paths::HANDOVER)
            .map_err(|e| tracing::warn!("{}: {e}", paths::HANDOVER))
            .ok()?;
        serde_json::from_slice(&b)
            .map_err(|e| tracing::warn!("{}: {e}", paths::HANDOVER))
            .ok()
    }
}

pub fn run(boot: &mut Boot) -> Result<(), StepError> {
    let dir = Path::new(paths::CARRY_DIR);
    if boot.config.stage != Stage::Two {
        return Ok(());
    }
    let meta = dir.join(paths::RELEASE_JSON);
    let artifact = meta.display().to_string();
    if !meta.exists() {
        return Err(StepError {
            reason: "carry_missing",
            message: format!(
                "phase.stage=2 but {artifact} is missing; choosing a release as stage 1"
            ),
        });
    }
    let Some(trust) = boot.trust.as_ref() else {
        return Err(fail(
            boot,
            &artifact,
            "no_trust_anchor",
            "no verified trust anchor".into(),
        ));
    };
    let mut bytes = Vec::new();
    if let Err(e) = std::fs::File::open(&meta).and_then(|f| {
        f.take(phase_release::doc::MAX_METADATA_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
    }) {
        return Err(fail(
            boot,
            &artifact,
            "meta_unreadable",
            format!("{artifact}: {e}"),
        ));
    }
    let policy = phase_release::verify::Policy {
        arch: std::env::consts::ARCH.into(),
        channel: boot.config.channel.clone(),
        now: trust.now,
        floor: trust.floor,
        trusted: None,
    };
    // The carried rotation steps are walked from this initramfs's own anchor; a step that
    // does not verify ends the walk (and the release then fails against the older root).
    let mut chain = trust.chain.clone();
    if let Some(e) = chain.walk(|v| std::fs::read(dir.join(format!("{v}.root.json"))).ok()) {
        tracing::warn!(
            "carried root chain ends at version {}: {e}",
            chain.root.version
        );
    }
    let rel: Release = match phase_release::verify::verify_release(&bytes, &chain.root, &policy) {
        Ok(v) => v.doc,
        Err(e) => {
            return Err(fail(
                boot,
                &artifact,
                e.reason(),
                format!("{artifact}: {e}"),
            ))
        }
    };
    // This initramfs belongs to one kernel: the release must name that kernel.
    let ours = std::fs::read_to_string(paths::KERNEL_SHA).unwrap_or_default();
    if !ours
        .trim()
        .eq_ignore_ascii_case(&rel.artifacts.kernel.sha256)
    {
        return Err(fail(
            boot,
            "kernel",
            "carry_kernel_mismatch",
            format!(
                "release {} names kernel {}, this initramfs was built for {}",
                rel.version,
                rel.artifacts.kernel.sha256,
                ours.trim()
            ),
        ));
    }
    let Some(rootfs) = rel.artifacts.rootfs.clone() else {
        return Err(fail(
            boot,
            &artifact,
            "no_rootfs",
            format!("release {} carries no rootfs", rel.version),
        ));
    };
    let image = dir.join(super::handoff::base_name(&rootfs.path));
    let size = std::fs::metadata(&image).map(|m| m.len()).unwrap_or(0);
    if size != rootfs.size {
        return Err(fail(
            boot,
            "rootfs",
            "carry_size_mismatch",
            format!("{}: {size} bytes, signed {}", image.display(), rootfs.size),
        ));
    }
    let device = match verified_device(boot, dir, &image, &rootfs) {
        Ok(d) => d,
        Err(e) => {
            crate::sys::dm::remove(DM_NAME);
            return Err(e);
        }
    };
    if let Err(e) = assemble(boot, &device, None) {
        teardown();
        crate::sys::dm::remove(DM_NAME);
        return Err(e);
    }
    boot.events.emit(Event::RootfsMounted {
        device,
        release: rel.version,
    });
    boot.root = Some(Offer {
        version: rel.version,
        kernel_sha256: rel.artifacts.kernel.sha256.clone(),
    });
    Ok(())
}

/// dm-verity over the carried image and tree (the tree's own SHA-256 checked first), or
/// the whole image hashed when dm-verity is unavailable.
fn verified_device(
    boot: &Boot,
    dir: &Path,
    image: &Path,
    rootfs: &phase_release::doc::Artifact,
) -> Result<String, StepError> {
    let stream_fail = |what: &str, e: phase_release::stream::StreamError| {
        let reason = match &e {
            phase_release::stream::StreamError::Trust(t) => t.reason(),
            phase_release::stream::StreamError::Io(_) => "rootfs_unreadable",
        };
        fail(boot, what, reason, format!("{what}: {e}"))
    };
    let open = |p: &Path| {
        std::fs::File::open(p).map_err(|e| {
            fail(
                boot,
                "rootfs",
                "rootfs_unreadable",
                format!("{}: {e}", p.display()),
            )
        })
    };
    if let (Some(v), true) = (&rootfs.verity, Path::new("/dev/mapper/control").exists()) {
        let tree = dir.join(super::handoff::base_name(&v.hash_path));
        let tree_artifact = phase_release::doc::Artifact {
            path: v.hash_path.clone(),
            size: v.hash_size,
            sha256: v.hash_sha256.clone(),
            verity: None,
        };
        phase_release::stream::verify_reader("rootfs.verity", &tree_artifact, open(&tree)?)
            .map_err(|e| stream_fail("rootfs.verity", e))?;
        let loop_fail = |e| fail(boot, "rootfs", "loop_failed", e);
        let data_dev = crate::sys::loopdev::attach_readonly(image).map_err(loop_fail)?;
        let hash_dev = crate::sys::loopdev::attach_readonly(&tree).map_err(loop_fail)?;
        let params = verity_params(v, &data_dev, &hash_dev);
        let target = crate::sys::dm::Target {
            start: 0,
            sectors: rootfs.size / 512,
            kind: "verity",
            params: &params,
        };
        match crate::sys::dm::create_readonly(DM_NAME, &target) {
            Ok(dev) => {
                wait_for(&dev);
                boot.events.emit(Event::RootfsVerified {
                    method: "dm-verity".into(),
                    device: dev.clone(),
                    root_hash: v.root_hash.clone(),
                });
                return Ok(dev);
            }
            Err(e) => tracing::warn!("{e}; hashing the whole carried image instead"),
        }
    }
    phase_release::stream::verify_reader("rootfs", rootfs, open(image)?)
        .map_err(|e| stream_fail("rootfs", e))?;
    let dev = crate::sys::loopdev::attach_readonly(image)
        .map_err(|e| fail(boot, "rootfs", "loop_failed", e))?;
    boot.events.emit(Event::RootfsVerified {
        method: "sha256".into(),
        device: dev.clone(),
        root_hash: rootfs.sha256.clone(),
    });
    Ok(dev)
}
