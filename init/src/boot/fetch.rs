//! Releases from providers. With no local release, ask the providers (`phase.provider=`,
//! else those discovered) for the newest release that verifies, download all of it into
//! RAM (verified as it arrives: the rootfs to mount, the rest to serve to peers in stage 2)
//! and, when its kernel is the running one, mount the rootfs and go on to the handoff; when
//! it is another kernel, kexec into it (`boot::handoff::kexec`). With a local release and
//! `phase.provider=`, a newer release there is booted by kexec the same way (one attempt:
//! any failure falls back to the local release at once).

use super::local::{assemble, fail, teardown};
use super::{Boot, StepError};
use crate::config::Stage;
use crate::discover::record::Verified;
use crate::discover::{Candidate, How};
use crate::events::Event;
use crate::fetch::release::Choice;
use crate::fetch::{Limits, Url};
use crate::kexec::decide::{handoff, Handoff, Offer, Source};
use phase_release::chain::RootChain;
use phase_release::verify::Policy;

/// Where a diskless boot keeps the verified release it fetched (tmpfs; carried into
/// stage 2, which serves it to peers).
pub const RELEASE_DIR: &str = "/run/phase/release";

/// One bound for discovery plus every provider's metadata in one attempt: however many
/// candidates there are and however each misbehaves, the attempt moves on to the artifacts
/// (or to its retry) by then. Each request is bounded on its own as well (docs/network.md).
pub const METADATA_BOUND: std::time::Duration = std::time::Duration::from_secs(60);

/// The fetch step (see the module docs). What to do with the verified release is
/// `kexec::decide::handoff`'s decision. With no local release, a fetch that fails for want
/// of a provider (none verified, or every provider failed an artifact) is tried again
/// whole, with the backoff of [`crate::fetch::backoff`].
pub async fn run(boot: &mut Boot) -> Result<(), StepError> {
    if boot.net.is_none() || boot.config.stage == Stage::Two {
        return Ok(());
    }
    let mut n = 1;
    let got = loop {
        match attempt(boot).await {
            Ok(got) => break got,
            Err(Attempt::Final(e)) => return Err(e),
            Err(Attempt::Retry(e)) if boot.root.is_some() => return Err(e),
            Err(Attempt::Retry(e)) => {
                let Some(wait) = crate::fetch::backoff::next(n, boot.config.fetch_attempts) else {
                    return Err(e);
                };
                tracing::warn!("fetch attempt {n}: {}; again in {wait:?}", e.message);
                boot.events.emit(Event::FetchRetry {
                    attempt: n,
                    reason: e.reason.into(),
                    delay_ms: wait.as_millis() as u64,
                });
                tokio::time::sleep(wait).await;
                n += 1;
            }
        }
    };
    match got {
        None => Ok(()),
        Some(Fetched {
            choice,
            kexec: true,
            ..
        }) => {
            record_trusted(boot, &choice);
            let dir = std::path::Path::new(RELEASE_DIR);
            let r = super::handoff::kexec(boot, &choice, dir).await;
            let _ = std::fs::remove_dir_all(dir);
            r
        }
        Some(Fetched { choice, rootfs, .. }) => mount(boot, &choice.release, &rootfs),
    }
}

/// A release downloaded and verified into [`RELEASE_DIR`], and how to boot it.
struct Fetched {
    choice: Choice,
    rootfs: phase_release::doc::Artifact,
    kexec: bool,
}

/// Why an attempt failed: worth another (providers may come back) or not.
enum Attempt {
    Retry(StepError),
    Final(StepError),
}

/// One whole fetch: choose among the providers, decide, then download the release into
/// RAM. `None`: the local release stays (no newer one, or it is the one to boot).
async fn attempt(boot: &mut Boot) -> Result<Option<Fetched>, Attempt> {
    let local = boot.root.clone();
    let Some(trust) = boot.trust.as_mut() else {
        return Err(Attempt::Final(StepError {
            reason: "no_trust_anchor",
            message: "no verified trust anchor".into(),
        }));
    };
    let state = trust.store.load().unwrap_or_default();
    let policy = phase_release::verify::Policy {
        arch: std::env::consts::ARCH.into(),
        channel: boot.config.channel.clone(),
        now: trust.now.max(state.time),
        floor: trust.floor,
        trusted: state.trusted_release(),
    };
    let mut chain = trust.chain.clone();
    let mut limits = crate::fetch::Limits {
        metadata_until: Some(tokio::time::Instant::now() + METADATA_BOUND),
        ..Default::default()
    };
    // The command line's providers first; discovery only if none of them verifies.
    let named: Vec<Candidate> = boot
        .config
        .providers
        .iter()
        .map(|p| Candidate {
            url: p.clone(),
            how: How::Url,
            advertised: None,
        })
        .collect();
    let mut choice = choose(boot, &named, &mut chain, &policy, &limits).await;
    // With a local release only the command line's providers are asked.
    if choice.is_none() && local.is_none() && (named.is_empty() || boot.config.mode.allows_lan()) {
        // The release this machine trusted last verified here: providers of it go first.
        let verified = Verified::new(policy.trusted.map(|(version, _)| version));
        let found = super::discover::candidates(boot, &verified).await;
        choice = choose(boot, &found, &mut chain, &policy, &limits).await;
    }
    keep_root(boot, chain);
    limits.metadata_until = None;
    let Some(choice) = choice else {
        if local.is_some() {
            tracing::info!("no provider offers a newer release; booting the local one");
            return Ok(None);
        }
        return Err(Attempt::Retry(StepError {
            reason: "no_verified_release",
            message: "no provider served a release that verifies".into(),
        }));
    };
    let rel = &choice.release;
    boot.events.emit(Event::ReleaseVerified {
        version: rel.version,
        channel: rel.channel.clone(),
        providers: choice.providers.iter().map(|p| p.to_string()).collect(),
    });
    let running = std::fs::read_to_string(crate::paths::KERNEL_SHA).unwrap_or_default();
    let fetched = Offer {
        version: rel.version,
        kernel_sha256: rel.artifacts.kernel.sha256.clone(),
    };
    let kexec = match handoff(local.as_ref(), Some(&fetched), &running, boot.config.kexec) {
        Handoff::Stay(s) => {
            return Err(Attempt::Final(StepError {
                reason: s.reason(),
                message: format!(
                    "release {} has another kernel than the running one and phase.kexec=never",
                    rel.version
                ),
            }))
        }
        Handoff::SwitchRoot {
            source: Source::Local,
            ..
        }
        | Handoff::Kexec {
            source: Source::Local,
            ..
        } => {
            // The local release is the newest: it is mounted, the handoff switches into
            // it. (A local release of another kernel is booted on the running one: the
            // medium carries its kernel on the ESP only, which this init does not read.)
            tracing::info!("the local release is the newest verified one");
            return Ok(None);
        }
        Handoff::SwitchRoot {
            source: Source::Fetched,
            ..
        } if local.is_some() => {
            tracing::info!(
                "release {} runs on this kernel; the local release is booted (replacing a mounted local release in place is not built)",
                rel.version
            );
            return Ok(None);
        }
        Handoff::SwitchRoot { .. } => false,
        Handoff::Kexec { .. } => true,
    };
    let Some(rootfs) = rel.artifacts.rootfs.clone() else {
        return Err(Attempt::Final(StepError {
            reason: "no_rootfs",
            message: format!("release {} carries no rootfs", rel.version),
        }));
    };
    // Every file of the release into RAM, verified as it arrives: the rootfs to mount,
    // and the rest so that this node can serve the whole release to its peers.
    let dir = std::path::Path::new(RELEASE_DIR);
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| {
        Attempt::Final(StepError {
            reason: "ram_copy_failed",
            message: format!("{RELEASE_DIR}: {e}"),
        })
    })?;
    let mut bar = crate::fetch::report::Progress::new();
    let mut progress = |name: &str, done: u64, total: u64| bar.update(name, done, total);
    let events = boot.events.clone();
    let mut on_artifact = |name: &str, r: &crate::fetch::release::ArtifactResult| {
        let (Ok(rep) | Err((rep, _))) = r;
        crate::fetch::report::failures(&events, name, rep);
    };
    let done =
        crate::fetch::release::download(&choice, dir, &limits, &mut on_artifact, &mut progress)
            .await;
    let bytes = match done {
        Ok(b) => b,
        Err(e) => {
            let _ = std::fs::remove_dir_all(dir);
            let err = StepError {
                reason: e.reason(),
                message: e.to_string(),
            };
            // Writing into RAM failed: another attempt would fail the same way.
            return Err(match e {
                crate::fetch::FetchError::Output { .. } => Attempt::Final(err),
                _ => Attempt::Retry(err),
            });
        }
    };
    boot.events.emit(Event::ArtifactsVerified {
        version: rel.version,
        bytes,
    });
    Ok(Some(Fetched {
        choice,
        rootfs,
        kexec,
    }))
}

/// Mount the verified RAM copy of the rootfs.
fn mount(
    boot: &mut Boot,
    rel: &phase_release::doc::Release,
    rootfs: &phase_release::doc::Artifact,
) -> Result<(), StepError> {
    let image = std::path::Path::new(RELEASE_DIR).join(&rootfs.path);
    // The RAM copy was checked as it arrived (by its verity tree on every CPU, or hashed
    // whole without verity parameters): mount exactly those bytes.
    super::modules::load_now(boot, crate::kmod::Need::Loop);
    let dev = crate::sys::loopdev::attach_readonly(&image)
        .map_err(|e| fail(boot, "rootfs", "loop_failed", e))?;
    let (method, root_hash) = match &rootfs.verity {
        Some(v) => ("verity-tree", v.root_hash.clone()),
        None => ("sha256", rootfs.sha256.clone()),
    };
    boot.events.emit(Event::RootfsVerified {
        method: method.into(),
        device: dev.clone(),
        root_hash,
    });
    if let Err(e) = assemble(boot, &dev, None) {
        teardown();
        return Err(e);
    }
    boot.events.emit(Event::RootfsMounted {
        device: dev,
        release: rel.version,
    });
    boot.root = Some(Offer {
        version: rel.version,
        kernel_sha256: rel.artifacts.kernel.sha256.clone(),
    });
    Ok(())
}

/// Before a kexec from a local release: the release about to run is what this machine
/// now trusts (rollback protection), recorded on the state partition the local step opened.
fn record_trusted(boot: &mut Boot, choice: &Choice) {
    let Some(trust) = boot.trust.as_mut() else {
        return;
    };
    let policy = phase_release::verify::Policy {
        arch: std::env::consts::ARCH.into(),
        channel: choice.release.channel.clone(),
        now: trust.now,
        floor: trust.floor,
        trusted: None,
    };
    let Ok(v) = phase_release::verify::verify_release(
        &choice.metadata.release_json,
        &trust.chain.root,
        &policy,
    ) else {
        return;
    };
    let s = phase_release::state::TrustedState {
        root_version: trust.chain.root.version,
        release_version: v.doc.version,
        release_digest: phase_release::hex::encode(&v.digest),
        time: trust.now,
    };
    if let Err(e) = trust.store.save(&s) {
        tracing::warn!("{e}; the trusted state was not saved");
        boot.events.emit(Event::Fallback {
            step: "state".into(),
            reason: e.reason().into(),
        });
    }
}

/// A rotation the providers showed is trusted from now on, whatever happens to the
/// release: kept with the trusted state (RAM on a diskless boot) and used by every later
/// verification of this boot.
fn keep_root(boot: &mut Boot, chain: RootChain) {
    let Some(trust) = boot.trust.as_mut() else {
        return;
    };
    if chain.root.version <= trust.chain.root.version {
        return;
    }
    tracing::info!(
        "root rotated: version {} → {}",
        trust.chain.root.version,
        chain.root.version
    );
    let saved = trust.store.save_root_chain(&chain.steps).and_then(|()| {
        let mut s = trust.store.load()?;
        s.root_version = s.root_version.max(chain.root.version);
        trust.store.save(&s)
    });
    if let Err(e) = saved {
        tracing::warn!("{e}; the rotated root is trusted for this boot only");
    }
    trust.chain = chain;
}

/// Verify every candidate's metadata (reporting each) and choose the highest release.
async fn choose(
    boot: &Boot,
    candidates: &[Candidate],
    chain: &mut RootChain,
    policy: &Policy,
    limits: &Limits,
) -> Option<Choice> {
    let mut urls = Vec::new();
    let mut how = std::collections::HashMap::new();
    for c in candidates {
        match Url::parse(&c.url).and_then(|u| u.check_origin(c.how).map(|()| u)) {
            Ok(u) => {
                how.insert(u.to_string(), c.how.name());
                urls.push(u);
            }
            Err(e) => boot.events.emit(Event::Fallback {
                step: format!("provider {}", c.url),
                reason: e.reason().into(),
            }),
        }
    }
    if urls.is_empty() {
        return None;
    }
    let events = boot.events.clone();
    let mut on_meta = |u: &Url, o: &crate::fetch::release::MetaOutcome| {
        let h = how.get(&u.to_string()).copied().unwrap_or("url");
        crate::fetch::report::metadata(&events, u, h, o)
    };
    crate::fetch::release::choose(&urls, chain, policy, limits, &mut on_meta).await
}
