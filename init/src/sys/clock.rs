//! Boot-relative time for event stamps.

use rustix::time::{clock_gettime, ClockId};

/// `clock_gettime(CLOCK_BOOTTIME)` in milliseconds: time since the kernel started,
/// including any time suspended.
pub fn boottime_ms() -> u64 {
    let ts = clock_gettime(ClockId::Boottime);
    (ts.tv_sec as u64) * 1000 + (ts.tv_nsec as u64) / 1_000_000
}
