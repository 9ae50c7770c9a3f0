//! The initramfs: `/init` (the `phase` binary), the kernel modules it loads with their
//! dependencies, the files the init reads, and the device node the kernel needs for the
//! console. Collected as an [`Archive`], written as a newc cpio compressed with lz4 (the
//! default: the fastest the kernel unpacks under TCG within 4 MiB, see `make bench`), gzip
//! or nothing. Deterministic: the same inputs give the same bytes.

use crate::kmod;
use anyhow::{Context, Result};
use flate2::GzBuilder;
use phase_release::cpio::{Archive, Kind};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// How the cpio is compressed; the kernel unpacks each (Debian's has `CONFIG_RD_LZ4=y`,
/// `CONFIG_RD_GZIP=y`, which `kernel-config/required.txt` checks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// `lz4 -l -9`: the legacy frame, the only lz4 format the kernel reads, ended by a
    /// zero chunk size ([`LZ4_END`]).
    Lz4,
    /// gzip -9, no name, mtime 0.
    Gzip,
    None,
}

impl Compression {
    pub fn parse(s: &str) -> Option<Compression> {
        match s {
            "lz4" => Some(Compression::Lz4),
            "gzip" => Some(Compression::Gzip),
            "none" => Some(Compression::None),
            _ => None,
        }
    }
}

/// A chunk size of zero after the last lz4 chunk. The legacy frame has no end mark, and the
/// kernel's decoder (lib/decompress_unlz4.c) stops at the end of the buffer or at a zero
/// chunk size; without it, an archive appended to this one (the kexec carry,
/// `boot/handoff.rs`) would be read as one more lz4 chunk and the unpack would fail. The
/// kernel skips zero bytes between archives.
pub const LZ4_END: [u8; 4] = [0; 4];

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
    pub compression: Compression,
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
    let mut sel = kmod::select(&tree.index, &tree.builtin, &inp.wanted, |rel| {
        tree.deps_of(rel)
    })?;
    let gzipped = loaded_in_background_only(&sel, &inp.wanted);
    let base = format!("lib/modules/{release}");
    for (name, (rel, _)) in sel.modules.iter_mut() {
        let mut bytes = std::fs::read(inp.modules_dir.join(&*rel))
            .with_context(|| format!("reading module {rel}"))?;
        if gzipped.contains(name) {
            bytes = compress(&bytes, Compression::Gzip)?;
            rel.push_str(".gz");
        }
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

/// Whether the init loads a module file in its `state` group, in the background (the rule
/// of init/src/kmod.rs `Need::of`: under `kernel/fs/`, but not squashfs or overlayfs).
fn state_group(rel: &str) -> bool {
    rel.starts_with("kernel/fs/")
        && !rel.starts_with("kernel/fs/squashfs/")
        && !rel.starts_with("kernel/fs/overlayfs/")
}

/// The modules (by name) that only wanted modules of the `state` group need, themselves
/// included: those are carried gzip'd (`.ko.gz`, inflated by the init when the group loads,
/// init/src/kmod_gz.rs), since nothing before `init.start` or on the local step's path waits
/// for them, while every byte of the initramfs costs the kernel's unpack before `/init`.
pub fn loaded_in_background_only(
    sel: &kmod::Selection,
    wanted: &[String],
) -> std::collections::BTreeSet<String> {
    use std::collections::BTreeSet;
    fn close(sel: &kmod::Selection, name: &str, into: &mut BTreeSet<String>) {
        if let Some((_, deps)) = sel.modules.get(name) {
            if into.insert(name.to_string()) {
                for d in deps {
                    close(sel, d, into);
                }
            }
        }
    }
    let (mut background, mut foreground) = (BTreeSet::new(), BTreeSet::new());
    for w in wanted {
        let w = w.replace('-', "_");
        match sel.modules.get(&w) {
            Some((rel, _)) if state_group(rel) => close(sel, &w, &mut background),
            Some(_) => close(sel, &w, &mut foreground),
            None => {}
        }
    }
    background.difference(&foreground).cloned().collect()
}

/// `cpio` compressed as `how` says.
pub fn compress(cpio: &[u8], how: Compression) -> Result<Vec<u8>> {
    match how {
        Compression::None => Ok(cpio.to_vec()),
        Compression::Gzip => {
            // GzBuilder writes mtime 0 and no file name: nothing varies between builds.
            let mut gz = GzBuilder::new().write(Vec::new(), flate2::Compression::best());
            gz.write_all(cpio)?;
            Ok(gz.finish()?)
        }
        Compression::Lz4 => {
            // The lz4 tool (scripts/setup.sh installs it): the high-compression levels the
            // kernel's 4 MiB budget needs; its output depends only on its input.
            let mut child = Command::new("lz4")
                .args(["-l", "-9", "-c", "-q"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .context("running lz4 (install it: scripts/setup.sh)")?;
            let mut stdin = child.stdin.take().context("lz4: no stdin")?;
            let input = cpio.to_vec();
            let feeder = std::thread::spawn(move || stdin.write_all(&input));
            let out = child.wait_with_output().context("lz4")?;
            let fed = feeder
                .join()
                .map_err(|_| anyhow::anyhow!("lz4: feeder panicked"))?;
            if !out.status.success() {
                anyhow::bail!(
                    "lz4 -l -9: {}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            fed.context("lz4: writing the cpio")?;
            let mut bytes = out.stdout;
            bytes.extend_from_slice(&LZ4_END);
            Ok(bytes)
        }
    }
}

/// Build and write the compressed initramfs to `out` (atomically: temp file, then rename).
pub fn write(inp: &Inputs, out: &Path) -> Result<Report> {
    let (a, mut report) = archive(inp)?;
    let cpio = a.to_newc(inp.mtime);
    report.cpio_bytes = cpio.len();
    let bytes = compress(&cpio, inp.compression)?;
    crate::write_atomic(out, &bytes)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's view of an lz4 initramfs: the legacy magic, then chunks of (LE size,
    /// data) until a zero size. Returns the chunk sizes and the offset after the end mark.
    fn legacy_chunks(b: &[u8]) -> (Vec<u32>, usize) {
        assert_eq!(&b[..4], &[0x02, 0x21, 0x4c, 0x18], "legacy lz4 magic");
        let (mut at, mut sizes) = (4, vec![]);
        loop {
            let n = u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
            at += 4;
            if n == 0 {
                return (sizes, at);
            }
            sizes.push(n);
            at += n as usize;
        }
    }

    #[test]
    fn lz4_is_the_legacy_frame_with_an_end_mark() {
        // More than one 8 MiB chunk, so the walk crosses a chunk boundary.
        let cpio: Vec<u8> = (0..9u32 << 20)
            .map(|i| (i % 251) as u8 ^ (i >> 13) as u8)
            .collect();
        let a = compress(&cpio, Compression::Lz4).unwrap();
        let (chunks, end) = legacy_chunks(&a);
        assert_eq!(chunks.len(), 2, "{chunks:?}");
        assert_eq!(end, a.len(), "the zero chunk size ends the archive");
        assert_eq!(
            compress(&cpio, Compression::Lz4).unwrap(),
            a,
            "deterministic"
        );
        // lz4 itself reads it back (it stops at the end mark, and says so on stderr).
        let mut lz4 = Command::new("lz4")
            .args(["-d", "-c"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = lz4.stdin.take().unwrap();
        let body = a[..a.len() - LZ4_END.len()].to_vec();
        let feeder = std::thread::spawn(move || stdin.write_all(&body));
        let out = lz4.wait_with_output().unwrap();
        feeder.join().unwrap().unwrap();
        assert!(out.status.success());
        assert!(out.stdout == cpio, "lz4 -d gives the cpio back");
    }

    #[test]
    fn only_what_the_state_group_alone_needs_is_gzipped() {
        let m = |rel: &str, deps: &[&str]| {
            (
                rel.to_string(),
                deps.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
            )
        };
        let mut sel = kmod::Selection::default();
        for (name, rel, deps) in [
            (
                "ext4",
                "kernel/fs/ext4/ext4.ko",
                &["jbd2", "crc16", "crc32c"][..],
            ),
            ("jbd2", "kernel/fs/jbd2/jbd2.ko", &[][..]),
            ("crc16", "kernel/lib/crc16.ko", &[][..]),
            ("crc32c", "kernel/crypto/crc32c_generic.ko", &[][..]),
            ("squashfs", "kernel/fs/squashfs/squashfs.ko", &[][..]),
            ("overlay", "kernel/fs/overlayfs/overlay.ko", &[][..]),
            ("dm_mod", "kernel/drivers/md/dm-mod.ko", &[][..]),
        ] {
            sel.modules.insert(name.into(), m(rel, deps));
        }
        let wanted: Vec<String> = ["squashfs", "overlay", "dm-mod", "ext4", "crc32c", "gone"]
            .map(String::from)
            .to_vec();
        let gz: Vec<String> = loaded_in_background_only(&sel, &wanted)
            .into_iter()
            .collect();
        // crc32c is also wanted by itself (the local group): it stays plain.
        assert_eq!(gz, ["crc16", "ext4", "jbd2"]);
        // Without ext4 nothing is gzipped.
        let wanted: Vec<String> = wanted.into_iter().filter(|w| w != "ext4").collect();
        assert!(loaded_in_background_only(&sel, &wanted).is_empty());
    }

    #[test]
    fn gzip_and_none() {
        let cpio = b"070701 pretend".to_vec();
        assert_eq!(compress(&cpio, Compression::None).unwrap(), cpio);
        let gz = compress(&cpio, Compression::Gzip).unwrap();
        assert_eq!(&gz[..2], &[0x1f, 0x8b]);
        assert_eq!(&gz[4..8], &[0; 4], "mtime 0");
        assert_eq!(Compression::parse("lz4"), Some(Compression::Lz4));
        assert_eq!(Compression::parse("zip"), None);
    }
}
