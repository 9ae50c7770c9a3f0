//! `phase-image netboot`: the TFTP root a PXE server hands out (`out/netboot/`).
//!
//! One menu for every network client, the disk's entries (`menu.rs`: Internet (default),
//! Local, Private, Debug), each with `phase.diskless`: `boot.ipxe` for iPXE (QEMU's ROM, or a BIOS PXE ROM chained into `undionly.kpxe`) and
//! `grub/grub.cfg` for 64-bit UEFI clients, which load `grubnetx64.efi` (`grub.rs`,
//! [`Platform::NetX64`]: prefix `/grub` on the TFTP server it came from). Each menu first reads
//! a site file (`site.ipxe`, `grub/site.cfg`) where a farm sets its provider URL, default
//! entry and timeout without touching the generated menus. `dnsmasq.conf.example` and
//! README.md say how to serve it. The kernel and initramfs are copied as they are: the
//! initramfs verifies everything it fetches against its baked-in root, so nothing served
//! here is trusted beyond the initramfs itself.
//!
//! The texts are pure functions of the base command line (tested below); `write` copies
//! and runs `grub-mkimage`, whose output is byte-reproducible.

use crate::grub::{self, Platform};
use crate::menu::{Entry, Source};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// The UEFI x64 network loader's file name in the TFTP root.
pub const GRUB_NET_EFI: &str = "grubnetx64.efi";

/// `boot.ipxe`: site file first, then the menu with a bounded default.
pub fn ipxe_script(base: &str) -> String {
    let mut s = String::from(
        "#!ipxe\n\
         # Phase Boot network menu, written by `phase-image netboot`. Farm settings go in\n\
         # site.ipxe (read first, optional): phase_args, phase_default, phase_timeout.\n\
         set phase_default internet\n\
         set phase_timeout 5000\n\
         set phase_args\n\
         chain --autofree site.ipxe || echo Phase Boot: no site.ipxe, using the defaults\n\
         menu Phase Boot\n",
    );
    for e in Entry::ALL {
        s.push_str(&format!("item {} {}\n", e.id(), e.title()));
    }
    s.push_str(
        "choose --timeout ${phase_timeout} --default ${phase_default} phase_entry || goto ${phase_default}\n\
         goto ${phase_entry}\n",
    );
    for e in Entry::ALL {
        s.push_str(&format!(
            ":{}\nset phase_words {}\ngoto boot\n",
            e.id(),
            kernel_words(base, e)
        ));
    }
    s.push_str(
        ":boot\n\
         kernel vmlinuz initrd=initramfs.img ${phase_words} ${phase_args}\n\
         initrd initramfs.img\n\
         boot\n",
    );
    s
}

/// The default `site.ipxe`: only comments, so the menu's defaults hold.
pub const SITE_IPXE: &str = "#!ipxe\n\
# Phase Boot site settings for iPXE clients (read by boot.ipxe before its menu).\n\
# set phase_args phase.provider=http://10.0.0.5:8080/   # kernel words added to every entry\n\
# set phase_default local                               # internet, local, private or debug\n\
# set phase_timeout 2000                                # menu timeout, ms (0 waits forever)\n";

/// `grub/grub.cfg` for UEFI clients of `grubnetx64.efi`.
pub fn grub_cfg(base: &str) -> String {
    let mut s = String::from(
        "# Phase Boot network menu, written by `phase-image netboot`. Farm settings go in\n\
         # grub/site.cfg (read first): phase_args, default, timeout.\n\
         set default=0\n\
         set timeout=5\n\
         set phase_args=\n\
         serial --unit=0 --speed=115200\n\
         terminal_input serial console\n\
         terminal_output serial console\n\
         source $prefix/site.cfg\n",
    );
    for e in Entry::ALL {
        s.push_str(&format!(
            "menuentry '{}' --id {} {{\n  linux /vmlinuz {} $phase_args\n  initrd /initramfs.img\n}}\n",
            e.title(),
            e.id(),
            kernel_words(base, e)
        ));
    }
    s
}

/// The default `grub/site.cfg`.
pub const SITE_GRUB: &str =
    "# Phase Boot site settings for UEFI clients (sourced by grub.cfg before its menu).\n\
# set phase_args=\"phase.provider=http://10.0.0.5:8080/\"   # kernel words added to every entry\n\
# set default=local                                       # internet, local, private or debug\n\
# set timeout=2                                           # seconds (-1 waits forever)\n";

/// The kernel words of one entry of a network menu.
fn kernel_words(base: &str, e: Entry) -> String {
    let words: Vec<&str> = base.split_whitespace().collect();
    e.cmdline(&words, Source::Network)
}

/// `dnsmasq.conf.example`: PXE and TFTP from one dnsmasq, a boot file per client kind.
pub fn dnsmasq_conf(tftp_root: &str) -> String {
    format!(
        "# Phase Boot netboot with dnsmasq (written by `phase-image netboot`; see README.md).\n\
         # Check it with: dnsmasq --test --conf-file=dnsmasq.conf.example\n\
         port=0\n\
         enable-tftp\n\
         tftp-root={tftp_root}\n\
         # Own DHCP on an isolated LAN; on a LAN with a DHCP server use proxy mode instead:\n\
         # dhcp-range=192.168.1.0,proxy\n\
         dhcp-range=192.168.50.100,192.168.50.200,12h\n\
         # Who is asking: iPXE already running, or the firmware's own PXE client.\n\
         dhcp-userclass=set:ipxe,iPXE\n\
         dhcp-match=set:efi64,option:client-arch,7\n\
         dhcp-match=set:efi64,option:client-arch,9\n\
         # iPXE (any firmware): the menu script.\n\
         dhcp-boot=tag:ipxe,boot.ipxe\n\
         # 64-bit UEFI firmware: GRUB's network loader, which reads grub/grub.cfg.\n\
         dhcp-boot=tag:!ipxe,tag:efi64,{GRUB_NET_EFI}\n\
         # BIOS PXE ROMs: chain into iPXE first (undionly.kpxe from Debian's `ipxe` package).\n\
         dhcp-boot=tag:!ipxe,tag:!efi64,undionly.kpxe\n"
    )
}

/// README.md of the TFTP root.
pub fn readme() -> String {
    format!(
        "# Phase Boot netboot files\n\n\
         Written by `phase-image netboot` (`make build` puts them in `out/netboot/`). Serve this\n\
         directory as a TFTP root:\n\n\
         | file | for |\n| --- | --- |\n\
         | `vmlinuz`, `initramfs.img` | every client: the kernel and the Phase Boot initramfs |\n\
         | `boot.ipxe` | iPXE clients (QEMU's ROM, or BIOS PXE chained into iPXE): menu Internet (default), Local, Private, Debug |\n\
         | `site.ipxe` | your farm's settings for iPXE clients: `phase_args` (e.g. `phase.provider=URL`), `phase_default`, `phase_timeout` |\n\
         | `{GRUB_NET_EFI}` | 64-bit UEFI clients: GRUB with efinet, tftp and http; reads `grub/grub.cfg` from this server |\n\
         | `grub/grub.cfg`, `grub/site.cfg` | the same menu for UEFI clients, and its site settings |\n\
         | `dnsmasq.conf.example` | a dnsmasq PXE/TFTP configuration (below) |\n\n\
         ## dnsmasq\n\n\
         One dnsmasq does DHCP (or proxy DHCP beside an existing server) and TFTP. It tells\n\
         clients apart by DHCP option 93 (client architecture: 7 and 9 are x64 UEFI, 0 is BIOS)\n\
         and by the user class `iPXE`, which iPXE sends:\n\n\
         - 64-bit UEFI firmware gets `{GRUB_NET_EFI}`, which loads `grub/grub.cfg` by TFTP;\n\
         - BIOS firmware gets `undionly.kpxe` (copy it here from Debian's `ipxe` package,\n  \
           `/usr/lib/ipxe/undionly.kpxe`), which is iPXE: it asks again, now as `iPXE`;\n\
         - iPXE gets `boot.ipxe`.\n\n\
         ```sh\n\
         sudo cp -r out/netboot /srv/phase-netboot\n\
         sudo cp /usr/lib/ipxe/undionly.kpxe /srv/phase-netboot/\n\
         sed 's|^tftp-root=.*|tftp-root=/srv/phase-netboot|' /srv/phase-netboot/dnsmasq.conf.example \\\n  \
           | sudo tee /etc/dnsmasq.d/phase-netboot.conf\n\
         sudo dnsmasq --test && sudo systemctl restart dnsmasq\n\
         ```\n\n\
         Edit `dhcp-range` for your LAN (`dhcp-range=192.168.1.0,proxy` leaves addresses to the\n\
         existing DHCP server). 32-bit UEFI clients are not served by this directory: boot them\n\
         from the USB image.\n\n\
         ## Where the release comes from\n\n\
         A netbooted machine has no disk release: it finds a provider as its mode allows\n\
         (`phase.provider=URL`, then the LAN by mDNS, then the DHT in internet mode), verifies the\n\
         signed release against the root in its initramfs, and boots it (docs/network.md,\n\
         docs/discovery.md). Any booted node serves its release, so a farm needs one provider to\n\
         start; set it for every client with `phase_args` in `site.ipxe` and `grub/site.cfg`.\n"
    )
}

/// What `write` needs.
pub struct Inputs {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    /// Kernel words every entry starts with (consoles).
    pub cmdline: String,
    /// GRUB's x86_64-efi module directory (grub-efi-amd64-bin).
    pub grub_efi_dir: PathBuf,
}

/// Write the TFTP root into `out` (created; files replaced). Returns the files written.
pub fn write(inputs: &Inputs, out: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out.join("grub"))
        .with_context(|| format!("creating {}", out.join("grub").display()))?;
    let mut written = Vec::new();
    for (src, name) in [
        (&inputs.kernel, "vmlinuz"),
        (&inputs.initramfs, "initramfs.img"),
    ] {
        let bytes = std::fs::read(src).with_context(|| format!("reading {}", src.display()))?;
        crate::write_atomic(&out.join(name), &bytes)?;
        written.push(out.join(name));
    }
    let root = out.canonicalize().unwrap_or_else(|_| out.to_path_buf());
    for (name, text) in [
        ("boot.ipxe", ipxe_script(&inputs.cmdline)),
        ("site.ipxe", SITE_IPXE.to_string()),
        ("grub/grub.cfg", grub_cfg(&inputs.cmdline)),
        ("grub/site.cfg", SITE_GRUB.to_string()),
        (
            "dnsmasq.conf.example",
            dnsmasq_conf(&root.to_string_lossy()),
        ),
        ("README.md", readme()),
    ] {
        crate::write_atomic(&out.join(name), text.as_bytes())?;
        written.push(out.join(name));
    }
    let efi = out.join(GRUB_NET_EFI);
    let image = grub::mkimage(&inputs.grub_efi_dir, Platform::NetX64, None)?;
    crate::write_atomic(&efi, &image)?;
    written.push(efi);
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "console=tty0 console=ttyS0,115200";

    #[test]
    fn ipxe_menu_offers_every_mode_default_internet_and_reads_the_site_file_first() {
        let s = ipxe_script(BASE);
        assert!(s.starts_with("#!ipxe\n"));
        let site = s.find("chain --autofree site.ipxe").unwrap();
        assert!(site < s.find("menu Phase Boot").unwrap());
        assert!(s.contains("set phase_default internet\n"));
        for e in Entry::ALL {
            assert!(s.contains(&format!("item {} ", e.id())), "{}", e.id());
            assert!(s.contains(&format!(
                ":{}\nset phase_words {}\ngoto boot\n",
                e.id(),
                kernel_words(BASE, e)
            )));
        }
        // A timeout never strands a machine at the menu: the default entry is taken.
        assert!(s.contains(
            "choose --timeout ${phase_timeout} --default ${phase_default} phase_entry || goto ${phase_default}"
        ));
        assert!(s.contains("kernel vmlinuz initrd=initramfs.img ${phase_words} ${phase_args}\n"));
    }

    #[test]
    fn grub_menu_has_the_same_entries_and_sources_its_site_file_first() {
        let s = grub_cfg(BASE);
        assert!(s.find("source $prefix/site.cfg").unwrap() < s.find("menuentry").unwrap());
        let ids: Vec<&str> = s
            .lines()
            .filter_map(|l| l.split(" --id ").nth(1))
            .map(|r| r.trim_end_matches(" {"))
            .collect();
        assert_eq!(ids, ["internet", "local", "private", "debug"]);
        for e in Entry::ALL {
            assert!(s.contains(&format!(
                "  linux /vmlinuz {} $phase_args\n",
                kernel_words(BASE, e)
            )));
        }
    }

    #[test]
    fn every_network_entry_is_diskless_only_debug_is_verbose() {
        for e in Entry::ALL {
            let w = kernel_words(BASE, e);
            assert!(w.starts_with(BASE), "{w}");
            assert!(w.ends_with(" phase.diskless"), "{w}");
            assert_eq!(w.contains("phase.debug"), e == Entry::Debug, "{w}");
            assert_eq!(w.contains("quiet"), e != Entry::Debug, "{w}");
        }
        assert!(kernel_words(BASE, Entry::Private).contains("phase.mode=private"));
        assert_eq!(Entry::ALL[0], Entry::Internet);
    }

    #[test]
    fn dnsmasq_sends_each_client_kind_its_boot_file() {
        let c = dnsmasq_conf("/srv/x");
        for line in [
            "tftp-root=/srv/x",
            "dhcp-boot=tag:ipxe,boot.ipxe",
            "dhcp-boot=tag:!ipxe,tag:efi64,grubnetx64.efi",
            "dhcp-boot=tag:!ipxe,tag:!efi64,undionly.kpxe",
        ] {
            assert!(c.lines().any(|l| l == line), "{line}");
        }
    }
}
