//! EFFECT: in-process services as supervised tokio tasks. A task that panics or fails is
//! restarted according to its [`RestartPolicy`] after a jittered exponential backoff
//! (decided by the pure [`policy`]); PID 1 itself never goes down with it. Each task's
//! health (state, restarts, last error, since) is kept in a [`health::Table`] for the
//! status endpoint; [`Supervisor::stop`] stops tasks in reverse start order.

pub mod health;
pub mod policy;

use crate::events::{Event, EventLog};
pub use health::TaskState;
pub use policy::{Decision, Outcome, RestartPolicy};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// What a task returns: `Err` carries a short reason for the event.
pub type TaskResult = Result<(), String>;
type TaskFuture = Pin<Box<dyn Future<Output = TaskResult> + Send>>;

/// The task table.
pub struct Supervisor {
    events: Arc<EventLog>,
    health: health::Table,
    tasks: Vec<(String, JoinHandle<()>)>,
}

impl Supervisor {
    pub fn new(events: Arc<EventLog>) -> Self {
        Supervisor {
            events,
            health: health::Table::default(),
            tasks: Vec::new(),
        }
    }

    /// The health table (shared: it stays current as tasks run).
    pub fn health(&self) -> health::Table {
        self.health.clone()
    }

    /// Run `make()` as task `name`, again and again as `policy` says.
    pub fn spawn<F>(&mut self, name: &str, policy: RestartPolicy, make: F)
    where
        F: Fn() -> TaskFuture + Send + Sync + 'static,
    {
        let events = self.events.clone();
        let health = self.health.clone();
        health.register(name);
        let task = name.to_string();
        let handle = tokio::spawn(async move {
            let mut jitter = policy::Jitter::from_entropy();
            let (mut runs, mut failures) = (0u32, 0u32);
            loop {
                runs = runs.saturating_add(1);
                let started = tokio::time::Instant::now();
                // Aborting this loop (at shutdown) must stop the run too, not detach it.
                let mut run = AbortOnDrop(tokio::spawn(make()));
                health.running(&task, runs == 1, run.0.abort_handle());
                if runs > 1 {
                    events.emit(Event::TaskRestarted {
                        task: task.clone(),
                        restarts: runs - 1,
                    });
                }
                let outcome = match (&mut run.0).await {
                    Ok(Ok(())) => Outcome::Success,
                    Ok(Err(e)) => Outcome::Error(e),
                    Err(j) if j.is_panic() => Outcome::Panic,
                    Err(_) => Outcome::Killed,
                };
                failures = policy::failures_after(failures, &outcome, started.elapsed());
                let failed = (outcome != Outcome::Success).then(|| outcome.reason());
                match policy::decide(policy, &outcome, failures, jitter.next_u64()) {
                    Decision::Restart(delay) => {
                        health.ended(&task, TaskState::Backoff, failed.clone());
                        if let Some(reason) = failed {
                            events.emit(Event::TaskFailed {
                                task: task.clone(),
                                reason,
                                restart_in_ms: Some(delay.as_millis() as u64),
                            });
                        }
                        tokio::time::sleep(delay).await;
                    }
                    Decision::Stop => {
                        health.ended(&task, TaskState::Done, failed.clone());
                        match failed {
                            None => events.emit(Event::TaskDone {
                                task: task.clone(),
                                runs,
                            }),
                            Some(reason) => events.emit(Event::TaskFailed {
                                task: task.clone(),
                                reason,
                                restart_in_ms: None,
                            }),
                        }
                        return;
                    }
                }
            }
        });
        self.tasks.push((name.to_string(), handle));
    }

    /// A handle that stops task `name` for good (no restart), if it runs.
    pub fn abort_handle(&self, name: &str) -> Option<tokio::task::AbortHandle> {
        self.tasks
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, h)| h.abort_handle())
    }

    /// Stop every task in reverse start order (`task.stopped` for each), waiting at most
    /// `bound` in all.
    pub async fn stop(&mut self, bound: Duration) {
        let deadline = tokio::time::Instant::now() + bound;
        while let Some((name, handle)) = self.tasks.pop() {
            if handle.is_finished() {
                continue; // done for good already (task.done / task.failed said so)
            }
            let started = crate::sys::clock::boottime_ms();
            handle.abort();
            if tokio::time::timeout_at(deadline, handle).await.is_err() {
                tracing::warn!(task = %name, "did not stop within {bound:?}");
            }
            self.health.ended(&name, TaskState::Stopped, None);
            self.events.emit(Event::TaskStopped {
                task: name,
                ms: crate::sys::clock::boottime_ms().saturating_sub(started),
            });
        }
    }
}

/// A task handle that aborts its task when dropped.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Box a future for [`Supervisor::spawn`].
pub fn task<F>(f: F) -> TaskFuture
where
    F: Future<Output = TaskResult> + Send + 'static,
{
    Box::pin(f)
}

#[cfg(test)]
mod tests;
