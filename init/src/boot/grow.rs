//! Grow the boot stick on its first boot (internet/local modes: only called once the state
//! partition is mounted read-write, which private mode never does). `grow::plan` decides
//! from the GPT and the device size; this writes the new tables (backup first, then the
//! primary, then clears the old backup header), tells the kernel the partition's new
//! extent (BLKPG) and grows the mounted ext4 (EXT4_IOC_RESIZE_FS). Emits `state.grown`, or
//! `fallback` with `step: grow` and a reason: the boot goes on with the old size.

use super::Boot;
use crate::events::Event;
use crate::grow::{self, Grow};
use crate::sys::blkdev;
use phase_layout::{gpt, part_type, SECTOR};
use std::fs::File;
use std::os::unix::fs::FileExt;

/// Why growing stopped; `reason()` goes into the `fallback` event.
#[derive(Debug, thiserror::Error)]
enum GrowStepError {
    #[error("{disk}: {source}")]
    Plan {
        disk: String,
        #[source]
        source: grow::GrowError,
    },
    #[error("{disk}: {what}: {source}")]
    Write {
        disk: String,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("BLKPG resize {disk} partition {number}: {errno}")]
    ResizePartition {
        disk: String,
        number: u32,
        errno: rustix::io::Errno,
    },
    #[error("EXT4_IOC_RESIZE_FS {mnt}: {source}")]
    ResizeFs {
        mnt: String,
        #[source]
        source: std::io::Error,
    },
}

impl GrowStepError {
    fn reason(&self) -> &'static str {
        match self {
            GrowStepError::Plan { source, .. } => source.reason(),
            GrowStepError::Write { .. } => "write_failed",
            GrowStepError::ResizePartition { .. } => "resize_partition_failed",
            GrowStepError::ResizeFs { .. } => "resize_fs_failed",
        }
    }
}

/// Grow partition `state_dev` of `disk` (mounted at `mnt`) if the device is larger than
/// the table says. Never fails the boot.
pub(super) fn run(boot: &Boot, disk: &str, state_dev: &str, mnt: &str) {
    match grow_state(disk, mnt) {
        Ok(None) => {}
        Ok(Some(g)) => boot.events.emit(Event::StateGrown {
            device: state_dev.to_string(),
            old: g.old_bytes(),
            new: g.new_bytes(),
        }),
        Err(e) => {
            tracing::warn!("growing the state partition: {e}; keeping its size");
            boot.events.emit(Event::Fallback {
                step: "grow".into(),
                reason: e.reason().into(),
            });
        }
    }
}

fn grow_state(disk: &str, mnt: &str) -> Result<Option<Grow>, GrowStepError> {
    let io = |what: &'static str| {
        let disk = disk.to_string();
        move |source| GrowStepError::Write { disk, what, source }
    };
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(disk)
        .map_err(io("open read-write"))?;
    let size = blkdev::size_bytes(&f).map_err(|e| io("BLKGETSIZE64")(e.into()))?;
    let mut header = vec![0u8; SECTOR as usize];
    f.read_exact_at(&mut header, SECTOR)
        .map_err(io("read GPT header"))?;
    let plan_err = |source| GrowStepError::Plan {
        disk: disk.to_string(),
        source,
    };
    let (off, len) = gpt::entries_range(&header).map_err(|e| plan_err(e.into()))?;
    let mut entries = vec![0u8; len as usize];
    f.read_exact_at(&mut entries, off)
        .map_err(io("read GPT entries"))?;
    let Some(g) =
        grow::plan(&header, &entries, size / SECTOR, part_type::STATE).map_err(plan_err)?
    else {
        return Ok(None);
    };
    // Backup first: until the primary points at it, it is only unused space.
    f.write_all_at(&g.entries, g.backup_entries_lba * SECTOR)
        .map_err(io("write backup entries"))?;
    f.write_all_at(&g.backup_header, g.backup_lba * SECTOR)
        .map_err(io("write backup header"))?;
    f.sync_all().map_err(io("sync"))?;
    f.write_all_at(&g.entries, g.entries_lba * SECTOR)
        .map_err(io("write primary entries"))?;
    f.write_all_at(&g.primary_header, SECTOR)
        .map_err(io("write primary header"))?;
    let mut mbr = vec![0u8; SECTOR as usize];
    f.read_exact_at(&mut mbr, 0)
        .map_err(io("read protective MBR"))?;
    if let Some(m) = grow::protective_mbr(&mbr, size / SECTOR) {
        f.write_all_at(&m, 0).map_err(io("write protective MBR"))?;
    }
    if g.old_backup_lba < g.backup_lba {
        f.write_all_at(&[0u8; SECTOR as usize], g.old_backup_lba * SECTOR)
            .map_err(io("clear old backup header"))?;
    }
    f.sync_all().map_err(io("sync"))?;
    blkdev::resize_partition(&f, g.number, g.first_lba * SECTOR, g.new_bytes()).map_err(
        |errno| GrowStepError::ResizePartition {
            disk: disk.to_string(),
            number: g.number,
            errno,
        },
    )?;
    let fs_err = |source: std::io::Error| GrowStepError::ResizeFs {
        mnt: mnt.to_string(),
        source,
    };
    let block = rustix::fs::statvfs(mnt)
        .map_err(|e| fs_err(e.into()))?
        .f_bsize
        .max(1);
    let dir = File::open(mnt).map_err(fs_err)?;
    blkdev::resize_ext4(&dir, g.new_bytes() / block).map_err(|e| fs_err(e.into()))?;
    Ok(Some(g))
}
