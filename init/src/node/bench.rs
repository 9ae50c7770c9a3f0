//! `phase job bench JOBS_DIR [NATIVE_SIEVE]`: the executor's figures for `make bench`, measured
//! in-process (scripts/bench.sh runs it): first run (compile) vs disk-cached vs warm
//! `hello.wasm`; a warm no-op job from request to signed receipt (median and p99 of 1,000;
//! goal ≤ 250 µs); the CPU-heavy job (`sieve`) in the executor vs natively (goal ≤ 1.5×);
//! with vs without fuel and epoch metering (goal ≤ 1.25×).

use super::executor::{Executor, ExecutorConfig, JobSpec};
use super::receipt::{self, JobRequest};
use crate::cli::job::DEFAULT_LIMITS;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

const SIEVE_N: &str = "30000000";

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn spec(module: &Arc<[u8]>, args: &[&str]) -> JobSpec {
    JobSpec {
        module: module.clone(),
        args: args.iter().map(|s| s.to_string()).collect(),
        env: Vec::new(),
        stdin: Vec::new(),
        limits: super::executor::limits::NodePolicy::default().max,
        seed: [0; 32],
        clock_start_ns: 0,
    }
}

fn executor(cache: Option<&Path>, metering: bool) -> Result<Executor, String> {
    Executor::new(ExecutorConfig {
        cache_dir: cache.map(Path::to_path_buf),
        metering,
        ..ExecutorConfig::default()
    })
    .map_err(|e| e.to_string())
}

const USAGE: &str = "\
Usage: phase job bench JOBS_DIR [NATIVE_SIEVE]

Measure the executor in-process with JOBS_DIR/{hello,noop,sieve}.wasm (out/jobs): first run
(compile) vs disk-cached vs warm hello.wasm; a warm no-op job from request to signed receipt
(median, p99 of 1,000); sieve in the executor vs NATIVE_SIEVE (a native build of it); with vs
without fuel and epoch metering. Prints the figures `make bench` reports (docs/bench.md).";

fn parse(args: crate::cli::Args) -> Result<crate::cli::Parsed<Vec<PathBuf>>, lexopt::Error> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let mut paths = Vec::new();
    while let Some(arg) = p.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(crate::cli::Parsed::Help),
            Value(v) if paths.len() < 2 => paths.push(PathBuf::from(v)),
            _ => return Err(arg.unexpected()),
        }
    }
    if paths.is_empty() {
        return Err("needs JOBS_DIR".into());
    }
    Ok(crate::cli::Parsed::Run(paths))
}

pub fn run(args: crate::cli::Args) -> i32 {
    crate::cli::parsed("job bench", USAGE, parse(args), |paths| {
        match bench(&paths) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("phase job bench: {e}");
                1
            }
        }
    })
}

fn bench(args: &[PathBuf]) -> Result<(), String> {
    let dir = args.first().ok_or("needs JOBS_DIR")?;
    let load = |name: &str| -> Result<Arc<[u8]>, String> {
        let p = dir.join(format!("{name}.wasm"));
        std::fs::read(&p)
            .map(Into::into)
            .map_err(|e| format!("{}: {e}", p.display()))
    };
    let (hello, noop, sieve) = (load("hello")?, load("noop")?, load("sieve")?);

    // Compile vs cached vs warm.
    let cache = std::env::temp_dir().join(format!("phase-job-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    let job = spec(&hello, &["bench"]);
    let cold = executor(Some(&cache), true)?;
    let t = Instant::now();
    let first = cold.run(&job);
    let compile_ms = ms(t.elapsed());
    let t = Instant::now();
    cold.run(&job);
    let warm_ms = ms(t.elapsed());
    let from_disk = executor(Some(&cache), true)?;
    let t = Instant::now();
    let second = from_disk.run(&job);
    let disk_ms = ms(t.elapsed());
    let _ = std::fs::remove_dir_all(&cache);
    println!(
        "jobs: hello.wasm first run (compile) {compile_ms:.1} ms [{:?}], cached run (new executor, disk cache) {disk_ms:.2} ms [{:?}], warm {warm_ms:.3} ms; compile/cached {:.0}x",
        first.compiled,
        second.compiled,
        compile_ms / disk_ms
    );

    // Warm no-op job, request to signed receipt.
    let exec = executor(None, true)?;
    let key = phase_release::keys::Keypair::from_seed(&[1; 32]);
    let req = JobRequest {
        id: "bench".into(),
        nonce: "00".into(),
        requester: None,
    };
    let mut job = spec(&noop, &[]);
    job.limits = DEFAULT_LIMITS;
    exec.run(&job);
    let mut us = Vec::with_capacity(1000);
    let mut bytes = 0;
    for _ in 0..1000 {
        let t = Instant::now();
        let done = exec.run(&job);
        let r = receipt::sign(&req, &job, &done, &exec, &key);
        us.push(t.elapsed().as_secs_f64() * 1e6);
        bytes = r.len();
    }
    us.sort_by(|a, b| a.total_cmp(b));
    let p99 = us.get(989).copied().unwrap_or(f64::NAN);
    println!(
        "jobs: warm no-op job request->signed receipt ({bytes} bytes), 1000 runs: median {:.0} us, p99 {p99:.0} us (goal <= 250 us)",
        median(us.clone())
    );

    // CPU-heavy: executor (metered, unmetered) vs native.
    let job = spec(&sieve, &[SIEVE_N]);
    let unmetered = executor(None, false)?;
    exec.run(&job);
    unmetered.run(&job);
    let time = |x: &Executor| {
        median(
            (0..3)
                .map(|_| {
                    let t = Instant::now();
                    x.run(&job);
                    ms(t.elapsed())
                })
                .collect(),
        )
    };
    let metered_ms = time(&exec);
    let unmetered_ms = time(&unmetered);
    println!(
        "jobs: sieve {SIEVE_N} in the executor: {metered_ms:.0} ms metered, {unmetered_ms:.0} ms without fuel/epochs; metering costs {:.2}x (goal <= 1.25x)",
        metered_ms / unmetered_ms
    );
    if let Some(native) = args.get(1) {
        let native_ms = median(
            (0..3)
                .map(|_| {
                    let t = Instant::now();
                    let ok = std::process::Command::new(native)
                        .arg(SIEVE_N)
                        .stdout(std::process::Stdio::null())
                        .status()
                        .is_ok_and(|s| s.success());
                    if ok {
                        ms(t.elapsed())
                    } else {
                        f64::NAN
                    }
                })
                .collect(),
        );
        println!(
            "jobs: sieve {SIEVE_N} native {native_ms:.0} ms; executor/native {:.2}x (goal <= 1.5x)",
            metered_ms / native_ms
        );
    }
    Ok(())
}
