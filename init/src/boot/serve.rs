//! Stage 2: serve this node's verified release to its peers, and say so: DNS-SD on the
//! LAN (internet and local modes), a signed DHT record (internet mode). A private node
//! serves nothing. Announcements are withdrawn at shutdown, before services stop.
//!
//! A node key for the DHT is created on first use in /var/lib/phase (persistent in
//! internet mode) and signs the node's provider records.
//!
//! What is served: the release of a node that fetched it, every file in `/run/phase/release`
//! (a diskless boot: stage 1 downloaded them there; a boot that came by kexec: the carried
//! release, bound there read-only by the carry step), else a disk-booted node's release as
//! stage 1 gathered it from its medium (`paths::MEDIUM_RELEASE`, see `boot/medium.rs`). Every
//! artifact is served with its signed size and SHA-256 (the disk's rootfs straight from its
//! dm-verity device). The address is the one stage 1 configured or carried; a disk-booted
//! node, which had no need of the network in stage 1, brings it up here.

use super::fetch::RELEASE_DIR;
use super::{Boot, StepError};
use crate::events::Event;
use crate::paths;
use crate::provider::serve::Pinned;
use crate::supervise::{task, RestartPolicy};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// The supervised tasks that serve and announce this node's release (stopped for good when
/// the background scrub finds the rootfs's medium returning bad blocks).
pub const SERVING_TASKS: &[&str] = &["provider", "dht"];

/// The TCP port every node serves its release on.
pub const PROVIDER_PORT: u16 = 8080;

pub async fn run(boot: &mut Boot) -> Result<(), StepError> {
    let plan = crate::discover::announce_plan(boot.config.mode);
    if !plan.lan && !plan.dht {
        return Ok(()); // private mode
    }
    let Some(dir) = [RELEASE_DIR, paths::MEDIUM_RELEASE]
        .into_iter()
        .map(Path::new)
        .find(|d| d.join(paths::RELEASE_JSON).is_file())
    else {
        tracing::info!(
            "no verified release in {RELEASE_DIR} or {}: this node serves nothing",
            paths::MEDIUM_RELEASE
        );
        return Ok(());
    };
    let release = crate::provider::announce::release(dir).map_err(|message| StepError {
        reason: "no_release_summary",
        message,
    })?;
    let txt = crate::provider::announce::txt(&release);
    if boot.net.is_none() {
        network(boot).await?;
    }
    let addr = boot
        .net
        .as_ref()
        .map(|n| n.config.addr)
        .ok_or_else(|| StepError {
            reason: "no_address",
            message: "no network in stage 2: no address to announce".into(),
        })?;
    let mut cfg = crate::provider::serve::Config::new(dir);
    cfg.pinned = pinned(&release);
    // Listen before announcing: a peer that follows the announcement at once must find the
    // port open (its connection waits in the backlog until the task accepts). A restart of
    // the task binds afresh.
    let first = listen().await.map_err(|message| StepError {
        reason: "listen_failed",
        message,
    })?;
    let first = Arc::new(Mutex::new(Some(first)));
    boot.supervisor
        .spawn("provider", RestartPolicy::Forever, move || {
            let (cfg, first) = (cfg.clone(), first.clone());
            task(async move {
                let taken = first.lock().ok().and_then(|mut f| f.take());
                let l = match taken {
                    Some(l) => l,
                    None => listen().await?,
                };
                let etags = crate::provider::serve::warm(&cfg).await;
                crate::provider::serve::serve(l, cfg, etags)
                    .await
                    .map_err(|e| e.to_string())
            })
        });
    let url = format!("http://{addr}:{PROVIDER_PORT}/");
    if plan.lan {
        match crate::discover::mdns::announce(IpAddr::V4(addr), PROVIDER_PORT, &txt) {
            Ok(a) => {
                boot.events.emit(Event::ProviderAnnounced {
                    how: "mdns".into(),
                    url: url.clone(),
                    version: txt.version,
                });
                boot.withdraw.push((
                    "mdns".into(),
                    Box::pin(async move {
                        let _ = tokio::task::spawn_blocking(move || a.stop()).await;
                    }),
                ));
            }
            Err(e) => {
                tracing::warn!("LAN announcement: {e}");
                boot.events.emit(Event::Fallback {
                    step: "announce mdns".into(),
                    reason: "mdns_failed".into(),
                });
            }
        }
    }
    if plan.dht {
        // One libp2p host per machine: with the job node, the record goes out through the
        // node's host (boot/node.rs); an init without the executor runs a DHT node for it.
        #[cfg(feature = "executor")]
        {
            boot.dht_ad = Some(DhtAd { url, txt });
        }
        #[cfg(not(feature = "executor"))]
        announce_dht(boot, url, txt);
    }
    Ok(())
}

/// What this node announces in the DHT: where it serves which release.
#[cfg_attr(not(feature = "executor"), allow(dead_code))] // used by stage 2's job node
#[derive(Debug, Clone)]
pub struct DhtAd {
    pub url: String,
    pub txt: crate::discover::mdns::Txt,
}

/// The provider's socket, on every address of the node.
async fn listen() -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, PROVIDER_PORT))
        .await
        .map_err(|e| format!("listen on port {PROVIDER_PORT}: {e}"))
}

/// The node's identity in the DHT, kept with the rest of its state (persistent in
/// internet mode).
#[cfg(not(feature = "executor"))]
pub const NODE_KEY: &str = "/var/lib/phase/node.key";
/// A DHT record lives this long; the node signs and publishes it afresh every half of it.
pub const RECORD_TTL_S: u64 = 3600;

/// Publish a signed provider record in the DHT, refreshed for the life of the node
/// (supervised task `dht`); at shutdown the node is closed and the record is no longer
/// refreshed, so it expires.
#[cfg(not(feature = "executor"))]
fn announce_dht(boot: &mut Boot, url: String, txt: crate::discover::mdns::Txt) {
    use crate::discover::dht::{self, DhtConfig};
    let peers = match dht::parse_bootstrap(&boot.bootstrap.join("\n")) {
        Ok(p) if !p.is_empty() => p,
        Ok(_) => {
            boot.events.emit(Event::Fallback {
                step: "announce dht".into(),
                reason: "no_bootstrap_peers".into(),
            });
            return;
        }
        Err((line, why)) => {
            tracing::warn!("bootstrap entry {line}: {why}");
            boot.events.emit(Event::Fallback {
                step: "announce dht".into(),
                reason: "bad_bootstrap_list".into(),
            });
            return;
        }
    };
    let slot: Arc<Mutex<Option<dht::Dht>>> = Arc::new(Mutex::new(None));
    let events = boot.events.clone();
    let held = slot.clone();
    boot.supervisor
        .spawn("dht", RestartPolicy::Forever, move || {
            let (peers, url, txt, events, held) = (
                peers.clone(),
                url.clone(),
                txt.clone(),
                events.clone(),
                held.clone(),
            );
            task(async move {
                let key = dht::load_or_create_key(std::path::Path::new(NODE_KEY))
                    .map_err(|e| e.to_string())?;
                let record = dht::provider_record(
                    &key,
                    &url,
                    &txt.channel,
                    &txt.arch,
                    txt.version,
                    RECORD_TTL_S,
                )
                .map_err(|e| e.to_string())?;
                let mut cfg = DhtConfig::new(key);
                cfg.listen = vec!["/ip4/0.0.0.0/tcp/4001"
                    .parse()
                    .map_err(|e| format!("listen address: {e}"))?];
                cfg.bootstrap = peers;
                cfg.refresh = std::time::Duration::from_secs(RECORD_TTL_S / 2);
                // The release it serves verified: peers advertising it are preferred.
                cfg.verified = crate::discover::record::Verified::new([txt.version]);
                let (node, published) =
                    dht::publish(cfg, record).await.map_err(|e| e.to_string())?;
                // Not reached by anyone yet: start over (the supervisor backs off).
                if let Err(e) = published {
                    node.shutdown().await;
                    return Err(format!("DHT announcement: {e}"));
                }
                events.emit(Event::ProviderAnnounced {
                    how: "dht".into(),
                    url,
                    version: txt.version,
                });
                if let Ok(mut h) = held.lock() {
                    *h = Some(node); // kept (and refreshed) until shutdown
                }
                std::future::pending::<()>().await;
                Ok(())
            })
        });
    boot.withdraw.push((
        "dht".into(),
        Box::pin(async move {
            let node = slot.lock().ok().and_then(|mut h| h.take());
            if let Some(node) = node {
                node.shutdown().await;
            }
        }),
    ));
}

/// Every file of a verified release, by name, with its signed size and SHA-256 (PURE).
pub fn pinned(release: &phase_release::doc::Release) -> HashMap<String, Pinned> {
    phase_release::artifact::files(release)
        .into_iter()
        .map(|(_, a)| {
            (
                a.path,
                Pinned {
                    len: a.size,
                    sha256: a.sha256,
                },
            )
        })
        .collect()
}

/// A disk-booted node's network, brought up as stage 1 would (`boot/network.rs`), its
/// DHCP lease kept for the life of the node.
async fn network(boot: &mut Boot) -> Result<(), StepError> {
    super::network::bring_up(boot).await?;
    if let Some(held) = boot.net.as_ref().and_then(|n| n.lease.clone()) {
        let events = boot.events.clone();
        boot.supervisor
            .spawn("dhcp", RestartPolicy::Forever, move || {
                task(super::network::keep_lease(held.clone(), events.clone()))
            });
    }
    Ok(())
}
