//! Hand the machine to the verified rootfs: move the pseudo filesystems into it, free the
//! initramfs, make it `/`, and exec its own copy of `phase` (read through dm-verity) as
//! PID 1 for stage 2. Before the initramfs is freed every failure falls back to it; after,
//! an exec failure continues stage 2 in this process.

use super::local::NEW_ROOT;
use super::{Boot, StepError};
use crate::events::Event;
use crate::sys::root;

/// The init stage 2 runs, inside the rootfs.
pub const STAGE2_INIT: &str = "/usr/lib/phase/phase";
/// argv[1] telling the new PID 1 it is stage 2 in the rootfs.
pub const STAGE2_ARG: &str = "stage2";

pub fn run(boot: &mut Boot) -> Result<(), StepError> {
    if !boot.rootfs_ready {
        return Ok(());
    }
    // No module load may be cut short by the exec.
    super::modules::settle_all(boot);
    // Stage 2 announces with the initramfs's DHT bootstrap list; the initramfs is about
    // to be freed, /run moves along.
    if let Err(e) = std::fs::copy(
        super::discover::BOOTSTRAP_PATH,
        super::discover::BOOTSTRAP_RUN,
    ) {
        tracing::info!(
            "{}: {e}; stage 2 has no DHT bootstrap peers",
            super::discover::BOOTSTRAP_PATH
        );
    }
    if let Err(e) = root::move_pseudo(NEW_ROOT) {
        // Put back what moved, so the initramfs keeps working.
        for m in root::MOVED {
            let _ = rustix::mount::mount_move(format!("{NEW_ROOT}{m}").as_str(), *m);
        }
        return Err(StepError {
            reason: "switch_root_failed",
            message: e,
        });
    }
    let freed = root::free_initramfs();
    tracing::info!(
        "freed {} KiB of initramfs; switching root to {NEW_ROOT}",
        freed / 1024
    );
    if let Err(e) = root::enter(NEW_ROOT) {
        // No initramfs to return to: carry on here, logged.
        tracing::error!("{e}");
        boot.events.emit(Event::Fallback {
            step: "handoff".into(),
            reason: "enter_root_failed".into(),
        });
        return Ok(());
    }
    let err = root::exec(STAGE2_INIT, &[STAGE2_ARG]);
    tracing::error!("exec {STAGE2_INIT}: {err}; continuing stage 2 in this process");
    boot.events.emit(Event::Fallback {
        step: "handoff".into(),
        reason: "exec_failed".into(),
    });
    Ok(())
}
