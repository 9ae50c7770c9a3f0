//! The boot menu, one list of entries (Internet (default), Local, Private, Debug) for every
//! way Phase Boot starts: the disk's GRUB under BIOS, UEFI x64 and UEFI IA32 (the early
//! config embedded in each image finds the ESP by its volume serial and loads
//! `boot/grub/grub.cfg` from it), and the netboot menus (`netboot.rs`: iPXE and GRUB over
//! TFTP), whose entries add `phase.diskless` (PURE). Each entry boots the base command line
//! (the release's signed one on a disk) plus its mode. The choice a test or an operator
//! leaves in `boot/grub/grubenv` ([`phase_layout::grubenv`]) sets the default entry, the
//! timeout and extra arguments; it changes nothing else.

/// Where the ESP's files go (paths inside the FAT filesystem).
pub use phase_layout::esp::{INITRAMFS, KERNEL};
pub const GRUB_CFG: &str = "boot/grub/grub.cfg";
pub const GRUBENV: &str = "boot/grub/grubenv";
pub const TRUSTED_ROOT: &str = "phase/trusted-root.json";
pub const BOOTX64: &str = "EFI/BOOT/BOOTX64.EFI";
pub const BOOTIA32: &str = "EFI/BOOT/BOOTIA32.EFI";

/// Seconds the menu waits when nothing is chosen.
const TIMEOUT_S: u32 = 5;

/// One menu entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    Internet,
    Local,
    Private,
    Debug,
}

/// Where a menu boots from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The disk's ESP: the release is on the disk.
    Disk,
    /// The network (PXE, iPXE): there is no local release, so `phase.diskless` tells the
    /// init not to wait for a boot medium.
    Network,
}

impl Entry {
    /// The menu, default first (docs/cmdline.md explains the modes).
    pub const ALL: [Entry; 4] = [Entry::Internet, Entry::Local, Entry::Private, Entry::Debug];

    /// The GRUB `--id` and iPXE label, which `default=` in grubenv and `phase_default` in
    /// site.ipxe name.
    pub fn id(self) -> &'static str {
        match self {
            Entry::Internet => "internet",
            Entry::Local => "local",
            Entry::Private => "private",
            Entry::Debug => "debug",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Entry::Internet => "Phase Boot: internet (newest release from the LAN or the DHT)",
            Entry::Local => "Phase Boot: local (LAN only, never the internet)",
            Entry::Private => "Phase Boot: private (writes nothing to any disk)",
            Entry::Debug => "Phase Boot: debug (internet mode, verbose, serial and VGA console)",
        }
    }

    /// The kernel command line (without grubenv's `phase_extra` or the netboot site's
    /// `phase_args`) from the base words (a disk's: the release's signed ones). Modes
    /// replace any `phase.mode` of the base; Internet, Local and Private are `quiet`, Debug
    /// is verbose with both consoles; a word is never repeated.
    pub fn cmdline(self, base_words: &[&str], source: Source) -> String {
        let keep = |w: &&&str| {
            !w.starts_with("phase.mode=")
                && !(self == Entry::Debug && (**w == "quiet" || w.starts_with("console=")))
        };
        let mut words: Vec<&str> = match self {
            // Serial last: it becomes /dev/console, where the init writes its events.
            Entry::Debug => vec!["console=tty0", "console=ttyS0,115200"],
            _ => vec!["console=tty0"],
        };
        words.extend(base_words.iter().filter(keep));
        if self != Entry::Debug {
            words.push("quiet");
        }
        words.push(match self {
            Entry::Internet | Entry::Debug => "phase.mode=internet",
            Entry::Local => "phase.mode=local",
            Entry::Private => "phase.mode=private",
        });
        if self == Entry::Debug {
            words.push("phase.debug");
        }
        if source == Source::Network {
            words.push("phase.diskless");
        }
        // The first of each word stays where it is.
        let mut seen: Vec<&str> = Vec::new();
        words.retain(|w| {
            let first = !seen.contains(w);
            seen.push(w);
            first
        });
        words.join(" ")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MenuError {
    #[error("release command line word {0:?} has a character GRUB would read as syntax")]
    UnsafeWord(String),
}

/// The release's signed command line as words GRUB passes through unchanged.
pub fn release_words(cmdline: &str) -> Result<Vec<&str>, MenuError> {
    let safe = |c: char| c.is_ascii_alphanumeric() || "._,=:/-+@%".contains(c);
    cmdline
        .split_whitespace()
        .map(|w| {
            if w.chars().all(safe) {
                Ok(w)
            } else {
                Err(MenuError::UnsafeWord(w.to_string()))
            }
        })
        .collect()
}

/// GRUB's text form of a FAT volume serial (`search --fs-uuid`).
pub fn fat_uuid(volume_id: u32) -> String {
    format!("{:04x}-{:04x}", volume_id >> 16, volume_id & 0xffff)
}

/// Embedded in every GRUB image; runs in GRUB's rescue parser (no `if`).
pub fn early_cfg(volume_id: u32) -> String {
    format!(
        "search --no-floppy --fs-uuid --set=root {}\nset prefix=($root)/boot/grub\n",
        fat_uuid(volume_id)
    )
}

pub fn grub_cfg(release_cmdline_words: &[&str]) -> String {
    let mut s = format!(
        "# Phase Boot's menu, the same under BIOS, UEFI x64 and UEFI IA32 (phase-image disk).\n\
         # boot/grub/grubenv may choose the default entry, the timeout and extra kernel\n\
         # arguments (docs/usb.md); nothing else is read from it.\n\
         set default=internet\n\
         set timeout={TIMEOUT_S}\n\
         set phase_extra=\n\
         load_env --file $prefix/grubenv {vars}\n\
         serial --unit=0 --speed=115200\n\
         terminal_input serial console\n\
         terminal_output serial console\n\
         if [ \"$grub_platform\" = \"efi\" ]; then set gfxpayload=keep; fi\n",
        vars = phase_layout::grubenv::VARIABLES.join(" ")
    );
    for e in Entry::ALL {
        s.push_str(&format!(
            "\nmenuentry '{}' --id {} {{\n\tlinux /{KERNEL} {} $phase_extra\n\tinitrd /{INITRAMFS}\n}}\n",
            e.title(),
            e.id(),
            e.cmdline(release_cmdline_words, Source::Disk)
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_carry_the_release_words_and_their_mode() {
        let w = release_words("console=ttyS0 quiet phase.mode=private foo=1").unwrap();
        let disk = |e: Entry| e.cmdline(&w, Source::Disk);
        assert_eq!(
            disk(Entry::Internet),
            "console=tty0 console=ttyS0 quiet foo=1 phase.mode=internet"
        );
        assert_eq!(
            disk(Entry::Private),
            "console=tty0 console=ttyS0 quiet foo=1 phase.mode=private"
        );
        assert_eq!(
            disk(Entry::Local),
            "console=tty0 console=ttyS0 quiet foo=1 phase.mode=local"
        );
        assert_eq!(
            disk(Entry::Debug),
            "console=tty0 console=ttyS0,115200 foo=1 phase.mode=internet phase.debug"
        );
    }

    #[test]
    fn network_entries_are_diskless_and_never_repeat_a_word() {
        let base = ["console=tty0", "console=ttyS0,115200", "panic=10"];
        let net = |e: Entry| e.cmdline(&base, Source::Network);
        assert_eq!(
            net(Entry::Internet),
            "console=tty0 console=ttyS0,115200 panic=10 quiet phase.mode=internet phase.diskless"
        );
        assert_eq!(
            net(Entry::Private),
            "console=tty0 console=ttyS0,115200 panic=10 quiet phase.mode=private phase.diskless"
        );
        assert_eq!(
            net(Entry::Debug),
            "console=tty0 console=ttyS0,115200 panic=10 phase.mode=internet phase.debug phase.diskless"
        );
        for e in Entry::ALL {
            assert!(!e.cmdline(&base, Source::Disk).contains("phase.diskless"));
        }
    }

    #[test]
    fn unsafe_release_words_are_refused() {
        for bad in ["a;reboot", "x=$root", "'q'", "a{b}", "a\\b", "é"] {
            assert_eq!(
                release_words(bad),
                Err(MenuError::UnsafeWord(bad.into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn menu_lists_four_entries_with_internet_default() {
        let cfg = grub_cfg(&["console=ttyS0"]);
        assert!(cfg.contains("set default=internet\n"));
        assert!(cfg.contains("load_env --file $prefix/grubenv default timeout phase_extra\n"));
        let ids: Vec<&str> = cfg
            .lines()
            .filter_map(|l| l.split(" --id ").nth(1))
            .map(|r| r.trim_end_matches(" {"))
            .collect();
        assert_eq!(ids, ["internet", "local", "private", "debug"]);
        assert!(cfg.contains(
            "\tlinux /boot/vmlinuz console=tty0 console=ttyS0 quiet phase.mode=local $phase_extra\n\tinitrd /boot/initramfs.img\n"
        ));
    }

    #[test]
    fn early_config_finds_the_esp_by_serial() {
        assert_eq!(fat_uuid(0x1234_abcd), "1234-abcd");
        assert_eq!(
            early_cfg(0x0001_0002),
            "search --no-floppy --fs-uuid --set=root 0001-0002\nset prefix=($root)/boot/grub\n"
        );
    }
}
