//! The concurrency limit: at most `workers` jobs run at once, at most `queue` more wait for a
//! slot (blocking their own thread, a blocking-pool thread, never PID 1's async thread); any
//! further job is refused with `queue_full` at once. The free slots are also published on a
//! watch channel (the node's capability record follows them).

use std::sync::{Condvar, Mutex, MutexGuard};
use tokio::sync::watch;

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
    /// Workers not running a job, sent on every change.
    free: watch::Sender<usize>,
}

/// A running slot; freed on drop.
pub struct Slot<'a>(&'a Gate);

/// No slot and no room to wait.
#[derive(Debug, PartialEq, Eq)]
pub struct QueueFull;

impl Gate {
    pub fn new(workers: usize, queue: usize) -> Self {
        let workers = workers.max(1);
        Gate {
            workers,
            queue,
            counts: Mutex::default(),
            freed: Condvar::new(),
            free: watch::Sender::new(workers),
        }
    }

    /// The free slots now and on every change.
    pub fn free_slots(&self) -> watch::Receiver<usize> {
        self.free.subscribe()
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
        self.free
            .send_replace(self.workers.saturating_sub(c.running));
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
        self.0
            .free
            .send_replace(self.0.workers.saturating_sub(c.running));
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
        let free = g.free_slots();
        assert_eq!(*free.borrow(), 1);
        let first = g.enter();
        assert!(first.is_ok());
        assert_eq!(*free.borrow(), 0);
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
        assert_eq!(*free.borrow(), 1);
    }
}
