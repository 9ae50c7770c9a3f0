//! Where the ESP of a bootable disk keeps the release's kernel and initramfs (paths inside
//! its FAT filesystem): `phase-image disk --bootable` writes them there, GRUB's menu boots
//! them, and a disk-booted node reads them back to serve its release to its peers.

/// The release's kernel (its `artifacts.kernel`).
pub const KERNEL: &str = "boot/vmlinuz";
/// The release's initramfs (its `artifacts.initramfs`).
pub const INITRAMFS: &str = "boot/initramfs.img";
