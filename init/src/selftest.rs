//! Fault drills, run at boot when `phase.selftest=faults` is given, so a QEMU test can prove
//! on a real kernel that faults around PID 1 do not take it down:
//! - a child that crashes (SIGABRT) and one that exits 7: the init gets both statuses, i.e.
//!   the reaper does not steal them;
//! - a child that leaves orphans behind: PID 1 reaps them, no zombie stays;
//! - a supervised task that panics: it is restarted and its second run succeeds;
//! - `panic-boot`: the boot sequence itself panics: the init logs it and reboots deliberately;
//! - `sigterm`: once the init serves, a child sends it SIGTERM: it powers off in order;
//! - `kill-TASK`: the supervised task TASK's current run is aborted (`task.failed`
//!   `killed`); the supervisor must restart it (`task.restarted`).
//!
//! The children are this same binary run as `phase selftest …` (see `cli`).

use crate::boot::{Boot, StepError};
use crate::config::Selftest;
use crate::events::Event;
use crate::supervise::{task, RestartPolicy};
use crate::sys::reap::Exit;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const DRILL_BOUND: Duration = Duration::from_secs(20);
const ORPHANS: u32 = 4;

pub async fn run(boot: &mut Boot) -> Result<(), StepError> {
    for drill in boot.config.selftest.clone() {
        match drill {
            Selftest::Faults => faults(boot).await?,
            Selftest::PanicBoot => panic!("selftest: deliberate panic in the boot sequence"),
            Selftest::Kill(name) => kill(boot, name).await?,
            // Sent by a child after a delay, so it lands while the init serves.
            Selftest::Sigterm => {
                let mut cmd = Command::new("/proc/self/exe");
                cmd.args(["selftest", "term-init"]);
                boot.children
                    .spawn(&mut cmd)
                    .map_err(|e| fail(format!("spawn selftest term-init: {e}")))?;
            }
        }
    }
    Ok(())
}

/// Abort task `name`'s run once it has one (a task spawned by an earlier step may not
/// have been polled yet).
async fn kill(boot: &Boot, name: &str) -> Result<(), StepError> {
    let health = boot.supervisor.health();
    let deadline = tokio::time::Instant::now() + DRILL_BOUND;
    while !health.kill(name) {
        if tokio::time::Instant::now() >= deadline {
            return Err(fail(format!(
                "kill-{name}: no run of task {name} within {DRILL_BOUND:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

fn fail(message: String) -> StepError {
    StepError {
        reason: "selftest_failed",
        message,
    }
}

/// Run `phase selftest ARGS…` as a child of PID 1 and wait for its exit through the reaper.
async fn child(boot: &Boot, args: &[&str]) -> Result<Exit, StepError> {
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg("selftest").args(args);
    let (pid, rx) = boot
        .children
        .spawn(&mut cmd)
        .map_err(|e| fail(format!("spawn selftest {args:?}: {e}")))?;
    let exit = tokio::time::timeout(DRILL_BOUND, rx)
        .await
        .map_err(|_| {
            fail(format!(
                "child {pid} ({args:?}) not reaped within {DRILL_BOUND:?}"
            ))
        })?
        .map_err(|_| fail(format!("child {pid}: reaper dropped its waiter")))?;
    let (exit_code, signal) = match exit {
        Exit::Code(c) => (Some(c), None),
        Exit::Signal(s) => (None, Some(s)),
    };
    boot.events.emit(Event::SelftestChild {
        args: args.join(" "),
        exit_code,
        signal,
    });
    Ok(exit)
}

async fn faults(boot: &mut Boot) -> Result<(), StepError> {
    child(boot, &["crash"]).await?;
    child(boot, &["exit", "7"]).await?;

    let before = boot.children.orphans_reaped();
    let n = ORPHANS.to_string();
    child(boot, &["orphans", &n]).await?;
    let deadline = tokio::time::Instant::now() + DRILL_BOUND;
    let mut zombies = crate::sys::proc::count_zombies();
    while (zombies > 0 || boot.children.orphans_reaped() - before < u64::from(ORPHANS))
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
        zombies = crate::sys::proc::count_zombies();
    }
    boot.events.emit(Event::SelftestOrphans {
        spawned: ORPHANS,
        reaped: boot.children.orphans_reaped() - before,
        zombies,
    });

    // A task that panics on its first run and succeeds on its second.
    let runs = Arc::new(AtomicU32::new(0));
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<u32>();
    let done_tx = Arc::new(Mutex::new(Some(done_tx)));
    let events = boot.events.clone();
    boot.supervisor
        .spawn("selftest-panic", RestartPolicy::UntilSuccess, move || {
            let runs = runs.clone();
            let done_tx = done_tx.clone();
            let events = events.clone();
            task(async move {
                let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
                if run == 1 {
                    panic!("selftest: deliberate panic in a supervised task");
                }
                events.emit(Event::TaskDone {
                    task: "selftest-panic.recovered".into(),
                    runs: run,
                });
                if let Some(tx) = done_tx.lock().ok().and_then(|mut g| g.take()) {
                    let _ = tx.send(run);
                }
                Ok(())
            })
        });
    tokio::time::timeout(DRILL_BOUND, done_rx)
        .await
        .map_err(|_| fail("panicking task was not restarted in time".into()))?
        .map_err(|_| fail("panicking task dropped its report".into()))?;
    Ok(())
}

const USAGE: &str = "\
Usage: phase selftest crash | exit CODE | orphans N | sleep-exit | term-init

The child side of the boot-time fault drills (phase.selftest=faults|sigterm): PID 1 runs
this binary with these arguments to prove it survives crashing children, gets their exit
statuses, reaps orphans and powers off in order on SIGTERM. Not for use by hand:
term-init sends SIGTERM to PID 1.";

/// The child side, run as `phase selftest …` (not PID 1). Returns the exit code.
pub fn child_main(args: crate::cli::Args) -> i32 {
    let args: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["-h" | "--help"] => crate::cli::help(USAGE),
        ["crash"] => std::process::abort(),
        ["exit", code] => code.parse().unwrap_or(2),
        ["orphans", n] => {
            // Start n children and exit without waiting: they are reparented to PID 1.
            let n: u32 = n.parse().unwrap_or(1);
            for _ in 0..n {
                let _ = Command::new("/proc/self/exe")
                    .args(["selftest", "sleep-exit"])
                    .spawn();
            }
            0
        }
        ["term-init"] => {
            std::thread::sleep(Duration::from_millis(500));
            match rustix::process::kill_process(
                rustix::process::Pid::INIT,
                rustix::process::Signal::TERM,
            ) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("kill(1, SIGTERM): {e}");
                    1
                }
            }
        }
        ["sleep-exit"] => {
            std::thread::sleep(Duration::from_millis(200));
            0
        }
        _ => crate::cli::usage_error("selftest", USAGE, "unknown drill"),
    }
}
