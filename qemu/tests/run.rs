//! The `make run` scenario (`phase_qemu::story`, what `phase-run` prints) as a test: the
//! hybrid image boots release N under OVMF, finds the provider of release N+1 on
//! 127.0.0.1, verifies and downloads it, kexecs into its kernel, stage 2 runs it and its job
//! node, the host's `hello.wasm` runs there with a verified receipt, and the guest powers
//! off on that job's `job.done`; the timeline and the boot chart SVG are produced.

use phase_qemu::story::{self, Options};
use phase_qemu::{artifact, tempdir};

#[test]
fn make_run_tells_the_whole_story() {
    let dir = tempdir("run-story");
    let o = Options {
        chart_svg: dir.join("run-boot-chart.svg"),
        receipt: dir.join("run-receipt.json"),
        ..Options::default()
    };
    let mut live = 0;
    let s = story::run(&o, |_| live += 1).unwrap();
    s.boot.assert_clean_poweroff();
    for c in &s.chapters {
        assert!(
            c.seen.is_some(),
            "{} ({}):\n{}",
            c.what,
            c.event,
            s.boot.explain()
        );
    }
    assert!(s.complete());
    assert_eq!(
        live,
        s.boot.events.len(),
        "every event was shown as it arrived"
    );
    // Release N came from the image by dm-verity; N+1 was carried across the kexec.
    let n = story::release_version(&artifact("release")).unwrap();
    let mounted = s.boot.expect("rootfs.mounted");
    assert_eq!(mounted.fields["release"], n, "{}", mounted.fields);
    let verified = s.boot.expect("rootfs.verified");
    assert_eq!(
        verified.str("method"),
        Some("dm-verity"),
        "{}",
        verified.fields
    );
    let ready = s.boot.expect("init.ready");
    assert_eq!(ready.fields["stage"], 2, "{}", ready.fields);
    // Stage 2's node ran the host's hello.wasm: its output, and the receipt verified in the
    // requester and again on its own.
    let job = s.job.as_ref().expect("the host's job");
    assert_eq!(job.stdout, "toob esahp\n", "{job:?}");
    assert!(job.verified(), "{job:?}");
    assert_eq!(job.verdict["peer_id"], job.summary["peer_id"], "{job:?}");
    let done = s.boot.expect("job.done");
    assert_eq!(done.str("outcome"), Some("exit"), "{}", done.fields);
    assert_eq!(
        s.boot.expect("shutdown").str("reason"),
        Some("phase.poweroff")
    );
    // The timeline has both kernels' steps, end to end, and the chart was written.
    let steps: Vec<_> = s.chart.spans.iter().map(|sp| sp.stage).collect();
    assert!(steps.contains(&1) && steps.contains(&2), "{steps:?}");
    let kexec = s
        .chart
        .marks
        .iter()
        .find(|m| m.name == "kexec.start")
        .unwrap();
    let last = s.chart.marks.last().unwrap();
    assert!(last.t_ms > kexec.t_ms, "{:?}", s.chart.marks);
    let svg = std::fs::read_to_string(&s.svg).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("kexec.start"),
        "{}",
        s.svg.display()
    );
    let _ = std::fs::remove_dir_all(dir);
}
