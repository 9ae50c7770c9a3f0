//! Stage 1's half of serving a disk-booted node's release: once the local step verified and
//! mounted the release on its boot medium, gather it (verified) into
//! [`paths::MEDIUM_RELEASE`], which stage 2 serves and announces like a diskless node's
//! fetched release (`boot/serve.rs`). Not in private mode, which serves nothing. A failure
//! is `verify.failed` (a file that differs from what `release.json` signs) and/or
//! `fallback {step: serve}`, and the node boots without serving.

use super::Boot;
use crate::events::Event;
use crate::paths;
use crate::provider::medium::{gather, Sources};
use phase_layout::gpt::Partition;
use phase_layout::part_type;
use phase_release::doc::Release;
use std::path::Path;

/// `disk` and its partitions carry `release` (whose metadata, as verified, is
/// `release_json`), mounted from the verified `rootfs_dev`.
pub fn gather_release(
    boot: &Boot,
    disk: &str,
    parts: &[Partition],
    release: &Release,
    release_json: &[u8],
    rootfs_dev: &str,
) {
    let plan = crate::discover::announce_plan(boot.config.mode);
    if !plan.lan && !plan.dht {
        return;
    }
    let fallback = |reason: &str| {
        boot.events.emit(Event::Fallback {
            step: "serve".into(),
            reason: reason.into(),
        })
    };
    let (Some(esp), Some(verity)) = (
        parts.iter().find(|p| p.type_guid == part_type::ESP),
        release
            .artifacts
            .rootfs
            .as_ref()
            .and_then(|r| r.verity.as_ref())
            .and_then(|v| super::local::locate(parts, v).ok())
            .map(|(_, hash)| hash),
    ) else {
        // A release disk without an ESP (out/rootfs-disk.img) has no kernel to serve.
        tracing::info!("/dev/{disk}: no ESP with the release's kernel; this node serves nothing");
        return;
    };
    let (esp, verity) = (
        super::local::part_dev(disk, esp.number),
        super::local::part_dev(disk, verity.number),
    );
    let chain = boot
        .trust
        .as_ref()
        .map(|t| t.chain.steps.clone())
        .unwrap_or_default();
    let src = Sources {
        release_json,
        release,
        chain: &chain,
        esp: Path::new(&esp),
        verity: Path::new(&verity),
        rootfs: Path::new(rootfs_dev),
    };
    match gather(&src, Path::new(paths::MEDIUM_RELEASE)) {
        Ok(bytes) => tracing::info!(
            "release {} gathered for serving into {} ({bytes} bytes checked and copied; the rootfs is {rootfs_dev})",
            release.version,
            paths::MEDIUM_RELEASE
        ),
        Err(e) => {
            tracing::warn!("{e}; this node will not serve its release");
            if let Some(artifact) = e.artifact() {
                boot.events.emit(Event::VerifyFailed {
                    artifact: artifact.into(),
                    reason: e.reason().into(),
                    provider: None,
                });
            }
            fallback(e.reason());
        }
    }
}
