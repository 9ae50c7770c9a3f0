//! No time bomb (docs/testing.md): what `make build` signs outlives a commit by years, and a
//! guest whose clock runs two years ahead still verifies and boots that release. The whole
//! suite with every clock moved is `make test-future`; these two are its cheap guard in
//! `make test`.

use phase_qemu::{artifact, tempdir, Vm};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const TWO_YEARS: Duration = Duration::from_secs(730 * 86_400);

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// `signed.expires` of a metadata file in out/.
fn expires(name: &str) -> u64 {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(artifact(name)).unwrap()).unwrap();
    v["signed"]["expires"]
        .as_u64()
        .unwrap_or_else(|| panic!("{name}: no signed.expires"))
}

#[test]
fn signed_test_metadata_outlives_two_years_from_now() {
    let mut names = vec![
        "trusted-root.json".to_string(),
        "release/release.json".into(),
        "release/root.json".into(),
        "release-next/release.json".into(),
        "release-next/root.json".into(),
    ];
    for dir in ["release", "release-next"] {
        for e in std::fs::read_dir(artifact(dir)).unwrap() {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            if n.ends_with(".root.json") {
                names.push(format!("{dir}/{n}"));
            }
        }
    }
    let later = unix(SystemTime::now() + TWO_YEARS);
    for n in &names {
        let e = expires(n);
        assert!(
            e > later,
            "out/{n} expires at {e}, before two years from now ({later}): a time bomb"
        );
    }
}

/// The guest's RTC two years ahead: `trust.ready` reports that clock, and the release on
/// the disk still verifies at it (`rootfs.verified`, no `verify.failed`).
#[test]
fn release_verifies_with_the_guest_clock_two_years_ahead() {
    let dir = tempdir("clock");
    let disk = dir.join("disk.img");
    let st = Command::new("cp")
        .arg("--sparse=always")
        .arg(artifact("rootfs-disk.img"))
        .arg(&disk)
        .status()
        .unwrap();
    assert!(st.success());
    let ahead = SystemTime::now() + TWO_YEARS;
    let b = Vm::default_artifacts()
        .disk(&disk)
        .guest_clock(ahead)
        .append("phase.poweroff=rootfs.verified")
        .run()
        .unwrap();
    b.assert_clean_poweroff();
    let t = b.expect("trust.ready");
    let rtc = t.fields["rtc"].as_u64().unwrap_or(0);
    // The guest boots for a few seconds of its own clock before it reads it.
    assert!(
        rtc >= unix(ahead) && rtc < unix(ahead) + 3600,
        "the guest clock did not move: rtc {rtc}, wanted {}: {}",
        unix(ahead),
        t.fields
    );
    assert_eq!(t.fields["clock"], rtc, "{}", t.fields);
    assert_eq!(t.fields["root_expired"], false, "{}", t.fields);
    b.assert_order(&["trust.ready", "rootfs.verified"]);
    assert!(b.event("verify.failed").is_none(), "{}", b.explain());
    let _ = std::fs::remove_dir_all(dir);
}
