//! GRUB for the three firmwares, built rootless: `grub-mkimage` makes the BIOS core.img
//! and the x64/IA32 EFI loaders (byte-reproducible; `grub-mkstandalone` is not), each with
//! the modules the menu needs embedded and an early config that finds the ESP, and the x64
//! UEFI network loader of the netboot root (no early config: its prefix is on the TFTP
//! server it came from). The BIOS
//! boot chain is installed without `grub-bios-setup` (which wants a block device): the
//! two patches below are what it does with `--no-rs-codes`, checked byte for byte
//! (docs/disk-layout.md).

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// Where Debian's grub-pc-bin, grub-efi-amd64-bin and grub-efi-ia32-bin put the modules.
pub const DEFAULT_DIR: &str = "/usr/lib/grub";

/// The firmware a GRUB image is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    /// Legacy BIOS: core.img in the BIOS boot partition, loaded by boot.img in the MBR.
    Bios,
    /// 64-bit UEFI: EFI/BOOT/BOOTX64.EFI.
    EfiX64,
    /// 32-bit UEFI (2006–2009 Intel Macs: 64-bit CPU, IA32 firmware): EFI/BOOT/BOOTIA32.EFI.
    /// Debian's kernel has EFI_MIXED and the EFI handover protocol, so it boots from here.
    EfiIa32,
    /// 64-bit UEFI over the network (`grubnetx64.efi` of the netboot root): efinet, tftp and
    /// http; reads `/grub/grub.cfg` from the TFTP server that served it.
    NetX64,
}

/// Modules every image embeds: GPT, FAT, the menu, the Linux loader, the serial console,
/// the menu-choice file (loadenv), and the decompressors the kernel and initramfs may need.
const COMMON: &[&str] = &[
    "part_gpt",
    "fat",
    "normal",
    "configfile",
    "search",
    "search_fs_uuid",
    "linux",
    "echo",
    "test",
    "serial",
    "terminal",
    "loadenv",
    "gzio",
    "xzio",
    "zstd",
    "sleep",
    "reboot",
    "halt",
];

/// Modules of the network loader: the EFI network stack, TFTP and HTTP, the menu and the
/// Linux loader; no disk modules.
const NET: &[&str] = &[
    "efinet",
    "tftp",
    "http",
    "net",
    "normal",
    "configfile",
    "linux",
    "echo",
    "test",
    "serial",
    "terminal",
    "gzio",
    "efi_gop",
    "efi_uga",
    "sleep",
    "reboot",
    "halt",
];

impl Platform {
    /// grub-mkimage's `-O` format, also the module directory's name.
    pub fn format(self) -> &'static str {
        match self {
            Platform::Bios => "i386-pc",
            Platform::EfiX64 => "x86_64-efi",
            Platform::EfiIa32 => "i386-efi",
            Platform::NetX64 => "x86_64-efi",
        }
    }

    /// Where the image looks for its `grub.cfg`.
    pub fn prefix(self) -> &'static str {
        match self {
            Platform::NetX64 => "/grub",
            _ => "/boot/grub",
        }
    }

    /// The module directory of this platform under `grub_dir` (e.g. /usr/lib/grub).
    pub fn module_dir(self, grub_dir: &Path) -> PathBuf {
        grub_dir.join(self.format())
    }

    pub fn modules(self) -> Vec<&'static str> {
        let mut m = COMMON.to_vec();
        match self {
            Platform::NetX64 => return NET.to_vec(),
            Platform::Bios => m.push("biosdisk"),
            // The EFI framebuffer, for `gfxpayload=keep` (the IA32 Macs have no text mode).
            Platform::EfiX64 | Platform::EfiIa32 => m.extend(["efi_gop", "efi_uga"]),
        }
        m
    }

    /// The Debian package that ships this platform's modules (for error messages).
    fn package(self) -> &'static str {
        match self {
            Platform::Bios => "grub-pc-bin",
            Platform::EfiX64 | Platform::NetX64 => "grub-efi-amd64-bin",
            Platform::EfiIa32 => "grub-efi-ia32-bin",
        }
    }
}

/// Run grub-mkimage for `platform` with its modules from `module_dir` (e.g.
/// /usr/lib/grub/x86_64-efi) and `early_cfg` embedded, if any; returns the image bytes.
pub fn mkimage(module_dir: &Path, platform: Platform, early_cfg: Option<&str>) -> Result<Vec<u8>> {
    let mods = module_dir;
    if !mods.join("moddep.lst").is_file() {
        bail!(
            "{}: no GRUB modules (install {} and grub-common: scripts/setup.sh)",
            mods.display(),
            platform.package()
        );
    }
    let tmp = scratch(&format!("grub-{}", platform.format()))?;
    let cfg = tmp.join("early.cfg");
    let img = tmp.join("image");
    let mut cmd = std::process::Command::new("grub-mkimage");
    cmd.arg("-d")
        .arg(mods)
        .args(["-O", platform.format(), "-p", platform.prefix()]);
    if let Some(early) = early_cfg {
        std::fs::write(&cfg, early)?;
        cmd.arg("-c").arg(&cfg);
    }
    let out = cmd.arg("-o").arg(&img).args(platform.modules()).output();
    let result = match out {
        Err(e) => Err(anyhow::anyhow!(
            "running grub-mkimage: {e} (install grub-common: scripts/setup.sh)"
        )),
        Ok(o) if !o.status.success() => Err(anyhow::anyhow!(
            "grub-mkimage -O {} failed: {}",
            platform.format(),
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Ok(_) => std::fs::read(&img).with_context(|| format!("reading {}", img.display())),
    };
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

/// GRUB's 512-byte MBR boot code (i386-pc/boot.img).
pub fn boot_img(grub_dir: &Path) -> Result<[u8; 512]> {
    let p = grub_dir.join("i386-pc/boot.img");
    let b = std::fs::read(&p).with_context(|| {
        format!(
            "reading {} (install grub-pc-bin: scripts/setup.sh)",
            p.display()
        )
    })?;
    b.as_slice()
        .try_into()
        .map_err(|_| anyhow::anyhow!("{}: {} bytes, not 512", p.display(), b.len()))
}

fn scratch(tag: &str) -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("phase-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    Ok(d)
}

/// Offsets in GRUB's boot.img (grub-core/boot/i386/pc/boot.S).
const KERNEL_SECTOR: usize = 0x5c;
const BOOT_DRIVE: usize = 0x64;
const DRIVE_CHECK: usize = 0x66;
/// Where the MBR's disk signature and partition table start: never overwritten.
const MBR_TABLE: usize = 0x1b8;
/// In diskboot.img (core.img's first sector): the first blocklist's start sector.
const BLOCKLIST_START: usize = 0x1f4;

/// core.img, ready for the BIOS boot partition starting at LBA `s` (PURE): padded to whole
/// sectors, its blocklist pointing at the sectors after the first (mkimage already wrote
/// the length and the load segment).
pub fn place_core(core: &[u8], s: u64) -> Result<Vec<u8>, String> {
    if core.len() < 512 {
        return Err(format!(
            "core.img is {} bytes, under one sector",
            core.len()
        ));
    }
    let mut c = core.to_vec();
    c.resize(core.len().div_ceil(512) * 512, 0);
    c[BLOCKLIST_START..BLOCKLIST_START + 8].copy_from_slice(&(s + 1).to_le_bytes());
    Ok(c)
}

/// The MBR with GRUB's boot code (PURE): boot.img's code over bytes 0..0x1B8 (the disk
/// signature, the protective partition table and 0x55AA stay), core.img's sector `s` at
/// 0x5C, the BIOS boot drive taken from DL (0xFF at 0x64), and the drive-number check
/// replaced by two NOPs, as grub-bios-setup does for a hard disk.
pub fn mbr_with_boot_code(mbr: &[u8; 512], boot_img: &[u8; 512], s: u64) -> [u8; 512] {
    let mut m = *mbr;
    m[..MBR_TABLE].copy_from_slice(&boot_img[..MBR_TABLE]);
    m[KERNEL_SECTOR..KERNEL_SECTOR + 8].copy_from_slice(&s.to_le_bytes());
    m[BOOT_DRIVE] = 0xff;
    m[DRIVE_CHECK..DRIVE_CHECK + 2].copy_from_slice(&[0x90, 0x90]);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_is_padded_and_points_past_its_first_sector() {
        let core = vec![0xabu8; 1000];
        let c = place_core(&core, 2048).unwrap();
        assert_eq!(c.len(), 1024);
        assert_eq!(&c[0x1f4..0x1fc], &2049u64.to_le_bytes());
        assert_eq!(&c[..0x1f4], &core[..0x1f4]);
        assert_eq!(&c[0x1fc..1000], &core[0x1fc..]);
        assert!(c[1000..].iter().all(|&b| b == 0));
        assert!(place_core(&[0; 100], 2048).is_err());
    }

    #[test]
    fn mbr_keeps_its_table_and_takes_the_boot_code() {
        let mut mbr = [0u8; 512];
        mbr[0x1b8..]
            .iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = i as u8 | 1);
        let boot = [0x33u8; 512];
        let m = mbr_with_boot_code(&mbr, &boot, 2048);
        assert_eq!(&m[0x1b8..], &mbr[0x1b8..]);
        assert_eq!(&m[..0x5c], &boot[..0x5c]);
        assert_eq!(&m[0x5c..0x64], &2048u64.to_le_bytes());
        assert_eq!(m[0x64], 0xff);
        assert_eq!(m[0x65], 0x33);
        assert_eq!(&m[0x66..0x68], &[0x90, 0x90]);
        assert_eq!(&m[0x68..0x1b8], &boot[0x68..0x1b8]);
    }
}
