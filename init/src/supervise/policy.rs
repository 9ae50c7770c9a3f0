//! Restart decisions (PURE).

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
    Cancelled,
}

impl Outcome {
    pub fn reason(&self) -> String {
        match self {
            Outcome::Success => "success".into(),
            Outcome::Error(e) => format!("error: {e}"),
            Outcome::Panic => "panic".into(),
            Outcome::Cancelled => "cancelled".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Restart(Duration),
    Stop,
}

/// First restart delay; doubles per run up to [`MAX_DELAY`].
pub const BASE_DELAY: Duration = Duration::from_millis(100);
pub const MAX_DELAY: Duration = Duration::from_secs(30);

/// Backoff before restart number `runs` (1 = after the first run).
pub fn backoff(runs: u32) -> Duration {
    let shift = runs.saturating_sub(1).min(16);
    BASE_DELAY.saturating_mul(1 << shift).min(MAX_DELAY)
}

/// Decide what follows run number `runs` (1-based) that ended with `outcome`.
pub fn decide(policy: RestartPolicy, outcome: &Outcome, runs: u32) -> Decision {
    match (policy, outcome) {
        (_, Outcome::Cancelled) => Decision::Stop,
        (RestartPolicy::UntilSuccess, Outcome::Success) => Decision::Stop,
        (RestartPolicy::Forever, Outcome::Success) => Decision::Restart(BASE_DELAY),
        (_, Outcome::Error(_) | Outcome::Panic) => Decision::Restart(backoff(runs)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RestartPolicy::*;

    #[test]
    fn decisions() {
        let err = Outcome::Error("x".into());
        let table = [
            (UntilSuccess, Outcome::Success, 3, Decision::Stop),
            (
                UntilSuccess,
                Outcome::Panic,
                1,
                Decision::Restart(BASE_DELAY),
            ),
            (
                UntilSuccess,
                err.clone(),
                2,
                Decision::Restart(BASE_DELAY * 2),
            ),
            (Forever, Outcome::Success, 5, Decision::Restart(BASE_DELAY)),
            (Forever, err, 40, Decision::Restart(MAX_DELAY)),
            (Forever, Outcome::Cancelled, 1, Decision::Stop),
        ];
        for (policy, outcome, runs, want) in table {
            assert_eq!(
                decide(policy, &outcome, runs),
                want,
                "{policy:?} {outcome:?} {runs}"
            );
        }
    }

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(4), Duration::from_millis(800));
        assert_eq!(backoff(u32::MAX), MAX_DELAY);
    }
}
