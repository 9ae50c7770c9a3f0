//! Boot tests: the real Debian kernel and our initramfs under QEMU. Each reads the
//! PHASE-EVENT timeline and how the guest ended; none greps free-form logs, except for the
//! kernel's own "Attempted to kill init" / panic lines, which must never appear.

use phase_qemu::{artifact, out_dir, tempdir, Firmware, Outcome, Vm};

fn names(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn boots_to_ready_with_modules_and_powers_off() {
    let b = Vm::default_artifacts()
        .append("phase.poweroff=init.ready")
        .run()
        .expect("qemu runs");
    b.assert_order(&["init.start", "modules.loaded", "init.ready", "shutdown"]);
    b.assert_clean_poweroff();
    let m = b.expect("modules.loaded");
    let mut present = names(&m.fields["loaded"]);
    present.extend(names(&m.fields["already"]));
    present.extend(names(&m.fields["builtin"]));
    for want in [
        "virtio_blk",
        "squashfs",
        "overlay",
        "virtio_pci",
        "dm_verity",
    ] {
        assert!(
            present.iter().any(|p| p == want),
            "{want} not loaded: {}",
            m.fields
        );
    }
    assert!(names(&m.fields["failed"]).is_empty(), "{}", m.fields);
    assert!(names(&m.fields["missing"]).is_empty(), "{}", m.fields);
    // Debian's kernel does not enforce module signatures unless told to: the init leaves
    // them off, so the kernel does not hash every module (kmod_sig.rs; the kernel's own
    // check is tested in modules_go_signed_where_the_kernel_checks_signatures).
    for g in b.all("modules.loaded") {
        assert_eq!(
            g.str("signatures"),
            Some("left_off_not_enforced"),
            "{}",
            g.fields
        );
    }
    // The local group first, with each module's load time; network drivers in a group of
    // their own, waited for by the network step (no disk here: the state group is waited
    // for at init.ready).
    assert_eq!(m.str("group"), Some("local"));
    for name in names(&m.fields["loaded"]) {
        assert!(m.fields["ms"][&name].is_u64(), "no load time for {name}");
    }
    assert!(!names(&m.fields["loaded"]).contains(&"virtio_net".to_string()));
    // ext4 for the state partition in a group of its own, loaded alongside the local step;
    // it and its dependencies are carried gzip'd (.ko.gz) and inflated by the init.
    let groups = b.all("modules.loaded");
    let group = |g: &str| names(&b.modules_group(g).fields["loaded"]);
    assert!(group("network").contains(&"virtio_net".to_string()));
    for m in ["ext4", "jbd2", "mbcache", "crc16"] {
        assert!(
            group("state").contains(&m.to_string()),
            "{m}: {}",
            b.explain()
        );
    }
    assert!(!names(&m.fields["loaded"]).contains(&"ext4".to_string()));
    // The RNG's PCI function (the Vm always has one) is held back while virtio_pci loads,
    // then bound by the entropy group, which loads virtio_rng in the background.
    assert!(group("entropy").contains(&"virtio_rng".to_string()));
    let held = names(&m.fields["held"]);
    assert_eq!(held.len(), 1, "{}", m.fields);
    let entropy = b.modules_group("entropy");
    assert_eq!(names(&entropy.fields["bound"]), held, "{}", b.explain());
    assert!(!names(&m.fields["loaded"]).contains(&"virtio_rng".to_string()));
    // A boot that looks for a disk binds the RNG only once the local step is done (its PCI
    // probe would hold the root back on one vCPU); a diskless one binds it before the NIC
    // (network.rs).
    let waited = b.expect("disk.waited").t_ms;
    let rng_from = entropy.fields["from_ms"].as_u64();
    assert!(rng_from.is_some_and(|r| waited <= r), "{}", b.explain());
    // No loop device is attached on this path, so loop is not loaded at all.
    assert_eq!(groups.len(), 4, "{}", b.explain());
    assert!(groups
        .iter()
        .all(|g| !names(&g.fields["loaded"]).contains(&"loop".to_string())));
    let start = b.expect("init.start");
    assert_eq!(start.fields["pid"], 1);
    assert!(start.t_ms > 0 && start.t_ms <= b.expect("init.ready").t_ms);
    // No disk and no NIC: the only step that cannot work is the network, and it says so.
    let fallbacks: Vec<_> = b
        .all("fallback")
        .iter()
        .map(|f| (f.str("step"), f.str("reason")))
        .collect();
    assert_eq!(
        fallbacks,
        [(Some("network"), Some("no_interface"))],
        "{}",
        b.explain()
    );
    // The trust anchor from out/trusted-root.json verified inside the guest.
    let t = b.expect("trust.ready");
    assert_eq!(t.fields["root_version"], 1);
    assert_eq!(t.fields["release_threshold"], 2);
    assert_eq!(t.fields["release_floor"], 1);
    assert_eq!(t.fields["root_expired"], false);
    b.assert_order(&["modules.loaded", "trust.ready", "init.ready"]);
    // No disk: the wait for a boot medium (kernel uevents) ends at its bound, not before.
    let w = b.expect("disk.waited");
    assert_eq!(
        (
            w.fields["bound_ms"].as_u64(),
            w.str("ended"),
            w.str("medium")
        ),
        (Some(1000), Some("bound"), None),
        "{}",
        w.fields
    );
    assert!(w.fields["ms"].as_u64() >= Some(1000), "{}", w.fields);
    // The boot chart's data: one step.done per stage-1 step, in order, the network's failed.
    let steps: Vec<_> = b
        .all("step.done")
        .iter()
        .map(|s| (s.str("step").unwrap_or("?"), s.fields["ok"].as_bool()))
        .collect();
    let ok = Some(true);
    assert_eq!(
        steps,
        [
            ("early", ok),
            ("cmdline", ok),
            ("modules", ok),
            ("trust", ok),
            ("carry", ok),
            ("local", ok),
            ("network", Some(false)),
            ("fetch", ok),
            ("handoff", ok),
            ("services", ok),
            ("selftest", ok),
            ("ready", ok),
        ],
        "{}",
        b.explain()
    );
}

/// Where the kernel checks module signatures, every module goes to it signed and loads:
/// with `module.sig_enforce=1` the init reads so and keeps them; under lockdown (which
/// leaves `sig_enforce` at N) the kernel refuses the first module without its signature,
/// and the init loads that one and every later one signed.
#[test]
fn modules_go_signed_where_the_kernel_checks_signatures() {
    let boot = |words: &'static str| {
        std::thread::spawn(move || {
            Vm::default_artifacts()
                .append(words)
                .append("phase.poweroff=init.ready")
                .run()
                .expect("qemu runs")
        })
    };
    let enforced = boot("module.sig_enforce=1");
    let lockdown = boot("lockdown=integrity");
    for (b, want) in [
        (enforced.join().expect("enforced boot"), "checked"),
        (
            lockdown.join().expect("lockdown boot"),
            "checked_unsigned_refused",
        ),
    ] {
        b.assert_order(&["init.start", "modules.loaded", "init.ready", "shutdown"]);
        b.assert_clean_poweroff();
        let groups = b.all("modules.loaded");
        assert_eq!(groups.len(), 4, "{}", b.explain());
        for g in groups {
            assert_eq!(g.str("signatures"), Some(want), "{}", b.explain());
            assert!(names(&g.fields["failed"]).is_empty(), "{}", b.explain());
            assert!(!names(&g.fields["loaded"]).is_empty(), "{}", g.fields);
        }
    }
}

#[test]
fn faults_around_pid1_do_not_take_it_down() {
    // Also: unknown keys, bad values and garbage on the command line are not fatal.
    let b = Vm::default_artifacts()
        .append("phase.selftest=faults phase.bogus=1 phase.mode=turbo phase.mode=local")
        .append("phase.poweroff=init.ready \"unterminated garbage \u{7f}")
        .run()
        .expect("qemu runs");
    b.assert_clean_poweroff();
    let children = b.all("selftest.child");
    let by_args = |a: &str| {
        children
            .iter()
            .find(|e| e.str("args") == Some(a))
            .unwrap_or_else(|| panic!("no selftest.child {a}:\n{}", b.explain()))
    };
    // The init, not a blind waitpid, received each status.
    assert_eq!(by_args("crash").fields["signal"], 6, "{}", b.explain());
    assert_eq!(by_args("exit 7").fields["exit_code"], 7);
    assert_eq!(by_args("orphans 4").fields["exit_code"], 0);
    let o = b.expect("selftest.orphans");
    assert_eq!(o.fields["zombies"], 0, "{}", b.explain());
    assert!(o.fields["reaped"].as_u64() >= Some(4), "{}", b.explain());
    // The panicking task was restarted with backoff and its second run succeeded.
    let failed = b.expect("task.failed");
    assert_eq!(failed.str("task"), Some("selftest-panic"));
    assert_eq!(failed.str("reason"), Some("panic"));
    assert!(failed.fields["restart_in_ms"].as_u64().is_some());
    assert!(b
        .all("task.done")
        .iter()
        .any(|e| e.str("task") == Some("selftest-panic") && e.fields["runs"] == 2));
    b.assert_order(&[
        "init.start",
        "task.failed",
        "task.done",
        "init.ready",
        "shutdown",
    ]);
    assert_eq!(b.expect("init.ready").str("mode"), Some("local"));
}

#[test]
fn panic_in_boot_sequence_reboots_deliberately() {
    let b = Vm::default_artifacts()
        .append("phase.selftest=panic-boot")
        .run()
        .expect("qemu runs");
    b.assert_no_kernel_panic();
    b.assert_order(&["init.start", "panic", "shutdown"]);
    let s = b.expect("shutdown");
    assert_eq!(
        (s.str("action"), s.str("reason")),
        (Some("reboot"), Some("panic"))
    );
    assert_eq!(b.outcome, Outcome::Reboot, "{}", b.explain());
    assert!(b.event("init.ready").is_none());
}

#[test]
fn ctrl_alt_del_reboots_in_order() {
    let b = Vm::default_artifacts()
        .on_event("init.ready", "sendkey ctrl-alt-delete")
        .run()
        .expect("qemu runs");
    b.assert_no_kernel_panic();
    let s = b.expect("shutdown");
    assert_eq!(
        (s.str("action"), s.str("reason")),
        (Some("reboot"), Some("ctrl_alt_del"))
    );
    assert_eq!(b.outcome, Outcome::Reboot, "{}", b.explain());
}

/// SIGTERM to PID 1 (sent by one of its children, as any root process could) stops the
/// services and powers the machine off.
#[test]
fn sigterm_powers_off_in_order() {
    let b = Vm::default_artifacts()
        .append("phase.selftest=sigterm")
        .run()
        .expect("qemu runs");
    b.assert_clean_poweroff();
    b.assert_order(&["init.ready", "shutdown"]);
    assert_eq!(
        b.expect("shutdown").str("reason"),
        Some("sigterm"),
        "{}",
        b.explain()
    );
}

#[test]
fn boots_under_uefi() {
    let b = Vm::default_artifacts()
        .firmware(Firmware::Uefi)
        .append("phase.poweroff=init.ready")
        .run()
        .expect("qemu runs");
    b.assert_order(&["init.start", "modules.loaded", "init.ready", "shutdown"]);
    b.assert_clean_poweroff();
}

/// A degraded initramfs boots on and names what is wrong: a module listed but absent
/// (`modules.loaded.missing`), and a trust anchor whose signature no longer verifies
/// (`verify.failed` naming the file, then `fallback`).
#[test]
fn degraded_initramfs_is_named_not_fatal() {
    let release = std::fs::read_to_string(artifact("kernel.version"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("release=").map(str::to_string))
        .expect("release= in out/kernel.version");
    let modules_dir = out_dir().join("../build/kernel/lib/modules").join(&release);
    let dir = tempdir("missing-module");
    std::fs::write(dir.join("modules.txt"), "squashfs\nno_such_module\n").unwrap();
    let root = std::fs::read_to_string(artifact("trusted-root.json")).unwrap();
    let at = root.find("\"expires\":").expect("expires field") + "\"expires\":".len();
    let end = at + root[at..].find(|c: char| !c.is_ascii_digit()).unwrap();
    let later: u64 = root[at..end].parse::<u64>().unwrap() + 1;
    let tampered = format!("{}{later}{}", &root[..at], &root[end..]);
    std::fs::write(dir.join("root.json"), tampered).unwrap();
    let initrd = dir.join("initramfs.img");
    let st = std::process::Command::new(artifact("phase-image"))
        .args(["initramfs", "--init"])
        .arg(artifact("phase"))
        .arg("--modules-dir")
        .arg(&modules_dir)
        .arg("--modules-list")
        .arg(dir.join("modules.txt"))
        .arg("--file")
        .arg(format!(
            "etc/phase/trusted-root.json={}",
            dir.join("root.json").display()
        ))
        .arg("-o")
        .arg(&initrd)
        .status()
        .unwrap();
    assert!(st.success());
    let b = Vm::new(&artifact("vmlinuz"), &initrd)
        .append("phase.poweroff=init.ready")
        .run()
        .expect("qemu runs");
    b.assert_clean_poweroff();
    let m = b.expect("modules.loaded");
    assert_eq!(
        names(&m.fields["missing"]),
        ["no_such_module"],
        "{}",
        m.fields
    );
    assert_eq!(names(&m.fields["loaded"]), ["squashfs"], "{}", m.fields);
    let v = b.expect("verify.failed");
    assert_eq!(v.str("artifact"), Some("/etc/phase/trusted-root.json"));
    assert_eq!(v.str("reason"), Some("invalid_signature"));
    let f = b.expect("fallback");
    assert_eq!(
        (f.str("step"), f.str("reason")),
        (Some("trust"), Some("invalid_signature"))
    );
    assert!(b.event("trust.ready").is_none());
    b.assert_order(&["verify.failed", "fallback", "init.ready", "shutdown"]);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn init_binary_is_static_and_a_cli_off_pid1() {
    let file = std::process::Command::new("file")
        .arg(artifact("phase"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&file.stdout);
    assert!(text.contains("statically linked"), "{text}");
    let help = std::process::Command::new(artifact("phase"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("cmdline [FILE]"));
    let bad = std::process::Command::new(artifact("phase"))
        .arg("frobnicate")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

/// An archive appended to out/initramfs.img (as the kexec carry is, `boot/handoff.rs`:
/// zeros to a multiple of 4, then a plain cpio) is unpacked over it: the lz4 legacy frame
/// has no end of its own, and without phase-image's zero chunk size after it the kernel
/// reads the appended cpio as one more lz4 chunk and fails. Seen here by the floor the
/// init reports, which the appended `/etc/phase/release-floor` raises.
#[test]
fn an_archive_appended_to_the_initramfs_is_unpacked_too() {
    let dir = tempdir("appended-archive");
    std::fs::create_dir_all(dir.join("root/etc/phase")).unwrap();
    std::fs::write(dir.join("root/etc/phase/release-floor"), "7\n").unwrap();
    let cpio = std::process::Command::new("sh")
        .args([
            "-c",
            "echo etc/phase/release-floor | cpio -o -H newc --quiet",
        ])
        .current_dir(dir.join("root"))
        .output()
        .expect("cpio runs");
    assert!(cpio.status.success());
    let mut img = std::fs::read(artifact("initramfs.img")).unwrap();
    img.resize(img.len().next_multiple_of(4), 0);
    img.extend_from_slice(&cpio.stdout);
    let initrd = dir.join("initramfs.img");
    std::fs::write(&initrd, img).unwrap();
    let b = Vm::new(&artifact("vmlinuz"), &initrd)
        .append("phase.mode=private phase.poweroff=trust.ready")
        .run()
        .expect("qemu runs");
    b.assert_clean_poweroff();
    let t = b.expect("trust.ready");
    assert_eq!(t.fields["release_floor"], 7, "{}", t.fields);
    let _ = std::fs::remove_dir_all(dir);
}
