use super::cmdline::{next, MAX_LEN};
use super::decide::{handoff, Handoff, Offer, Source};
use super::image::{init_size, mem_available, memory_needed, HEADER_BYTES, HEADROOM};
use super::*;
use crate::config::KexecPolicy::{self, Always, Auto, Never};

const RUNNING: &str = "aa";

fn offer(version: u64, kernel: &str) -> Offer {
    Offer {
        version,
        kernel_sha256: kernel.to_string(),
    }
}

#[test]
fn handoff_table() {
    use Handoff::*;
    use Source::*;
    let l1 = offer(1, "aa");
    let l1_other = offer(1, "bb");
    let f2_other = offer(2, "bb");
    let f2_same = offer(2, "AA");
    let f1_other = offer(1, "bb");
    #[rustfmt::skip]
    let table: &[(Option<&Offer>, Option<&Offer>, KexecPolicy, Handoff)] = &[
        // Nothing verified: stay, whatever the policy.
        (None, None, Auto, Stay(super::decide::Stay::NoRelease)),
        (None, None, Always, Stay(super::decide::Stay::NoRelease)),
        // The local release of the running kernel: switch root.
        (Some(&l1), None, Auto, SwitchRoot { source: Local, version: 1 }),
        // A newer fetched release with another kernel: kexec into it.
        (Some(&l1), Some(&f2_other), Auto, Kexec { source: Fetched, version: 2 }),
        (None, Some(&f2_other), Auto, Kexec { source: Fetched, version: 2 }),
        // Same kernel (hex compared without case): no kexec needed.
        (None, Some(&f2_same), Auto, SwitchRoot { source: Fetched, version: 2 }),
        // A tie goes to the local release, already mounted.
        (Some(&l1), Some(&f1_other), Auto, SwitchRoot { source: Local, version: 1 }),
        // A local release of another kernel (a stick written for another machine generation).
        (Some(&l1_other), None, Auto, Kexec { source: Local, version: 1 }),
        // always: kexec even with the running kernel.
        (Some(&l1), None, Always, Kexec { source: Local, version: 1 }),
        (None, Some(&f2_same), Always, Kexec { source: Fetched, version: 2 }),
        // never: the newest release of the running kernel, else stay.
        (Some(&l1), Some(&f2_other), Never, SwitchRoot { source: Local, version: 1 }),
        (None, Some(&f2_other), Never, Stay(super::decide::Stay::KexecForbidden)),
        (None, Some(&f2_same), Never, SwitchRoot { source: Fetched, version: 2 }),
    ];
    for (i, (local, fetched, policy, want)) in table.iter().enumerate() {
        assert_eq!(
            &handoff(*local, *fetched, RUNNING, *policy),
            want,
            "row {i}: {local:?} {fetched:?} {policy:?}"
        );
    }
    assert_eq!(
        super::decide::Stay::KexecForbidden.reason(),
        "kexec_forbidden"
    );
    assert_eq!(
        super::decide::Stay::NoRelease.reason(),
        "no_verified_release"
    );
}

#[test]
fn cmdline_table() {
    #[rustfmt::skip]
    let table: &[(&str, &str, &str)] = &[
        // Signed line only, plus the stage.
        ("console=ttyS0 quiet", "", "console=ttyS0 quiet phase.stage=2"),
        // The allowlist crosses; everything else of the running boot does not.
        ("quiet",
         "console=ttyS0,115200 ip=dhcp phase.mode=private phase.channel=beta phase.poweroff=stage2.start \
          phase.debug phase.kexec=always phase.provider=http://10.0.2.2:1/ phase.selftest=faults \
          init=/bin/sh rd.break sysctl.kernel.kexec_load_disabled=1 phase.stage=1",
         "quiet console=ttyS0,115200 ip=dhcp phase.mode=private phase.channel=beta \
          phase.poweroff=stage2.start phase.debug phase.kexec=always phase.stage=2"),
        // A stage in the signed line is replaced, not doubled.
        ("console=ttyS0 phase.stage=1", "", "console=ttyS0 phase.stage=2"),
        // What the signed line already says is not repeated.
        ("console=ttyS0", "console=ttyS0 console=tty0", "console=ttyS0 console=tty0 phase.stage=2"),
        // The running consoles keep their order (the last is /dev/console): the image's
        // menu puts the serial console last, after the release's own.
        ("console=ttyS0 quiet", "console=tty0 console=ttyS0 quiet phase.mode=internet",
         "quiet console=tty0 console=ttyS0 phase.mode=internet phase.stage=2"),
        // Everything after a bare `--` is init's argv, never carried.
        ("quiet", "phase.debug -- phase.mode=local", "quiet phase.debug phase.stage=2"),
        // A quoted value keeps its quotes.
        ("", "phase.channel=\"a b\"", "phase.channel=\"a b\" phase.stage=2"),
    ];
    for (signed, running, want) in table {
        let want = want.split_whitespace().collect::<Vec<_>>().join(" ");
        assert_eq!(
            next(signed, running).as_deref(),
            Ok(want.as_str()),
            "{signed:?} + {running:?}"
        );
    }
}

#[test]
fn cmdline_length_is_checked() {
    let stage = " phase.stage=2".len();
    let fits = "x".repeat(MAX_LEN - stage);
    assert_eq!(next(&fits, "").map(|l| l.len()), Ok(MAX_LEN));
    let over = "x".repeat(MAX_LEN - stage + 1);
    let err = next(&over, "").unwrap_err();
    assert_eq!(err.reason(), "kexec_cmdline_too_long");
    // The carried keys count too.
    let err = next(&fits, "console=ttyS0").unwrap_err();
    assert_eq!(
        err,
        KexecError::CmdlineTooLong {
            len: MAX_LEN + 14,
            max: MAX_LEN
        }
    );
    // The loader's own rule: len + NUL + 30 <= 2047.
    assert_eq!(MAX_LEN + 1 + 30, 2047);
}

#[test]
fn errno_table() {
    #[rustfmt::skip]
    let table: &[(i32, &str)] = &[
        (38, "kexec_unsupported"),          // ENOSYS
        (1, "kexec_not_permitted"),         // EPERM: kexec_load_disabled, lockdown
        (16, "kexec_busy"),                 // EBUSY
        (12, "kexec_no_memory"),            // ENOMEM
        (129, "kexec_signature_rejected"),  // EKEYREJECTED
        (74, "kexec_signature_rejected"),   // EBADMSG
        (8, "kexec_bad_image"),             // ENOEXEC
        (22, "kexec_invalid"),              // EINVAL
        (5, "kexec_failed"),                // EIO: anything else
    ];
    for (e, want) in table {
        assert_eq!(errno_reason(*e), *want, "errno {e}");
        assert_eq!(KexecError::Load { errno: *e }.reason(), *want);
    }
}

fn bzimage_header(version: u16, init: u32) -> Vec<u8> {
    let mut h = vec![0u8; HEADER_BYTES];
    h[0x202..0x206].copy_from_slice(b"HdrS");
    h[0x206..0x208].copy_from_slice(&version.to_le_bytes());
    h[0x260..0x264].copy_from_slice(&init.to_le_bytes());
    h
}

#[test]
fn bzimage_init_size() {
    assert_eq!(
        init_size(&bzimage_header(0x020f, 0x0400_0000)),
        Ok(64 << 20)
    );
    assert_eq!(
        init_size(&bzimage_header(0x0209, 1)),
        Err("boot protocol older than 2.10")
    );
    let mut bad = bzimage_header(0x020f, 1);
    bad[0x202] = b'X';
    assert_eq!(init_size(&bad), Err("no HdrS magic"));
    assert_eq!(init_size(&[0u8; 16]), Err("shorter than the setup header"));
    // Debian's kernels, when the build has fetched them.
    let out = concat!(env!("CARGO_MANIFEST_DIR"), "/../out/");
    for (image, version) in [
        ("vmlinuz", "kernel.version"),
        ("next/vmlinuz", "next/kernel.version"),
    ] {
        let (Ok(b), Ok(v)) = (
            std::fs::read(format!("{out}{image}")),
            std::fs::read_to_string(format!("{out}{version}")),
        ) else {
            continue;
        };
        let n = init_size(&b[..HEADER_BYTES]).unwrap();
        assert!((16 << 20..256 << 20).contains(&n), "init_size {n}");
        let want = v.lines().find_map(|l| l.strip_prefix("release=")).unwrap();
        assert_eq!(image::kernel_release(&b).as_deref(), Some(want));
    }
}

#[test]
fn kernel_release_string() {
    let mut h = vec![0u8; 0x1000];
    h[0x20e..0x210].copy_from_slice(&0x0300u16.to_le_bytes());
    let v = b"6.1.0-54-amd64 (debian-kernel@lists.debian.org) #1 SMP";
    h[0x500..0x500 + v.len()].copy_from_slice(v);
    assert_eq!(image::kernel_release(&h).as_deref(), Some("6.1.0-54-amd64"));
    // No pointer, a pointer past the end, no terminator: none.
    h[0x20e..0x210].copy_from_slice(&[0, 0]);
    assert_eq!(image::kernel_release(&h), None);
    h[0x20e..0x210].copy_from_slice(&0xf000u16.to_le_bytes());
    assert_eq!(image::kernel_release(&h), None);
}

#[test]
fn memory_budget() {
    assert_eq!(
        memory_needed(64 << 20, 8 << 20, 100 << 20),
        (64 + 8 + 200) * (1 << 20) + HEADROOM
    );
    assert_eq!(memory_needed(u64::MAX, 1, 1), u64::MAX);
    let info =
        "MemTotal:        1012345 kB\nMemFree:          500000 kB\nMemAvailable:     812000 kB\n";
    assert_eq!(mem_available(info), Some(812000 * 1024));
    assert_eq!(mem_available("MemFree: 1 kB\n"), None);
    assert_eq!(mem_available("MemAvailable: lots\n"), None);
}
