//! The concurrency limit: at most `workers` jobs run at once, at most `queue` more wait for a
//! slot (blocking their own thread, a blocking-pool thread, never PID 1's async thread); any
//! further job is refused with `queue_full` at once.

use std::sync::{Condvar, Mutex, MutexGuard};

#[derive(Debug, Default)]
struct Counts {
    running: usize,
    waiting: usize,
}

pub struct Gate {
    workers: usize,
    queue: usize,
    counts: Mutex<Counts>,
    freed: Condvar,
}

/// A running slot; freed on drop.
pub struct Slot<'a>(&'a Gate);

/// No slot and no room to wait.
#[derive(Debug, PartialEq, Eq)]
pub struct QueueFull;

impl Gate {
    pub fn new(workers: usize, queue: usize) -> Self {
        Gate {
            workers: workers.max(1),
            queue,
            counts: Mutex::default(),
            freed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Take a slot, waiting in the queue if there is room.
    pub fn enter(&self) -> Result<Slot<'_>, QueueFull> {
        let mut c = self.lock();
        if c.running >= self.workers {
            if c.waiting >= self.queue {
                return Err(QueueFull);
            }
            c.waiting += 1;
            while c.running >= self.workers {
                c = self.freed.wait(c).unwrap_or_else(|p| p.into_inner());
            }
            c.waiting -= 1;
        }
        c.running += 1;
        Ok(Slot(self))
    }

    /// (running, waiting)
    #[cfg(test)]
    pub fn load(&self) -> (usize, usize) {
        let c = self.lock();
        (c.running, c.waiting)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut c = self.0.lock();
        c.running = c.running.saturating_sub(1);
        self.0.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn runs_waits_then_refuses() {
        let g = Arc::new(Gate::new(1, 1));
        let first = g.enter();
        assert!(first.is_ok());
        let waiter = {
            let g = g.clone();
            std::thread::spawn(move || g.enter().map(|_| ()))
        };
        while g.load().1 == 0 {
            std::thread::yield_now();
        }
        assert_eq!(g.enter().err(), Some(QueueFull));
        drop(first);
        assert_eq!(waiter.join().ok(), Some(Ok(())));
        assert_eq!(g.load(), (0, 0));
    }
}
