//! The carry step: what this boot starts with besides its initramfs's own files.
//!
//! Every boot: the DHT bootstrap list baked into the initramfs. After a kexec
//! (`phase.stage=2`), the previous kernel's init appended to this initramfs the release
//! it verified (`/phase-carry/release/`, every file of it) and its handover
//! (`/phase-carry/carry.json`, a `handover::Carry`: network, DHCP lease, bootstrap list).
//! Nothing carried is trusted as such: the carried root chain is walked again from this
//! initramfs's own baked-in anchor and the metadata verified against where it ends, its
//! kernel must be the one this initramfs was built for, the verity tree's SHA-256 must
//! match and dm-verity checks the rootfs (or, without dm-verity, the rootfs is checked by
//! its verity tree on every CPU against the signed root hash). Then the rootfs is mounted and the boot goes
//! straight to the handoff: no discovery, no second download. The carried network is
//! configured by the network step (no DHCP exchange), and once the kernel and initramfs
//! files check against their signed hashes the release directory is bound read-only at
//! `fetch::RELEASE_DIR`, where stage 2 serves it to peers.

use super::local::{assemble, fail, teardown, verity_params, wait_for};
use super::{Boot, StepError};
use crate::config::Stage;
use crate::events::Event;
use crate::handover::{carried_lease, merge_bootstrap, Carry, Stamp};
use crate::kexec::decide::Offer;
use crate::paths;
use phase_release::doc::Release;
use std::io::Read;
use std::path::Path;

/// The dm-verity device over the carried rootfs.
const DM_NAME: &str = "phase-carried";

pub fn run(boot: &mut Boot) -> Result<(), StepError> {
    let own = std::fs::read_to_string(super::discover::BOOTSTRAP_PATH).unwrap_or_default();
    boot.bootstrap = merge_bootstrap(&own, &[]);
    if boot.config.stage != Stage::Two {
        return Ok(());
    }
    let carried = Path::new(paths::CARRY_DIR);
    let handover = carried.join(paths::CARRY_JSON).display().to_string();
    match Carry::read(&handover) {
        Ok(c) => {
            boot.bootstrap = merge_bootstrap(&own, &c.bootstrap);
            let now = Stamp::now();
            boot.carried_net = c.net.map(|mut n| {
                n.lease = n.lease.and_then(|h| carried_lease(&h, &c.written, &now));
                n
            });
        }
        Err(e) => {
            tracing::warn!("{e}; no network carried across the kexec");
            boot.events.emit(Event::Fallback {
                step: "carry handover".into(),
                reason: e.reason().into(),
            });
        }
    }
    let dir = carried.join(paths::CARRY_RELEASE);
    let dir = dir.as_path();
    let meta = dir.join(paths::RELEASE_JSON);
    let artifact = meta.display().to_string();
    if !meta.exists() {
        return Err(StepError {
            reason: "carry_missing",
            message: format!(
                "phase.stage=2 but {artifact} is missing; choosing a release as stage 1"
            ),
        });
    }
    let Some(trust) = boot.trust.as_ref() else {
        return Err(fail(
            boot,
            &artifact,
            "no_trust_anchor",
            "no verified trust anchor".into(),
        ));
    };
    let mut bytes = Vec::new();
    if let Err(e) = std::fs::File::open(&meta).and_then(|f| {
        f.take(phase_release::doc::MAX_METADATA_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
    }) {
        return Err(fail(
            boot,
            &artifact,
            "meta_unreadable",
            format!("{artifact}: {e}"),
        ));
    }
    let policy = phase_release::verify::Policy {
        arch: std::env::consts::ARCH.into(),
        channel: boot.config.channel.clone(),
        now: trust.now,
        floor: trust.floor,
        trusted: None,
    };
    // The carried rotation steps are walked from this initramfs's own anchor; a step that
    // does not verify ends the walk (and the release then fails against the older root).
    let mut chain = trust.chain.clone();
    if let Some(e) = chain.walk(|v| std::fs::read(dir.join(format!("{v}.root.json"))).ok()) {
        tracing::warn!(
            "carried root chain ends at version {}: {e}",
            chain.root.version
        );
    }
    let rel: Release = match phase_release::verify::verify_release(&bytes, &chain.root, &policy) {
        Ok(v) => v.doc,
        Err(e) => {
            return Err(fail(
                boot,
                &artifact,
                e.reason(),
                format!("{artifact}: {e}"),
            ))
        }
    };
    // This initramfs belongs to one kernel: the release must name that kernel.
    let ours = std::fs::read_to_string(paths::KERNEL_SHA).unwrap_or_default();
    if !ours
        .trim()
        .eq_ignore_ascii_case(&rel.artifacts.kernel.sha256)
    {
        return Err(fail(
            boot,
            "kernel",
            "carry_kernel_mismatch",
            format!(
                "release {} names kernel {}, this initramfs was built for {}",
                rel.version,
                rel.artifacts.kernel.sha256,
                ours.trim()
            ),
        ));
    }
    let Some(rootfs) = rel.artifacts.rootfs.clone() else {
        return Err(fail(
            boot,
            &artifact,
            "no_rootfs",
            format!("release {} carries no rootfs", rel.version),
        ));
    };
    let image = dir.join(super::handoff::base_name(&rootfs.path));
    let size = std::fs::metadata(&image).map(|m| m.len()).unwrap_or(0);
    if size != rootfs.size {
        return Err(fail(
            boot,
            "rootfs",
            "carry_size_mismatch",
            format!("{}: {size} bytes, signed {}", image.display(), rootfs.size),
        ));
    }
    let device = match verified_device(boot, dir, &image, &rootfs) {
        Ok(d) => d,
        Err(e) => {
            crate::sys::dm::remove(DM_NAME);
            return Err(e);
        }
    };
    if let Err(e) = assemble(boot, &device, None) {
        teardown();
        crate::sys::dm::remove(DM_NAME);
        return Err(e);
    }
    boot.events.emit(Event::RootfsMounted {
        device,
        release: rel.version,
    });
    serve_from(boot, dir, &rel);
    boot.root = Some(Offer {
        version: rel.version,
        kernel_sha256: rel.artifacts.kernel.sha256.clone(),
    });
    Ok(())
}

/// dm-verity over the carried image and tree (the tree's own SHA-256 checked first), or,
/// when dm-verity is unavailable, the image checked by its verity tree on every CPU.
fn verified_device(
    boot: &Boot,
    dir: &Path,
    image: &Path,
    rootfs: &phase_release::doc::Artifact,
) -> Result<String, StepError> {
    let stream_fail = |what: &str, e: phase_release::stream::StreamError| {
        let reason = match &e {
            phase_release::stream::StreamError::Trust(t) => t.reason(),
            phase_release::stream::StreamError::Io(_) => "rootfs_unreadable",
        };
        fail(boot, what, reason, format!("{what}: {e}"))
    };
    let open = |p: &Path| {
        std::fs::File::open(p).map_err(|e| {
            fail(
                boot,
                "rootfs",
                "rootfs_unreadable",
                format!("{}: {e}", p.display()),
            )
        })
    };
    if let (Some(v), true) = (&rootfs.verity, Path::new("/dev/mapper/control").exists()) {
        let tree = dir.join(super::handoff::base_name(&v.hash_path));
        let tree_artifact = phase_release::doc::Artifact {
            path: v.hash_path.clone(),
            size: v.hash_size,
            sha256: v.hash_sha256.clone(),
            verity: None,
        };
        phase_release::stream::verify_reader("rootfs.verity", &tree_artifact, open(&tree)?)
            .map_err(|e| stream_fail("rootfs.verity", e))?;
        let loop_fail = |e| fail(boot, "rootfs", "loop_failed", e);
        super::modules::load_now(boot, crate::kmod::Need::Loop);
        let data_dev = crate::sys::loopdev::attach_readonly(image).map_err(loop_fail)?;
        let hash_dev = crate::sys::loopdev::attach_readonly(&tree).map_err(loop_fail)?;
        let params = verity_params(v, &data_dev, &hash_dev);
        let target = crate::sys::dm::Target {
            start: 0,
            sectors: rootfs.size / 512,
            kind: "verity",
            params: &params,
        };
        match crate::sys::dm::create_readonly(DM_NAME, &target) {
            Ok(dev) => {
                wait_for(&dev);
                boot.events.emit(Event::RootfsVerified {
                    method: "dm-verity".into(),
                    device: dev.clone(),
                    root_hash: v.root_hash.clone(),
                });
                return Ok(dev);
            }
            Err(e) => tracing::warn!("{e}; hashing the whole carried image instead"),
        }
    }
    let (method, root_hash) = match &rootfs.verity {
        // The carried image is in RAM already: check it in place by its tree, every CPU.
        Some(v) => {
            use std::os::unix::fs::FileExt;
            let f = open(image)?;
            let size = f.metadata().map_or(0, |m| m.len());
            if size != rootfs.size {
                let msg = format!("{}: {size} bytes, signed {}", image.display(), rootfs.size);
                return Err(fail(boot, "rootfs", "size_mismatch", msg));
            }
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
            let blocks = size / phase_release::verity::BLOCK as u64;
            phase_release::verity::verify_data(v, blocks, cpus, |off, buf| {
                f.read_exact_at(buf, off)
            })
            .map_err(|e| {
                fail(
                    boot,
                    "rootfs",
                    e.reason(),
                    format!("{}: {e}", image.display()),
                )
            })?;
            ("verity-tree", v.root_hash.clone())
        }
        None => {
            phase_release::stream::verify_reader("rootfs", rootfs, open(image)?)
                .map_err(|e| stream_fail("rootfs", e))?;
            ("sha256", rootfs.sha256.clone())
        }
    };
    super::modules::load_now(boot, crate::kmod::Need::Loop);
    let dev = crate::sys::loopdev::attach_readonly(image)
        .map_err(|e| fail(boot, "rootfs", "loop_failed", e))?;
    boot.events.emit(Event::RootfsVerified {
        method: method.into(),
        device: dev.clone(),
        root_hash,
    });
    Ok(dev)
}

/// Bind the carried release directory read-only where stage 2 serves from, once the
/// files not checked on the way to the mount (kernel, initramfs) match their signed
/// hashes. A failure costs only the serving: `verify.failed` or a `fallback`, logged.
fn serve_from(boot: &Boot, dir: &Path, rel: &Release) {
    for (what, a) in [
        ("kernel", &rel.artifacts.kernel),
        ("initramfs", &rel.artifacts.initramfs),
    ] {
        let path = dir.join(super::handoff::base_name(&a.path));
        let checked = std::fs::File::open(&path)
            .map_err(|e| ("carry_unreadable", format!("{}: {e}", path.display())))
            .and_then(|f| {
                phase_release::stream::verify_reader(what, a, f).map_err(|e| match &e {
                    phase_release::stream::StreamError::Trust(t) => (t.reason(), e.to_string()),
                    phase_release::stream::StreamError::Io(_) => {
                        ("carry_unreadable", e.to_string())
                    }
                })
            });
        if let Err((reason, message)) = checked {
            let _ = fail(boot, what, reason, message.clone());
            tracing::warn!("{message}; this node will not serve its release");
            return;
        }
    }
    if let Err(e) =
        crate::sys::mount::bind_readonly(&dir.display().to_string(), super::fetch::RELEASE_DIR)
    {
        tracing::warn!("{e}; this node will not serve its release");
        boot.events.emit(Event::Fallback {
            step: "carry serve".into(),
            reason: "bind_failed".into(),
        });
    }
}
