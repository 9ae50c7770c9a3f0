//! The one reaper. PID 1 inherits every orphan, so it must `waitpid(-1)`; but a blind
//! `waitpid(-1)` would steal the exit status of children the init itself waits for (the
//! trap kata-agent patches with a lock). Here every child the init starts is spawned through
//! [`Children::spawn`], which records its pid under the same lock the reaper holds while it
//! reaps: a recorded child's status goes to its waiter, anything else is an orphan.

use rustix::process::{waitpid, WaitOptions};
use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use tokio::sync::oneshot;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    /// Decode a raw `wait` status (PURE). `None` for stopped/continued statuses.
    pub fn from_raw(raw: i32) -> Option<Exit> {
        let low = raw & 0x7f;
        if low == 0 {
            Some(Exit::Code((raw >> 8) & 0xff))
        } else if low != 0x7f {
            Some(Exit::Signal(low))
        } else {
            None
        }
    }
}

/// The table of children the init waits for, plus a count of reaped orphans.
#[derive(Default)]
pub struct Children {
    waiting: Mutex<HashMap<i32, oneshot::Sender<Exit>>>,
    orphans_reaped: AtomicU64,
}

impl Children {
    pub fn new() -> Self {
        Self::default()
    }

    /// Spawn `cmd` and return its pid and a receiver for its exit. Never use
    /// `std::process::Child::wait` on init's children: the reaper owns waiting.
    pub fn spawn(&self, cmd: &mut Command) -> std::io::Result<(u32, oneshot::Receiver<Exit>)> {
        let mut table = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        let child = cmd.spawn()?;
        let pid = child.id();
        let (tx, rx) = oneshot::channel();
        table.insert(pid as i32, tx);
        // Dropping `Child` neither kills nor waits; the reaper will collect it.
        drop(child);
        Ok((pid, rx))
    }

    /// Reap every child that has exited (`waitpid(-1, WNOHANG)` until none is left).
    /// Returns how many were reaped.
    pub fn reap(&self) -> usize {
        let mut table = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        let mut n = 0;
        loop {
            match waitpid(None, WaitOptions::NOHANG) {
                Ok(Some((pid, status))) => {
                    n += 1;
                    let Some(exit) = Exit::from_raw(status.as_raw()) else {
                        continue;
                    };
                    match table.remove(&pid.as_raw_nonzero().get()) {
                        Some(tx) => {
                            let _ = tx.send(exit);
                        }
                        None => {
                            self.orphans_reaped.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(
                                pid = pid.as_raw_nonzero().get(),
                                ?exit,
                                "reaped orphan"
                            );
                        }
                    }
                }
                // No child has exited yet, or there are no children at all.
                Ok(None) | Err(rustix::io::Errno::CHILD) => break,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    tracing::warn!("waitpid(-1): {e}");
                    break;
                }
            }
        }
        n
    }

    pub fn orphans_reaped(&self) -> u64 {
        self.orphans_reaped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_decoding() {
        let cases = [
            (0x0000, Some(Exit::Code(0))),
            (0x0700, Some(Exit::Code(7))),
            (0xff00, Some(Exit::Code(255))),
            (0x0006, Some(Exit::Signal(6))),
            (0x0086, Some(Exit::Signal(6))), // core dumped
            (0x0009, Some(Exit::Signal(9))),
            (0x137f, None), // stopped by SIGSTOP
            (0xffff, None), // continued
        ];
        for (raw, want) in cases {
            assert_eq!(Exit::from_raw(raw), want, "raw {raw:#x}");
        }
    }

    #[test]
    fn waiter_gets_status_even_when_reaper_runs() {
        // In a test process the reaper only sees our own children, which is what we want.
        let children = Children::new();
        let (_, rx) = children
            .spawn(Command::new("sh").args(["-c", "exit 7"]))
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut rx = rx;
        loop {
            children.reap();
            match rx.try_recv() {
                Ok(exit) => {
                    assert_eq!(exit, Exit::Code(7));
                    break;
                }
                Err(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                Err(e) => panic!("no exit status: {e:?}"),
            }
        }
    }
}
