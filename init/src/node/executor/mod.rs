//! The WASM job executor: an in-process library (the CLI and, later, the libp2p job protocol
//! sit on top of it). A job is module bytes, args, env and stdin with limits; it runs under
//! wasmtime with WASI preview 1 and nothing else: no preopened directory, no socket, no
//! host clock (a virtual one), no host entropy (a seeded source), no `poll_oneoff` (a job
//! cannot park a worker beyond its deadline).
//!
//! Every limit is enforced, each by its own mechanism, and each ends in its own outcome:
//! memory and tables by the store's limiter (`memory_limit`), CPU by fuel (`out_of_fuel`),
//! wall clock by epoch interruption from one ticker thread (`timeout`), output by capped
//! pipes (`output_truncated`, keeping what fit), concurrency by a gate with a bounded queue
//! (`refused(queue_full)`). Modules compile for a baseline x86_64 (no host CPU features), are
//! kept warm as `InstancePre` on the pooling allocator with copy-on-write memory images, and
//! cached on disk ([`cache`]).
//!
//! [`Executor::run`] blocks; [`Executor::run_blocking`] moves it to tokio's blocking pool
//! so PID 1's async thread (reaping, signals, the supervisor) never waits on a job.

pub mod cache;
pub mod determinism;
pub mod limits;
pub mod output;
pub mod queue;

use cache::{CompileCache, Lookup};
use determinism::{SeededRandom, VirtualClock};
use limits::{JobLimiter, NodePolicy};
use output::CappedPipe;
use phase_release::receipt::{Limits, Outcome, RefusedReason, Stream, TrapKind};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::{Engine, InstancePre, Linker, Module, Store};

/// The version of wasmtime compiled in (recorded in receipts).
pub const WASMTIME_VERSION: &str = "48.0.8";
/// Code generation target: this architecture with no CPU features inferred from the host,
/// so compiled code (and cache files) run on any x86_64, QEMU's default CPU included.
pub const TARGET: &str = if cfg!(target_env = "musl") {
    "x86_64-unknown-linux-musl"
} else {
    "x86_64-unknown-linux-gnu"
};
/// How often the ticker advances the engine's epoch: the granularity of deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Warm modules kept instantiated-ready in memory.
const WARM_MODULES: usize = 64;
/// WASI errno `notsup`, returned by the disabled `poll_oneoff`.
const ERRNO_NOTSUP: i32 = 58;

/// A job to run: everything that determines its result.
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub module: Arc<[u8]>,
    /// Arguments after argv\[0\] (the job sees argv\[0\] = `job`).
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub stdin: Vec<u8>,
    pub limits: Limits,
    /// Seed of the job's random source.
    pub seed: [u8; 32],
    /// First reading of the virtual clock (ns since the Unix epoch).
    pub clock_start_ns: u64,
}

impl JobSpec {
    fn input_len(&self) -> usize {
        self.stdin.len()
            + self.args.iter().map(|a| a.len() + 1).sum::<usize>()
            + self
                .env
                .iter()
                .map(|(k, v)| k.len() + v.len() + 2)
                .sum::<usize>()
    }
}

/// Where the compiled module came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compiled {
    /// Compiled for this job (then cached).
    Fresh,
    /// Deserialized from the disk cache.
    DiskCache,
    /// Already in memory (`InstancePre`).
    Warm,
    /// Not reached (refused or invalid module).
    No,
}

/// What a job did.
#[derive(Debug, Clone)]
pub struct Finished {
    pub outcome: Outcome,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub fuel: u64,
    pub wall_us: u64,
    pub memory_peak_bytes: u64,
    pub compiled: Compiled,
    pub started_unix_ms: u64,
    pub finished_unix_ms: u64,
}

/// Counters since the executor started.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub compiled: u64,
    pub disk_hits: u64,
    pub warm_hits: u64,
    /// Cache files that failed their check and were deleted.
    pub discarded: u64,
}

/// How the executor is set up.
#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    pub policy: NodePolicy,
    /// Jobs running at once.
    pub workers: usize,
    /// Jobs waiting for a worker.
    pub queue: usize,
    /// Compile cache directory (`<state-dir>/cache`); none = compile every cold start.
    pub cache_dir: Option<PathBuf>,
    pub cache_max_bytes: u64,
    /// Fuel and epoch metering. Only the bench turns this off (to measure its cost): without
    /// it neither fuel nor the deadline is enforced.
    pub metering: bool,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            policy: NodePolicy::default(),
            workers: 2,
            queue: 16,
            cache_dir: None,
            cache_max_bytes: 256 << 20,
            metering: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    #[error("wasmtime engine: {0}")]
    Engine(String),
    #[error("epoch ticker thread: {0}")]
    Ticker(String),
    #[error("compile cache: {0}")]
    Cache(#[from] cache::CacheError),
}

impl ExecutorError {
    pub fn reason(&self) -> &'static str {
        match self {
            ExecutorError::Engine(_) => "engine",
            ExecutorError::Ticker(_) => "ticker",
            ExecutorError::Cache(e) => e.reason(),
        }
    }
}

/// Per-job store data.
pub struct JobState {
    wasi: wasmtime_wasi::p1::WasiP1Ctx,
    limiter: JobLimiter,
}

pub struct Executor {
    engine: Engine,
    linker: Linker<JobState>,
    config: ExecutorConfig,
    gate: queue::Gate,
    cache: Option<CompileCache>,
    warm: Mutex<HashMap<[u8; 32], InstancePre<JobState>>>,
    stats: Mutex<Stats>,
    ticker_stop: Arc<AtomicBool>,
}

impl Drop for Executor {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

fn engine_config(c: &ExecutorConfig) -> Result<wasmtime::Config, ExecutorError> {
    let mut cfg = wasmtime::Config::new();
    cfg.target(TARGET)
        .map_err(|e| ExecutorError::Engine(format!("target {TARGET}: {e}")))?;
    cfg.consume_fuel(c.metering)
        .epoch_interruption(c.metering)
        .cranelift_nan_canonicalization(true)
        .relaxed_simd_deterministic(true)
        .memory_init_cow(true);
    let slots = u32::try_from(c.workers.max(1)).unwrap_or(u32::MAX);
    let mut pool = wasmtime::PoolingAllocationConfig::default();
    pool.total_core_instances(slots)
        .total_memories(slots)
        .total_tables(slots)
        .total_component_instances(0)
        .max_memories_per_module(1)
        .max_tables_per_module(1)
        .max_memory_size(usize::try_from(c.policy.max.memory_bytes).unwrap_or(usize::MAX));
    cfg.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    Ok(cfg)
}

fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Executor {
    pub fn new(config: ExecutorConfig) -> Result<Self, ExecutorError> {
        let engine = Engine::new(&engine_config(&config)?)
            .map_err(|e| ExecutorError::Engine(e.to_string()))?;
        let mut linker: Linker<JobState> = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s: &mut JobState| &mut s.wasi)
            .map_err(|e| ExecutorError::Engine(format!("WASI: {e}")))?;
        // Sleeping in the host would hold a worker past the job's deadline (epochs only
        // interrupt WebAssembly code): poll_oneoff answers `notsup` instead.
        linker.allow_shadowing(true);
        linker
            .func_wrap(
                "wasi_snapshot_preview1",
                "poll_oneoff",
                |_: i32, _: i32, _: i32, _: i32| -> i32 { ERRNO_NOTSUP },
            )
            .map_err(|e| ExecutorError::Engine(format!("poll_oneoff: {e}")))?;
        let cache = match &config.cache_dir {
            Some(dir) => Some(CompileCache::open(dir, config.cache_max_bytes, &engine)?),
            None => None,
        };
        let ticker_stop = Arc::new(AtomicBool::new(false));
        if config.metering {
            let (engine, stop) = (engine.clone(), ticker_stop.clone());
            std::thread::Builder::new()
                .name("phase-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| ExecutorError::Ticker(e.to_string()))?;
        }
        Ok(Executor {
            gate: queue::Gate::new(config.workers, config.queue),
            engine,
            linker,
            config,
            cache,
            warm: Mutex::default(),
            stats: Mutex::default(),
            ticker_stop,
        })
    }

    /// Workers free now, and on every change (the capability record's free slots).
    pub fn free_slots(&self) -> tokio::sync::watch::Receiver<usize> {
        self.gate.free_slots()
    }

    /// The largest linear memory a job may ask for (the capability record's memory).
    pub fn max_memory_bytes(&self) -> u64 {
        self.config.policy.max.memory_bytes
    }

    // The job protocol (issue 13) reads these; today the tests do.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn stats(&self) -> Stats {
        *self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count(&self, f: impl FnOnce(&mut Stats)) {
        f(&mut self.stats.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The executor's determinism settings as recorded in receipts (seed and clock start
    /// are the job's).
    pub fn determinism(&self, job: &JobSpec) -> phase_release::receipt::Determinism {
        phase_release::receipt::Determinism {
            seed: phase_release::hex::encode(&job.seed),
            clock_start_ns: job.clock_start_ns,
            clock_step_ns: determinism::CLOCK_STEP_NS,
            nan_canonicalization: true,
            relaxed_simd_deterministic: true,
            target: format!("{TARGET} baseline"),
        }
    }

    /// Run `job` to its outcome on this thread (waiting in the queue if all workers are
    /// busy). Call from a blocking thread; see [`Executor::run_blocking`].
    pub fn run(&self, job: &JobSpec) -> Finished {
        let started_unix_ms = now_unix_ms();
        let not_run = |outcome| Finished {
            outcome,
            stdout: Vec::new(),
            stderr: Vec::new(),
            fuel: 0,
            wall_us: 0,
            memory_peak_bytes: 0,
            compiled: Compiled::No,
            started_unix_ms,
            finished_unix_ms: now_unix_ms(),
        };
        if let Err(reason) =
            self.config
                .policy
                .admit(&job.limits, job.module.len(), job.input_len())
        {
            return not_run(Outcome::Refused { reason });
        }
        let Ok(_slot) = self.gate.enter() else {
            return not_run(Outcome::Refused {
                reason: RefusedReason::QueueFull,
            });
        };
        let sha = phase_release::sha256(&job.module);
        let Some((pre, compiled)) = self.prepare(&job.module, &sha) else {
            return not_run(Outcome::InvalidModule);
        };
        let mut done = self.execute(&pre, job);
        done.compiled = compiled;
        done.started_unix_ms = started_unix_ms;
        done
    }

    /// [`Executor::run`] on tokio's blocking pool (the entry point of the job protocol,
    /// issue 13; today only the tests use it).
    #[cfg_attr(not(test), allow(dead_code))]
    pub async fn run_blocking(self: &Arc<Self>, job: JobSpec) -> Finished {
        let this = self.clone();
        let started = now_unix_ms();
        match tokio::task::spawn_blocking(move || this.run(&job)).await {
            Ok(f) => f,
            Err(_) => Finished {
                outcome: Outcome::Trap {
                    trap: TrapKind::HostError,
                },
                stdout: Vec::new(),
                stderr: Vec::new(),
                fuel: 0,
                wall_us: 0,
                memory_peak_bytes: 0,
                compiled: Compiled::No,
                started_unix_ms: started,
                finished_unix_ms: now_unix_ms(),
            },
        }
    }

    /// A ready-to-instantiate module: warm, from the disk cache, or compiled now.
    fn prepare(&self, bytes: &[u8], sha: &[u8; 32]) -> Option<(InstancePre<JobState>, Compiled)> {
        if let Some(pre) = self.warm.lock().unwrap_or_else(|p| p.into_inner()).get(sha) {
            self.count(|s| s.warm_hits += 1);
            return Some((pre.clone(), Compiled::Warm));
        }
        let cached = match &self.cache {
            Some(c) => match c.load(&self.engine, sha) {
                Lookup::Hit(m) => Some(m),
                Lookup::Miss => None,
                Lookup::Discarded(reason) => {
                    tracing::warn!(module = %phase_release::hex::encode(sha), reason, "compile cache file discarded");
                    self.count(|s| s.discarded += 1);
                    None
                }
            },
            None => None,
        };
        let (module, compiled) = match cached {
            Some(m) => {
                self.count(|s| s.disk_hits += 1);
                (m, Compiled::DiskCache)
            }
            None => {
                let m = Module::new(&self.engine, bytes).ok()?;
                self.count(|s| s.compiled += 1);
                if let Some(c) = &self.cache {
                    if let Err(e) = c.store(sha, &m) {
                        tracing::warn!(reason = e.reason(), "compile cache: {e}");
                    }
                }
                (m, Compiled::Fresh)
            }
        };
        let pre = self.linker.instantiate_pre(&module).ok()?;
        let mut warm = self.warm.lock().unwrap_or_else(|p| p.into_inner());
        if warm.len() >= WARM_MODULES {
            warm.clear();
        }
        warm.insert(*sha, pre.clone());
        Some((pre, compiled))
    }

    fn execute(&self, pre: &InstancePre<JobState>, job: &JobSpec) -> Finished {
        let stdout = CappedPipe::new(job.limits.stdout_bytes);
        let stderr = CappedPipe::new(job.limits.stderr_bytes);
        let clock = VirtualClock::new(job.clock_start_ns);
        let mut argv = Vec::with_capacity(job.args.len() + 1);
        argv.push("job");
        argv.extend(job.args.iter().map(String::as_str));
        let mut b = wasmtime_wasi::WasiCtxBuilder::new();
        b.args(&argv)
            .envs(&job.env)
            .stdin(wasmtime_wasi::p2::pipe::MemoryInputPipe::new(
                job.stdin.clone(),
            ))
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .wall_clock(clock.clone())
            .monotonic_clock(clock)
            .secure_random(SeededRandom::new(job.seed))
            .insecure_random(SeededRandom::new(phase_release::sha256(&job.seed)))
            .insecure_random_seed(determinism::insecure_seed(&job.seed));
        let state = JobState {
            wasi: b.build_p1(),
            limiter: JobLimiter::new(job.limits.memory_bytes),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        if self.config.metering {
            // Fuel cannot fail to be set on a fuel-consuming engine.
            let _ = store.set_fuel(job.limits.fuel);
            let ticks = job
                .limits
                .timeout_ms
                .div_ceil(EPOCH_TICK.as_millis() as u64)
                + 1;
            store.set_epoch_deadline(ticks);
            store.epoch_deadline_trap();
        }
        let t0 = Instant::now();
        let result = pre.instantiate(&mut store).and_then(|instance| {
            instance
                .get_typed_func::<(), ()>(&mut store, "_start")?
                .call(&mut store, ())
        });
        let wall_us = t0.elapsed().as_micros() as u64;
        let fuel = if self.config.metering {
            job.limits
                .fuel
                .saturating_sub(store.get_fuel().unwrap_or(0))
        } else {
            0
        };
        let outcome = classify(result, store.data(), &stdout, &stderr);
        let memory_peak_bytes = store.data().limiter.peak();
        drop(store);
        let (stdout, _) = stdout.take();
        let (stderr, _) = stderr.take();
        Finished {
            outcome,
            stdout,
            stderr,
            fuel,
            wall_us,
            memory_peak_bytes,
            compiled: Compiled::No,
            started_unix_ms: 0,
            finished_unix_ms: now_unix_ms(),
        }
    }
}

/// Name how a run ended. The limits' own records come first: a job stopped by its output
/// cap or its memory cap ends in a trap, but the cause is the limit.
fn classify(
    result: wasmtime::Result<()>,
    state: &JobState,
    stdout: &CappedPipe,
    stderr: &CappedPipe,
) -> Outcome {
    let Err(e) = result else {
        return Outcome::Exit { code: 0 };
    };
    if stdout.truncated() {
        return Outcome::OutputTruncated {
            stream: Stream::Stdout,
        };
    }
    if stderr.truncated() {
        return Outcome::OutputTruncated {
            stream: Stream::Stderr,
        };
    }
    if state.limiter.exceeded() {
        return Outcome::MemoryLimit;
    }
    if let Some(exit) = e.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return Outcome::Exit { code: exit.0 };
    }
    let Some(trap) = e.downcast_ref::<wasmtime::Trap>() else {
        return Outcome::Trap {
            trap: TrapKind::HostError,
        };
    };
    use wasmtime::Trap as T;
    let trap = match trap {
        T::OutOfFuel => return Outcome::OutOfFuel,
        T::Interrupt => return Outcome::Timeout,
        T::UnreachableCodeReached => TrapKind::Unreachable,
        T::StackOverflow => TrapKind::StackOverflow,
        T::MemoryOutOfBounds | T::HeapMisaligned => TrapKind::MemoryOutOfBounds,
        T::TableOutOfBounds => TrapKind::TableOutOfBounds,
        T::IndirectCallToNull => TrapKind::IndirectCallToNull,
        T::BadSignature => TrapKind::BadSignature,
        T::IntegerOverflow => TrapKind::IntegerOverflow,
        T::IntegerDivisionByZero => TrapKind::IntegerDivisionByZero,
        T::BadConversionToInteger => TrapKind::BadConversionToInteger,
        _ => TrapKind::Other,
    };
    Outcome::Trap { trap }
}

#[cfg(test)]
mod tests;
