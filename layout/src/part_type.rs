//! Partition type GUIDs of a Phase Boot disk. Root and verity follow systemd's
//! discoverable partitions specification (x86-64); the BIOS boot partition and the ESP are
//! the firmware-defined types GRUB and UEFI look for.

use crate::Guid;

/// GRUB's BIOS boot partition: holds core.img, which the MBR's boot.img loads.
pub const BIOS_BOOT: Guid = Guid::from_text("21686148-6449-6e6f-744e-656564454649");
/// EFI system partition (FAT32): the UEFI loaders, the menu, the kernel and initramfs.
pub const ESP: Guid = Guid::from_text("c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
/// Phase Boot's own: the signed release metadata, zero padded.
pub const META: Guid = Guid::from_text("5b4c9d1e-7a3f-4e2b-9c61-0d8f2a6b7e10");
/// systemd: root partition, x86-64.
pub const ROOT_X86_64: Guid = Guid::from_text("4f68bce3-e8cd-4db1-96e7-fbcaf984b709");
/// systemd: root verity partition, x86-64.
pub const ROOT_VERITY_X86_64: Guid = Guid::from_text("2c7357ed-ebd2-46d9-aec1-23d437ec2bf5");
/// systemd: /var, here the persistent state (ext4).
pub const STATE: Guid = Guid::from_text("4d21b016-b534-45c2-a9fb-5c16e091fd2d");

/// GPT attribute bit 60: read-only (systemd mounts such partitions read-only).
pub const ATTR_READ_ONLY: u64 = 1 << 60;
/// GPT attribute bit 2: legacy BIOS bootable.
pub const ATTR_LEGACY_BOOTABLE: u64 = 1 << 2;
