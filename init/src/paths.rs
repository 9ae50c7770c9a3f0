//! Where the init keeps what it hands from one stage to the next. The initramfs's own
//! files are under `/etc/phase` (baked in by the build); what stage 1 learns lives under
//! `/run/phase`, which moves into the rootfs with the switch. Paths of the kexec handover
//! are here; the older per-step constants (trust, network, discovery) move here as those
//! steps are touched.

/// In the new initramfs: the release carried across kexec (an extra cpio archive the
/// kernel unpacked after the initramfs's own).
pub const CARRY_DIR: &str = "/phase-carry";
/// The same directory as named inside the carry archive (no leading slash).
pub const CARRY_ARCHIVE_DIR: &str = "phase-carry";
/// The carry archive's release directory (every file of the release, served by stage 2).
pub const CARRY_RELEASE: &str = "release";
/// The carry archive's typed handover (`handover::Carry`), beside the release directory.
pub const CARRY_JSON: &str = "carry.json";
/// The verified metadata in the carry (and in a downloaded release directory).
pub const RELEASE_JSON: &str = "release.json";
/// The next kernel's initramfs with the carry appended, while it is being loaded.
pub const KEXEC_INITRAMFS: &str = "/run/phase/kexec-initramfs.img";
/// The typed handover stage 1 writes before exec'ing stage 2 (`handover::Carry`).
pub const CARRY: &str = "/run/phase/carry.json";
/// The kernel this initramfs was built for: SHA-256 of the bzImage (written by the build).
pub const KERNEL_SHA: &str = "/etc/phase/kernel.sha256";
/// A disk-booted node's release gathered for serving (`provider::medium`): the verified
/// metadata, kernel, initramfs and verity tree, and a link to the verified rootfs device.
pub const MEDIUM_RELEASE: &str = "/run/phase/medium-release";
