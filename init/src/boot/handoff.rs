//! The end of stage 1, one of two ways.
//!
//! - [`run`] (the `handoff` step): switch root into the verified rootfs assembled at
//!   `NEW_ROOT`: write the typed handover (`handover::Carry`: release, network, DHCP
//!   lease, bootstrap list), move the pseudo filesystems, free the
//!   initramfs, make the rootfs `/`, and exec its own `phase` (read through dm-verity) as
//!   PID 1 for stage 2. Before the initramfs is freed every failure falls back to it;
//!   after, an exec failure continues stage 2 in this process.
//! - [`kexec`] (called by the fetch step once `kexec::decide::handoff` chose it): append
//!   the carry archive (every file of the release, and the `Carry`) to the new
//!   release's verified initramfs, check memory, `kexec_file_load` its verified kernel with
//!   the signed command line plus the allowlist, then sync, unmount and reboot into it.
//!   Every failure before the reboot is a named `fallback`, and the boot goes on with
//!   what verified locally.

use super::local::NEW_ROOT;
use super::{Boot, StepError};
use crate::events::Event;
use crate::fetch::release::Choice;
use crate::handover::{Carry, Stamp};
use crate::kexec::{cmdline, image, KexecError};
use crate::paths;
use crate::sys::root;
use std::io::{Read, Write};
use std::path::Path;

/// The init stage 2 runs, inside the rootfs.
pub const STAGE2_INIT: &str = "/usr/lib/phase/phase";

pub fn run(boot: &mut Boot) -> Result<(), StepError> {
    let Some(root) = boot.root.clone() else {
        return Ok(());
    };
    // No module load may be cut short by the exec.
    super::modules::settle_all(boot);
    // Every block of the init stage 2 runs, read through dm-verity since the root was
    // mounted: a bad one keeps this boot on the initramfs.
    if let Some(check) = boot.init_check.take() {
        match check.finish() {
            Ok(bytes) => tracing::info!("{STAGE2_INIT}: {bytes} bytes read and verified"),
            Err(e) => {
                boot.events.emit(Event::VerifyFailed {
                    artifact: STAGE2_INIT.into(),
                    reason: e.reason().into(),
                    provider: None,
                });
                super::local::teardown();
                boot.root = None;
                return Err(StepError {
                    reason: e.reason(),
                    message: e.to_string(),
                });
            }
        }
    }
    // Everything stage 2 needs from this stage, in one typed value; /run moves along.
    if let Err(e) = carry(boot, Some(root.version)).write(paths::CARRY) {
        tracing::warn!("{e}; stage 2 starts with no network or bootstrap peers");
    }
    if let Err(e) = root::move_pseudo(NEW_ROOT) {
        // Put back what moved, so the initramfs keeps working.
        for m in root::MOVED {
            let _ = rustix::mount::mount_move(format!("{NEW_ROOT}{m}").as_str(), *m);
        }
        return Err(StepError {
            reason: "switch_root_failed",
            message: e,
        });
    }
    // A release carried across kexec stays: stage 2 serves it from there.
    let freed = root::free_initramfs(&[paths::CARRY_DIR]);
    tracing::info!(
        "freed {} KiB of initramfs; switching root to {NEW_ROOT}",
        freed / 1024
    );
    if let Err(e) = root::enter(NEW_ROOT) {
        // No initramfs to return to: carry on here, logged.
        tracing::error!("{e}");
        boot.events.emit(Event::Fallback {
            step: "handoff".into(),
            reason: "enter_root_failed".into(),
        });
        return Ok(());
    }
    let err = root::exec(STAGE2_INIT, &[crate::config::Stage::RUN_ARG]);
    tracing::error!("exec {STAGE2_INIT}: {err}; continuing stage 2 in this process");
    boot.events.emit(Event::Fallback {
        step: "handoff".into(),
        reason: "exec_failed".into(),
    });
    Ok(())
}

/// The handover of this boot: the network it configured, its bootstrap list.
fn carry(boot: &Boot, release: Option<u64>) -> Carry {
    Carry {
        release,
        net: boot.net.as_ref().map(|up| crate::handover::Net {
            iface: up.iface.clone(),
            config: up.config.clone(),
            method: up.method.to_string(),
            lease: up.lease.clone(),
        }),
        bootstrap: boot.bootstrap.clone(),
        written: Stamp::now(),
    }
}

fn io(what: impl std::fmt::Display, e: impl std::fmt::Display) -> KexecError {
    KexecError::Io {
        what: what.to_string(),
        detail: e.to_string(),
    }
}

/// kexec into `choice`, whose every file was downloaded and verified into `dir` (see the
/// module docs). Returns only on failure, or with `phase.poweroff=kexec.start` (the
/// runner then powers off).
pub async fn kexec(boot: &mut Boot, choice: &Choice, dir: &Path) -> Result<(), StepError> {
    let from = boot.root.as_ref().map(|r| r.version);
    let staged = stage(boot, choice, dir).map_err(|e| StepError {
        reason: e.reason(),
        message: e.to_string(),
    })?;
    boot.events.emit(Event::KexecStart {
        from,
        to: choice.release.version,
        from_kernel: rustix::system::uname()
            .release()
            .to_string_lossy()
            .into_owned(),
        to_kernel: staged.to_kernel,
        carried_bytes: staged.carried_bytes,
        cmdline: staged.cmdline,
    });
    if boot.config.poweroff.as_deref() == Some("kexec.start") {
        // A test or benchmark stops here; the runner powers off through firmware.
        crate::sys::kexec::unload();
        return Ok(());
    }
    // The point of no return: stop what runs, flush and unmount what is writable.
    boot.init_check = None;
    boot.supervisor.stop(super::STOP_BOUND).await;
    rustix::fs::sync();
    super::local::teardown();
    let errno = crate::sys::kexec::reboot_into_staged();
    crate::sys::kexec::unload();
    boot.root = None;
    let e = KexecError::Reboot { errno };
    Err(StepError {
        reason: e.reason(),
        message: e.to_string(),
    })
}

/// What was staged in the kernel.
struct Staged {
    to_kernel: String,
    carried_bytes: u64,
    cmdline: String,
}

/// Build the new initramfs with the carry, check memory, `kexec_file_load`.
fn stage(boot: &Boot, choice: &Choice, dir: &Path) -> Result<Staged, KexecError> {
    let rel = &choice.release;
    let kernel_path = dir.join(&rel.artifacts.kernel.path);
    let mut kernel = std::fs::File::open(&kernel_path).map_err(|e| io(kernel_path.display(), e))?;
    let mut head = Vec::with_capacity(image::VERSION_BYTES);
    (&mut kernel)
        .take(image::VERSION_BYTES as u64)
        .read_to_end(&mut head)
        .map_err(|e| io(kernel_path.display(), e))?;
    let bad = |why| KexecError::NotBzImage {
        path: kernel_path.display().to_string(),
        why,
    };
    let init_size = image::init_size(&head).map_err(bad)?;
    let to_kernel = image::kernel_release(&head).unwrap_or_else(|| "unknown".into());
    let running = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let line = cmdline::next(&rel.cmdline, running.trim())?;
    let c_line = std::ffi::CString::new(line.clone())
        .map_err(|_| io("the new command line", "contains a NUL byte"))?;
    let carried_bytes = write_initramfs(boot, choice, dir)?;
    let initramfs =
        std::fs::File::open(paths::KEXEC_INITRAMFS).map_err(|e| io(paths::KEXEC_INITRAMFS, e))?;
    let initramfs_bytes = initramfs.metadata().map(|m| m.len()).unwrap_or(0);
    let need = image::memory_needed(init_size, rel.artifacts.kernel.size, initramfs_bytes);
    let available = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| image::mem_available(&m))
        .unwrap_or(0);
    // The file stays reachable through `initramfs` until the load is done.
    let _ = std::fs::remove_file(paths::KEXEC_INITRAMFS);
    if available < need {
        return Err(KexecError::ShortOfMemory { need, available });
    }
    tracing::info!(
        "kexec_file_load {} ({to_kernel}), initramfs {initramfs_bytes} bytes ({carried_bytes} carried), cmdline {line:?}",
        kernel_path.display()
    );
    crate::sys::kexec::file_load(&kernel, &initramfs, &c_line)
        .map_err(|errno| KexecError::Load { errno })?;
    Ok(Staged {
        to_kernel,
        carried_bytes,
        cmdline: line,
    })
}

/// The new release's initramfs (verified on download), then the carry archive:
/// `phase-carry/carry.json` (this boot's network and bootstrap list) and
/// `phase-carry/release/`, every file of the release (metadata, root chain, kernel,
/// initramfs, rootfs, verity tree) so that the next kernel mounts the rootfs and serves
/// the whole release. Each large file is moved into the archive and deleted behind it,
/// so RAM holds it about once (the kernel stays for the load). Returns the bytes of the
/// carry archive.
fn write_initramfs(boot: &Boot, choice: &Choice, dir: &Path) -> Result<u64, KexecError> {
    use phase_release::cpio;
    let rel = &choice.release;
    let out_path = paths::KEXEC_INITRAMFS;
    let mut out = std::fs::File::create(out_path).map_err(|e| io(out_path, e))?;
    let initramfs = dir.join(&rel.artifacts.initramfs.path);
    let base = std::io::copy(
        &mut std::fs::File::open(&initramfs).map_err(|e| io(initramfs.display(), e))?,
        &mut out,
    )
    .map_err(|e| io(out_path, e))?;
    let mut w = Counting {
        out: &mut out,
        n: 0,
    };
    let werr = |e: std::io::Error| io(out_path, e);
    // The kernel reads archives at 4-byte boundaries.
    w.write_all(&vec![0; cpio::pad_len(base)]).map_err(werr)?;
    let mtime = 0;
    let mut ino = 1;
    let release_dir = format!("{}/{}", paths::CARRY_ARCHIVE_DIR, paths::CARRY_RELEASE);
    // The kernel's unpacker creates no parent directories: each comes first.
    for d in [paths::CARRY_ARCHIVE_DIR, release_dir.as_str()] {
        ino += 1;
        w.write_all(&cpio::dir_header(ino, 0o700, mtime, d))
            .map_err(werr)?;
    }
    // The release is not carried as a fact: the next kernel's init verifies it again.
    let handover = carry(boot, None).to_bytes();
    let mut small: Vec<(String, Vec<u8>)> = vec![
        (
            format!("{}/{}", paths::CARRY_ARCHIVE_DIR, paths::CARRY_JSON),
            handover,
        ),
        (
            format!("{release_dir}/{}", paths::RELEASE_JSON),
            choice.metadata.release_json.clone(),
        ),
    ];
    for (v, b) in &choice.metadata.chain {
        small.push((format!("{release_dir}/{v}.root.json"), b.clone()));
    }
    for (archived, bytes) in small {
        ino += 1;
        w.write_all(&cpio::file_header(
            ino,
            0o600,
            mtime,
            bytes.len() as u32,
            &archived,
        ))
        .map_err(werr)?;
        w.write_all(&bytes).map_err(werr)?;
        w.write_all(&vec![0; cpio::pad_len(bytes.len() as u64)])
            .map_err(werr)?;
    }
    // (release path, deleted once carried)
    let mut large = vec![
        (rel.artifacts.kernel.path.clone(), false),
        (rel.artifacts.initramfs.path.clone(), true),
    ];
    if let Some(r) = &rel.artifacts.rootfs {
        large.push((r.path.clone(), true));
        if let Some(v) = &r.verity {
            large.push((v.hash_path.clone(), true));
        }
    }
    for (name, delete) in large {
        let src = dir.join(&name);
        let mut f = std::fs::File::open(&src).map_err(|e| io(src.display(), e))?;
        let size = f.metadata().map_err(|e| io(src.display(), e))?.len();
        let size32 = u32::try_from(size).map_err(|_| io(src.display(), "over 4 GiB"))?;
        ino += 1;
        let archived = format!("{release_dir}/{}", base_name(&name));
        w.write_all(&cpio::file_header(ino, 0o400, mtime, size32, &archived))
            .map_err(werr)?;
        let copied = std::io::copy(&mut f, &mut w).map_err(werr)?;
        if copied != size {
            return Err(io(src.display(), "changed while being carried"));
        }
        w.write_all(&vec![0; cpio::pad_len(size)]).map_err(werr)?;
        drop(f);
        if delete {
            let _ = std::fs::remove_file(&src);
        }
    }
    w.write_all(&cpio::trailer()).map_err(werr)?;
    let n = w.n;
    out.sync_all().map_err(|e| io(out_path, e))?;
    Ok(n)
}

/// A release path's last component: the carry is one flat directory.
pub fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Counts what passes through.
struct Counting<'a, W: Write> {
    out: &'a mut W,
    n: u64,
}

impl<W: Write> Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}
