//! The end of the machine's life: sync, then reboot(2). Never returns.

use rustix::system::{reboot, RebootCommand};

/// What to do with the machine at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerAction {
    PowerOff,
    Reboot,
}

impl PowerAction {
    pub fn as_str(self) -> &'static str {
        match self {
            PowerAction::PowerOff => "poweroff",
            PowerAction::Reboot => "reboot",
        }
    }
}

/// `reboot(LINUX_REBOOT_CMD_CAD_OFF)`: ctrl-alt-del sends SIGINT to PID 1 instead of
/// restarting the machine at once, so the init can shut down in order.
pub fn ctrl_alt_del_to_signal() -> rustix::io::Result<()> {
    reboot(RebootCommand::CadOff)
}

/// `sync()` then `reboot(cmd)`. If the kernel refuses (it should not for PID 1), keep PID 1
/// alive rather than return: exiting would panic the kernel.
pub fn finish(action: PowerAction) -> ! {
    rustix::fs::sync();
    let cmd = match action {
        PowerAction::PowerOff => RebootCommand::PowerOff,
        PowerAction::Reboot => RebootCommand::Restart,
    };
    let err = reboot(cmd);
    eprintln!(
        "phase: reboot({}) failed: {err:?}; halting here",
        action.as_str()
    );
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
