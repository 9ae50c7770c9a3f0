//! Signals and the reaper, supervised: SIGCHLD → reap; SIGTERM → poweroff; SIGINT
//! (ctrl-alt-del, once the kernel is told to send it) → reboot.

use super::{Boot, StepError};
use crate::events::ShutdownRequest;
use crate::supervise::{task, RestartPolicy};
use std::sync::{Arc, Mutex};
use tokio::signal::unix::{signal, Signal, SignalKind};

/// The three signal streams PID 1 acts on.
struct Signals {
    chld: Signal,
    term: Signal,
    int: Signal,
}

impl Signals {
    fn new() -> Result<Signals, String> {
        Ok(Signals {
            chld: signal(SignalKind::child()).map_err(|e| format!("SIGCHLD: {e}"))?,
            term: signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM: {e}"))?,
            int: signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT: {e}"))?,
        })
    }
}

pub fn run(boot: &mut Boot) -> Result<(), StepError> {
    // Handlers are installed here, before ctrl-alt-del is turned into SIGINT and before
    // `init.ready`: PID 1 ignores a signal it has no handler for, so a task that installs
    // them when first polled would leave a window where SIGTERM or SIGINT is lost.
    let first = Signals::new().map_err(|message| StepError {
        reason: "signals_failed",
        message,
    })?;
    let first = Arc::new(Mutex::new(Some(first)));
    let children = boot.children.clone();
    let tx = boot.shutdown_tx.clone();
    boot.supervisor
        .spawn("signals", RestartPolicy::Forever, move || {
            let (children, tx, first) = (children.clone(), tx.clone(), first.clone());
            task(async move {
                let taken = first.lock().ok().and_then(|mut f| f.take());
                let mut s = match taken {
                    Some(s) => s,
                    None => Signals::new()?, // a restart: make new streams
                };
                // Children may have exited before the handler existed.
                children.reap();
                loop {
                    tokio::select! {
                        _ = s.chld.recv() => { children.reap(); }
                        _ = s.term.recv() => { let _ = tx.send(ShutdownRequest::Terminate); }
                        _ = s.int.recv() => { let _ = tx.send(ShutdownRequest::CtrlAltDel); }
                    }
                }
            })
        });
    // The DHCP lease of this boot (from stage 1, carried into stage 2) is kept alive.
    if let Some(held) = boot.net.as_ref().and_then(|n| n.lease.clone()) {
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
