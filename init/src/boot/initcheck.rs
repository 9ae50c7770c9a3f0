//! The stage-2 init (`handoff::STAGE2_INIT` inside the new root), read whole through
//! squashfs and dm-verity on a background thread while stage 1 goes on, and joined by the
//! handoff before the initramfs is given up. A block of it that fails verification then
//! falls back to the initramfs (stage 1 keeps serving) instead of killing PID 1 after
//! the switch, and the exec finds every page in the page cache.
//!
//! Why in the background: read inline by the local step it cost ~375 ms under TCG (13 MB
//! through zstd squashfs and dm-verity on one vCPU), all of it before `rootfs.mounted`,
//! although nothing but the handoff needs it. What must hold at mount time stays inline
//! in [`start`]: the init exists and is a non-empty regular file.

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Why the stage-2 init cannot be handed to.
#[derive(Debug, thiserror::Error)]
pub enum InitCheckError {
    #[error("read {path}: I/O error (a block failed verification)")]
    VerityMismatch { path: String },
    #[error("{path}: {why}")]
    NoInit { path: String, why: String },
    #[error("the reader of {path} stopped without an answer")]
    ReaderLost { path: String },
}

impl InitCheckError {
    pub fn reason(&self) -> &'static str {
        match self {
            InitCheckError::VerityMismatch { .. } => "verity_mismatch",
            InitCheckError::NoInit { .. } => "rootfs_no_init",
            InitCheckError::ReaderLost { .. } => "init_check_lost",
        }
    }
}

/// A read of the stage-2 init in progress. Dropping it (the root torn down, a kexec
/// chosen) asks the reader to stop at its next chunk.
pub struct InitCheck {
    path: String,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<Result<u64, InitCheckError>>>,
    /// The answer when no thread could be started (read inline).
    inline: Option<Result<u64, InitCheckError>>,
}

/// Check that `path` is a non-empty regular file, then start reading it whole.
pub fn start(path: &str) -> Result<InitCheck, InitCheckError> {
    let no_init = |why: String| InitCheckError::NoInit {
        path: path.to_string(),
        why,
    };
    let meta = std::fs::metadata(path).map_err(|e| no_init(e.to_string()))?;
    if !meta.is_file() {
        return Err(no_init("not a regular file".into()));
    }
    if meta.len() == 0 {
        return Err(no_init("empty".into()));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let (p, s) = (path.to_string(), stop.clone());
    let (reader, inline) = match std::thread::Builder::new()
        .name("stage2-init-read".into())
        .spawn(move || {
            // Below the boot path: the read may use what the root's mount leaves idle,
            // never the CPU the steps to `rootfs.mounted` need (one vCPU under QEMU).
            if let Err(e) = crate::sys::direct::background_thread() {
                tracing::warn!("stage-2 init reader keeps normal priority: {e}");
            }
            read_whole(&p, &s)
        }) {
        Ok(h) => (Some(h), None),
        Err(e) => {
            tracing::warn!("cannot start the reader of {path} ({e}): reading it inline");
            (None, Some(read_whole(path, &stop)))
        }
    };
    Ok(InitCheck {
        path: path.to_string(),
        stop,
        reader,
        inline,
    })
}

impl InitCheck {
    /// Wait for the read (bounded by the file's size) and give its answer: the bytes read.
    pub fn finish(mut self) -> Result<u64, InitCheckError> {
        if let Some(answer) = self.inline.take() {
            return answer;
        }
        let lost = || InitCheckError::ReaderLost {
            path: self.path.clone(),
        };
        match self.reader.take().map(JoinHandle::join) {
            Some(Ok(answer)) => answer,
            Some(Err(_)) | None => Err(lost()),
        }
    }
}

impl Drop for InitCheck {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Read `path` to its end in 1 MiB chunks (nothing kept), unless asked to stop.
fn read_whole(path: &str, stop: &AtomicBool) -> Result<u64, InitCheckError> {
    let failed = |e: std::io::Error| {
        // dm-verity answers EIO for a block whose hash does not match.
        if e.raw_os_error() == Some(rustix::io::Errno::IO.raw_os_error()) {
            InitCheckError::VerityMismatch {
                path: path.to_string(),
            }
        } else {
            InitCheckError::NoInit {
                path: path.to_string(),
                why: e.to_string(),
            }
        }
    };
    let mut f = std::fs::File::open(path).map_err(failed)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    while !stop.load(Ordering::Relaxed) {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(failed(e)),
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_file_is_read_and_counted() {
        let dir = std::env::temp_dir().join(format!("initcheck-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("init");
        std::fs::write(&p, vec![7u8; 3 << 20 | 5]).unwrap();
        let check = start(p.to_str().unwrap()).unwrap();
        assert_eq!(check.finish().unwrap(), (3 << 20 | 5) as u64);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_missing_empty_or_odd_init_is_refused_at_once() {
        let dir = std::env::temp_dir().join(format!("initcheck-no-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty");
        std::fs::write(&empty, b"").unwrap();
        for p in [dir.join("missing"), empty, dir.clone()] {
            let e = start(p.to_str().unwrap()).err().unwrap();
            assert_eq!(e.reason(), "rootfs_no_init", "{p:?}: {e}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
