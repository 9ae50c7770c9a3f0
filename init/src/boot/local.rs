//! The local release: find a boot medium's GPT partitions, verify its signed release
//! metadata against the trust anchor, set up dm-verity over the rootfs (or, without
//! dm-verity, copy it to RAM and check the copy by its verity tree on every core), mount it as the
//! lower layer of an overlay with a tmpfs upper, and mount the state directory (the
//! persistent partition, or tmpfs in `private` mode). Emits `rootfs.verified`,
//! `state.ready` and `rootfs.mounted`; any failure is `verify.failed` naming the artifact,
//! the mounts are undone, and the boot stays on the initramfs (the `fallback` event).
//! Once mounted, the release is gathered for serving in stage 2 (`boot/medium.rs`).

use super::{Boot, StepError};
use crate::events::Event;
use crate::sys::mount::{mount, Mount};
use phase_layout::gpt::{self, Partition};
use phase_layout::{part_type, Guid};
use phase_release::doc::{Artifact, Release, Verity};
use rustix::mount::MountFlags as F;
use std::io::{Read, Seek, SeekFrom};
use std::time::{Duration, Instant};

/// Where the new root is assembled; its layers live under /run/phase, which moves with /run.
pub const NEW_ROOT: &str = "/sysroot";
const LOWER: &str = "/run/phase/lower";
const RW: &str = "/run/phase/rw";
pub(super) const RAM_COPY: &str = "/run/phase/rootfs.squashfs";
/// The persistent state partition, mounted only once the release on its disk verified
/// (noexec, nodev, nosuid); the release is then judged again with the trusted state.
const STATE_MNT: &str = "/run/phase/state";
/// Where the state directory appears in the new root.
const STATE_TARGET: &str = "/sysroot/var/lib/phase";
const DM_NAME: &str = "phase-root";
/// How long to wait for a block device with a phase partition table to appear after the
/// modules loaded (USB and slow controllers announce disks late); `phase.diskless`: none.
pub const DISK_WAIT: Duration = Duration::from_secs(1);

/// How long the local step waits for a boot medium (PURE).
pub fn disk_wait_bound(diskless: bool) -> Duration {
    if diskless {
        Duration::ZERO
    } else {
        DISK_WAIT
    }
}

/// A boot medium that carries a release.
struct Medium {
    disk: String,
    parts: Vec<Partition>,
}

/// The partitions holding a release's rootfs and its verity data (PURE): matched by type
/// and by unique GUID, which the builder derives from the verity root hash.
pub fn locate<'a>(
    parts: &'a [Partition],
    verity: &Verity,
) -> Result<(&'a Partition, &'a Partition), &'static str> {
    let root_hash = phase_release::hex::decode::<32>(&verity.root_hash).ok_or("bad_root_hash")?;
    let (root_id, verity_id) = phase_layout::derive::root_and_verity(&root_hash);
    let find = |t: Guid, id: Guid| {
        parts
            .iter()
            .find(|p| p.type_guid == t && p.unique_guid == id)
    };
    let root = find(part_type::ROOT_X86_64, root_id).ok_or("rootfs_partition_missing")?;
    let hash = find(part_type::ROOT_VERITY_X86_64, verity_id).ok_or("verity_partition_missing")?;
    Ok((root, hash))
}

/// The dm-verity table parameters (PURE).
pub fn verity_params(v: &Verity, data_dev: &str, hash_dev: &str) -> String {
    format!(
        "1 {data_dev} {hash_dev} {} {} {} 1 {} {} {}",
        v.data_block_size, v.hash_block_size, v.data_blocks, v.algorithm, v.root_hash, v.salt
    )
}

pub(super) fn part_dev(disk: &str, n: u32) -> String {
    // vda → vda1; nvme0n1 → nvme0n1p1
    if disk.ends_with(|c: char| c.is_ascii_digit()) {
        format!("/dev/{disk}p{n}")
    } else {
        format!("/dev/{disk}{n}")
    }
}

/// Whole disks in /sys/class/block now, sorted (not loop, dm or ram devices).
fn block_disks() -> Vec<String> {
    let mut found: Vec<String> = std::fs::read_dir("/sys/class/block")
        .map(|d| {
            d.flatten()
                .filter(|e| !e.path().join("partition").exists())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| {
                    !n.starts_with("loop") && !n.starts_with("dm-") && !n.starts_with("ram")
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

/// The first disk with a phase partition table: those already there, then each disk the
/// kernel announces (uevent) until the bound passes. Reports `disk.waited`.
fn find_medium(boot: &Boot) -> Option<Medium> {
    let bound = disk_wait_bound(boot.config.diskless);
    let started = Instant::now();
    // Subscribe before looking, so a disk that appears in between is not missed.
    let uevents = crate::sys::uevent::Uevents::open()
        .map_err(|e| tracing::warn!("uevent socket: {e}; looking only at the disks already there"))
        .ok();
    let (mut checked, mut announced) = (Vec::<String>::new(), 0u32);
    let (medium, ended) = 'wait: loop {
        for disk in block_disks() {
            if checked.contains(&disk) {
                continue;
            }
            checked.push(disk.clone());
            if let Some(parts) = read_gpt(&disk) {
                if parts.iter().any(|p| p.type_guid == part_type::META) {
                    break 'wait (Some(Medium { disk, parts }), "found");
                }
            }
        }
        let Some(u) = &uevents else {
            break (None, "no_uevents");
        };
        // Block until the next uevent or the bound; only a new disk is worth a rescan.
        loop {
            match u.next(bound.saturating_sub(started.elapsed())) {
                Ok(Some(msg)) => {
                    if crate::uevent::Uevent::parse(&msg).is_some_and(|e| e.is_disk_added()) {
                        announced += 1;
                        break;
                    }
                }
                // A socket timeout may round below the bound: wait out the rest.
                Ok(None) if started.elapsed() >= bound => break 'wait (None, "bound"),
                Ok(None) => {}
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => {
                    tracing::warn!("uevent socket: {e}; no more waiting for disks");
                    break 'wait (None, "bound");
                }
            }
        }
    };
    boot.events.emit(Event::DiskWaited {
        bound_ms: bound.as_millis() as u64,
        ms: started.elapsed().as_millis() as u64,
        ended: ended.into(),
        medium: medium.as_ref().map(|m| m.disk.clone()),
        uevents: announced,
    });
    medium
}

fn read_at(f: &mut std::fs::File, off: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    f.seek(SeekFrom::Start(off))?;
    f.read_exact(&mut buf)?;
    Ok(buf)
}

fn read_gpt(disk: &str) -> Option<Vec<Partition>> {
    let mut f = std::fs::File::open(format!("/dev/{disk}")).ok()?;
    let header = read_at(&mut f, phase_layout::SECTOR, 512).ok()?;
    let (off, len) = gpt::entries_range(&header).ok()?;
    let entries = read_at(&mut f, off, len as usize).ok()?;
    match gpt::parse(&header, &entries) {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::warn!("/dev/{disk}: {e}; ignored");
            None
        }
    }
}

pub(super) fn fail(
    boot: &Boot,
    artifact: &str,
    reason: &'static str,
    message: String,
) -> StepError {
    boot.events.emit(Event::VerifyFailed {
        artifact: artifact.into(),
        reason: reason.into(),
        provider: None,
    });
    StepError { reason, message }
}

pub fn run(boot: &mut Boot) -> Result<(), StepError> {
    if boot.root.is_some() {
        return Ok(()); // the release carried across kexec is mounted
    }
    let Some(medium) = find_medium(boot) else {
        tracing::info!("no boot medium with a phase-meta partition; staying on the initramfs");
        return Ok(());
    };
    if boot.trust.is_none() {
        return Err(fail(
            boot,
            "trusted-root.json",
            "no_trust_anchor",
            "no verified trust anchor: cannot trust the local release".into(),
        ));
    }
    // The meta partition (phase_layout::meta): release metadata, then the root chain,
    // each slot read up to its first NUL.
    let meta = medium
        .parts
        .iter()
        .find(|p| p.type_guid == part_type::META)
        .map(|p| p.number)
        .unwrap_or(1);
    let meta_dev = part_dev(&medium.disk, meta);
    let artifact = format!("{meta_dev}:release.json");
    let on_meta = match std::fs::File::open(&meta_dev).and_then(|f| {
        use std::os::unix::fs::FileExt;
        phase_layout::meta::read(|off, buf| f.read_at(buf, off))
    }) {
        Ok(docs) => docs,
        Err(e) => {
            return Err(fail(
                boot,
                &artifact,
                "meta_unreadable",
                format!("{meta_dev}: {e}"),
            ))
        }
    };
    let bytes = on_meta.release;
    // Verify with what is known before any writable disk is touched: the anchor, the
    // rotations this disk carries, the initramfs floor, the state in RAM.
    let Some(trust) = boot.trust.as_mut() else {
        return Err(StepError {
            reason: "no_trust_anchor",
            message: "trust anchor vanished".into(),
        });
    };
    walk_meta_roots(&mut trust.chain, &on_meta.roots, &meta_dev);
    let known = trust.store.load().unwrap_or_default();
    let policy = phase_release::verify::Policy {
        arch: std::env::consts::ARCH.into(),
        channel: boot.config.channel.clone(),
        now: trust.now.max(known.time),
        floor: trust.floor,
        trusted: known.trusted_release(),
    };
    let release: Release =
        match phase_release::verify::verify_release(&bytes, &trust.chain.root, &policy) {
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
    let Some(rootfs) = release.artifacts.rootfs.clone() else {
        return Err(fail(
            boot,
            &artifact,
            "no_rootfs",
            format!("release {} carries no rootfs", release.version),
        ));
    };
    let device = match verified_device(boot, &medium, &rootfs) {
        Ok(d) => d,
        Err(e) => {
            teardown();
            return Err(e);
        }
    };
    // Only now, with the release on this disk verified, its state partition (noexec):
    // the trusted state and the stored root chain, then the release judged again with
    // them (rollback protection, rotations seen before).
    let state_dev = if boot.config.mode.persists() {
        super::modules::settle(boot, crate::kmod::Need::State);
        open_state(boot, &medium)
    } else {
        None
    };
    if let Err((reason, message)) = judge_with_state(boot, &bytes, state_dev.is_some()) {
        teardown();
        let name = if reason.starts_with("state_") {
            "trusted-state.json"
        } else {
            artifact.as_str()
        };
        return Err(fail(boot, name, reason, message));
    }
    if let Err(e) = assemble(boot, &device, state_dev.as_deref()) {
        teardown();
        return Err(e);
    }
    if state_dev.is_some() {
        // The state partition moved into the new root: later records (a kexec upgrade's
        // release) go there.
        if let Some(t) = boot.trust.as_mut() {
            t.store = phase_release::state::Store::on_disk(std::path::Path::new(STATE_TARGET));
        }
    }
    boot.events.emit(Event::RootfsMounted {
        device: device.clone(),
        release: release.version,
    });
    super::medium::gather_release(boot, &medium.disk, &medium.parts, &release, &bytes, &device);
    boot.root = Some(crate::kexec::decide::Offer {
        version: release.version,
        kernel_sha256: release.artifacts.kernel.sha256.clone(),
    });
    Ok(())
}

/// Walk the root chain on from where it is with the meta partition's root files, each
/// verified as the next step (TUF order: the root first, then the release is judged with
/// it). A file that does not verify ends the walk at the last root that did.
fn walk_meta_roots(chain: &mut phase_release::chain::RootChain, roots: &[Vec<u8>], dev: &str) {
    let from = chain.root.version;
    if let Some(e) = chain.walk(|v| {
        roots
            .iter()
            .find(|r| root_version(r) == Some(v))
            .map(|r| r.to_vec())
    }) {
        tracing::warn!(
            "{dev}: root chain ends at version {}: {e}",
            chain.root.version
        );
    }
    if chain.root.version > from {
        tracing::info!("{dev}: root rotated {from} → {}", chain.root.version);
    }
}

/// The `signed.version` a root file claims (PURE; only to pick the file for a step, which
/// is then verified).
fn root_version(bytes: &[u8]) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    v.get("signed")?.get("version")?.as_u64()
}

/// dm-verity over the rootfs partition, or a verified RAM copy if dm-verity is missing.
fn verified_device(boot: &Boot, m: &Medium, rootfs: &Artifact) -> Result<String, StepError> {
    let Some(v) = &rootfs.verity else {
        return Err(fail(
            boot,
            "rootfs",
            "no_verity_params",
            "rootfs artifact has no verity parameters".into(),
        ));
    };
    let (root, hash) =
        locate(&m.parts, v).map_err(|r| fail(boot, "rootfs", r, format!("{}: {r}", m.disk)))?;
    if root.size_bytes() < rootfs.size
        || hash.size_bytes() < v.hash_size
        || v.data_blocks * v.data_block_size != rootfs.size
    {
        return Err(fail(
            boot,
            "rootfs",
            "partition_too_small",
            format!("{}: partitions smaller than the signed sizes", m.disk),
        ));
    }
    let (data_dev, hash_dev) = (
        part_dev(&m.disk, root.number),
        part_dev(&m.disk, hash.number),
    );
    if std::path::Path::new("/dev/mapper/control").exists() {
        let params = verity_params(v, &data_dev, &hash_dev);
        let target = crate::sys::dm::Target {
            start: 0,
            sectors: rootfs.size / 512,
            kind: "verity",
            params: &params,
        };
        match crate::sys::dm::create_readonly(DM_NAME, &target) {
            Ok(dev) => match wait_for_node(&dev, DEVICE_NODE_WAIT) {
                Ok(()) => {
                    boot.events.emit(Event::RootfsVerified {
                        method: "dm-verity".into(),
                        device: dev.clone(),
                        root_hash: v.root_hash.clone(),
                    });
                    return Ok(dev);
                }
                Err(e) => {
                    tracing::warn!("{e}; verifying the whole image instead");
                    crate::sys::dm::remove(DM_NAME);
                }
            },
            Err(e) => tracing::warn!("{e}; verifying the whole image instead"),
        }
    } else {
        tracing::warn!("dm-verity unavailable (/dev/mapper/control missing); verifying the whole image instead");
    }
    // Copy into RAM, then check the copy by its verity tree (4 KiB blocks hashed on every
    // core, up the tree to the signed root hash) and mount that copy: the bytes mounted are
    // the bytes checked, whatever the device returns later.
    let _ = std::fs::create_dir_all("/run/phase");
    if let Err((reason, e)) = copy_and_check(&data_dev, rootfs.size, v) {
        let _ = std::fs::remove_file(RAM_COPY);
        return Err(fail(boot, "rootfs", reason, format!("{data_dev}: {e}")));
    }
    super::modules::load_now(boot, crate::kmod::Need::Loop);
    let dev = crate::sys::loopdev::attach_readonly(std::path::Path::new(RAM_COPY))
        .map_err(|e| fail(boot, "rootfs", "loop_failed", e))?;
    boot.events.emit(Event::RootfsVerified {
        method: "verity-tree".into(),
        device: dev.clone(),
        root_hash: v.root_hash.clone(),
    });
    Ok(dev)
}

/// `size` bytes of `data_dev` into RAM_COPY, then the copy checked against the signed
/// verity parameters on every CPU. Errors carry a `verify.failed` reason.
fn copy_and_check(data_dev: &str, size: u64, v: &Verity) -> Result<(), (&'static str, String)> {
    use std::os::unix::fs::FileExt;
    let unreadable = |e: std::io::Error| ("rootfs_unreadable", e.to_string());
    let mut src = std::fs::File::open(data_dev).map_err(unreadable)?;
    let mut dst = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(RAM_COPY)
        .map_err(|e| ("ram_copy_failed", format!("{RAM_COPY}: {e}")))?;
    let copied = std::io::copy(&mut (&mut src).take(size), &mut dst).map_err(unreadable)?;
    if copied != size {
        return Err((
            "size_mismatch",
            format!("{copied} bytes, the release says {size}"),
        ));
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let blocks = size / phase_release::verity::BLOCK as u64;
    phase_release::verity::verify_data(v, blocks, cpus, |off, buf| dst.read_exact_at(buf, off))
        .map_err(|e| (e.reason(), e.to_string()))
}

/// How long a mapped device's node may take to appear. devtmpfs creates the node inside
/// the ioctl that adds the disk, so on a sound kernel it is there at once; the bound only
/// counts when it is not.
pub const DEVICE_NODE_WAIT: Duration = Duration::from_secs(2);

/// [`wait_for_node`] with [`DEVICE_NODE_WAIT`]; a node that never came is logged here and
/// named by the mount that then fails.
pub(super) fn wait_for(dev: &str) {
    if let Err(e) = wait_for_node(dev, DEVICE_NODE_WAIT) {
        tracing::warn!("{e}");
    }
}

/// Wait for the device node `dev` (`/dev/NAME`) without polling: subscribe to uevents,
/// then look, then look again at each `add` of NAME, until `bound`. The kernel creates the
/// node before it sends the uevent, so subscribing first misses nothing.
pub(super) fn wait_for_node(dev: &str, bound: Duration) -> Result<(), String> {
    let started = Instant::now();
    let path = std::path::Path::new(dev);
    let name = dev.strip_prefix("/dev/").unwrap_or(dev);
    let uevents = crate::sys::uevent::Uevents::open();
    if path.exists() {
        return Ok(());
    }
    let u = uevents.map_err(|e| format!("{dev} missing, and no uevent socket to wait on: {e}"))?;
    loop {
        match u.next(bound.saturating_sub(started.elapsed())) {
            Ok(Some(msg)) => {
                let added = crate::uevent::Uevent::parse(&msg).is_some_and(|e| e.is_added(name));
                if added && path.exists() {
                    return Ok(());
                }
            }
            // A socket timeout may round below the bound: wait out the rest.
            Ok(None) if started.elapsed() >= bound => break,
            Ok(None) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(format!("{dev} missing; uevent socket: {e}")),
        }
    }
    if path.exists() {
        return Ok(());
    }
    Err(format!("{dev} did not appear within {bound:?}"))
}

/// With the state open (the partition at STATE_MNT, or RAM): walk the stored root chain
/// from the anchor, read the trusted state (capped), judge the release again with both,
/// and record it as trusted. Verified metadata is what the machine now trusts (as in TUF,
/// whether or not its artifacts then verify). A state that cannot be read is never
/// silently reset: the local release is refused (`Err((reason, message))`).
fn judge_with_state(
    boot: &mut Boot,
    bytes: &[u8],
    on_disk: bool,
) -> Result<(), (&'static str, String)> {
    let channel = boot.config.channel.clone();
    let Some(trust) = boot.trust.as_mut() else {
        return Err(("no_trust_anchor", "trust anchor vanished".into()));
    };
    if on_disk {
        trust.store = phase_release::state::Store::on_disk(std::path::Path::new(STATE_MNT));
    }
    let state = trust
        .store
        .load()
        .map_err(|e| (e.reason(), e.to_string()))?;
    // The rotations this machine trusted before, re-verified from the anchor.
    if let Some(e) = trust.chain.walk(|v| trust.store.root_file(v)) {
        tracing::warn!(
            "stored root chain ends at version {}: {e}",
            trust.chain.root.version
        );
    }
    // Every rotation reached (from this disk's meta partition or the state) is kept with
    // the trusted state, so later boots start from it.
    if !trust.chain.steps.is_empty() {
        if let Err(e) = trust.store.save_root_chain(&trust.chain.steps) {
            tracing::warn!("{e}; the root chain was not saved");
        }
    }
    let now = trust.now.max(state.time);
    let policy = phase_release::verify::Policy {
        arch: std::env::consts::ARCH.into(),
        channel,
        now,
        floor: trust.floor,
        trusted: state.trusted_release(),
    };
    let v = phase_release::verify::verify_release(bytes, &trust.chain.root, &policy)
        .map_err(|e| (e.reason(), e.to_string()))?;
    let new_state = phase_release::state::TrustedState {
        root_version: trust.chain.root.version.max(state.root_version),
        release_version: v.doc.version,
        release_digest: phase_release::hex::encode(&v.digest),
        time: now,
    };
    if let Err(e) = trust.store.save(&new_state) {
        tracing::warn!("{e}; the trusted state was not saved");
        boot.events.emit(Event::Fallback {
            step: "state".into(),
            reason: e.reason().into(),
        });
    }
    Ok(())
}

/// Mount the state partition at STATE_MNT (ext4, read-write, never executable). `None` if
/// there is none or it does not mount: `state.unavailable` with the reason, and the state
/// lives in RAM for this boot (rollback protection goes on from the initramfs floor and
/// the release just verified).
fn open_state(boot: &Boot, m: &Medium) -> Option<String> {
    let unavailable = |device: String, reason: &str| {
        boot.events.emit(Event::StateUnavailable {
            device,
            reason: reason.into(),
        })
    };
    let Some(p) = m.parts.iter().find(|p| p.type_guid == part_type::STATE) else {
        tracing::warn!("/dev/{}: no phase-state partition; state in RAM", m.disk);
        unavailable(format!("/dev/{}", m.disk), "no_state_partition");
        return None;
    };
    let dev = part_dev(&m.disk, p.number);
    let mnt = Mount {
        source: leak(&dev),
        target: STATE_MNT,
        fstype: "ext4",
        flags: F::NODEV.union(F::NOSUID).union(F::NOEXEC),
        data: "",
    };
    match mount(&mnt) {
        Ok(_) => {
            // First boot on a larger stick: the state partition takes the rest of it.
            super::grow::run(boot, &format!("/dev/{}", m.disk), &dev, STATE_MNT);
            Some(dev)
        }
        Err(e) => {
            tracing::warn!("{e}; state in RAM for this boot");
            unavailable(dev, e.reason());
            None
        }
    }
}

/// squashfs lower + tmpfs upper → overlay at NEW_ROOT; then the state directory.
pub(super) fn assemble(
    boot: &mut Boot,
    device: &str,
    state_dev: Option<&str>,
) -> Result<(), StepError> {
    let err = |reason: &'static str, e: String| fail(boot, "rootfs", reason, e);
    let lower = Mount {
        source: leak(device),
        target: LOWER,
        fstype: "squashfs",
        flags: F::RDONLY.union(F::NODEV),
        data: "",
    };
    match mount(&lower) {
        Ok(_) => {}
        // dm-verity answers EIO for a block whose hash does not match.
        Err(crate::sys::mount::MountError::Mount {
            errno: rustix::io::Errno::IO,
            what,
        }) => {
            return Err(err(
                "verity_mismatch",
                format!("mount {what}: I/O error (a block failed verification)"),
            ))
        }
        Err(e) => return Err(err("rootfs_mount_failed", e.to_string())),
    }
    let rw = Mount {
        source: "tmpfs",
        target: RW,
        fstype: "tmpfs",
        flags: F::NODEV,
        data: "mode=0755",
    };
    mount(&rw).map_err(|e| err("overlay_failed", e.to_string()))?;
    for d in ["/run/phase/rw/upper", "/run/phase/rw/work"] {
        std::fs::create_dir_all(d).map_err(|e| err("overlay_failed", format!("mkdir {d}: {e}")))?;
    }
    let overlay = Mount {
        source: "overlay",
        target: NEW_ROOT,
        fstype: "overlay",
        flags: F::empty(),
        data: "lowerdir=/run/phase/lower,upperdir=/run/phase/rw/upper,workdir=/run/phase/rw/work",
    };
    mount(&overlay).map_err(|e| err("overlay_failed", e.to_string()))?;
    // What stage 2 will exec: present now, read whole through dm-verity in the
    // background, judged by the handoff while the initramfs is still there to fall back on.
    let init = format!("{NEW_ROOT}{}", super::handoff::STAGE2_INIT);
    let check = super::initcheck::start(&init).map_err(|e| err(e.reason(), e.to_string()))?;
    // A failed state mount drops `check`, which stops the read.
    state(boot, state_dev)?;
    boot.init_check = Some(check);
    Ok(())
}

/// `/var/lib/phase`: the persistent partition already open at STATE_MNT (internet/local
/// modes), moved into the new root, or tmpfs (private mode: no disk is ever mounted
/// writable; or no usable partition).
fn state(boot: &Boot, state_dev: Option<&str>) -> Result<(), StepError> {
    if let Some(dev) = state_dev {
        let _ = std::fs::create_dir_all(STATE_TARGET);
        match rustix::mount::mount_move(STATE_MNT, STATE_TARGET) {
            Ok(()) => {
                boot.events.emit(Event::StateReady {
                    persistent: true,
                    device: dev.to_string(),
                });
                return Ok(());
            }
            Err(e) => {
                tracing::warn!("mount --move {STATE_MNT} {STATE_TARGET}: {e}; state on tmpfs");
                boot.events.emit(Event::Fallback {
                    step: "state".into(),
                    reason: "mount_failed".into(),
                });
            }
        }
    }
    let tmp = Mount {
        source: "tmpfs",
        target: STATE_TARGET,
        fstype: "tmpfs",
        flags: F::NODEV.union(F::NOSUID),
        data: "mode=0700",
    };
    mount(&tmp).map_err(|e| StepError {
        reason: e.reason(),
        message: e.to_string(),
    })?;
    boot.events.emit(Event::StateReady {
        persistent: false,
        device: "tmpfs".into(),
    });
    Ok(())
}

/// Undo whatever `run` mounted or mapped (best effort, innermost first).
pub(super) fn teardown() {
    for t in [STATE_TARGET, NEW_ROOT, RW, LOWER, STATE_MNT] {
        let _ = rustix::mount::unmount(t, rustix::mount::UnmountFlags::DETACH);
    }
    crate::sys::dm::remove(DM_NAME);
    let _ = std::fs::remove_file(RAM_COPY);
}

/// Mount sources are `&'static str` in the table type; the few dynamic ones live for the
/// whole boot anyway.
fn leak(s: &str) -> &'static str {
    Box::leak(s.to_string().into_boxed_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verity(root_hash: &str) -> Verity {
        Verity {
            hash_path: "rootfs.verity".into(),
            hash_size: 8192,
            hash_sha256: "00".repeat(32),
            root_hash: root_hash.into(),
            salt: "11".repeat(32),
            data_blocks: 256,
            data_block_size: 4096,
            hash_block_size: 4096,
            algorithm: "sha256".into(),
        }
    }

    fn part(n: u32, t: Guid, id: &str) -> Partition {
        Partition {
            number: n,
            type_guid: t,
            unique_guid: Guid::parse(id).unwrap(),
            first_lba: 2048 * n as u64,
            last_lba: 2048 * n as u64 + 2047,
            name: String::new(),
        }
    }

    /// A node that is there is taken at once; one that never comes ends the wait at its
    /// bound, not before (the uevent socket needs no device: root or not, on any host).
    #[test]
    fn a_missing_device_node_ends_the_wait_at_its_bound() {
        assert_eq!(wait_for_node("/dev/null", Duration::from_secs(5)), Ok(()));
        let bound = Duration::from_millis(300);
        let started = Instant::now();
        let missing = format!("/dev/phase-test-none-{}", std::process::id());
        let got = wait_for_node(&missing, bound);
        assert!(got.is_err(), "{got:?}");
        assert!(started.elapsed() >= bound, "gave up early: {got:?}");
    }

    #[test]
    fn locates_partitions_named_after_the_root_hash() {
        let rh: String = (0u8..32).map(|b| format!("{b:02x}")).collect();
        let parts = vec![
            part(1, part_type::META, "aaaaaaaa-0000-0000-0000-000000000000"),
            part(
                2,
                part_type::ROOT_X86_64,
                "00010203-0405-0607-0809-0a0b0c0d0e0f",
            ),
            part(
                3,
                part_type::ROOT_VERITY_X86_64,
                "10111213-1415-1617-1819-1a1b1c1d1e1f",
            ),
        ];
        let (r, h) = locate(&parts, &verity(&rh)).unwrap();
        assert_eq!((r.number, h.number), (2, 3));
        // A rootfs partition from another release (other hash) is not used.
        let other: String = (100u8..132).map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            locate(&parts, &verity(&other)).unwrap_err(),
            "rootfs_partition_missing"
        );
        assert_eq!(locate(&parts, &verity("zz")).unwrap_err(), "bad_root_hash");
    }

    #[test]
    fn verity_table() {
        let rh = "ab".repeat(32);
        assert_eq!(
            verity_params(&verity(&rh), "/dev/vda2", "/dev/vda3"),
            format!(
                "1 /dev/vda2 /dev/vda3 4096 4096 256 1 sha256 {rh} {}",
                "11".repeat(32)
            )
        );
        assert_eq!(part_dev("vda", 2), "/dev/vda2");
        assert_eq!(part_dev("nvme0n1", 2), "/dev/nvme0n1p2");
    }

    #[test]
    fn root_version_only_picks_a_file() {
        let cases: &[(&[u8], Option<u64>)] = &[
            (
                br#"{"signatures":[],"signed":{"_type":"root","version":2}}"#,
                Some(2),
            ),
            (br#"{"signed":{"version":"2"}}"#, None),
            (br#"{"version":2}"#, None),
            (b"not json", None),
            (b"", None),
        ];
        for (bytes, want) in cases {
            assert_eq!(
                root_version(bytes),
                *want,
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn diskless_does_not_wait_for_a_medium() {
        assert_eq!(disk_wait_bound(false), DISK_WAIT);
        assert_eq!(disk_wait_bound(true), Duration::ZERO);
    }
}
