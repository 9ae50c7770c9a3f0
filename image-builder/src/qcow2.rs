//! `phase-image qcow2`: the hybrid disk image as qcow2, for VMs and clouds that take it.
//! `qemu-img convert` does the format (its output is deterministic: same raw image, same
//! qcow2 bytes); the file is written beside the target and renamed into place.

use anyhow::{Context, Result};
use std::path::Path;

pub fn convert(raw: &Path, out: &Path) -> Result<u64> {
    if !raw.is_file() {
        anyhow::bail!("{}: no such disk image", raw.display());
    }
    let tmp = crate::temp_beside(out)?;
    let o = std::process::Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(raw)
        .arg(&tmp)
        .output()
        .context("running qemu-img (install qemu-utils: scripts/setup.sh)")?;
    if !o.status.success() {
        let _ = std::fs::remove_file(&tmp);
        anyhow::bail!(
            "qemu-img convert {}: {}",
            raw.display(),
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    std::fs::rename(&tmp, out).with_context(|| format!("renaming onto {}", out.display()))?;
    Ok(std::fs::metadata(out)?.len())
}
