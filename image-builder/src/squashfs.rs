//! The root filesystem: a zstd squashfs of the repository's `rootfs/` tree, the generated
//! `/etc/os-release`, the init at `/usr/lib/phase/phase` (PID 1 execs it after switching
//! root), the kernel modules the initramfs does not carry with their `modules.dep`, and the
//! mount points. Collected as a [`Plan`] (PURE), built with `backhand` into memory, padded to
//! 4096 bytes and covered by a dm-verity tree ([`crate::verity`]).
//!
//! Deterministic: entries added in sorted order, owner root, every mtime and the superblock
//! time SOURCE_DATE_EPOCH, host modes reduced to 0755/0644 (a checkout's umask must not leak
//! in). backhand offers no way to stamp the root directory itself, which keeps mtime 0.

use crate::{kmod, verity};
use anyhow::{bail, Context, Result};
use backhand::compression::Compressor;
use backhand::{FilesystemCompressor, FilesystemWriter, NodeHeader};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Where a file's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Bytes(Vec<u8>),
    /// A host file, read only while the image is written (modules are ~400 MB).
    Host {
        path: PathBuf,
        size: u64,
    },
}

impl Source {
    fn size(&self) -> u64 {
        match self {
            Source::Bytes(b) => b.len() as u64,
            Source::Host { size, .. } => *size,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File(Source),
    Symlink(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    /// Permission bits only.
    pub mode: u16,
}

/// The image's entries keyed by path without a leading slash, so iteration is sorted and
/// every parent comes before its children.
#[derive(Debug, Default, Clone)]
pub struct Plan {
    entries: BTreeMap<String, Entry>,
}

impl Plan {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add an entry; missing parents are added as 0755 directories. The same path twice is
    /// an error (a generated file must not silently replace one from the tree) unless both
    /// are directories, when the explicit mode wins.
    pub fn add(&mut self, path: &str, kind: Kind, mode: u16) -> Result<(), String> {
        let path = path.trim_start_matches('/').trim_end_matches('/');
        let comps: Vec<&str> = path.split('/').collect();
        if path.is_empty()
            || comps
                .iter()
                .any(|c| c.is_empty() || *c == "." || *c == "..")
        {
            return Err(format!("invalid image path {path:?}"));
        }
        for i in 1..comps.len() {
            let parent = comps[..i].join("/");
            match self.entries.get(&parent) {
                Some(Entry {
                    kind: Kind::Dir, ..
                }) => {}
                Some(_) => {
                    return Err(format!("/{parent} is not a directory (needed for /{path})"))
                }
                None => {
                    self.entries.insert(
                        parent,
                        Entry {
                            kind: Kind::Dir,
                            mode: 0o755,
                        },
                    );
                }
            }
        }
        match self.entries.get(path) {
            Some(Entry {
                kind: Kind::Dir, ..
            }) if kind == Kind::Dir => {}
            Some(_) => return Err(format!("duplicate image entry /{path}")),
            None => {}
        }
        self.entries.insert(path.to_string(), Entry { kind, mode });
        Ok(())
    }

    #[cfg(test)]
    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.entries.get(path.trim_start_matches('/'))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Number of regular files and their total size.
    pub fn file_totals(&self) -> (usize, u64) {
        self.entries
            .values()
            .filter_map(|e| match &e.kind {
                Kind::File(s) => Some(s.size()),
                _ => None,
            })
            .fold((0, 0), |(n, b), s| (n + 1, b + s))
    }
}

/// How far the data write has got (files are read in plan order).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub files_done: usize,
    pub files: usize,
    pub bytes_done: u64,
    pub bytes: u64,
}

/// A file's bytes for backhand, opened on first read (thousands of open files would hit the
/// descriptor limit) and counted for progress.
struct Counted<'p> {
    source: &'p Source,
    open: Option<Box<dyn Read + 'p>>,
    state: &'p RefCell<Progress>,
    report: &'p dyn Fn(&Progress),
}

impl Read for Counted<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.open.is_none() {
            let r: Box<dyn Read> = match self.source {
                Source::Bytes(b) => Box::new(&b[..]),
                Source::Host { path, .. } => {
                    Box::new(std::io::BufReader::new(std::fs::File::open(path).map_err(
                        |e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())),
                    )?))
                }
            };
            self.open = Some(r);
            let mut p = self.state.borrow_mut();
            p.files_done += 1;
            (self.report)(&p);
        }
        let n = match &mut self.open {
            Some(r) => r.read(buf)?,
            None => 0,
        };
        self.state.borrow_mut().bytes_done += n as u64;
        Ok(n)
    }
}

/// Build the squashfs of `plan` in memory: zstd, 128 KiB blocks, owner root, every mtime
/// and the superblock time `mtime`, padded to a multiple of 4096 bytes. `report` is called
/// as each file starts being read.
pub fn build(plan: &Plan, mtime: u32, report: &dyn Fn(&Progress)) -> Result<Vec<u8>, String> {
    let (files, bytes) = plan.file_totals();
    let state = RefCell::new(Progress {
        files,
        bytes,
        ..Progress::default()
    });
    let mut fs = FilesystemWriter::default();
    fs.set_time(mtime);
    fs.set_only_root_id();
    fs.set_root_mode(0o755);
    fs.set_root_uid(0);
    fs.set_root_gid(0);
    // Level 3 (zstd's default, no options block): ~400 MB of modules in seconds on one core.
    let zstd = FilesystemCompressor::new(Compressor::Zstd, None).map_err(|e| e.to_string())?;
    fs.set_compressor(zstd);
    let err = |p: &str, e: backhand::BackhandError| format!("/{p}: {e}");
    for (path, e) in &plan.entries {
        let h = NodeHeader::new(e.mode, 0, 0, mtime);
        match &e.kind {
            Kind::Dir => fs.push_dir(path, h).map_err(|e| err(path, e))?,
            Kind::Symlink(target) => fs
                .push_symlink(target.as_str(), path, h)
                .map_err(|e| err(path, e))?,
            Kind::File(source) => {
                let r = Counted {
                    source,
                    open: None,
                    state: &state,
                    report,
                };
                fs.push_file(r, path, h).map_err(|e| err(path, e))?
            }
        }
    }
    let mut out = std::io::Cursor::new(Vec::new());
    fs.write(&mut out)
        .map_err(|e| format!("writing squashfs: {e}"))?;
    let mut image = out.into_inner();
    verity::pad(&mut image);
    Ok(image)
}

/// `/etc/os-release` (PURE). The version must be a plain token (os-release's VERSION_ID).
pub fn os_release(version: &str) -> Result<String, String> {
    if version.is_empty()
        || !version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '~'))
    {
        return Err(format!(
            "version {version:?}: want letters, digits and . _ - ~ only"
        ));
    }
    Ok(format!(
        "NAME=\"Phase Boot\"\nID=phase\nVERSION_ID={version}\nPRETTY_NAME=\"Phase Boot {version}\"\n"
    ))
}

/// Empty directories the running system mounts over, with their modes.
pub const MOUNT_POINTS: &[(&str, u16)] = &[
    ("dev", 0o755),
    ("mnt", 0o755),
    ("proc", 0o555),
    ("run", 0o755),
    ("sys", 0o555),
    ("tmp", 0o1777),
    ("var/lib/phase", 0o755),
];

/// Where PID 1 finds the init after switching root.
pub const INIT_PATH: &str = "usr/lib/phase/phase";

/// The modules the rootfs carries: every module of the tree not in the initramfs (PURE).
pub fn rootfs_index(
    index: &BTreeMap<String, String>,
    initramfs: &kmod::Selection,
) -> BTreeMap<String, String> {
    index
        .iter()
        .filter(|(name, _)| !initramfs.modules.contains_key(*name))
        .map(|(n, r)| (n.clone(), r.clone()))
        .collect()
}

/// The hash device and metadata file names for an image path: `out/rootfs.squashfs` →
/// `out/rootfs.verity`, `out/rootfs.verity.json` (PURE).
pub fn verity_paths(out: &Path) -> Result<(PathBuf, PathBuf), String> {
    let stem = out
        .file_stem()
        .ok_or_else(|| format!("{}: no file name", out.display()))?
        .to_string_lossy();
    let hash = out.with_file_name(format!("{stem}.verity"));
    let json = out.with_file_name(format!("{stem}.verity.json"));
    if hash == out || json == out {
        return Err(format!(
            "{}: the output would be overwritten by its hash tree",
            out.display()
        ));
    }
    Ok((hash, json))
}

pub struct Inputs {
    pub init: PathBuf,
    /// An unpacked `/lib/modules/<release>` directory.
    pub modules_dir: PathBuf,
    /// The initramfs module list (its selection is left out of the rootfs).
    pub initramfs_modules: Vec<String>,
    /// Files copied in as they are (the repository's `rootfs/`).
    pub tree: PathBuf,
    pub version: String,
    /// SOURCE_DATE_EPOCH.
    pub mtime: u32,
}

#[derive(Debug, Default)]
pub struct Report {
    pub entries: usize,
    pub files: usize,
    pub file_bytes: u64,
    pub tree_files: usize,
    pub modules: usize,
    pub initramfs_modules: usize,
    /// Dependencies of rootfs modules that the initramfs carries (loaded before the switch).
    pub deps_in_initramfs: Vec<String>,
    /// Dependencies found nowhere.
    pub deps_missing: Vec<String>,
}

/// Copy a host directory into the plan under `dest`: directories 0755, files 0755 if any
/// execute bit is set else 0644, symlinks as they are; anything else is an error.
fn add_tree(plan: &mut Plan, dir: &Path, dest: &str) -> Result<usize> {
    use std::os::unix::fs::PermissionsExt;
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()?;
    names.sort();
    let mut files = 0;
    for name in names {
        let host = dir.join(&name);
        let name = name
            .to_str()
            .with_context(|| format!("{}: not UTF-8", host.display()))?;
        let path = if dest.is_empty() {
            name.to_string()
        } else {
            format!("{dest}/{name}")
        };
        let meta = std::fs::symlink_metadata(&host)?;
        let ft = meta.file_type();
        let add =
            |plan: &mut Plan, k: Kind, m: u16| plan.add(&path, k, m).map_err(anyhow::Error::msg);
        if ft.is_dir() {
            add(plan, Kind::Dir, 0o755)?;
            files += add_tree(plan, &host, &path)?;
        } else if ft.is_file() {
            let mode = if meta.permissions().mode() & 0o111 != 0 {
                0o755
            } else {
                0o644
            };
            let src = Source::Host {
                path: host.clone(),
                size: meta.len(),
            };
            add(plan, Kind::File(src), mode)?;
            files += 1;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&host)?;
            let target = target
                .to_str()
                .with_context(|| format!("{}: link target not UTF-8", host.display()))?;
            add(plan, Kind::Symlink(target.to_string()), 0o777)?;
        } else {
            bail!("{}: not a file, directory or symlink", host.display());
        }
    }
    Ok(files)
}

/// Collect everything the rootfs holds.
pub fn plan(inp: &Inputs) -> Result<(Plan, Report)> {
    let mut p = Plan::new();
    let mut report = Report::default();
    let add =
        |p: &mut Plan, path: &str, k: Kind, m: u16| p.add(path, k, m).map_err(anyhow::Error::msg);

    report.tree_files = add_tree(&mut p, &inp.tree, "")?;
    let osr = os_release(&inp.version).map_err(anyhow::Error::msg)?;
    add(
        &mut p,
        "etc/os-release",
        Kind::File(Source::Bytes(osr.into_bytes())),
        0o644,
    )?;
    let init_size = std::fs::metadata(&inp.init)
        .with_context(|| format!("reading {}", inp.init.display()))?
        .len();
    let init = Source::Host {
        path: inp.init.clone(),
        size: init_size,
    };
    add(&mut p, INIT_PATH, Kind::File(init), 0o755)?;
    for (d, mode) in MOUNT_POINTS {
        add(&mut p, d, Kind::Dir, *mode)?;
    }

    let tree = kmod::Tree::open(&inp.modules_dir)?;
    let (release, index, builtin) = (&tree.release, &tree.index, &tree.builtin);
    let builtin_text = tree.builtin_text.clone();
    let deps_of = |rel: &str| tree.deps_of(rel);
    let initramfs = kmod::select(index, builtin, &inp.initramfs_modules, deps_of)?;
    let rest = rootfs_index(index, &initramfs);
    let names: Vec<String> = rest.keys().cloned().collect();
    // Closing over `rest` only: a dependency the initramfs carries is already loaded when
    // the rootfs is mounted, so it is left out of this modules.dep rather than pointing at
    // a file the rootfs does not have.
    let sel = kmod::select(&rest, builtin, &names, deps_of)?;
    let (in_initramfs, missing): (Vec<String>, Vec<String>) = sel
        .missing
        .iter()
        .cloned()
        .partition(|m| initramfs.modules.contains_key(m));
    let base = format!("lib/modules/{release}");
    for (rel, _) in sel.modules.values() {
        let path = inp.modules_dir.join(rel);
        let size = std::fs::metadata(&path)?.len();
        add(
            &mut p,
            &format!("{base}/{rel}"),
            Kind::File(Source::Host { path, size }),
            0o644,
        )?;
    }
    add(
        &mut p,
        &format!("{base}/modules.dep"),
        Kind::File(Source::Bytes(kmod::modules_dep(&sel).into_bytes())),
        0o644,
    )?;
    add(
        &mut p,
        &format!("{base}/modules.builtin"),
        Kind::File(Source::Bytes(builtin_text.into_bytes())),
        0o644,
    )?;

    let (files, file_bytes) = p.file_totals();
    report.entries = p.len() + 1; // and the root directory
    report.files = files;
    report.file_bytes = file_bytes;
    report.modules = sel.modules.len();
    report.initramfs_modules = initramfs.modules.len();
    report.deps_in_initramfs = in_initramfs;
    report.deps_missing = missing;
    Ok((p, report))
}

pub struct Written {
    pub report: Report,
    pub image_bytes: u64,
    pub hash: PathBuf,
    pub json: PathBuf,
    pub verity: phase_release::doc::Verity,
}

/// Build the rootfs and its hash tree; write the image to `out`, the hash device and its
/// metadata beside it (each atomically). Progress goes to stdout every `every` files.
pub fn write(inp: &Inputs, out: &Path, every: usize) -> Result<Written> {
    let (hash_path, json_path) = verity_paths(out).map_err(anyhow::Error::msg)?;
    let (plan, report) = plan(inp)?;
    println!(
        "rootfs: {} entries, {} files ({:.1} MB): {} from {}, {} modules ({} stay in the initramfs)",
        report.entries,
        report.files,
        report.file_bytes as f64 / 1e6,
        report.tree_files,
        inp.tree.display(),
        report.modules,
        report.initramfs_modules
    );
    let progress = |p: &Progress| {
        if p.files_done.is_multiple_of(every.max(1)) || p.files_done == p.files {
            println!(
                "  squashfs: {}/{} files, {:.0}/{:.0} MB read",
                p.files_done,
                p.files,
                p.bytes_done as f64 / 1e6,
                p.bytes as f64 / 1e6
            );
        }
    };
    let image = build(&plan, inp.mtime, &progress).map_err(anyhow::Error::msg)?;
    let tree = verity::compute(&image).map_err(anyhow::Error::msg)?;
    let hash_name = hash_path
        .file_name()
        .context("hash path has no name")?
        .to_string_lossy()
        .into_owned();
    let doc = tree.doc(&hash_name);
    let mut json = serde_json::to_vec_pretty(&doc)?;
    json.push(b'\n');
    crate::write_atomic(out, &image)?;
    crate::write_atomic(&hash_path, &tree.hash_device)?;
    crate::write_atomic(&json_path, &json)?;
    Ok(Written {
        report,
        image_bytes: image.len() as u64,
        hash: hash_path,
        json: json_path,
        verity: doc,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use backhand::{FilesystemReader, InnerNode};

    fn small_plan() -> Plan {
        let mut p = Plan::new();
        let f = |s: &str| Kind::File(Source::Bytes(s.as_bytes().to_vec()));
        p.add("usr/share/phase/hello.txt", f("phase-rootfs-ok"), 0o644)
            .unwrap();
        p.add(
            "etc/os-release",
            Kind::File(Source::Bytes(os_release("7").unwrap().into_bytes())),
            0o644,
        )
        .unwrap();
        p.add("usr/lib/phase/phase", f("#!init"), 0o755).unwrap();
        p.add("tmp", Kind::Dir, 0o1777).unwrap();
        p.add("bin", Kind::Symlink("usr/bin".into()), 0o777)
            .unwrap();
        // Larger than one 128 KiB block, so data blocks as well as fragments are used.
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        p.add(
            "lib/modules/x/big.ko",
            Kind::File(Source::Bytes(big)),
            0o644,
        )
        .unwrap();
        p
    }

    fn read_back(image: &[u8]) -> BTreeMap<String, (NodeHeader, Option<Vec<u8>>)> {
        let fs = FilesystemReader::from_reader(std::io::Cursor::new(image.to_vec())).unwrap();
        let mut out = BTreeMap::new();
        for node in fs.files() {
            let content = match &node.inner {
                InnerNode::File(f) => {
                    let mut v = Vec::new();
                    fs.file(f).reader().read_to_end(&mut v).unwrap();
                    Some(v)
                }
                InnerNode::Symlink(l) => Some(l.link.to_string_lossy().as_bytes().to_vec()),
                _ => None,
            };
            out.insert(
                node.fullpath.to_string_lossy().into_owned(),
                (node.header, content),
            );
        }
        out
    }

    #[test]
    fn plan_adds_parents_and_rejects_duplicates_and_bad_paths() {
        let mut p = Plan::new();
        p.add("/var/lib/phase/", Kind::Dir, 0o700).unwrap();
        assert_eq!(p.get("var").unwrap().mode, 0o755);
        assert_eq!(p.get("var/lib/phase").unwrap().mode, 0o700);
        p.add("var/lib", Kind::Dir, 0o750).unwrap();
        assert_eq!(p.get("var/lib").unwrap().mode, 0o750);
        let f = || Kind::File(Source::Bytes(b"x".to_vec()));
        p.add("etc/motd", f(), 0o644).unwrap();
        assert!(p.add("etc/motd", f(), 0o644).is_err());
        assert!(p.add("etc/motd/x", f(), 0o644).is_err());
        assert!(p.add("etc/../x", f(), 0o644).is_err());
        assert!(p.add("", f(), 0o644).is_err());
        assert_eq!(p.file_totals(), (1, 1));
    }

    #[test]
    fn image_holds_the_plan_owned_by_root_at_the_epoch() {
        let image = build(&small_plan(), 1_700_000_000, &|_| {}).unwrap();
        assert_eq!(image.len() % 4096, 0);
        assert_eq!(&image[..4], b"hsqs");
        let files = read_back(&image);
        let hello = &files["/usr/share/phase/hello.txt"];
        assert_eq!(hello.1.as_deref(), Some(&b"phase-rootfs-ok"[..]));
        assert_eq!(hello.0.permissions, 0o644);
        assert_eq!(files["/usr/lib/phase/phase"].0.permissions, 0o755);
        assert_eq!(files["/tmp"].0.permissions, 0o1777);
        assert_eq!(files["/bin"].1.as_deref(), Some(&b"usr/bin"[..]));
        assert_eq!(
            files["/lib/modules/x/big.ko"].1.as_ref().unwrap().len(),
            300_000
        );
        assert!(
            String::from_utf8_lossy(files["/etc/os-release"].1.as_ref().unwrap())
                .contains("VERSION_ID=7\n")
        );
        for (path, (h, _)) in &files {
            assert_eq!((h.uid, h.gid), (0, 0), "{path}");
            if path != "/" {
                assert_eq!(h.mtime, 1_700_000_000, "{path}");
            }
        }
    }

    #[test]
    fn build_is_reproducible_and_the_epoch_matters() {
        let a = build(&small_plan(), 1_700_000_000, &|_| {}).unwrap();
        let b = build(&small_plan(), 1_700_000_000, &|_| {}).unwrap();
        let c = build(&small_plan(), 1_700_000_001, &|_| {}).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn progress_counts_every_file() {
        let seen = RefCell::new(Vec::new());
        build(&small_plan(), 0, &|p| seen.borrow_mut().push(*p)).unwrap();
        let seen = seen.into_inner();
        assert_eq!(seen.len(), 4);
        assert_eq!(seen.last().unwrap().files_done, 4);
        assert_eq!(seen.last().unwrap().files, 4);
    }

    #[test]
    fn unreadable_host_file_is_named() {
        let mut p = Plan::new();
        let src = Source::Host {
            path: "/nonexistent/phase-x".into(),
            size: 1,
        };
        p.add("x", Kind::File(src), 0o644).unwrap();
        let e = build(&p, 0, &|_| {}).unwrap_err();
        assert!(e.contains("/nonexistent/phase-x"), "{e}");
    }

    #[test]
    fn os_release_fields() {
        let t = os_release("1.2").unwrap();
        assert_eq!(
            t,
            "NAME=\"Phase Boot\"\nID=phase\nVERSION_ID=1.2\nPRETTY_NAME=\"Phase Boot 1.2\"\n"
        );
        assert!(os_release("").is_err());
        assert!(os_release("1 2").is_err());
        assert!(os_release("1\"").is_err());
    }

    #[test]
    fn rootfs_modules_are_the_rest() {
        let index: BTreeMap<String, String> = [("a", "k/a.ko"), ("b", "k/b.ko"), ("c", "k/c.ko")]
            .iter()
            .map(|(n, r)| (n.to_string(), r.to_string()))
            .collect();
        let mut sel = kmod::Selection::default();
        sel.modules.insert("b".into(), ("k/b.ko".into(), vec![]));
        let rest = rootfs_index(&index, &sel);
        assert_eq!(rest.keys().collect::<Vec<_>>(), ["a", "c"]);
    }

    #[test]
    fn verity_files_sit_beside_the_image() {
        let (h, j) = verity_paths(Path::new("out/rootfs.squashfs")).unwrap();
        assert_eq!(h, Path::new("out/rootfs.verity"));
        assert_eq!(j, Path::new("out/rootfs.verity.json"));
        assert!(verity_paths(Path::new("out/x.verity")).is_err());
    }
}
