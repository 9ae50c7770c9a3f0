//! Phase Boot's disk layout, the one definition shared by `phase-image` (which writes
//! disks) and the init (which finds its partitions on them): partition type GUIDs
//! ([`part_type`]), the rules that derive every other GUID from content ([`derive`]), the
//! GPT bytes ([`gpt`]: encode and parse), and where the ESP keeps the kernel and initramfs
//! ([`esp`]). PURE: bytes in, bytes or values out.
//! docs/disk-layout.md describes the disk these produce.

pub mod derive;
pub mod esp;
pub mod gpt;
pub mod grubenv;
mod guid;
pub mod meta;
pub mod part_type;

pub use guid::Guid;

/// Bytes per logical sector, as GPT addresses the disk.
pub const SECTOR: u64 = 512;
/// Partition alignment and granularity: 1 MiB.
pub const ALIGN: u64 = 1 << 20;
