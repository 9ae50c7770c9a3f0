//! The first boot grows the stick: a copy of out/rootfs-disk.img made larger (as `dd` onto a
//! bigger USB stick does) gets its backup GPT moved to the end, the state partition
//! extended and its ext4 grown online (`state.grown`); the second boot changes nothing and
//! keeps the persistent state; a private-mode boot leaves the enlarged file byte-identical.
//! The result is read back by util-linux's `sfdisk` and e2fsprogs' `e2fsck`/`dumpe2fs`.

use phase_qemu::{artifact, tempdir, Boot, Vm};
use std::path::{Path, PathBuf};
use std::process::Command;

const MIB: u64 = 1 << 20;
/// How much larger the "stick" is than the image.
const EXTRA: u64 = 96 * MIB;

fn enlarged_copy(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    let st = Command::new("cp")
        .arg("--sparse=always")
        .arg(artifact("rootfs-disk.img"))
        .arg(&p)
        .status()
        .unwrap();
    assert!(st.success());
    let len = std::fs::metadata(&p).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(len + EXTRA)
        .unwrap();
    p
}

fn sha256(p: &Path) -> String {
    let o = Command::new("sha256sum").arg(p).output().unwrap();
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn boot(disk: &Path, words: &str) -> Boot {
    Vm::default_artifacts()
        .disk(disk)
        .append(words)
        .append("phase.poweroff=init.ready")
        .run()
        .unwrap()
}

fn tool(cmd: &str, args: &[&str]) -> (bool, String) {
    let o = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e} (run scripts/setup.sh)"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

/// The phase-state partition as sfdisk reads it: (start, size) in bytes.
fn state_extent(disk: &Path) -> (u64, u64) {
    let o = Command::new("sfdisk")
        .arg("--json")
        .arg(disk)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let p = v["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "phase-state")
        .unwrap_or_else(|| panic!("no phase-state partition: {v}"));
    (
        p["start"].as_u64().unwrap() * 512,
        p["size"].as_u64().unwrap() * 512,
    )
}

fn grown_twice_then_kept(dir: &Path) {
    let disk = enlarged_copy(dir, "stick.img");
    let (start, before) = state_extent(&disk);

    let b1 = boot(&disk, "");
    b1.assert_clean_poweroff();
    b1.assert_order(&["state.grown", "state.ready", "rootfs.mounted", "init.ready"]);
    let g = b1.expect("state.grown");
    assert_eq!(
        (g.fields["old"].as_u64(), g.fields["new"].as_u64()),
        (Some(before), Some(before + EXTRA)),
        "{}",
        g.fields
    );
    assert_eq!(b1.expect("state.ready").fields["persistent"], true);

    // Read back by third parties: a valid GPT with its backup at the new end, the partition
    // grown, and a clean ext4 of the new size.
    let (ok, out) = tool("sfdisk", &["--verify", disk.to_str().unwrap()]);
    assert!(
        ok && out.contains("No errors detected") && !out.contains("mismatch"),
        "sfdisk --verify: {out}"
    );
    assert_eq!(state_extent(&disk), (start, before + EXTRA));
    let part = dir.join("state.ext4");
    let bytes = {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = std::fs::File::open(&disk).unwrap();
        f.seek(SeekFrom::Start(start)).unwrap();
        let mut b = vec![0u8; (before + EXTRA) as usize];
        f.read_exact(&mut b).unwrap();
        b
    };
    std::fs::write(&part, bytes).unwrap();
    let (ok, out) = tool("e2fsck", &["-fn", part.to_str().unwrap()]);
    assert!(ok, "e2fsck after online resize: {out}");
    let (ok, out) = tool("dumpe2fs", &["-h", part.to_str().unwrap()]);
    assert!(ok, "{out}");
    let field = |name: &str| -> u64 {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in dumpe2fs: {out}"))
    };
    assert_eq!(field("Block count:") * field("Block size:"), before + EXTRA);
    let _ = std::fs::remove_file(&part);

    let b2 = boot(&disk, "");
    b2.assert_clean_poweroff();
    assert!(b2.event("state.grown").is_none(), "{}", b2.explain());
    assert!(
        b2.all("fallback")
            .iter()
            .all(|f| f.str("step") != Some("grow")),
        "{}",
        b2.explain()
    );
    let st = b2.expect("state.ready");
    assert_eq!(st.fields["persistent"], true, "{}", st.fields);
    assert_eq!(b2.expect("init.ready").fields["stage"], 2);
    assert_eq!(state_extent(&disk), (start, before + EXTRA));
}

fn private_leaves_it_alone(dir: &Path) {
    let disk = enlarged_copy(dir, "private.img");
    let hash = sha256(&disk);
    let b = boot(&disk, "phase.mode=private");
    b.assert_clean_poweroff();
    assert!(b.event("state.grown").is_none(), "{}", b.explain());
    assert_eq!(b.expect("state.ready").fields["persistent"], false);
    assert_eq!(
        sha256(&disk),
        hash,
        "a private boot changed the enlarged disk"
    );
}

#[test]
fn first_boot_grows_the_stick_second_keeps_it_private_writes_nothing() {
    let dir = tempdir("grow");
    std::thread::scope(|s| {
        let private = s.spawn(|| private_leaves_it_alone(&dir));
        grown_twice_then_kept(&dir);
        if let Err(p) = private.join() {
            std::panic::resume_unwind(p);
        }
    });
    let _ = std::fs::remove_dir_all(&dir);
}
