//! The floor of kernel start -> `/init`: a boot whose initramfs holds only a static probe
//! (`../shared/bench/probe-init.c`, the program Debian's baseline script boots), which prints
//! `PROBE-UPTIME <guest seconds>` and powers off. `make bench` boots it with the same
//! [`crate::Vm`] (devices, command line) as the phase boots, interleaved with them, so
//! that the ratio of `init.start` to the floor is not skewed by a machine whose load moved
//! between two batches of boots.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The probe's source: `$PROBE_SRC`, else the shared bench folder beside the repository.
pub fn probe_source() -> PathBuf {
    std::env::var_os("PROBE_SRC")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/bench/probe-init.c")
        })
}

/// Build the probe as the shared script does (`musl-gcc -static -O2`) and pack it as the
/// only file, `/init`, of a gzip'd newc cpio in `dir` (the script's `gzip -1`).
pub fn probe_initramfs(source: &Path, dir: &Path) -> Result<PathBuf, String> {
    let run = |what: &str, c: &mut Command| match c.status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("{what}: {s}")),
        Err(e) => Err(format!("{what}: {e}")),
    };
    let root = dir.join("probe-root");
    std::fs::create_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
    run(
        "musl-gcc (musl-tools)",
        Command::new("musl-gcc")
            .args(["-static", "-O2", "-o"])
            .arg(root.join("init"))
            .arg(source),
    )?;
    let cpio = dir.join("probe.cpio");
    let img = dir.join("probe.cpio.gz");
    let file = |p: &Path| std::fs::File::create(p).map_err(|e| format!("{}: {e}", p.display()));
    run(
        "cpio",
        Command::new("sh")
            .args(["-c", "echo init | cpio -o -H newc --quiet"])
            .current_dir(&root)
            .stdout(file(&cpio)?)
            .stderr(Stdio::null()),
    )?;
    let input = std::fs::File::open(&cpio).map_err(|e| format!("{}: {e}", cpio.display()))?;
    run(
        "gzip",
        Command::new("gzip")
            .args(["-1", "-n", "-c"])
            .stdin(input)
            .stdout(file(&img)?),
    )?;
    Ok(img)
}

/// The guest uptime the probe printed, in ms: its `PROBE-UPTIME <seconds> <idle>` line (the
/// probe's own output, as the baseline script reads it).
pub fn probe_uptime_ms(console: &str) -> Option<f64> {
    console.lines().find_map(|l| {
        let secs = l.split("PROBE-UPTIME ").nth(1)?.split_whitespace().next()?;
        secs.parse::<f64>().ok().map(|s| s * 1000.0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_probe_line() {
        let console = "[    1.2] x\r\nPROBE-UPTIME 1.25 0.91\n\r\nreboot: Power down\n";
        assert_eq!(probe_uptime_ms(console), Some(1250.0));
        assert_eq!(probe_uptime_ms("PROBE-UPTIME \nno line"), None);
        assert_eq!(probe_uptime_ms("nothing"), None);
    }
}
