//! `phase-image write IMAGE DEVICE`: put an image on a USB stick safely.
//!
//! Order: the target must be a whole block device (not a file, not a partition) that
//! nothing uses (no mount of it, its partitions or anything stacked on them, in particular
//! not the running system's root; no swap; no device-mapper holder) and is large enough
//! (`check`, pure, table-tested). Then it shows model, size and the partitions it will
//! overwrite and asks (or `--yes`); opens the device O_EXCL (the kernel refuses if it
//! became busy meanwhile), copies with a progress bar hashing as it goes, syncs, drops the
//! device's cached pages and reads the image's length back, comparing SHA-256.

use crate::blockdev::{self, Device, Usage};
use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::io::{BufRead, IsTerminal, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Why a device is refused; `reason()` is stable for tests and scripts.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("{path} is not a block device")]
    NotBlockDevice { path: String },
    #[error("{path} is partition {name}, not a whole disk: write to /dev/{whole_hint} instead")]
    Partition {
        path: String,
        name: String,
        whole_hint: String,
    },
    #[error("/dev/{name} holds the running system (mounted at /)")]
    HoldsRunningSystem { name: String },
    #[error("/dev/{name} is mounted at {point}: unmount it first")]
    Mounted { name: String, point: String },
    #[error("/dev/{name} is in use as swap")]
    Swap { name: String },
    #[error("/dev/{name} is in use by /dev/{holder} (device-mapper or md)")]
    Held { name: String, holder: String },
    #[error("the image is {image} bytes, the device only {device}")]
    TooSmall { image: u64, device: u64 },
    #[error("not confirmed (answer `yes`, or pass --yes)")]
    NotConfirmed,
    #[error("the kernel says {path} is busy (opened O_EXCL): {source}")]
    Busy {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("read back {got}, wrote {want}: the device did not keep the image")]
    Mismatch { want: String, got: String },
}

impl Refusal {
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::NotBlockDevice { .. } => "not_block_device",
            Refusal::Partition { .. } => "partition",
            Refusal::HoldsRunningSystem { .. } => "holds_running_system",
            Refusal::Mounted { .. } => "mounted",
            Refusal::Swap { .. } => "swap",
            Refusal::Held { .. } => "held",
            Refusal::TooSmall { .. } => "too_small",
            Refusal::NotConfirmed => "not_confirmed",
            Refusal::Busy { .. } => "busy",
            Refusal::Mismatch { .. } => "mismatch",
        }
    }
}

/// The disk as the operator will see it before saying yes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub name: String,
    pub model: String,
    pub size_bytes: u64,
    pub removable: bool,
    /// (partition name, size in bytes) of what will be overwritten.
    pub overwrites: Vec<(String, u64)>,
}

/// Decide whether `dev` may be overwritten by an image of `image_len` bytes.
pub fn check(path: &str, dev: &Device, usage: &Usage, image_len: u64) -> Result<Plan, Refusal> {
    if dev.partition {
        return Err(Refusal::Partition {
            path: path.to_string(),
            name: dev.name.clone(),
            whole_hint: whole_disk_hint(&dev.name),
        });
    }
    // Every device whose contents this write destroys or that sits on top of them.
    let mut below: Vec<(&str, &str)> = std::iter::once(dev)
        .chain(&dev.parts)
        .map(|d| (d.name.as_str(), d.dev.as_str()))
        .collect();
    below.extend(
        usage
            .stacked
            .iter()
            .map(|(n, (d, _))| (n.as_str(), d.as_str())),
    );
    let mount_of = |dev_no: &str| usage.mounts.iter().find(|m| m.dev == dev_no);
    if let Some((name, _)) = below
        .iter()
        .find(|(_, d)| mount_of(d).is_some_and(|m| m.point == "/"))
    {
        return Err(Refusal::HoldsRunningSystem {
            name: name.to_string(),
        });
    }
    for (name, d) in &below {
        if let Some(m) = mount_of(d) {
            return Err(Refusal::Mounted {
                name: name.to_string(),
                point: m.point.clone(),
            });
        }
        if usage.swaps.iter().any(|s| s == name) {
            return Err(Refusal::Swap {
                name: name.to_string(),
            });
        }
    }
    for d in std::iter::once(dev).chain(&dev.parts) {
        if let Some(h) = d.holders.first() {
            return Err(Refusal::Held {
                name: d.name.clone(),
                holder: h.clone(),
            });
        }
    }
    if image_len > dev.size_bytes {
        return Err(Refusal::TooSmall {
            image: image_len,
            device: dev.size_bytes,
        });
    }
    Ok(Plan {
        name: dev.name.clone(),
        model: dev.model.clone(),
        size_bytes: dev.size_bytes,
        removable: dev.removable,
        overwrites: dev
            .parts
            .iter()
            .map(|p| (p.name.clone(), p.size_bytes))
            .collect(),
    })
}

/// `sdb1` → `sdb`, `nvme0n1p2` → `nvme0n1`, `loop3p1` → `loop3`.
fn whole_disk_hint(part: &str) -> String {
    let t = part.trim_end_matches(|c: char| c.is_ascii_digit());
    match t.strip_suffix('p') {
        Some(w) if w.ends_with(|c: char| c.is_ascii_digit()) => w.to_string(),
        _ => t.to_string(),
    }
}

fn human(bytes: u64) -> String {
    let gib = bytes as f64 / (1u64 << 30) as f64;
    if gib >= 1.0 {
        format!("{gib:.1} GiB")
    } else {
        format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
    }
}

/// What the operator reads before confirming.
pub fn describe(image: &Path, image_len: u64, p: &Plan) -> String {
    let mut s = format!(
        "phase-image write: {} ({}) onto /dev/{}\n  device:     {}, {}{}\n",
        image.display(),
        human(image_len),
        p.name,
        if p.model.is_empty() {
            "(no model)"
        } else {
            &p.model
        },
        human(p.size_bytes),
        if p.removable { ", removable" } else { "" }
    );
    if p.overwrites.is_empty() {
        s.push_str("  overwrites: the whole device (no partitions found)\n");
    } else {
        for (i, (n, size)) in p.overwrites.iter().enumerate() {
            let head = if i == 0 { "overwrites:" } else { "" };
            s.push_str(&format!("  {head:<11} /dev/{n} ({})\n", human(*size)));
        }
    }
    s
}

/// The whole command: check, confirm, copy, sync, read back.
pub fn run(image: &Path, device: &Path, yes: bool) -> Result<()> {
    let path = device.display().to_string();
    let meta = std::fs::metadata(device).with_context(|| format!("stat {path}"))?;
    if !meta.file_type().is_block_device() {
        return Err(Refusal::NotBlockDevice { path }.into());
    }
    let (major, minor) = (
        rustix::fs::major(meta.rdev()),
        rustix::fs::minor(meta.rdev()),
    );
    let (sys, proc_) = (Path::new("/sys"), Path::new("/proc"));
    let dev = blockdev::read(sys, major, minor)
        .with_context(|| format!("{path}: no /sys/dev/block/{major}:{minor}"))?;
    let usage = blockdev::usage(sys, proc_, &dev);
    let image_len = std::fs::metadata(image)
        .with_context(|| format!("stat {}", image.display()))?
        .len();
    let plan = check(&path, &dev, &usage, image_len)?;
    eprint!("{}", describe(image, image_len, &plan));
    if !yes {
        if !std::io::stdin().is_terminal() {
            return Err(Refusal::NotConfirmed.into());
        }
        eprint!("Type yes to overwrite /dev/{}: ", plan.name);
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if answer.trim() != "yes" {
            return Err(Refusal::NotConfirmed.into());
        }
    }
    let want = copy(image, device, image_len)?;
    let got = read_back(device, image_len)?;
    if got != want {
        return Err(Refusal::Mismatch { want, got }.into());
    }
    println!(
        "/dev/{}: wrote and verified {} bytes, sha256 {want}",
        plan.name, image_len
    );
    Ok(())
}

const CHUNK: usize = 4 << 20;

/// Copy `len` bytes of `image` onto `device` (opened O_EXCL), fsync; the image's SHA-256.
fn copy(image: &Path, device: &Path, len: u64) -> Result<String> {
    let mut src =
        std::fs::File::open(image).with_context(|| format!("opening {}", image.display()))?;
    let mut dst = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(rustix::fs::OFlags::EXCL.bits() as i32)
        .open(device)
        .map_err(|source| Refusal::Busy {
            path: device.display().to_string(),
            source,
        })?;
    let bar = indicatif::ProgressBar::new(len).with_style(
        indicatif::ProgressStyle::with_template(
            "{bytes}/{total_bytes} [{wide_bar}] {bytes_per_sec}, {eta} left",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = src.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        dst.write_all(&buf[..n])
            .with_context(|| format!("writing {}", device.display()))?;
        bar.inc(n as u64);
    }
    bar.set_message("syncing");
    dst.sync_all()
        .with_context(|| format!("syncing {}", device.display()))?;
    bar.finish_and_clear();
    Ok(phase_release::hex::encode(&hash.finalize()))
}

/// SHA-256 of the first `len` bytes of `device`, read after dropping its cached pages so
/// the bytes come from the device.
fn read_back(device: &Path, len: u64) -> Result<String> {
    let mut f =
        std::fs::File::open(device).with_context(|| format!("reopening {}", device.display()))?;
    rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed)
        .with_context(|| format!("dropping cached pages of {}", device.display()))?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut left = len;
    while left > 0 {
        let want = usize::try_from(left.min(CHUNK as u64)).unwrap_or(CHUNK);
        f.read_exact(&mut buf[..want])
            .with_context(|| format!("reading back {}", device.display()))?;
        hash.update(&buf[..want]);
        left -= want as u64;
    }
    Ok(phase_release::hex::encode(&hash.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blockdev::Mount;

    fn disk() -> Device {
        let part = |n: &str, d: &str| Device {
            name: n.into(),
            dev: d.into(),
            partition: true,
            size_bytes: 1 << 30,
            ..Device::default()
        };
        Device {
            name: "sdb".into(),
            dev: "8:16".into(),
            size_bytes: 8 << 30,
            model: "Stick".into(),
            removable: true,
            parts: vec![part("sdb1", "8:17"), part("sdb2", "8:18")],
            ..Device::default()
        }
    }

    fn mounted(dev: &str, point: &str) -> Usage {
        Usage {
            mounts: vec![Mount {
                dev: dev.into(),
                point: point.into(),
            }],
            ..Usage::default()
        }
    }

    #[test]
    fn refusals_in_order() {
        let mut part = disk().parts[0].clone();
        part.partition = true;
        let mut held = disk();
        held.parts[1].holders = vec!["dm-0".into()];
        let mut stacked = Usage::default();
        stacked
            .stacked
            .insert("dm-0".into(), ("254:0".into(), Vec::new()));
        let mut stacked_mounted = stacked.clone();
        stacked_mounted.mounts = mounted("254:0", "/").mounts;
        let swap = Usage {
            swaps: vec!["sdb2".into()],
            ..Usage::default()
        };
        let cases: Vec<(&str, Device, Usage, u64, &str)> = vec![
            ("partition", part, Usage::default(), 1, "partition"),
            (
                "root on a partition",
                disk(),
                mounted("8:17", "/"),
                1,
                "holds_running_system",
            ),
            (
                "root on dm above it",
                held.clone(),
                stacked_mounted,
                1,
                "holds_running_system",
            ),
            (
                "whole disk mounted",
                disk(),
                mounted("8:16", "/mnt"),
                1,
                "mounted",
            ),
            (
                "a partition mounted",
                disk(),
                mounted("8:18", "/media/x"),
                1,
                "mounted",
            ),
            ("swap", disk(), swap, 1, "swap"),
            ("dm holder, unmounted", held, stacked, 1, "held"),
            (
                "too small",
                disk(),
                Usage::default(),
                (8 << 30) + 1,
                "too_small",
            ),
        ];
        for (what, dev, usage, len, reason) in cases {
            let r = check("/dev/x", &dev, &usage, len).map(|_| ()).unwrap_err();
            assert_eq!(r.reason(), reason, "{what}: {r}");
        }
    }

    #[test]
    fn an_unused_disk_is_planned_with_what_it_overwrites() {
        let other = mounted("8:1", "/");
        let p = check("/dev/sdb", &disk(), &other, 8 << 30).unwrap();
        assert_eq!(
            p.overwrites,
            vec![("sdb1".into(), 1 << 30), ("sdb2".into(), 1 << 30)]
        );
        let text = describe(Path::new("img"), 1 << 20, &p);
        assert!(text.contains("Stick, 8.0 GiB, removable"), "{text}");
        assert!(text.contains("/dev/sdb2 (1.0 GiB)"), "{text}");
    }

    #[test]
    fn whole_disk_hints() {
        for (p, w) in [
            ("sdb1", "sdb"),
            ("nvme0n1p2", "nvme0n1"),
            ("loop3p1", "loop3"),
            ("mmcblk0p1", "mmcblk0"),
        ] {
            assert_eq!(whole_disk_hint(p), w);
        }
    }
}
