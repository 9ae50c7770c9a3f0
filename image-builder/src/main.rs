//! `phase-image`: builds Phase Boot's artifacts, rootless and reproducibly.
//!
//! Each command (src/cli/, one file each, parsed with lexopt like `phase`'s) collects its
//! inputs into a plan, builds in memory where it can, and writes its output atomically.
//! Exit status: 0 built, 1 failed (with the reason), 2 usage error.

mod blockdev;
mod cli;
mod disk;
mod esp;
mod grub;
mod initramfs;
mod kconfig;
mod kmod;
mod menu;
mod netboot;
mod qcow2;
mod release;
mod squashfs;
mod verity;
mod write;

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

fn main() {
    std::process::exit(cli::PROGRAM.run(std::env::args_os().skip(1).collect()))
}

/// A temp file name beside `path` (same directory, so a rename onto `path` is atomic);
/// creates the directory.
pub fn temp_beside(path: &Path) -> Result<PathBuf> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    Ok(dir.join(format!(
        ".{}.tmp{}",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    )))
}

/// Write `bytes` to `path` via a temp file in the same directory, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = temp_beside(path)?;
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming onto {}", path.display()))?;
    Ok(())
}
