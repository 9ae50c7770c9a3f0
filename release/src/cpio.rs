//! newc cpio archives, reproducibly (PURE): entries sorted by path, parents filled in,
//! duplicates rejected, owner root, one fixed mtime, inode numbers assigned in order.
//!
//! Shared by `phase-image` (the initramfs) and the init, which appends a second archive
//! holding the verified release to the next kernel's initramfs before kexec (the kernel
//! unpacks concatenated archives in order). Large files are streamed: [`file_header`] and
//! [`pad_len`] let the init copy a rootfs image into the archive without holding it twice.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File(Vec<u8>),
    CharDev { major: u32, minor: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    /// Permission bits only (e.g. 0o755); the type bits come from `kind`.
    pub mode: u32,
}

/// A set of entries keyed by path without a leading slash (`init`, `lib/modules/...`).
#[derive(Debug, Default, Clone)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

impl Archive {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add an entry; missing parent directories are added with mode 0755. Adding the same
    /// path twice is an error unless both are identical (e.g. a directory).
    pub fn add(&mut self, path: &str, kind: Kind, mode: u32) -> Result<(), String> {
        let path = path.trim_start_matches('/').trim_end_matches('/');
        if path.is_empty()
            || path
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(format!("invalid archive path {path:?}"));
        }
        let mut parent = String::new();
        let comps: Vec<&str> = path.split('/').collect();
        for c in &comps[..comps.len() - 1] {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(c);
            match self.entries.get(&parent) {
                Some(Entry {
                    kind: Kind::Dir, ..
                }) => {}
                Some(_) => return Err(format!("{parent} is not a directory (needed for {path})")),
                None => {
                    self.entries.insert(
                        parent.clone(),
                        Entry {
                            kind: Kind::Dir,
                            mode: 0o755,
                        },
                    );
                }
            }
        }
        let entry = Entry { kind, mode };
        match self.entries.get(path) {
            Some(existing) if *existing == entry => Ok(()),
            // An implicitly created parent may be given its explicit mode.
            Some(Entry {
                kind: Kind::Dir, ..
            }) if entry.kind == Kind::Dir => {
                self.entries.insert(path.to_string(), entry);
                Ok(())
            }
            Some(_) => Err(format!("duplicate archive entry {path}")),
            None => {
                self.entries.insert(path.to_string(), entry);
                Ok(())
            }
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Serialise as newc with every mtime set to `mtime`.
    pub fn to_newc(&self, mtime: u32) -> Vec<u8> {
        let mut out = Vec::new();
        for (ino, (path, e)) in self.entries.iter().enumerate() {
            let (typ, data, rdev): (u32, &[u8], (u32, u32)) = match &e.kind {
                Kind::Dir => (0o040000, &[], (0, 0)),
                Kind::File(d) => (0o100000, d, (0, 0)),
                Kind::CharDev { major, minor } => (0o020000, &[], (*major, *minor)),
            };
            let nlink = if matches!(e.kind, Kind::Dir) { 2 } else { 1 };
            header(
                &mut out,
                ino as u32 + 1,
                typ | (e.mode & 0o7777),
                nlink,
                mtime,
                data.len() as u32,
                rdev,
                path,
            );
            out.extend_from_slice(data);
            pad4(&mut out);
        }
        header(&mut out, 0, 0, 1, 0, 0, (0, 0), "TRAILER!!!");
        // Pad the archive to a 512-byte multiple, as GNU cpio does.
        while !out.len().is_multiple_of(512) {
            out.push(0);
        }
        out
    }
}

/// The newc header (and padded name) of one regular file of `size` bytes; its data
/// follows, then [`pad_len`]`(size)` zero bytes. For archives streamed file by file.
pub fn file_header(ino: u32, mode: u32, mtime: u32, size: u32, name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    header(
        &mut out,
        ino,
        0o100000 | (mode & 0o7777),
        1,
        mtime,
        size,
        (0, 0),
        name,
    );
    out
}

/// The header of a directory, for streamed archives.
pub fn dir_header(ino: u32, mode: u32, mtime: u32, name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    header(
        &mut out,
        ino,
        0o040000 | (mode & 0o7777),
        2,
        mtime,
        0,
        (0, 0),
        name,
    );
    out
}

/// Zero bytes after `len` bytes of file data, to the next 4-byte boundary.
pub fn pad_len(len: u64) -> usize {
    ((4 - len % 4) % 4) as usize
}

/// The end of a streamed archive: the trailer record (no 512-byte padding: the kernel
/// does not need it).
pub fn trailer() -> Vec<u8> {
    let mut out = Vec::new();
    header(&mut out, 0, 0, 1, 0, 0, (0, 0), "TRAILER!!!");
    out
}

#[allow(clippy::too_many_arguments)]
fn header(
    out: &mut Vec<u8>,
    ino: u32,
    mode: u32,
    nlink: u32,
    mtime: u32,
    filesize: u32,
    rdev: (u32, u32),
    name: &str,
) {
    let fields = [
        ino,
        mode,
        0, // uid
        0, // gid
        nlink,
        mtime,
        filesize,
        0, // devmajor
        0, // devminor
        rdev.0,
        rdev.1,
        name.len() as u32 + 1,
        0, // check
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08X}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_are_filled_and_sorted() {
        let mut a = Archive::new();
        a.add("lib/modules/x/a.ko", Kind::File(b"A".to_vec()), 0o644)
            .unwrap();
        a.add("init", Kind::File(b"#!".to_vec()), 0o755).unwrap();
        a.add("dev/console", Kind::CharDev { major: 5, minor: 1 }, 0o600)
            .unwrap();
        let paths: Vec<&String> = a.entries.keys().collect();
        assert_eq!(
            paths,
            [
                "dev",
                "dev/console",
                "init",
                "lib",
                "lib/modules",
                "lib/modules/x",
                "lib/modules/x/a.ko"
            ]
        );
    }

    #[test]
    fn duplicates_and_bad_paths_rejected() {
        let mut a = Archive::new();
        a.add("x", Kind::File(vec![1]), 0o644).unwrap();
        a.add("x", Kind::File(vec![1]), 0o644).unwrap();
        assert!(a.add("x", Kind::File(vec![2]), 0o644).is_err());
        assert!(a.add("x/y", Kind::Dir, 0o755).is_err());
        assert!(a.add("../etc", Kind::Dir, 0o755).is_err());
        assert!(a.add("a//b", Kind::Dir, 0o755).is_err());
    }

    #[test]
    fn newc_layout() {
        let mut a = Archive::new();
        a.add("init", Kind::File(b"hello".to_vec()), 0o755).unwrap();
        let bytes = a.to_newc(1_700_000_000);
        assert_eq!(&bytes[..6], b"070701");
        // mode field: regular file 0755
        assert_eq!(&bytes[14..22], b"000081ED");
        // mtime field
        assert_eq!(
            &bytes[6 + 8 * 5..6 + 8 * 6],
            format!("{:08X}", 1_700_000_000u32).as_bytes()
        );
        // name "init\0" at 110, padded to 116, data follows
        assert_eq!(&bytes[110..115], b"init\0");
        assert_eq!(&bytes[116..121], b"hello");
        assert!(bytes.windows(10).any(|w| w == b"TRAILER!!!"));
        assert_eq!(bytes.len() % 512, 0);
        // Reproducible.
        assert_eq!(bytes, a.to_newc(1_700_000_000));
    }

    #[test]
    fn streamed_entries_match_the_archive() {
        let mut a = Archive::new();
        a.add("carry", Kind::Dir, 0o700).unwrap();
        a.add("carry/x", Kind::File(b"hello".to_vec()), 0o600)
            .unwrap();
        let whole = a.to_newc(7);
        let mut s = dir_header(1, 0o700, 7, "carry");
        s.extend(file_header(2, 0o600, 7, 5, "carry/x"));
        s.extend_from_slice(b"hello");
        s.extend(std::iter::repeat_n(0, pad_len(5)));
        s.extend(trailer());
        assert_eq!(s[..], whole[..s.len()]);
        assert!(whole[s.len()..].iter().all(|b| *b == 0));
        assert_eq!(
            (pad_len(0), pad_len(1), pad_len(4), pad_len(7)),
            (0, 3, 0, 1)
        );
    }

    #[test]
    fn gnu_cpio_reads_it() {
        if std::process::Command::new("cpio")
            .arg("--version")
            .output()
            .is_err()
        {
            panic!("cpio is not installed; `make test` installs it");
        }
        let mut a = Archive::new();
        a.add("etc/phase/modules", Kind::File(b"loop\n".to_vec()), 0o644)
            .unwrap();
        a.add("bin/x", Kind::File(vec![]), 0o755).unwrap();
        let dir = std::env::temp_dir().join(format!("cpio-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut child = std::process::Command::new("cpio")
            .args(["-t", "--quiet"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(&a.to_newc(0))
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            "bin\nbin/x\netc\netc/phase\netc/phase/modules\n"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
