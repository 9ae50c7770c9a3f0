//! Signals and the reaper, supervised: SIGCHLD → reap; SIGTERM → poweroff; SIGINT
//! (ctrl-alt-del, once the kernel is told to send it) → reboot.

use super::{Boot, StepError};
use crate::events::ShutdownRequest;
use crate::supervise::{task, RestartPolicy};
use tokio::signal::unix::{signal, SignalKind};

pub fn run(boot: &mut Boot) -> Result<(), StepError> {
    let children = boot.children.clone();
    let tx = boot.shutdown_tx.clone();
    boot.supervisor
        .spawn("signals", RestartPolicy::Forever, move || {
            let children = children.clone();
            let tx = tx.clone();
            task(async move {
                let mut chld = signal(SignalKind::child()).map_err(|e| format!("SIGCHLD: {e}"))?;
                let mut term =
                    signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM: {e}"))?;
                let mut int =
                    signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT: {e}"))?;
                // Children may have exited before the handler existed.
                children.reap();
                loop {
                    tokio::select! {
                        _ = chld.recv() => { children.reap(); }
                        _ = term.recv() => { let _ = tx.send(ShutdownRequest::Terminate); }
                        _ = int.recv() => { let _ = tx.send(ShutdownRequest::CtrlAltDel); }
                    }
                }
            })
        });
    // A DHCP lease from stage 1 (this process or the one before the switch) is kept alive.
    if let Some(held) = std::fs::read(super::network::LEASE_FILE)
        .ok()
        .and_then(|b| serde_json::from_slice::<super::network::Held>(&b).ok())
    {
        let events = boot.events.clone();
        boot.supervisor
            .spawn("dhcp", RestartPolicy::Forever, move || {
                task(super::network::keep_lease(held.clone(), events.clone()))
            });
    }
    crate::sys::power::ctrl_alt_del_to_signal().map_err(|e| StepError {
        reason: "cad_off_failed",
        message: format!("reboot(CAD_OFF): {e}; ctrl-alt-del restarts at once"),
    })
}
