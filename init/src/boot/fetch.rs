//! Diskless boot: with no local release, ask the providers (`phase.provider=`) for the
//! newest release that verifies and, when its kernel is the running one, download its
//! rootfs into RAM (verified as it arrives), mount it and go on to the handoff.

use super::local::{assemble, fail, teardown, RAM_COPY};
use super::{Boot, StepError};
use crate::events::Event;

/// The SHA-256 of the kernel this initramfs was built for (written by the build).
pub const KERNEL_SHA_PATH: &str = "/etc/phase/kernel.sha256";

/// Diskless boot: with no local release, ask the providers, verify, and when the chosen
/// release's kernel is the one running, download its rootfs into RAM (verified as it
/// arrives), mount it and go on to the handoff. A different kernel needs kexec, which
/// this init does not do yet: that is a `fallback` with reason `kexec_needed`.
pub async fn run(boot: &mut Boot) -> Result<(), StepError> {
    if boot.rootfs_ready || boot.net.is_none() || boot.config.providers.is_empty() {
        return Ok(());
    }
    let Some(trust) = boot.trust.as_mut() else {
        return Err(StepError {
            reason: "no_trust_anchor",
            message: "no verified trust anchor".into(),
        });
    };
    let mut providers = Vec::new();
    for p in &boot.config.providers {
        match crate::fetch::Url::parse(p) {
            Ok(u) => providers.push(u),
            Err(e) => boot.events.emit(Event::Fallback {
                step: format!("provider {p}"),
                reason: match e {
                    crate::fetch::url::UrlError::HttpsUnsupported => "https_unsupported".into(),
                    _ => "bad_url".into(),
                },
            }),
        }
    }
    let state = trust.store.load().unwrap_or_default();
    let policy = phase_release::verify::Policy {
        arch: std::env::consts::ARCH.into(),
        channel: boot.config.channel.clone(),
        now: trust.now.max(state.time),
        floor: trust.floor,
        trusted: state.trusted_release(),
    };
    let root = trust.root.clone();
    let limits = crate::fetch::Limits::default();
    let events = boot.events.clone();
    let mut on_meta = |u: &crate::fetch::Url, o: &crate::fetch::release::MetaOutcome| {
        crate::fetch::report::metadata(&events, u, o)
    };
    let Some(choice) =
        crate::fetch::release::choose(&providers, &root, &policy, &limits, &mut on_meta).await
    else {
        return Err(StepError {
            reason: "no_verified_release",
            message: "no provider served a release that verifies".into(),
        });
    };
    let rel = &choice.release;
    boot.events.emit(Event::ReleaseVerified {
        version: rel.version,
        channel: rel.channel.clone(),
        providers: choice.providers.iter().map(|p| p.to_string()).collect(),
    });
    let running = std::fs::read_to_string(KERNEL_SHA_PATH).unwrap_or_default();
    if running.trim() != rel.artifacts.kernel.sha256 {
        return Err(StepError {
            reason: "kexec_needed",
            message: format!(
                "release {} has another kernel than the running one; kexec is not built yet",
                rel.version
            ),
        });
    }
    let Some(rootfs) = rel.artifacts.rootfs.clone() else {
        return Err(StepError {
            reason: "no_rootfs",
            message: format!("release {} carries no rootfs", rel.version),
        });
    };
    let _ = std::fs::create_dir_all("/run/phase");
    let mut file = std::fs::File::create(RAM_COPY).map_err(|e| StepError {
        reason: "ram_copy_failed",
        message: format!("{RAM_COPY}: {e}"),
    })?;
    let mut bar = crate::fetch::report::Progress::new();
    let mut progress = |done: u64, total: u64| bar.update("rootfs", done, total);
    let result = crate::fetch::artifact(
        "rootfs",
        &rootfs,
        &choice.providers,
        &mut file,
        &limits,
        &mut progress,
    )
    .await;
    let report = match &result {
        Ok(r) | Err((r, _)) => r,
    };
    crate::fetch::report::failures(&boot.events, "rootfs", report);
    if let Err((_, e)) = result {
        let _ = std::fs::remove_file(RAM_COPY);
        return Err(StepError {
            reason: e.reason(),
            message: e.to_string(),
        });
    }
    drop(file);
    boot.events.emit(Event::ArtifactsVerified {
        version: rel.version,
        bytes: rootfs.size,
    });
    // The RAM copy was hashed whole as it arrived: mount exactly those bytes.
    let dev = crate::sys::loopdev::attach_readonly(std::path::Path::new(RAM_COPY))
        .map_err(|e| fail(boot, "rootfs", "loop_failed", e))?;
    boot.events.emit(Event::RootfsVerified {
        method: "sha256".into(),
        device: dev.clone(),
        root_hash: rootfs.sha256.clone(),
    });
    if let Err(e) = assemble(boot, &dev, None) {
        teardown();
        return Err(e);
    }
    boot.events.emit(Event::RootfsMounted {
        device: dev,
        release: rel.version,
    });
    boot.rootfs_ready = true;
    Ok(())
}
