//! The initramfs: `/init` (the `phase` binary), the kernel modules it loads with their
//! dependencies, the files the init reads, and the device node the kernel needs for the
//! console. Collected as an [`Archive`], written as a gzip'd newc cpio. Deterministic: the
//! same inputs give the same bytes.

use crate::kmod;
use anyhow::{Context, Result};
use flate2::{Compression, GzBuilder};
use phase_release::cpio::{Archive, Kind};
use std::io::Write;
use std::path::{Path, PathBuf};

pub struct Inputs {
    pub init: PathBuf,
    /// An unpacked `/lib/modules/<release>` directory.
    pub modules_dir: PathBuf,
    /// Wanted module names.
    pub wanted: Vec<String>,
    /// Extra files: (path in the archive, file on the host).
    pub files: Vec<(String, PathBuf)>,
    /// Lowest release version the init accepts.
    pub release_floor: u64,
    /// SOURCE_DATE_EPOCH: every mtime, and the init's lower bound for the clock.
    pub mtime: u32,
}

pub struct Report {
    pub entries: usize,
    pub modules: usize,
    pub builtin: Vec<String>,
    pub missing: Vec<String>,
    pub cpio_bytes: usize,
}

/// Read `initramfs/modules.txt`-style lists: one name a line, `#` comments.
pub fn parse_module_list(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

pub fn archive(inp: &Inputs) -> Result<(Archive, Report)> {
    let mut a = Archive::new();
    let add =
        |a: &mut Archive, p: &str, k: Kind, m: u32| a.add(p, k, m).map_err(anyhow::Error::msg);
    let init =
        std::fs::read(&inp.init).with_context(|| format!("reading {}", inp.init.display()))?;
    add(&mut a, "init", Kind::File(init), 0o755)?;
    // The kernel opens /dev/console for PID 1 before anything is mounted.
    add(
        &mut a,
        "dev/console",
        Kind::CharDev { major: 5, minor: 1 },
        0o600,
    )?;
    for d in ["proc", "sys", "run", "tmp", "root", "etc/phase"] {
        add(
            &mut a,
            d,
            Kind::Dir,
            if d == "tmp" { 0o1777 } else { 0o755 },
        )?;
    }

    let tree = kmod::Tree::open(&inp.modules_dir)?;
    let release = &tree.release;
    let sel = kmod::select(&tree.index, &tree.builtin, &inp.wanted, |rel| {
        tree.deps_of(rel)
    })?;
    let base = format!("lib/modules/{release}");
    for (rel, _) in sel.modules.values() {
        let bytes = std::fs::read(inp.modules_dir.join(rel))?;
        add(&mut a, &format!("{base}/{rel}"), Kind::File(bytes), 0o644)?;
    }
    add(
        &mut a,
        &format!("{base}/modules.dep"),
        Kind::File(kmod::modules_dep(&sel).into_bytes()),
        0o644,
    )?;
    add(
        &mut a,
        &format!("{base}/modules.builtin"),
        Kind::File(tree.builtin_text.clone().into_bytes()),
        0o644,
    )?;
    let wanted = inp.wanted.join("\n") + "\n";
    add(
        &mut a,
        "etc/phase/modules",
        Kind::File(wanted.into_bytes()),
        0o644,
    )?;

    let floor = format!("{}\n", inp.release_floor).into_bytes();
    add(&mut a, "etc/phase/release-floor", Kind::File(floor), 0o644)?;
    let built = format!("{}\n", inp.mtime).into_bytes();
    add(&mut a, "etc/phase/build-time", Kind::File(built), 0o644)?;
    for (dest, src) in &inp.files {
        let bytes = std::fs::read(src).with_context(|| format!("reading {}", src.display()))?;
        add(&mut a, dest, Kind::File(bytes), 0o644)?;
    }
    let report = Report {
        entries: a.len(),
        modules: sel.modules.len(),
        builtin: sel.builtin,
        missing: sel.missing,
        cpio_bytes: 0,
    };
    Ok((a, report))
}

/// Build and write the compressed initramfs to `out` (atomically: temp file, then rename).
pub fn write(inp: &Inputs, out: &Path) -> Result<Report> {
    let (a, mut report) = archive(inp)?;
    let cpio = a.to_newc(inp.mtime);
    report.cpio_bytes = cpio.len();
    // GzBuilder writes mtime 0 and no file name: nothing varies between builds.
    let mut gz = GzBuilder::new().write(Vec::new(), Compression::best());
    gz.write_all(&cpio)?;
    let bytes = gz.finish()?;
    crate::write_atomic(out, &bytes)?;
    Ok(report)
}
