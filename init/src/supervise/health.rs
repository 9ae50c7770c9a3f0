//! Health of each supervised task, as the status endpoint shows it: state, restarts, last
//! error and since when. The supervisor writes it; readers take a copy ([`Table::snapshot`]).

use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use tokio::task::AbortHandle;

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    Running,
    /// Failed, waiting out its backoff before the next run.
    Backoff,
    /// Finished for good (`UntilSuccess` after a success).
    Done,
    /// Stopped at shutdown.
    Stopped,
}

/// One task's health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub task: String,
    pub state: TaskState,
    /// Runs started after the first.
    pub restarts: u32,
    /// The `reason` of its last failure, if any.
    pub last_error: Option<String>,
    /// When it entered `state` (ms since kernel start, as `t_ms`).
    pub since_ms: u64,
}

struct Entry {
    health: Health,
    /// The current run, for [`Table::kill`].
    run: Option<AbortHandle>,
}

/// The health table, in start order (shared by the supervisor and its readers).
#[derive(Clone, Default)]
pub struct Table(Arc<Mutex<Vec<Entry>>>);

impl Table {
    fn with<R>(&self, f: impl FnOnce(&mut Vec<Entry>) -> R) -> R {
        // A poisoned lock still holds usable state; health must stay readable.
        let mut g = match self.0.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        f(&mut g)
    }

    fn update(&self, task: &str, f: impl FnOnce(&mut Entry)) {
        let now = crate::sys::clock::boottime_ms();
        self.with(|t| match t.iter_mut().find(|e| e.health.task == task) {
            Some(e) => f(e),
            None => {
                let mut e = Entry {
                    health: Health {
                        task: task.to_string(),
                        state: TaskState::Running,
                        restarts: 0,
                        last_error: None,
                        since_ms: now,
                    },
                    run: None,
                };
                f(&mut e);
                t.push(e);
            }
        })
    }

    /// `task` was spawned: listed now, so the table keeps the start order.
    pub(super) fn register(&self, task: &str) {
        self.update(task, |_| {})
    }

    /// A run of `task` started (its first, or a restart).
    pub(super) fn running(&self, task: &str, first: bool, run: AbortHandle) {
        let now = crate::sys::clock::boottime_ms();
        self.update(task, |e| {
            if !first {
                e.health.restarts = e.health.restarts.saturating_add(1);
            }
            e.health.state = TaskState::Running;
            e.health.since_ms = now;
            e.run = Some(run);
        })
    }

    /// A run ended; `error` is its failure reason, if it failed.
    pub(super) fn ended(&self, task: &str, state: TaskState, error: Option<String>) {
        let now = crate::sys::clock::boottime_ms();
        self.update(task, |e| {
            e.health.state = state;
            e.health.since_ms = now;
            e.run = None;
            if error.is_some() {
                e.health.last_error = error;
            }
        })
    }

    /// Abort `task`'s current run (it ends as `killed` and restarts under its policy).
    /// False when no such task has a run (unknown, not polled yet, or in backoff).
    pub fn kill(&self, task: &str) -> bool {
        self.with(|t| {
            match t
                .iter()
                .find(|e| e.health.task == task)
                .and_then(|e| e.run.as_ref())
            {
                Some(run) => {
                    run.abort();
                    true
                }
                None => false,
            }
        })
    }

    /// Every task's health, in start order.
    pub fn snapshot(&self) -> Vec<Health> {
        self.with(|t| t.iter().map(|e| e.health.clone()).collect())
    }
}
