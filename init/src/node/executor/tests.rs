//! Executor tests on the example jobs (out/jobs/, built by `make build` from jobs/): one per
//! outcome with its limit holding, the sandbox, determinism, the cache, the queue.

use super::*;
use phase_release::receipt::{Limits, Outcome, RefusedReason, Stream, TrapKind};

/// The one global timeout multiplier of the test suite.
fn scale() -> f64 {
    std::env::var("PHASE_TIMEOUT_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0)
}

fn module(name: &str) -> Arc<[u8]> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../out/jobs")
        .join(format!("{name}.wasm"));
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run make build)", path.display()))
        .into()
}

const LIMITS: Limits = Limits {
    memory_bytes: 32 << 20,
    fuel: 5_000_000_000,
    timeout_ms: 20_000,
    stdout_bytes: 64 << 10,
    stderr_bytes: 64 << 10,
};

fn job(name: &str, args: &[&str]) -> JobSpec {
    JobSpec {
        module: module(name),
        args: args.iter().map(|a| a.to_string()).collect(),
        env: Vec::new(),
        stdin: Vec::new(),
        limits: LIMITS,
        seed: [42; 32],
        clock_start_ns: 1_000,
    }
}

fn executor() -> Executor {
    Executor::new(ExecutorConfig::default()).unwrap_or_else(|e| panic!("{e}"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn exit_with_arguments_stdin_and_codes() {
    let x = executor();
    let done = x.run(&job("hello", &["hello", "world"]));
    assert_eq!(done.outcome, Outcome::Exit { code: 0 });
    assert_eq!(text(&done.stdout), "dlrow olleh\n");
    assert!(done.fuel > 0);
    let mut j = job("hello", &[]);
    j.stdin = b"stdin".to_vec();
    assert_eq!(text(&x.run(&j).stdout), "nidts\n");
    let bad = x.run(&job("sieve", &["many"]));
    assert_eq!(bad.outcome, Outcome::Exit { code: 2 });
    assert!(text(&bad.stderr).contains("N must be a number"));
}

#[test]
fn trap_keeps_output_written_before() {
    let done = executor().run(&job("trap", &[]));
    assert_eq!(
        done.outcome,
        Outcome::Trap {
            trap: TrapKind::Unreachable
        }
    );
    assert_eq!(text(&done.stdout), "about to trap\n");
}

#[test]
fn out_of_fuel_uses_exactly_the_fuel_given() {
    let mut j = job("spin", &[]);
    j.limits.fuel = 2_000_000;
    let done = executor().run(&j);
    assert_eq!(done.outcome, Outcome::OutOfFuel);
    assert_eq!(done.fuel, 2_000_000);
}

/// The infinite loop ends at its deadline: not before it, and at most one epoch tick plus a
/// scheduling allowance after it (1 s times the timeout scale: test threads compiling other
/// modules on a loaded 2-core machine delay the ticker and the job's thread).
#[test]
fn infinite_loop_ends_at_its_deadline() {
    let mut j = job("spin", &[]);
    j.limits.timeout_ms = 300;
    j.limits.fuel = u64::MAX / 2;
    let x = Executor::new(ExecutorConfig {
        policy: NodePolicy {
            max: Limits {
                fuel: u64::MAX,
                ..NodePolicy::default().max
            },
            ..NodePolicy::default()
        },
        ..ExecutorConfig::default()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let done = x.run(&j);
    assert_eq!(done.outcome, Outcome::Timeout);
    let deadline_us = j.limits.timeout_ms * 1000;
    let tolerance_us = EPOCH_TICK.as_micros() as u64 + (1_000_000.0 * scale()) as u64;
    assert!(
        done.wall_us >= deadline_us && done.wall_us <= deadline_us + tolerance_us,
        "stopped after {} us, deadline {deadline_us} us (+{tolerance_us})",
        done.wall_us
    );
}

#[test]
fn memory_bomb_never_exceeds_its_cap() {
    let mut j = job("membomb", &[]);
    j.limits.memory_bytes = 16 << 20;
    let done = executor().run(&j);
    assert_eq!(done.outcome, Outcome::MemoryLimit);
    assert!(
        done.memory_peak_bytes <= j.limits.memory_bytes,
        "{}",
        done.memory_peak_bytes
    );
    // It did grow up to the cap (within one 1 MiB block and allocator slack).
    assert!(done.memory_peak_bytes > j.limits.memory_bytes - (3 << 20));
}

#[test]
fn output_flood_is_cut_at_its_cap_and_says_so() {
    let mut j = job("flood", &[]);
    j.limits.stdout_bytes = 1000;
    let done = executor().run(&j);
    assert_eq!(
        done.outcome,
        Outcome::OutputTruncated {
            stream: Stream::Stdout
        }
    );
    assert_eq!(done.stdout.len(), 1000);
    assert!(text(&done.stdout).starts_with("flood line 0\nflood line 1\n"));
}

#[test]
fn file_and_socket_attempts_fail_inside_the_sandbox() {
    let done = executor().run(&job("escape", &[]));
    let out = text(&done.stdout);
    assert_eq!(done.outcome, Outcome::Exit { code: 0 }, "{out}");
    assert_eq!(out.matches("denied").count(), 3, "{out}");
    assert!(!out.contains("ESCAPED"));
}

#[test]
fn invalid_modules_and_refusals() {
    let x = executor();
    let mut j = job("hello", &[]);
    j.module = Arc::from(&b"\0asm not really"[..]);
    assert_eq!(x.run(&j).outcome, Outcome::InvalidModule);
    let mut j = job("hello", &[]);
    j.limits.memory_bytes = NodePolicy::default().max.memory_bytes + 1;
    assert_eq!(
        x.run(&j).outcome,
        Outcome::Refused {
            reason: RefusedReason::LimitsAboveNode
        }
    );
}

#[test]
fn a_full_queue_refuses_at_once() {
    let x = Arc::new(
        Executor::new(ExecutorConfig {
            workers: 1,
            queue: 0,
            ..ExecutorConfig::default()
        })
        .unwrap_or_else(|e| panic!("{e}")),
    );
    let mut long = job("spin", &[]);
    long.limits.timeout_ms = (3000.0 * scale()) as u64;
    long.limits.fuel = NodePolicy::default().max.fuel;
    let busy = {
        let x = x.clone();
        std::thread::spawn(move || x.run(&long).outcome)
    };
    while x.gate.load().0 == 0 {
        std::thread::yield_now();
    }
    assert_eq!(
        x.run(&job("hello", &["x"])).outcome,
        Outcome::Refused {
            reason: RefusedReason::QueueFull
        }
    );
    // The busy job ran to one of its limits (which one first depends on this machine's
    // speed): it held the only worker, it was not refused.
    let ended = busy.join().ok();
    assert!(
        matches!(ended, Some(Outcome::Timeout | Outcome::OutOfFuel)),
        "{ended:?}"
    );
}

/// Same module and input: same output and fuel; the job sees the virtual clock and the
/// seeded random source, never the host's.
#[test]
fn runs_are_deterministic() {
    let x = executor();
    let a = x.run(&job("probe", &[]));
    let b = executor().run(&job("probe", &[]));
    assert_eq!(a.outcome, Outcome::Exit { code: 0 });
    assert_eq!(text(&a.stdout), text(&b.stdout));
    assert_eq!(a.fuel, b.fuel);
    assert!(
        text(&a.stdout).contains("\nwall 1000\n"),
        "{}",
        text(&a.stdout)
    );
    let mut other = job("probe", &[]);
    other.seed = [43; 32];
    let c = x.run(&other);
    let random_line = |s: &str| s.lines().next().map(str::to_owned);
    assert_ne!(random_line(&text(&a.stdout)), random_line(&text(&c.stdout)));
    let s1 = x.run(&job("sieve", &["100000"]));
    let s2 = x.run(&job("sieve", &["100000"]));
    assert_eq!((s1.fuel, &s1.stdout), (s2.fuel, &s2.stdout));
    assert!(text(&s1.stdout).starts_with("primes below 100000: 9592 "));
}

fn cached(dir: &std::path::Path) -> Executor {
    Executor::new(ExecutorConfig {
        cache_dir: Some(dir.to_path_buf()),
        ..ExecutorConfig::default()
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn second_run_skips_compilation_and_a_corrupt_cache_file_is_discarded() {
    let dir = std::env::temp_dir().join(format!("phase-cache-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let j = job("hello", &["abc"]);
    let first = cached(&dir);
    assert_eq!(first.run(&j).compiled, Compiled::Fresh);
    assert_eq!(first.run(&j).compiled, Compiled::Warm);
    // A new process: from the disk cache, no compilation.
    let second = cached(&dir);
    let done = second.run(&j);
    assert_eq!(
        (done.compiled, text(&done.stdout).as_str()),
        (Compiled::DiskCache, "cba\n")
    );
    assert_eq!(second.stats().compiled, 0);
    // Flip one byte of the compiled code: detected, deleted, recompiled, never run.
    let sha = phase_release::sha256(&j.module);
    let path = second
        .cache
        .as_ref()
        .map(|c| c.path(&sha))
        .unwrap_or_default();
    let mut bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{e}"));
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap_or_else(|e| panic!("{e}"));
    let third = cached(&dir);
    let done = third.run(&j);
    assert_eq!(
        (done.compiled, text(&done.stdout).as_str()),
        (Compiled::Fresh, "cba\n")
    );
    assert_eq!((third.stats().discarded, third.stats().compiled), (1, 1));
    // The rewritten file is good again.
    assert_eq!(cached(&dir).run(&j).compiled, Compiled::DiskCache);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A job runs on the blocking pool: the async thread keeps running meanwhile.
#[test]
fn jobs_do_not_block_the_async_thread() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    rt.block_on(async {
        let x = Arc::new(executor());
        let mut j = job("spin", &[]);
        j.limits.timeout_ms = (2000.0 * scale()) as u64;
        j.limits.fuel = NodePolicy::default().max.fuel;
        let running = tokio::spawn({
            let x = x.clone();
            async move { x.run_blocking(j).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !running.is_finished(),
            "the async thread waited for the job"
        );
        // Either limit may end the spin first (fuel runs out sooner on a fast machine or
        // with a large timeout scale); what matters is that it ended by a limit.
        let done = running.await.map(|d| d.outcome).ok();
        assert!(
            matches!(done, Some(Outcome::Timeout | Outcome::OutOfFuel)),
            "{done:?}"
        );
    });
}
