//! The meta partition's content (PURE), written by `phase-image disk` and read by the init:
//! [`SLOTS`] slots of [`SLOT`] bytes. Slot 0 holds `release.json` exactly as signed; the
//! slots after it hold the root chain (`N.root.json` files, ascending), so a machine that
//! boots from this disk walks the same rotations a provider would serve. Each slot is NUL
//! padded, an empty one all NULs. A disk written before the chain existed (release.json,
//! then NULs) reads as a release with no roots. Nothing here is trusted: the init verifies
//! each root as a step from its own anchor, then the release against where the walk ends.

/// One slot: the largest metadata document either side accepts (64 KiB).
pub const SLOT: usize = 64 * 1024;
/// The partition's size (one alignment unit).
pub const SIZE: usize = crate::ALIGN as usize;
pub const SLOTS: usize = SIZE / SLOT;
/// Root files a disk can carry: the newest ones are kept.
pub const MAX_ROOTS: usize = SLOTS - 1;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MetaError {
    #[error("{what} is {len} bytes; a meta slot holds {SLOT}")]
    TooLarge { what: String, len: usize },
    #[error("{what} contains a NUL byte")]
    Nul { what: String },
    #[error("{n} root files; the meta partition holds {MAX_ROOTS}")]
    TooManyRoots { n: usize },
}

impl MetaError {
    pub fn reason(&self) -> &'static str {
        match self {
            MetaError::TooLarge { .. } => "meta_slot_too_large",
            MetaError::Nul { .. } => "meta_nul_byte",
            MetaError::TooManyRoots { .. } => "meta_too_many_roots",
        }
    }
}

/// The partition's bytes: `release` in slot 0, then each `(name, bytes)` of `roots`.
pub fn encode(release: &[u8], roots: &[(String, Vec<u8>)]) -> Result<Vec<u8>, MetaError> {
    if roots.len() > MAX_ROOTS {
        return Err(MetaError::TooManyRoots { n: roots.len() });
    }
    let mut out = vec![0u8; SIZE];
    let docs = std::iter::once(("release.json", release))
        .chain(roots.iter().map(|(n, b)| (n.as_str(), b.as_slice())));
    for (i, (what, doc)) in docs.enumerate() {
        if doc.len() > SLOT {
            return Err(MetaError::TooLarge {
                what: what.into(),
                len: doc.len(),
            });
        }
        if doc.contains(&0) {
            return Err(MetaError::Nul { what: what.into() });
        }
        out[i * SLOT..i * SLOT + doc.len()].copy_from_slice(doc);
    }
    Ok(out)
}

/// What a meta partition holds, trailing NULs trimmed (never fails: a short or odd
/// partition gives fewer or empty documents, which then fail verification).
#[derive(Debug, PartialEq, Eq)]
pub struct Meta<'a> {
    pub release: &'a [u8],
    pub roots: Vec<&'a [u8]>,
}

pub fn decode(bytes: &[u8]) -> Meta<'_> {
    let mut slots = bytes.chunks(SLOT).take(SLOTS).map(|s| {
        let end = s.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
        &s[..end]
    });
    let release = slots.next().unwrap_or(&[]);
    Meta {
        release,
        roots: slots.filter(|s| !s.is_empty()).collect(),
    }
}

/// What [`read`] found: owned documents, as [`Meta`].
#[derive(Debug, PartialEq, Eq, Default)]
pub struct Docs {
    pub release: Vec<u8>,
    pub roots: Vec<Vec<u8>>,
}

/// Bytes [`read`] asks for at a time.
const CHUNK: usize = 4096;

/// Read the partition through `read_at(offset, buf)` (a positioned read, 0 at its end): each
/// slot up to its first NUL, the roots up to the first empty slot. [`encode`] writes no NUL
/// into a document and fills the slots in order, so on what it writes this gives what
/// [`decode`] gives, for a few KiB of reads instead of the whole partition (1 MiB read and
/// scanned: ~13 ms of a TCG boot before the root is mounted). Anything else reads as other
/// documents, which then fail verification.
pub fn read(
    mut read_at: impl FnMut(u64, &mut [u8]) -> std::io::Result<usize>,
) -> std::io::Result<Docs> {
    let mut docs = Docs::default();
    let mut buf = vec![0u8; CHUNK];
    for slot in 0..SLOTS {
        let start = (slot * SLOT) as u64;
        let mut doc = Vec::new();
        let mut end_of_partition = false;
        while doc.len() < SLOT {
            let want = CHUNK.min(SLOT - doc.len());
            let n = read_at(start + doc.len() as u64, &mut buf[..want])?;
            if n == 0 {
                end_of_partition = true;
                break;
            }
            let got = &buf[..n];
            match got.iter().position(|b| *b == 0) {
                Some(nul) => {
                    doc.extend_from_slice(&got[..nul]);
                    break;
                }
                None => doc.extend_from_slice(got),
            }
        }
        if slot == 0 {
            docs.release = doc;
        } else if doc.is_empty() {
            break;
        } else {
            docs.roots.push(doc);
        }
        if end_of_partition {
            break;
        }
    }
    Ok(docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_old_disks() {
        let roots = vec![
            ("2.root.json".to_string(), b"{\"v\":2}".to_vec()),
            ("3.root.json".to_string(), b"{\"v\":3}".to_vec()),
        ];
        let bytes = encode(b"{\"release\":1}", &roots).unwrap();
        assert_eq!(bytes.len(), SIZE);
        let m = decode(&bytes);
        assert_eq!(m.release, b"{\"release\":1}");
        assert_eq!(m.roots, vec![&b"{\"v\":2}"[..], &b"{\"v\":3}"[..]]);
        // Before the chain: release.json then NULs to the end.
        let mut old = b"{\"release\":1}".to_vec();
        old.resize(SIZE, 0);
        let m = decode(&old);
        assert_eq!((m.release, m.roots.len()), (&b"{\"release\":1}"[..], 0));
        // Short and empty partitions read as fewer documents.
        assert_eq!(decode(&bytes[..SLOT + 3]).roots, vec![&b"{\"v"[..]]);
        assert_eq!(decode(&[]).release, b"");
    }

    /// `read` over `bytes`, counting the bytes it asked for.
    fn read_counted(bytes: &[u8]) -> (Docs, usize) {
        let mut asked = 0;
        let docs = read(|off, buf| {
            asked += buf.len();
            let off = (off as usize).min(bytes.len());
            let n = buf.len().min(bytes.len() - off);
            buf[..n].copy_from_slice(&bytes[off..off + n]);
            Ok(n)
        })
        .unwrap();
        (docs, asked)
    }

    #[test]
    fn read_gives_what_decode_gives_on_what_encode_writes() {
        let root = |i: usize| (format!("{i}.root.json"), vec![b'r'; 100 + i * 4000]);
        for n in [0, 1, 2, MAX_ROOTS] {
            let roots: Roots = (0..n).map(root).collect();
            for release in [b"{}".to_vec(), vec![b'x'; SLOT], vec![b'y'; CHUNK + 1]] {
                let bytes = encode(&release, &roots).unwrap();
                let (docs, _) = read_counted(&bytes);
                let m = decode(&bytes);
                assert_eq!(docs.release, m.release);
                assert_eq!(docs.roots, m.roots);
            }
        }
        // Short partitions, as decode reads them.
        let bytes = encode(b"{\"release\":1}", &[root(1)]).unwrap();
        for len in [0, 5, SLOT, SLOT + 3] {
            let (docs, _) = read_counted(&bytes[..len]);
            let m = decode(&bytes[..len]);
            assert_eq!(
                (docs.release.as_slice(), docs.roots.len()),
                (m.release, m.roots.len())
            );
        }
        // One small release and no roots: two chunks read, not the partition.
        let (_, asked) = read_counted(&encode(b"{}", &[]).unwrap());
        assert_eq!(asked, 2 * CHUNK);
        // A read error is the caller's.
        let failing = read(|_, _| Err(std::io::Error::other("bad sector")));
        assert!(failing.is_err());
    }

    type Roots = Vec<(String, Vec<u8>)>;

    #[test]
    fn refusals() {
        let big = vec![b'x'; SLOT + 1];
        let cases: Vec<(Vec<u8>, Roots, &str)> = vec![
            (big.clone(), vec![], "meta_slot_too_large"),
            (
                b"{}".to_vec(),
                vec![("2.root.json".into(), big)],
                "meta_slot_too_large",
            ),
            (b"{\0}".to_vec(), vec![], "meta_nul_byte"),
            (
                b"{}".to_vec(),
                vec![("2.root.json".into(), b"\0".to_vec())],
                "meta_nul_byte",
            ),
            (
                b"{}".to_vec(),
                (0..=MAX_ROOTS)
                    .map(|i| (format!("{i}"), b"{}".to_vec()))
                    .collect(),
                "meta_too_many_roots",
            ),
        ];
        for (release, roots, want) in cases {
            assert_eq!(encode(&release, &roots).unwrap_err().reason(), want);
        }
        // A full slot fits exactly.
        assert!(encode(&vec![b'x'; SLOT], &[]).is_ok());
    }
}
