//! `phase-run` (what `make run` runs): the whole story in one command, on this terminal.
//! Boots out/phase-x86_64.img (release N) under UEFI with a provider of out/release-next
//! (N+1) on 127.0.0.1 forwarded in, prints each PHASE-EVENT as it arrives; once stage 2's
//! job node is ready, submits `hello.wasm` to it through a forward and prints the output and
//! the verified receipt; then the story as a checklist, the timeline table with durations,
//! and writes the boot chart SVG into out/ (`phase_qemu::story`). Exit 0 only if every
//! chapter happened, the receipt verified and the guest powered off cleanly. `--keep` keeps
//! the guest running with its console on this terminal instead, the node and status
//! ports forwarded (quit QEMU with Ctrl-A X).

use phase_qemu::story::{self, Options};
use phase_qemu::{accel, artifact, Firmware};
use std::process::ExitCode;

const USAGE: &str = "\
Usage: phase-run [--keep] [--bios] [KERNEL-ARGS...]

Boot out/phase-x86_64.img (release N) in QEMU under UEFI, with `phase provider serve
out/release-next` (release N+1) on 127.0.0.1 forwarded into the guest as
http://10.0.2.100:8080/ (user networking, restrict=on: nothing else leaves the guest).
Stage 1 verifies N, finds the provider, verifies and downloads N+1 and kexecs into it;
stage 2 runs N+1 and its job node; this host submits out/jobs/hello.wasm to the node
through a forward of 127.0.0.1 (out/phase-node job run), prints its output and verifies
the receipt; the job's job.done powers the guest off. Prints every event, the job, the
story, the timeline (guest ms, both kernels end to end) and writes out/run-boot-chart.svg
and the receipt out/run-receipt.json.
  KERNEL-ARGS   more kernel words, e.g. phase.debug (make run ARGS=...)
  --keep        no poweroff: keep the guest running, its console on this terminal, its
                job node and status endpoint forwarded to 127.0.0.1 (the commands to
                use them are printed) (make run KEEP=1; quit QEMU with Ctrl-A X)
  --bios        SeaBIOS instead of OVMF
PHASE_TIMEOUT_SCALE multiplies every timeout (slow or busy machines).";

fn parse() -> Result<Option<Options>, lexopt::Error> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_env();
    let mut o = Options::default();
    while let Some(arg) = p.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(None),
            Long("keep") => o.keep = true,
            Long("bios") => o.firmware = Firmware::Bios,
            Value(v) => o.kernel_args.push(v.string()?),
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(Some(o))
}

fn main() -> ExitCode {
    let o = match parse() {
        Ok(Some(o)) => o,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("phase-run: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = if o.keep { keep(&o) } else { tell(&o) };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("phase-run: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The scenario, printed as it happens.
fn tell(o: &Options) -> Result<ExitCode, String> {
    println!(
        "phase-run: booting out/phase-x86_64.img (release {}) under {:?} ({:?}); provider of out/release-next (release {}) forwarded in as {}",
        story::release_version(&artifact("release"))?,
        o.firmware,
        accel(),
        story::release_version(&artifact("release-next"))?,
        story::PROVIDER_URL,
    );
    println!(
        "phase-run: kernel words added: {}\n",
        story::kernel_words(&o.kernel_args, false)
    );
    let mut last_kernel_start = 0;
    let s = story::run(o, |e| {
        if e.name == "init.start" {
            last_kernel_start += 1;
            if last_kernel_start == 2 {
                println!("  ---------- kexec: release N+1's kernel starts ----------");
            }
        }
        println!("  {}", story::describe(e));
    })?;
    match &s.job {
        Some(j) => {
            println!("\nThe job, from this host: {}", j.command);
            println!("  output: {}", j.stdout.trim_end());
            println!("  summary: {}", j.summary);
            println!(
                "  receipt verified again on its own (phase receipt verify): {}",
                j.verdict
            );
            println!(
                "  receipt (DSSE envelope): {}; check it again with\n    out/phase-node receipt verify {} --module out/jobs/hello.wasm --stdout <(echo '{}') -- {}",
                j.receipt.display(),
                j.receipt.display(),
                j.stdout.trim_end(),
                story::JOB_ARGS.join(" ")
            );
        }
        None => println!("\nThe job: not submitted (stage 2's node never became ready)"),
    }
    println!("\nThe story (guest time, both kernels end to end):");
    for c in &s.chapters {
        match c.seen {
            Some(t) => println!(
                "  [x] {:<52} {:>8.3} s  ({})",
                c.what,
                t as f64 / 1000.0,
                c.event
            ),
            None => println!("  [ ] {:<52} {:>10}  (no {})", c.what, "-", c.event),
        }
    }
    println!(
        "\nTimeline: every boot step with its duration (guest ms; kernel = boot to init.start):"
    );
    print!("{}", s.chart.table());
    println!("\nMilestones (guest ms):");
    for m in &s.chart.marks {
        println!("  {:>9}  {}", m.t_ms, m.name);
    }
    println!("\nboot chart SVG: {}", s.svg.display());
    println!(
        "guest ended: {:?}, qemu status {:?}, {:.1} s wall ({:?})",
        s.boot.outcome,
        s.boot.qemu_status,
        s.boot.wall.as_secs_f64(),
        s.boot.accel
    );
    if s.complete() {
        println!("phase-run: the story is complete");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "phase-run: the story is NOT complete:\n{}",
            s.boot.explain()
        );
        Ok(ExitCode::FAILURE)
    }
}

/// `--keep`: the same guest, no poweroff, its console on this terminal.
fn keep(o: &Options) -> Result<ExitCode, String> {
    let dir = phase_qemu::tempdir("run-keep");
    let (_provider, port) = phase_qemu::provider::serve(&artifact("release-next"))
        .map_err(|e| format!("phase provider serve: {e}"))?;
    let fwd = story::Forwards {
        node: story::free_port()?,
        status: Some(story::free_port()?),
    };
    let vm = story::prepare(&dir, o, port, fwd)?;
    let mut cmd = vm.command(accel());
    cmd.args(["-serial", "mon:stdio"]);
    eprintln!(
        "phase-run: provider of out/release-next on http://127.0.0.1:{port}/ (guest: {})",
        story::PROVIDER_URL
    );
    if let Some(status) = fwd.status {
        eprintln!("phase-run: once stage 2 is up, from another terminal:\n  out/phase status 127.0.0.1:{status}");
    }
    eprintln!(
        "  out/phase-node job run --node /ip4/127.0.0.1/tcp/{}/p2p/PEER_ID out/jobs/hello.wasm -- {}\n  (PEER_ID: the peer_id of stage 2's node.ready event below)\nphase-run: console below, quit with Ctrl-A X",
        fwd.node,
        story::JOB_ARGS.join(" ")
    );
    let status = cmd
        .status()
        .map_err(|e| format!("cannot start qemu-system-x86_64: {e}"))?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
