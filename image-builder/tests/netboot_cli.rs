//! `phase-image netboot` end to end on small inputs: every file of the TFTP root is
//! written, two builds are byte-identical, and the dnsmasq example passes `dnsmasq --test`
//! (dnsmasq-base, installed by scripts/setup.sh; a missing dnsmasq fails the test).

use std::process::Command;

mod common;
use common::{ok, s, tmp};

const FILES: [&str; 9] = [
    "vmlinuz",
    "initramfs.img",
    "boot.ipxe",
    "site.ipxe",
    "grubnetx64.efi",
    "grub/grub.cfg",
    "grub/site.cfg",
    "dnsmasq.conf.example",
    "README.md",
];

fn build(d: &std::path::Path, out: &str) -> std::path::PathBuf {
    let o = d.join(out);
    ok(&[
        "netboot",
        "--kernel",
        s(&d.join("k")),
        "--initramfs",
        s(&d.join("i")),
        "-o",
        s(&o),
    ]);
    o
}

#[test]
fn netboot_root_is_complete_reproducible_and_its_dnsmasq_file_checks() {
    let d = tmp("netboot");
    std::fs::write(d.join("k"), b"kernel bytes").unwrap();
    std::fs::write(d.join("i"), b"initramfs bytes").unwrap();
    let (a, b) = (build(&d, "a"), build(&d, "b"));
    for f in FILES {
        let (x, y) = (
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
        );
        // The dnsmasq example names its own directory; everything else is identical.
        if f != "dnsmasq.conf.example" {
            assert_eq!(x, y, "{f} differs between two builds");
        }
    }
    assert_eq!(std::fs::read(a.join("vmlinuz")).unwrap(), b"kernel bytes");
    let efi = std::fs::read(a.join("grubnetx64.efi")).unwrap();
    assert_eq!(&efi[..2], b"MZ", "not a PE image");
    let o = Command::new("dnsmasq")
        .arg("--test")
        .arg(format!(
            "--conf-file={}",
            s(&a.join("dnsmasq.conf.example"))
        ))
        .output()
        .expect("dnsmasq (dnsmasq-base; run scripts/setup.sh)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let _ = std::fs::remove_dir_all(&d);
}
