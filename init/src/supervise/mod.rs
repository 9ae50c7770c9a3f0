//! EFFECT: in-process services as supervised tokio tasks. A task that panics or fails is
//! restarted according to its [`RestartPolicy`] with backoff (decided by the pure
//! [`policy::decide`]); PID 1 itself never goes down with it.

pub mod policy;

use crate::events::{Event, EventLog};
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
    tasks: Vec<(String, JoinHandle<()>)>,
}

impl Supervisor {
    pub fn new(events: Arc<EventLog>) -> Self {
        Supervisor {
            events,
            tasks: Vec::new(),
        }
    }

    /// Run `make()` as task `name`, again and again as `policy` says.
    pub fn spawn<F>(&mut self, name: &str, policy: RestartPolicy, make: F)
    where
        F: Fn() -> TaskFuture + Send + Sync + 'static,
    {
        let events = self.events.clone();
        let task = name.to_string();
        let handle = tokio::spawn(async move {
            let mut runs: u32 = 0;
            loop {
                runs += 1;
                // Aborting this loop (at shutdown) must stop the run too, not detach it.
                let mut run = AbortOnDrop(tokio::spawn(make()));
                let outcome = match (&mut run.0).await {
                    Ok(Ok(())) => Outcome::Success,
                    Ok(Err(e)) => Outcome::Error(e),
                    Err(j) if j.is_panic() => Outcome::Panic,
                    Err(_) => Outcome::Cancelled,
                };
                match policy::decide(policy, &outcome, runs) {
                    Decision::Restart(delay) => {
                        events.emit(Event::TaskFailed {
                            task: task.clone(),
                            reason: outcome.reason(),
                            restart_in_ms: Some(delay.as_millis() as u64),
                        });
                        tokio::time::sleep(delay).await;
                    }
                    Decision::Stop if outcome == Outcome::Success => {
                        events.emit(Event::TaskDone {
                            task: task.clone(),
                            runs,
                        });
                        return;
                    }
                    Decision::Stop => {
                        events.emit(Event::TaskFailed {
                            task: task.clone(),
                            reason: outcome.reason(),
                            restart_in_ms: None,
                        });
                        return;
                    }
                }
            }
        });
        self.tasks.push((name.to_string(), handle));
    }

    /// Stop every task (in reverse start order), waiting at most `bound` in all.
    pub async fn stop(&mut self, bound: Duration) {
        let deadline = tokio::time::Instant::now() + bound;
        while let Some((name, handle)) = self.tasks.pop() {
            handle.abort();
            if tokio::time::timeout_at(deadline, handle).await.is_err() {
                tracing::warn!(task = %name, "did not stop within {bound:?}");
            }
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
