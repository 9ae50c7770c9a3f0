//! Restart decisions (PURE): what follows a run that ended, and how long to wait first.
//!
//! The delay is exponential in the number of consecutive failures, capped, with "equal
//! jitter" (half the delay fixed, half drawn from a [`Jitter`] source) so that tasks
//! failing together, on one node or on many booted at once, do not restart in lockstep.
//! A run that stayed up for [`HEALTHY_RUN`] resets the count: a task that fails once a day
//! restarts quickly each time.

use std::time::Duration;

/// How a supervised task is kept alive (Talos's restart runner, in Rust terms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Restart whatever happens, including after success.
    Forever,
    /// Restart after failure until one run succeeds.
    UntilSuccess,
}

/// How one run of a task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Error(String),
    Panic,
    /// The run was aborted on purpose while the task stays (a fault drill, an operator).
    Killed,
}

impl Outcome {
    /// The `reason` of `task.failed`: `panic`, `killed`, or `error: <message>`.
    pub fn reason(&self) -> String {
        match self {
            Outcome::Success => "success".into(),
            Outcome::Error(e) => format!("error: {e}"),
            Outcome::Panic => "panic".into(),
            Outcome::Killed => "killed".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Restart(Duration),
    Stop,
}

/// Ceiling of the first restart delay; doubles per consecutive failure up to [`MAX_DELAY`].
pub const BASE_DELAY: Duration = Duration::from_millis(100);
pub const MAX_DELAY: Duration = Duration::from_secs(30);
/// A run at least this long counts as healthy: the failure count starts again from one.
pub const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// A small seedable random source for jitter (SplitMix64): the same seed gives the same
/// delays in tests; PID 1 seeds it from the kernel's randomness ([`Jitter::from_entropy`]).
#[derive(Debug, Clone)]
pub struct Jitter(u64);

impl Jitter {
    pub fn from_seed(seed: u64) -> Jitter {
        Jitter(seed)
    }

    /// Seeded from std's per-process random hash keys (getrandom underneath): no new
    /// dependency, and never blocking at boot.
    pub fn from_entropy() -> Jitter {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(crate::sys::clock::boottime_ms());
        Jitter::from_seed(h.finish())
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// The delay ceiling after `failures` consecutive failures (1 = the first).
pub fn ceiling(failures: u32) -> Duration {
    let shift = failures.saturating_sub(1).min(16);
    BASE_DELAY.saturating_mul(1 << shift).min(MAX_DELAY)
}

/// The delay before restarting after `failures` consecutive failures: half the ceiling,
/// plus `sample` spread over the other half (inclusive).
pub fn backoff(failures: u32, sample: u64) -> Duration {
    let cap = ceiling(failures).as_millis() as u64;
    let half = cap / 2;
    Duration::from_millis(half + sample % (cap - half + 1))
}

/// Consecutive failures after a run that ended with `outcome` and lasted `ran_for`.
pub fn failures_after(before: u32, outcome: &Outcome, ran_for: Duration) -> u32 {
    match outcome {
        Outcome::Success => 0,
        _ if ran_for >= HEALTHY_RUN => 1,
        _ => before.saturating_add(1),
    }
}

/// Decide what follows a run that ended with `outcome`, `failures` being the consecutive
/// failures counted with it ([`failures_after`]); `sample` is the jitter draw.
pub fn decide(policy: RestartPolicy, outcome: &Outcome, failures: u32, sample: u64) -> Decision {
    match (policy, outcome) {
        (RestartPolicy::UntilSuccess, Outcome::Success) => Decision::Stop,
        (RestartPolicy::Forever, Outcome::Success) => Decision::Restart(BASE_DELAY),
        (_, Outcome::Error(_) | Outcome::Panic | Outcome::Killed) => {
            Decision::Restart(backoff(failures, sample))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RestartPolicy::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn decisions() {
        let err = Outcome::Error("x".into());
        // (policy, outcome, failures, sample, decision)
        let table = [
            (UntilSuccess, Outcome::Success, 0, 7, Decision::Stop),
            (
                UntilSuccess,
                Outcome::Panic,
                1,
                0,
                Decision::Restart(MS(50)),
            ),
            (
                UntilSuccess,
                Outcome::Panic,
                1,
                50,
                Decision::Restart(MS(100)),
            ),
            // The sample wraps into the upper half.
            (
                UntilSuccess,
                Outcome::Panic,
                1,
                51,
                Decision::Restart(MS(50)),
            ),
            (UntilSuccess, err.clone(), 2, 25, Decision::Restart(MS(125))),
            (
                Forever,
                Outcome::Success,
                0,
                9,
                Decision::Restart(BASE_DELAY),
            ),
            (Forever, err, 40, 0, Decision::Restart(MAX_DELAY / 2)),
            (Forever, Outcome::Killed, 3, 200, Decision::Restart(MS(400))),
        ];
        for (policy, outcome, failures, sample, want) in table {
            assert_eq!(
                decide(policy, &outcome, failures, sample),
                want,
                "{policy:?} {outcome:?} {failures} {sample}"
            );
        }
    }

    #[test]
    fn ceiling_grows_and_caps() {
        let table = [
            (0, 100),
            (1, 100),
            (2, 200),
            (4, 800),
            (9, 25_600),
            (10, 30_000),
        ];
        for (failures, ms) in table {
            assert_eq!(ceiling(failures), MS(ms), "{failures}");
        }
        assert_eq!(ceiling(u32::MAX), MAX_DELAY);
    }

    #[test]
    fn jittered_delay_stays_within_half_and_whole_ceiling() {
        let mut j = Jitter::from_seed(42);
        for failures in 1..20 {
            let cap = ceiling(failures);
            for _ in 0..200 {
                let d = backoff(failures, j.next_u64());
                assert!(d >= cap / 2 && d <= cap, "{failures}: {d:?} vs {cap:?}");
            }
        }
    }

    #[test]
    fn jitter_is_seedable_and_spreads_restarts() {
        let draws = |seed| {
            let mut j = Jitter::from_seed(seed);
            (0..8).map(|_| backoff(6, j.next_u64())).collect::<Vec<_>>()
        };
        assert_eq!(draws(7), draws(7));
        assert_ne!(draws(7), draws(8));
        // Eight tasks failing together do not all wait the same time.
        let mut d = draws(7);
        d.dedup();
        assert!(d.len() > 4, "{d:?}");
    }

    #[test]
    fn failure_count_resets_after_a_healthy_run() {
        let err = Outcome::Error("x".into());
        let table = [
            (0, Outcome::Panic, MS(10), 1),
            (3, err.clone(), MS(10), 4),
            (3, err.clone(), HEALTHY_RUN, 1),
            (5, Outcome::Success, MS(1), 0),
            (u32::MAX, Outcome::Killed, MS(1), u32::MAX),
        ];
        for (before, outcome, ran, want) in table {
            assert_eq!(
                failures_after(before, &outcome, ran),
                want,
                "{before} {outcome:?}"
            );
        }
    }
}
