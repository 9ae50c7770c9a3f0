//! Stage 2: the status endpoint (JSON `/status`, Prometheus `/metrics`) as the supervised
//! task `status`, listening where `status::bind` decides from the mode and `phase.status=`.

use super::{Boot, StepError};
use crate::status::server::{serve, Sources};
use crate::supervise::{task, RestartPolicy};
use std::sync::Arc;

pub fn run(boot: &mut Boot) -> Result<(), StepError> {
    let own = boot.net.as_ref().map(|n| n.config.addr);
    let Some(at) = crate::status::bind::decide(boot.config.mode, boot.config.status, own) else {
        tracing::info!("no status endpoint (mode {})", boot.config.mode.as_str());
        return Ok(());
    };
    let src = Arc::new(Sources {
        events: boot.events.clone(),
        health: boot.supervisor.health(),
        peers: boot.peers.clone(),
        mode: boot.config.mode.as_str().to_string(),
        stage: boot.stage.number(),
        kernel: rustix::system::uname()
            .release()
            .to_string_lossy()
            .into_owned(),
    });
    boot.supervisor
        .spawn("status", RestartPolicy::Forever, move || {
            let src = src.clone();
            task(async move {
                let l = tokio::net::TcpListener::bind(at)
                    .await
                    .map_err(|e| format!("listen on {at}: {e}"))?;
                tracing::info!("status endpoint on http://{at}/status");
                serve(l, src).await
            })
        });
    Ok(())
}
