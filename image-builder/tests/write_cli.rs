//! `phase-image write` against loop devices (needs root, losetup, mkfs.ext4, sfdisk, mount:
//! util-linux, e2fsprogs and fdisk, installed by scripts/setup.sh). Refuses a mounted
//! device, a partition, a file, an unconfirmed write and a too-small device; writes and
//! verifies an unmounted one, whose bytes then equal the image.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod common;
use common::{s, tmp};

fn sh(cmd: &str, args: &[&str]) -> String {
    let o = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e} (run scripts/setup.sh)"));
    assert!(
        o.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// A loop device over `file` (with partition scanning), detached when dropped.
struct Loop(String);
impl Loop {
    fn new(file: &Path) -> Loop {
        Loop(sh("losetup", &["--find", "--show", "--partscan", s(file)]))
    }
}
impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

/// Unmounts when dropped (also when an assertion fails while mounted).
struct Mounted(PathBuf);
impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn write(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_phase-image"))
        .arg("write")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn refused(o: &Output) -> String {
    assert!(!o.status.success(), "write succeeded but should refuse");
    let err = String::from_utf8_lossy(&o.stderr);
    err.lines()
        .find_map(|l| l.strip_prefix("write refused: "))
        .and_then(|l| l.split(':').next())
        .unwrap_or_else(|| panic!("no `write refused:` line in {err}"))
        .to_string()
}

#[test]
fn write_refuses_what_it_must_and_writes_and_verifies_an_unmounted_loop_device() {
    let d = tmp("write");
    let image = d.join("image.img");
    let bytes: Vec<u8> = (0..(3u32 << 20))
        .map(|i| (i % 251) as u8 ^ (i >> 16) as u8)
        .collect();
    std::fs::write(&image, &bytes).unwrap();
    let backing = d.join("stick");
    std::fs::write(&backing, vec![0u8; 16 << 20]).unwrap();
    let mut sfdisk = Command::new("sfdisk")
        .args(["--quiet", s(&backing)])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    sfdisk
        .stdin
        .take()
        .unwrap()
        .write_all(b"label: gpt\n,8M\n,\n")
        .unwrap();
    assert!(sfdisk.wait().unwrap().success());
    let lo = Loop::new(&backing);
    let p2 = format!("{}p2", lo.0);
    // Some kernels do not scan a new loop device's partitions by themselves.
    sh("partx", &["--update", &lo.0]);
    for _ in 0..50 {
        if Path::new(&p2).exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    sh("mkfs.ext4", &["-q", "-F", &p2]);
    let mnt = d.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    sh("mount", &[&p2, s(&mnt)]);
    let m = Mounted(mnt);

    assert_eq!(refused(&write(&[s(&image), &lo.0, "--yes"])), "mounted");
    assert_eq!(refused(&write(&[s(&image), &p2, "--yes"])), "partition");
    drop(m);
    assert_eq!(
        refused(&write(&[s(&image), s(&backing), "--yes"])),
        "not_block_device"
    );
    assert_eq!(refused(&write(&[s(&image), &lo.0])), "not_confirmed");
    let big = d.join("big.img");
    std::fs::write(&big, vec![1u8; 17 << 20]).unwrap();
    assert_eq!(refused(&write(&[s(&big), &lo.0, "--yes"])), "too_small");
    // Nothing refused wrote anything: the partition table is still there.
    assert!(Path::new(&p2).exists());

    let o = write(&[s(&image), &lo.0, "--yes"]);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains(&format!("{}p1", lo.0.trim_start_matches("/dev/"))),
        "what it overwrites: {err}"
    );
    assert!(
        out.contains("wrote and verified 3145728 bytes, sha256 "),
        "{out}"
    );
    drop(lo);
    let on_disk = std::fs::read(&backing).unwrap();
    assert_eq!(&on_disk[..bytes.len()], &bytes[..]);
    let _ = std::fs::remove_dir_all(&d);
}
