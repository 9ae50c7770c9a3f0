//! Stage 2: the job node, as the supervised task `node` (`p2p::node::start`: the node key
//! under the state directory, the admission policy, the WASM executor and the machine's one
//! libp2p host), and the DHT announcement of this node's release through that same host
//! (task `dht`, when the serve step asked for one). `node.ready` is the node's milestone.
//!
//! - Identity: `/var/lib/phase/node.key` (persistent where the state is: the stick's state
//!   partition in internet/local modes), a fresh key in memory in private mode.
//! - Admission: `/var/lib/phase/node.json` if the state holds one, else the rootfs's
//!   `/etc/phase/node.json` (`p2p::admission::load`).
//! - Listens on TCP [`NODE_PORT`] on every address; joins the DHT through the bootstrap list
//!   (the initramfs's, plus the one carried across a kexec) in internet mode only.
//! - A restarted run first waits (bounded) until the previous run's host has gone: the
//!   listener uses SO_REUSEPORT, so an old host still open would take half the connections.
//! - At shutdown, before the tasks stop, the node waits (bounded) until its requesters have
//!   their answers, so `phase.poweroff=job.done` does not cut off the job that triggered it.
//!
//! An init built without the executor (the initramfs's) starts no node and says so: the step
//! fails with reason `no_executor`.

#[cfg(not(feature = "executor"))]
use super::{Boot, StepError};

/// The TCP port of the node's libp2p host (jobs, Kademlia, identify, ping).
#[cfg(feature = "executor")]
pub const NODE_PORT: u16 = 4001;
/// The supervised task that runs the node (`phase.selftest=kill-node`).
#[cfg(feature = "executor")]
pub const TASK: &str = "node";

#[cfg(not(feature = "executor"))]
pub fn run(_boot: &mut Boot) -> Result<(), StepError> {
    Err(StepError {
        reason: "no_executor",
        message: "this init was built without the WASM executor: no job node".into(),
    })
}

#[cfg(feature = "executor")]
pub use with_executor::run;

#[cfg(feature = "executor")]
mod with_executor {
    use super::super::serve::{DhtAd, RECORD_TTL_S};
    use super::super::{Boot, StepError};
    use super::{NODE_PORT, TASK};
    use crate::discover::dht::{self, DhtRef, Ended};
    use crate::events::{Event, EventLog};
    use crate::p2p::identity::Identity;
    use crate::p2p::node::NodeSetup;
    use crate::supervise::{task, RestartPolicy};
    use libp2p::Multiaddr;
    use std::net::Ipv4Addr;
    use std::path::Path;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;
    use tokio::sync::watch;

    /// The node's state directory (a tmpfs in private mode).
    const STATE_DIR: &str = "/var/lib/phase";
    /// How long a restart waits for the previous run's host to close.
    const PREVIOUS_HOST_BOUND: Duration = Duration::from_secs(5);

    pub fn run(boot: &mut Boot) -> Result<(), StepError> {
        let mode = boot.config.mode;
        let listen: Multiaddr = Multiaddr::empty()
            .with(Ipv4Addr::UNSPECIFIED.into())
            .with(libp2p::multiaddr::Protocol::Tcp(NODE_PORT));
        let bootstrap = if mode.allows_dht() {
            bootstrap_peers(boot)
        } else {
            Vec::new()
        };
        let private = !mode.persists();
        let setup = NodeSetup {
            identity: Identity::for_state(Path::new(STATE_DIR), private),
            state_dir: STATE_DIR.into(),
            config: None,
            listen: vec![listen],
            bootstrap: bootstrap.clone(),
            workers: None,
            queue: None,
            disk_cache: !private,
            // The capability record: internet and local modes (a private node tells no one).
            announce: !private,
            max_memory_bytes: None,
            // The status endpoint's `peers`.
            connected: boot.peers.clone(),
        };
        let (host_tx, host_rx) = watch::channel::<Option<DhtRef>>(None);
        let host_tx = Arc::new(host_tx);
        let previous: Arc<Mutex<Option<Ended>>> = Arc::new(Mutex::new(None));
        let events = boot.events.clone();
        boot.supervisor
            .spawn(TASK, RestartPolicy::Forever, move || {
                let (setup, events, host_tx, previous) = (
                    setup.clone(),
                    events.clone(),
                    host_tx.clone(),
                    previous.clone(),
                );
                task(node_run(setup, events, host_tx, previous))
            });
        // At shutdown (`phase.poweroff=job.done` too): the requesters get their answers first.
        let current = host_rx.clone();
        boot.drain.push((
            TASK.into(),
            Box::pin(async move {
                let host = current.borrow().clone();
                if let Some(host) = host {
                    if let Err(e) = host.drain().await {
                        tracing::debug!("node: drain: {e}");
                    }
                }
            }),
        ));
        if let Some(ad) = boot.dht_ad.take() {
            if bootstrap.is_empty() {
                boot.events.emit(Event::Fallback {
                    step: "announce dht".into(),
                    reason: "no_bootstrap_peers".into(),
                });
            } else {
                announce(boot, ad, host_rx, private);
            }
        }
        Ok(())
    }

    /// One run of the node: the previous host gone, a new one started (`node.ready`), then
    /// held until its task ends (the run fails: the supervisor restarts it).
    async fn node_run(
        setup: NodeSetup,
        events: Arc<EventLog>,
        host_tx: Arc<watch::Sender<Option<DhtRef>>>,
        previous: Arc<Mutex<Option<Ended>>>,
    ) -> Result<(), String> {
        let before = previous.lock().ok().and_then(|mut p| p.take());
        if let Some(before) = before {
            tokio::time::timeout(PREVIOUS_HOST_BOUND, before.wait())
                .await
                .map_err(|_| {
                    format!("the previous libp2p host did not close within {PREVIOUS_HOST_BOUND:?}")
                })?;
        }
        let host = crate::p2p::node::start(setup, events)
            .await
            .map_err(|e| format!("{e} ({})", e.reason()))?;
        if let Ok(mut p) = previous.lock() {
            *p = Some(host.ended());
        }
        host_tx.send_replace(Some(host.weak()));
        host.ended().wait().await;
        Err("the libp2p host stopped".into())
    }

    /// The bootstrap list as multiaddrs; a bad list is a named fallback and no peers.
    fn bootstrap_peers(boot: &Boot) -> Vec<Multiaddr> {
        match dht::parse_bootstrap(&boot.bootstrap.join("\n")) {
            Ok(p) => p,
            Err((line, why)) => {
                tracing::warn!("bootstrap entry {line}: {why}");
                boot.events.emit(Event::Fallback {
                    step: "node".into(),
                    reason: "bad_bootstrap_list".into(),
                });
                Vec::new()
            }
        }
    }

    /// Stops the host republishing when the `dht` task's run ends (scrub verdict, shutdown).
    struct StopAnnouncing(DhtRef);

    impl Drop for StopAnnouncing {
        fn drop(&mut self) {
            self.0.stop_announcing_now();
        }
    }

    /// Publish this node's signed provider record through the node's host (supervised task
    /// `dht`), again whenever the node task starts a new host; withdrawn at shutdown.
    fn announce(
        boot: &mut Boot,
        ad: DhtAd,
        host_rx: watch::Receiver<Option<DhtRef>>,
        private: bool,
    ) {
        let identity = Identity::for_state(Path::new(STATE_DIR), private);
        let events = boot.events.clone();
        let rx = host_rx.clone();
        boot.supervisor
            .spawn("dht", RestartPolicy::Forever, move || {
                let (identity, ad, events, mut rx) =
                    (identity.clone(), ad.clone(), events.clone(), rx.clone());
                task(async move {
                    loop {
                        let host = rx
                            .wait_for(Option::is_some)
                            .await
                            .map_err(|_| "the node task is gone".to_string())?
                            .clone();
                        let Some(host) = host else { continue };
                        // The node created its key before it started: this reads that file.
                        let key = identity.load().map_err(|e| e.to_string())?;
                        let record = dht::provider_record(
                            &key,
                            &ad.url,
                            &ad.txt.channel,
                            &ad.txt.arch,
                            ad.txt.version,
                            RECORD_TTL_S,
                        )
                        .map_err(|e| e.to_string())?;
                        let _stop = StopAnnouncing(host.clone());
                        // Not reached by anyone yet: start over (the supervisor backs off).
                        host.bootstrap()
                            .await
                            .map_err(|e| format!("DHT bootstrap: {e}"))?;
                        host.announce(record)
                            .await
                            .map_err(|e| format!("DHT announcement: {e}"))?;
                        events.emit(Event::ProviderAnnounced {
                            how: "dht".into(),
                            url: ad.url.clone(),
                            version: ad.txt.version,
                        });
                        // Announce again through the next host if the node restarts.
                        rx.changed()
                            .await
                            .map_err(|_| "the node task is gone".to_string())?;
                    }
                })
            });
        boot.withdraw.push((
            "dht".into(),
            Box::pin(async move {
                let host = host_rx.borrow().clone();
                if let Some(host) = host {
                    host.stop_announcing_now();
                }
            }),
        ));
    }
}
