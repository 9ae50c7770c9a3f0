//! kexec into a verified release's own kernel (docs/kexec.md): release N (out/vmlinuz,
//! out/initramfs.img, out/rootfs-disk.img) is offered release N+1 (out/release-next,
//! another Debian kernel) by a provider on 127.0.0.1, reached through QEMU user
//! networking (`restrict=on`, one guestfwd).

use phase_qemu::{artifact, host_phase, tempdir, Boot, Firmware, Vm};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `phase provider serve DIR` on 127.0.0.1, returning its port.
fn serve(dir: &Path) -> (Server, u16) {
    let mut c = Command::new(host_phase())
        .args(["provider", "serve"])
        .arg(dir)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(c.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .rsplit(':')
        .next()
        .unwrap()
        .trim()
        .trim_end_matches('/')
        .parse()
        .unwrap();
    (Server(c), port)
}

fn disk_copy(dir: &Path) -> PathBuf {
    let p = dir.join("disk.img");
    let st = Command::new("cp")
        .args(["--sparse=always"])
        .arg(artifact("rootfs-disk.img"))
        .arg(&p)
        .status()
        .unwrap();
    assert!(st.success());
    p
}

/// The kernel release string `make build` recorded for a kernel (`kernel.version`).
fn kernel_release(version_file: &str) -> String {
    std::fs::read_to_string(artifact(version_file))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("release=").map(str::to_string))
        .unwrap()
}

/// Boot N (from `disk`, or diskless) with the provider on `port`, until init.ready.
fn boot(disk: Option<&Path>, port: u16, extra: &str) -> Boot {
    vm(disk, port, "init.ready", extra).run().unwrap()
}

/// N (from `disk`, or diskless) with the provider on `port`, powering off after `until`.
fn vm(disk: Option<&Path>, port: u16, until: &str, extra: &str) -> Vm {
    let mut vm = Vm::default_artifacts()
        .user_net_to(port)
        .append("phase.provider=http://10.0.2.100:8080/")
        .append(&format!("phase.poweroff={until}"))
        .append(extra)
        // Two boots and a ~125 MB download under TCG.
        .timeout(Duration::from_secs(300));
    if let Some(d) = disk {
        vm = vm.disk(d);
    }
    vm
}

/// The kexec happened and stage 2 runs release N+1 on N+1's kernel, from the carry.
fn assert_upgraded(b: &Boot, from: Option<u64>) {
    b.assert_clean_poweroff();
    let (old, new) = (
        kernel_release("kernel.version"),
        kernel_release("next/kernel.version"),
    );
    assert_ne!(old, new, "release-next must carry another kernel");
    let k = b.expect("kexec.start");
    assert_eq!(k.fields["to"], 2, "{}", k.fields);
    assert_eq!(k.fields["from"], serde_json::json!(from), "{}", k.fields);
    assert_eq!(
        (k.str("from_kernel"), k.str("to_kernel")),
        (Some(old.as_str()), Some(new.as_str())),
        "{}",
        k.fields
    );
    // The carry holds the whole rootfs (and its verity tree).
    let rootfs = std::fs::metadata(artifact("release-next").join("rootfs.squashfs"))
        .unwrap()
        .len();
    assert!(
        k.fields["carried_bytes"].as_u64().unwrap() > rootfs,
        "{}",
        k.fields
    );
    let cmdline = k.str("cmdline").unwrap();
    assert!(cmdline.ends_with("phase.stage=2"), "{cmdline}");
    assert!(!cmdline.contains("phase.provider"), "{cmdline}");
    // Exactly one download, before the kexec; after it, no network step and no fetch.
    assert_eq!(b.all("artifacts.verified").len(), 1, "{}", b.explain());
    assert_eq!(b.all("release.verified").len(), 1, "{}", b.explain());
    b.assert_order(&["release.verified", "artifacts.verified", "kexec.start"]);
    // After the kexec, the new kernel's init goes straight from the carry to stage 2.
    let names = b.names();
    let at = names.iter().position(|n| *n == "kexec.start").unwrap();
    let after = &names[at + 1..];
    let mut want = [
        "init.start",
        "trust.ready",
        "rootfs.verified",
        "rootfs.mounted",
        "net.up",
        "stage2.start",
        "provider.announced",
        "init.ready",
    ]
    .into_iter()
    .peekable();
    for n in after {
        if want.peek() == Some(n) {
            want.next();
        }
    }
    assert_eq!(
        want.next(),
        None,
        "out of order after kexec.start:\n{}",
        b.explain()
    );
    for n in ["provider.found", "release.verified", "artifacts.verified"] {
        assert!(
            !after.contains(&n),
            "{n} after kexec.start:\n{}",
            b.explain()
        );
    }
    assert_eq!(b.all("init.start").len(), 2, "{}", b.explain());
    let mounted = b.all("rootfs.mounted");
    assert_eq!(mounted.last().unwrap().fields["release"], 2);
    let verified = b.all("rootfs.verified");
    assert_eq!(verified.last().unwrap().str("method"), Some("dm-verity"));
    let s = b.expect("stage2.start");
    assert_eq!(s.str("kernel"), Some(new.as_str()), "{}", s.fields);
    assert_eq!(s.fields["release"], 2, "{}", s.fields);
    assert_eq!(b.expect("init.ready").fields["stage"], 2);
    assert!(b.event("verify.failed").is_none(), "{}", b.explain());
    // The network crossed the kexec: the new kernel's init configured the address the
    // old one had leased, with no DHCP exchange, and handed it and the bootstrap list on
    // to stage 2, which serves release N+1 there and announces it.
    let ups = b.all("net.up");
    assert_eq!(ups.len(), 2, "{}", b.explain());
    let addr = ups[0].str("addr").unwrap();
    assert_eq!(ups[0].str("method"), Some("dhcp"), "{}", ups[0].fields);
    assert_eq!(
        (ups[1].str("method"), ups[1].str("addr")),
        (Some("carried"), Some(addr)),
        "{}",
        ups[1].fields
    );
    assert_eq!(s.str("addr"), Some(addr), "{}", s.fields);
    assert_eq!(s.fields["bootstrap_peers"], 1, "{}", s.fields);
    let a = b.expect("provider.announced");
    let ip = addr.split('/').next().unwrap();
    assert_eq!(
        (a.str("how"), a.str("url"), &a.fields["version"]),
        (
            Some("mdns"),
            Some(format!("http://{ip}:8080/").as_str()),
            &serde_json::json!(2)
        ),
        "{}",
        a.fields
    );
    // The provider and the lease keeper run (the DHT task may fail: no bootstrap peer is
    // reachable from QEMU's restricted network).
    for t in b.all("task.failed") {
        assert!(
            !matches!(t.str("task"), Some("provider" | "dhcp")),
            "{}",
            b.explain()
        );
    }
}

/// `trusted-state.json` on the disk's state partition (debugfs reads the ext4).
fn trusted_state(disk: &Path, dir: &Path) -> serde_json::Value {
    let o = Command::new("sfdisk")
        .arg("--json")
        .arg(disk)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let p = v["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "phase-state")
        .unwrap()
        .clone();
    let (start, size) = (p["start"].as_u64().unwrap(), p["size"].as_u64().unwrap());
    let part = dir.join("state.img");
    let st = Command::new("dd")
        .arg(format!("if={}", disk.display()))
        .arg(format!("of={}", part.display()))
        .args([
            "bs=512",
            &format!("skip={start}"),
            &format!("count={size}"),
            "status=none",
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let o = Command::new("debugfs")
        .args(["-R", "cat /trusted-state.json"])
        .arg(&part)
        .output()
        .expect("debugfs (e2fsprogs, installed by make test)");
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)))
}

/// Under OVMF (UEFI): the new kernel starts from kexec with the firmware's tables handed
/// on. (The diskless upgrade below boots SeaBIOS.)
#[test]
fn disk_boot_upgrades_by_kexec_to_the_provider_release() {
    let dir = tempdir("kexec-disk");
    let disk = disk_copy(&dir);
    let (_s, port) = serve(&artifact("release-next"));
    let b = vm(Some(&disk), port, "init.ready", "")
        .firmware(Firmware::Uefi)
        .run()
        .unwrap();
    assert_upgraded(&b, Some(1));
    // Stage 1 verified N locally first.
    assert_eq!(b.all("rootfs.mounted")[0].fields["release"], 1);
    assert_eq!(trusted_state(&disk, &dir)["release_version"], 2);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn diskless_boot_kexecs_and_mounts_the_carried_rootfs() {
    let (_s, port) = serve(&artifact("release-next"));
    let b = boot(None, port, "");
    assert_upgraded(&b, None);
}

/// `phase.poweroff=kexec.start`: the machine powers off right after the new kernel is
/// staged (the point a test or benchmark stops at), and never starts it.
#[test]
fn poweroff_at_kexec_start_stops_before_the_new_kernel() {
    let (_s, port) = serve(&artifact("release-next"));
    let b = vm(None, port, "kexec.start", "").run().unwrap();
    b.assert_clean_poweroff();
    b.assert_order(&["artifacts.verified", "kexec.start", "shutdown"]);
    assert_eq!(b.expect("kexec.start").fields["to"], 2);
    let names = b.names();
    let at = names.iter().position(|n| *n == "kexec.start").unwrap();
    assert!(
        names[at + 1..]
            .iter()
            .all(|n| matches!(*n, "step.done" | "shutdown")),
        "{}",
        b.explain()
    );
    assert_eq!(b.all("init.start").len(), 1, "{}", b.explain());
    assert_eq!(
        b.expect("shutdown").str("reason"),
        Some("phase.poweroff"),
        "{}",
        b.explain()
    );
}

/// N+1 with one flipped byte in its kernel: no kexec, and release N boots from the disk.
#[test]
fn flipped_kernel_byte_is_refused_and_the_boot_stays_on_n() {
    let dir = tempdir("kexec-flip");
    let disk = disk_copy(&dir);
    let rel = dir.join("release-next");
    let st = Command::new("cp")
        .arg("-r")
        .arg(artifact("release-next"))
        .arg(&rel)
        .status()
        .unwrap();
    assert!(st.success());
    let mut k = std::fs::read(rel.join("vmlinuz")).unwrap();
    k[4096] ^= 0x01;
    std::fs::write(rel.join("vmlinuz"), k).unwrap();
    let (_s, port) = serve(&rel);
    let b = boot(Some(&disk), port, "");
    b.assert_clean_poweroff();
    let f = b.expect("verify.failed");
    assert_eq!(
        (f.str("artifact"), f.str("reason")),
        (Some("kernel"), Some("artifact_hash")),
        "{}",
        b.explain()
    );
    assert!(b.event("kexec.start").is_none(), "{}", b.explain());
    assert_on_n(&b);
    let _ = std::fs::remove_dir_all(dir);
}

/// `kernel.kexec_load_disabled=1` before the attempt: the named fallback, then N boots.
#[test]
fn kexec_load_disabled_falls_back_to_n() {
    let dir = tempdir("kexec-disabled");
    let disk = disk_copy(&dir);
    let (_s, port) = serve(&artifact("release-next"));
    let b = boot(Some(&disk), port, "sysctl.kernel.kexec_load_disabled=1");
    b.assert_clean_poweroff();
    let f = b.all("fallback");
    assert!(
        f.iter()
            .any(|e| e.str("step") == Some("fetch")
                && e.str("reason") == Some("kexec_not_permitted")),
        "{}",
        b.explain()
    );
    assert!(b.event("kexec.start").is_none(), "{}", b.explain());
    assert_on_n(&b);
    let _ = std::fs::remove_dir_all(dir);
}

fn assert_on_n(b: &Boot) {
    assert_eq!(b.all("init.start").len(), 1, "{}", b.explain());
    let s = b.expect("stage2.start");
    assert_eq!(s.fields["release"], 1, "{}", s.fields);
    assert_eq!(
        s.str("kernel"),
        Some(kernel_release("kernel.version").as_str()),
        "{}",
        s.fields
    );
    assert_eq!(b.expect("init.ready").fields["stage"], 2);
}
