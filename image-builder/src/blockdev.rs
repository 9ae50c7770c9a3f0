//! What the host says about a block device, for `phase-image write`: sysfs (whole disk or
//! partition, size, model, partitions, holders), `/proc/self/mountinfo` and `/proc/swaps`.
//!
//! The parsers are pure and tested on text; `read` only gathers files. Decisions about
//! these facts live in `write.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A block device's kernel name (`sdb`, `sdb1`, `loop3`, `dm-0`).
pub type Name = String;

/// One block device as sysfs describes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Device {
    pub name: Name,
    /// `MAJ:MIN`.
    pub dev: String,
    pub partition: bool,
    pub size_bytes: u64,
    pub model: String,
    pub removable: bool,
    /// Its partitions (empty for a partition).
    pub parts: Vec<Device>,
    /// Devices stacked on it (device-mapper, md): `holders/`.
    pub holders: Vec<Name>,
}

/// One mount: device number and mount point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub dev: String,
    pub point: String,
}

/// Everything that may be using block devices right now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    pub mounts: Vec<Mount>,
    /// Kernel names of swap devices.
    pub swaps: Vec<Name>,
    /// For holders further up a stack: name → (dev, its own holders).
    pub stacked: BTreeMap<Name, (String, Vec<Name>)>,
}

/// Parse `/proc/self/mountinfo`: (major:minor, mount point) per line; octal escapes
/// (`\040`) in mount points decoded.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            let dev = f.nth(2)?;
            let point = f.nth(1)?;
            Some(Mount {
                dev: dev.to_string(),
                point: unescape_octal(point),
            })
        })
        .collect()
}

fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = (b[i] == b'\\' && i + 3 < b.len())
            .then(|| &b[i + 1..i + 4])
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .and_then(|d| {
                let v = d.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0'));
                u8::try_from(v).ok()
            });
        if let Some(c) = octal {
            out.push(c);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parse `/proc/swaps`: the kernel names of swap partitions (`/dev/sdb2` → `sdb2`).
pub fn parse_swaps(text: &str) -> Vec<Name> {
    text.lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|p| p.strip_prefix("/dev/"))
        .map(str::to_string)
        .collect()
}

fn read_trim(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

fn list(p: &Path) -> Vec<Name> {
    let mut v: Vec<Name> = std::fs::read_dir(p)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The device with number `major:minor`, from `/sys/dev/block/MAJ:MIN`.
pub fn read(sys: &Path, major: u32, minor: u32) -> Option<Device> {
    let link = sys.join(format!("dev/block/{major}:{minor}"));
    let dir = std::fs::canonicalize(&link).ok()?;
    Some(read_dir(&dir))
}

fn read_dir(dir: &Path) -> Device {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let partition = dir.join("partition").exists();
    let sectors: u64 = read_trim(&dir.join("size"))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let parts = if partition {
        Vec::new()
    } else {
        list(dir)
            .into_iter()
            .map(|c| dir.join(c))
            .filter(|c| c.join("partition").exists())
            .map(|c| read_dir(&c))
            .collect()
    };
    Device {
        dev: read_trim(&dir.join("dev")).unwrap_or_default(),
        partition,
        size_bytes: sectors * 512,
        model: read_trim(&dir.join("device/model"))
            .or_else(|| read_trim(&dir.join("loop/backing_file")).map(|f| format!("loop: {f}")))
            .unwrap_or_default(),
        removable: read_trim(&dir.join("removable")).as_deref() == Some("1"),
        parts,
        holders: list(&dir.join("holders")),
        name,
    }
}

/// Gather mounts, swaps and every holder stacked above `dev` and its partitions.
pub fn usage(sys: &Path, proc_: &Path, dev: &Device) -> Usage {
    let mut u = Usage {
        mounts: parse_mountinfo(
            &std::fs::read_to_string(proc_.join("self/mountinfo")).unwrap_or_default(),
        ),
        swaps: parse_swaps(&std::fs::read_to_string(proc_.join("swaps")).unwrap_or_default()),
        stacked: BTreeMap::new(),
    };
    let mut todo: Vec<Name> = std::iter::once(dev)
        .chain(&dev.parts)
        .flat_map(|d| d.holders.clone())
        .collect();
    while let Some(h) = todo.pop() {
        if u.stacked.contains_key(&h) {
            continue;
        }
        let dir: PathBuf = sys.join("class/block").join(&h);
        let above = list(&dir.join("holders"));
        todo.extend(above.iter().cloned());
        u.stacked
            .insert(h, (read_trim(&dir.join("dev")).unwrap_or_default(), above));
    }
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_gives_device_numbers_and_decoded_mount_points() {
        let t = "22 27 0:21 / /proc rw,relatime - proc proc rw\n\
                 27 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n\
                 40 27 7:3 / /mnt/my\\040stick rw - ext4 /dev/loop3 rw\n\
                 short line\n";
        assert_eq!(
            parse_mountinfo(t),
            vec![
                Mount {
                    dev: "0:21".into(),
                    point: "/proc".into()
                },
                Mount {
                    dev: "8:1".into(),
                    point: "/".into()
                },
                Mount {
                    dev: "7:3".into(),
                    point: "/mnt/my stick".into()
                },
            ]
        );
    }

    #[test]
    fn swaps_give_kernel_names() {
        let t = "Filename\tType\tSize\tUsed\tPriority\n/dev/sdb2 partition 1048572 0 -2\n/swapfile file 10 0 -3\n";
        assert_eq!(parse_swaps(t), vec!["sdb2".to_string()]);
    }
}
