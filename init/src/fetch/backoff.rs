//! When stage 1 tries a whole fetch again (PURE): after attempt 1 it waits 5 s, then
//! doubles the wait up to 60 s (5, 10, 20, 40, 60, 60, … s), for at most
//! `phase.fetch.attempts` attempts (0: until one succeeds). A provider that is down, or
//! an attacker that made one attempt fail, does not leave a diskless node stuck for good.

use std::time::Duration;

pub const FIRST: Duration = Duration::from_secs(5);
pub const MAX: Duration = Duration::from_secs(60);

/// The wait after failed attempt `n` (1, 2, …), or `None` if `limit` attempts were made.
pub fn next(n: u32, limit: u32) -> Option<Duration> {
    if limit != 0 && n >= limit {
        return None;
    }
    let doublings = n.saturating_sub(1).min(16);
    Some((FIRST * (1u32 << doublings)).min(MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap_and_stop_at_the_limit() {
        let s = Duration::from_secs;
        let cases = [
            (1, 4, Some(s(5))),
            (2, 4, Some(s(10))),
            (3, 4, Some(s(20))),
            (4, 4, None),
            (5, 4, None),
            (1, 1, None),
            (5, 0, Some(s(60))),
            (u32::MAX, 0, Some(s(60))),
            (4, 0, Some(s(40))),
        ];
        for (n, limit, want) in cases {
            assert_eq!(next(n, limit), want, "after attempt {n} of {limit}");
        }
    }
}
