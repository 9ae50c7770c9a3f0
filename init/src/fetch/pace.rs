//! The minimum transfer rate (PURE): a provider must deliver at least `min_rate` bytes per
//! second averaged over each window of `window`, counted from the request. An idle timeout
//! alone lets a peer hold a fetch for ever by sending one byte just before it fires; this
//! bounds what such a peer costs to one window.

use std::time::Duration;
use tokio::time::Instant;

/// The rate judge of one connection.
#[derive(Debug, Clone)]
pub struct Pace {
    /// Bytes each window must carry (`min_rate × window`).
    min_bytes: u64,
    window: Duration,
    window_end: Instant,
    in_window: u64,
}

/// The window that fell short: its bytes, against the minimum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooSlow {
    pub bytes: u64,
    pub min_bytes: u64,
}

impl Pace {
    /// Start judging at `start` (the request was sent).
    pub fn new(min_rate: u64, window: Duration, start: Instant) -> Pace {
        // A zero window would judge for ever at one instant.
        let window = window.max(Duration::from_millis(1));
        let min_bytes = (min_rate as u128 * window.as_millis() / 1000) as u64;
        Pace {
            min_bytes,
            window,
            window_end: start + window,
            in_window: 0,
        }
    }

    /// When the current window closes: a read must not wait past it.
    pub fn window_end(&self) -> Instant {
        self.window_end
    }

    /// `n` bytes arrived.
    pub fn add(&mut self, n: usize) {
        self.in_window = self.in_window.saturating_add(n as u64);
    }

    /// Judge every window that closed by `now`.
    pub fn judge(&mut self, now: Instant) -> Result<(), TooSlow> {
        while now >= self.window_end {
            if self.in_window < self.min_bytes {
                return Err(TooSlow {
                    bytes: self.in_window,
                    min_bytes: self.min_bytes,
                });
            }
            self.in_window = 0;
            self.window_end += self.window;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (what, bytes arriving at t0 + i s, judged at t0 + this many s, Ok or the bytes of
    /// the window that fell short)
    type Case = (&'static str, &'static [(u64, usize)], u64, Result<(), u64>);

    #[test]
    fn windows_are_judged_when_they_close() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let cases: &[Case] = &[
            ("fast", &[(0, 5000), (1, 5000)], 2, Ok(())),
            ("a small file done early", &[(0, 10)], 0, Ok(())),
            ("one byte per second", &[(0, 1), (1, 1)], 1, Err(1)),
            ("nothing at all", &[], 1, Err(0)),
            ("fast, then a dribble", &[(0, 5000), (1, 1)], 2, Err(1)),
            ("still inside the first window", &[(0, 1)], 0, Ok(())),
        ];
        for (what, arrivals, judged_at, want) in cases {
            // 1000 bytes/s over 1 s windows.
            let mut p = Pace::new(1000, s, t0);
            let mut got = Ok(());
            for &(at, n) in arrivals.iter() {
                got = got.and(p.judge(t0 + s * at as u32 + Duration::from_millis(500)));
                p.add(n);
            }
            got = got.and(p.judge(t0 + s * *judged_at as u32 + Duration::from_millis(1)));
            assert_eq!(got.map_err(|e| e.bytes), *want, "{what}");
        }
    }

    #[test]
    fn the_window_end_moves_on_after_a_good_window() {
        let t0 = Instant::now();
        let mut p = Pace::new(10, Duration::from_secs(2), t0);
        assert_eq!(p.window_end(), t0 + Duration::from_secs(2));
        p.add(100);
        assert_eq!(p.judge(t0 + Duration::from_secs(2)), Ok(()));
        assert_eq!(p.window_end(), t0 + Duration::from_secs(4));
        assert_eq!(
            p.judge(t0 + Duration::from_secs(4)),
            Err(TooSlow {
                bytes: 0,
                min_bytes: 20
            })
        );
    }
}
