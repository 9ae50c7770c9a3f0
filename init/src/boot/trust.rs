//! Load the trust anchor baked into the initramfs: the root document (which must meet its
//! own root threshold), the release floor, and the build time (the clock's lower bound).
//! Emits `trust.ready`, or `verify.failed` naming the file and reason; without a valid root
//! no release can ever be accepted, and the boot goes on with what it has.

use super::{Boot, StepError};
use crate::events::Event;
use phase_release::chain::RootChain;
use phase_release::state::Store;
use phase_release::verify;

pub const ROOT_PATH: &str = "/etc/phase/trusted-root.json";
pub const FLOOR_PATH: &str = "/etc/phase/release-floor";
pub const BUILD_TIME_PATH: &str = "/etc/phase/build-time";

/// What stage 1 trusts, for the steps that verify releases.
pub struct Trust {
    /// The anchor and the rotations verified since; `chain.root` judges every release.
    pub chain: RootChain,
    pub floor: u64,
    pub now: u64,
    pub store: Store,
}

fn read_u64(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

pub fn run(boot: &mut Boot) -> Result<(), StepError> {
    let fail = |reason: &'static str, message: String, events: &crate::events::EventLog| {
        events.emit(Event::VerifyFailed {
            artifact: ROOT_PATH.into(),
            reason: reason.into(),
            provider: None,
        });
        StepError { reason, message }
    };
    // Read at most one byte past the cap, so an oversized file is named, not loaded whole.
    let bytes = match read_capped(ROOT_PATH, phase_release::doc::MAX_METADATA_BYTES + 1) {
        Ok(b) => b,
        Err(e) => {
            return Err(fail(
                "trusted_root_unreadable",
                format!("{ROOT_PATH}: {e}"),
                &boot.events,
            ))
        }
    };
    let root = match verify::verify_root_self(&bytes) {
        Ok(v) => v.doc,
        Err(e) => return Err(fail(e.reason(), format!("{ROOT_PATH}: {e}"), &boot.events)),
    };
    let floor = read_u64(FLOOR_PATH).unwrap_or(0);
    let build_time = read_u64(BUILD_TIME_PATH).unwrap_or(0);
    // Stage 1 keeps the trusted state in RAM: the persistent partition is mounted only
    // once a verified rootfs is (docs/release-format.md, "Trusted state").
    let mut store = Store::in_memory();
    let seen = store.load().map(|s| s.time).unwrap_or(0);
    let rtc = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let now = verify::effective_now(rtc, build_time, seen);
    boot.events.emit(Event::TrustReady {
        root_version: root.version,
        root_expired: root.expires <= now,
        release_keys: root.roles.release.keyids.len() as u64,
        release_threshold: root.roles.release.threshold,
        release_floor: floor,
        rtc,
        clock: now,
    });
    boot.trust = Some(Trust {
        chain: RootChain::anchor(root),
        floor,
        now,
        store,
    });
    Ok(())
}

fn read_capped(path: &str, cap: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = Vec::new();
    std::fs::File::open(path)?
        .take(cap as u64)
        .read_to_end(&mut buf)?;
    Ok(buf)
}
