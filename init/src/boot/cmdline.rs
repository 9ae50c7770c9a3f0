//! Read `/proc/cmdline`, parse it (pure `config::parse`), log warnings, arm poweroff.

use super::{Boot, StepError};

/// The kernel never writes more than a page or so; read at most this much.
const MAX_CMDLINE: u64 = 64 * 1024;

pub fn run(boot: &mut Boot) -> Result<(), StepError> {
    use std::io::Read;
    let mut raw = Vec::new();
    let read = std::fs::File::open("/proc/cmdline")
        .and_then(|f| f.take(MAX_CMDLINE).read_to_end(&mut raw));
    let result = match read {
        Ok(_) => Ok(()),
        Err(e) => Err(StepError {
            reason: "cmdline_unreadable",
            message: format!("read /proc/cmdline: {e}; using defaults"),
        }),
    };
    let (config, warnings) = crate::config::parse(&raw);
    for w in &warnings {
        tracing::warn!("cmdline: {w}");
    }
    crate::log::set_debug(config.debug);
    boot.events
        .arm_poweroff(config.poweroff.clone(), boot.shutdown_tx.clone());
    tracing::info!(
        "mode {} (lan {}, dht {}, persistent state {}) channel {} stage {:?} providers {:?}",
        config.mode.as_str(),
        config.mode.allows_lan(),
        config.mode.allows_dht(),
        config.mode.persists(),
        config.channel,
        config.stage,
        config.providers
    );
    boot.config = config;
    result
}
