//! The EFI system partition: a FAT32 filesystem built in memory with the `fatfs` crate
//! (no mkfs, loop device or mount). Reproducible: every timestamp is SOURCE_DATE_EPOCH,
//! the volume serial is derived from the content by the caller, the label is PHASE-ESP,
//! files are written in the order given, and the FAT type is checked after formatting
//! (fatfs 0.3 may pick another type than asked).

use anyhow::{bail, Context, Result};
use fatfs::{Date, DateTime, FatType, FileSystem, FormatVolumeOptions, FsOptions, Time};
use std::io::{Cursor, Write};

pub const LABEL: [u8; 11] = *b"PHASE-ESP  ";
/// 512-byte clusters: the smallest FAT32 (65,525 clusters) is then about 33 MiB.
const CLUSTER: u32 = 512;
/// The smallest ESP we make: FAT32 with room to spare for clusters and FATs.
pub const MIN_SIZE: u64 = 40 << 20;

/// The ESP's size for files totalling `content` bytes: the content, a quarter more for
/// directories and growth, at least [`MIN_SIZE`], in whole MiB.
pub fn size_for(content: u64) -> u64 {
    let want = (content + content / 4 + (4 << 20)).max(MIN_SIZE);
    want.div_ceil(1 << 20) << 20
}

/// A fixed clock for fatfs: every created/modified/accessed stamp is this instant.
#[derive(Debug)]
struct FixedTime(DateTime);

impl fatfs::TimeProvider for FixedTime {
    fn get_current_date(&self) -> Date {
        self.0.date
    }
    fn get_current_date_time(&self) -> DateTime {
        self.0
    }
}

/// A UNIX time as a FAT date and time (UTC), clamped to FAT's 1980..=2107 range (PURE).
pub fn fat_time(epoch: u64) -> DateTime {
    const MIN: u64 = 315_532_800; // 1980-01-01
    const MAX: u64 = 4_354_819_199; // 2107-12-31 23:59:59
    let t = epoch.clamp(MIN, MAX);
    let (days, secs) = ((t / 86_400) as i64, t % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u16;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u16;
    let year = (yoe + era * 400 + i64::from(month <= 2)) as u16;
    DateTime {
        date: Date { year, month, day },
        time: Time {
            hour: (secs / 3600) as u16,
            min: (secs / 60 % 60) as u16,
            sec: (secs % 60) as u16,
            millis: 0,
        },
    }
}

/// Build the ESP image of `size` bytes holding `files` (path with `/`, bytes).
pub fn build(size: u64, volume_id: u32, mtime: u64, files: &[(&str, &[u8])]) -> Result<Vec<u8>> {
    let sectors = u32::try_from(size / 512).context("ESP over 2 TiB")?;
    let mut img = Cursor::new(vec![0u8; size as usize]);
    fatfs::format_volume(
        &mut img,
        FormatVolumeOptions::new()
            .fat_type(FatType::Fat32)
            .bytes_per_cluster(CLUSTER)
            .total_sectors(sectors)
            .volume_id(volume_id)
            .volume_label(LABEL),
    )
    .context("formatting the ESP")?;
    // fatfs wants a &'static clock; one small leak per image built.
    let clock: &'static FixedTime = Box::leak(Box::new(FixedTime(fat_time(mtime))));
    img.set_position(0);
    {
        let fs = FileSystem::new(&mut img, FsOptions::new().time_provider(clock))
            .context("opening the new ESP")?;
        if fs.fat_type() != FatType::Fat32 {
            bail!("the ESP came out {:?}, not FAT32", fs.fat_type());
        }
        for (path, bytes) in files {
            let root = fs.root_dir();
            let (dirs, name) = path.rsplit_once('/').unwrap_or(("", path));
            let mut dir = root;
            for d in dirs.split('/').filter(|d| !d.is_empty()) {
                dir = dir
                    .create_dir(d)
                    .with_context(|| format!("ESP: creating directory {d} for {path}"))?;
            }
            let mut f = dir
                .create_file(name)
                .with_context(|| format!("ESP: creating {path}"))?;
            f.truncate().with_context(|| format!("ESP: {path}"))?;
            f.write_all(bytes)
                .with_context(|| format!("ESP: writing {path} ({} bytes)", bytes.len()))?;
            f.flush()?;
        }
        fs.unmount().context("closing the ESP")?;
    }
    Ok(img.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn fat_time_is_utc_calendar_time() {
        let t = fat_time(1_700_000_000); // 2023-11-14 22:13:20 UTC
        assert_eq!((t.date.year, t.date.month, t.date.day), (2023, 11, 14));
        assert_eq!((t.time.hour, t.time.min, t.time.sec), (22, 13, 20));
        let leap = fat_time(951_782_400); // 2000-02-29 00:00:00
        assert_eq!(
            (leap.date.year, leap.date.month, leap.date.day),
            (2000, 2, 29)
        );
        // Before FAT's epoch (SOURCE_DATE_EPOCH=0): 1980-01-01.
        assert_eq!(
            fat_time(0).date,
            Date {
                year: 1980,
                month: 1,
                day: 1
            }
        );
    }

    #[test]
    fn builds_a_reproducible_fat32_that_reads_back() {
        let files: [(&str, &[u8]); 3] = [
            ("EFI/BOOT/BOOTX64.EFI", b"x64 loader"),
            ("boot/grub/grub.cfg", b"menu"),
            ("boot/vmlinuz", &[7u8; 5000]),
        ];
        let a = build(MIN_SIZE, 0xfeed_beef, 1_700_000_000, &files).unwrap();
        let b = build(MIN_SIZE, 0xfeed_beef, 1_700_000_000, &files).unwrap();
        assert!(a == b, "two builds differ");
        assert_eq!(a.len() as u64, MIN_SIZE);
        let fs = FileSystem::new(Cursor::new(a), FsOptions::new()).unwrap();
        assert_eq!(fs.fat_type(), FatType::Fat32);
        assert_eq!(fs.volume_id(), 0xfeed_beef);
        assert_eq!(fs.volume_label(), "PHASE-ESP");
        for (path, bytes) in files {
            let mut got = Vec::new();
            fs.root_dir()
                .open_file(path)
                .unwrap()
                .read_to_end(&mut got)
                .unwrap();
            assert_eq!(got, bytes, "{path}");
        }
        let e = fs.root_dir().iter().next().unwrap().unwrap();
        assert_eq!(e.modified().date.year, 2023);
    }

    #[test]
    fn size_is_at_least_fat32s_minimum_in_whole_mib() {
        assert_eq!(size_for(0), MIN_SIZE);
        assert_eq!(size_for(100 << 20) % (1 << 20), 0);
        assert!(size_for(100 << 20) >= 125 << 20);
    }
}
