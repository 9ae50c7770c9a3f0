//! What makes a job's run reproducible: a virtual clock (WASI's wall and monotonic clocks
//! both read it; it starts where the job says and advances a fixed step per reading) and
//! the job's only random source, SHA-256 in counter mode over the job's seed. Nothing here
//! reads the host's clock or entropy.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How far the virtual clock advances at each reading.
pub const CLOCK_STEP_NS: u64 = 1_000;

/// A clock that only moves when read: reading `n` (from 0) returns `start + n * step`.
#[derive(Clone)]
pub struct VirtualClock {
    start_ns: u64,
    readings: Arc<AtomicU64>,
}

impl VirtualClock {
    pub fn new(start_ns: u64) -> Self {
        VirtualClock {
            start_ns,
            readings: Arc::new(AtomicU64::new(0)),
        }
    }
    fn tick(&self) -> u64 {
        let n = self.readings.fetch_add(1, Ordering::Relaxed);
        self.start_ns
            .saturating_add(n.saturating_mul(CLOCK_STEP_NS))
    }
}

impl wasmtime_wasi::HostWallClock for VirtualClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(CLOCK_STEP_NS)
    }
    fn now(&self) -> Duration {
        Duration::from_nanos(self.tick())
    }
}

impl wasmtime_wasi::HostMonotonicClock for VirtualClock {
    fn resolution(&self) -> u64 {
        CLOCK_STEP_NS
    }
    fn now(&self) -> u64 {
        self.tick()
    }
}

/// SHA-256(`"phase-boot/v1/job-random\n"` || seed || counter (u64 LE)) blocks, in order.
pub struct SeededRandom {
    seed: [u8; 32],
    counter: u64,
    block: [u8; 32],
    used: usize,
}

impl SeededRandom {
    pub fn new(seed: [u8; 32]) -> Self {
        SeededRandom {
            seed,
            counter: 0,
            block: [0; 32],
            used: 32,
        }
    }
    fn refill(&mut self) {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(b"phase-boot/v1/job-random\n");
        h.update(self.seed);
        h.update(self.counter.to_le_bytes());
        self.block = h.finalize().into();
        self.counter = self.counter.wrapping_add(1);
        self.used = 0;
    }
}

impl rand_core::TryRng for SeededRandom {
    type Error = Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        let mut at = 0;
        while at < dst.len() {
            if self.used == self.block.len() {
                self.refill();
            }
            let n = (dst.len() - at).min(self.block.len() - self.used);
            dst[at..at + n].copy_from_slice(&self.block[self.used..self.used + n]);
            at += n;
            self.used += n;
        }
        Ok(())
    }
}

/// The seed of WASI's "insecure" random source, derived from the job seed (not the host).
pub fn insecure_seed(seed: &[u8; 32]) -> u128 {
    use rand_core::TryRng;
    let mut r = SeededRandom::new(*seed);
    let mut b = [0u8; 16];
    // Infallible.
    let _ = r.try_fill_bytes(&mut b);
    u128::from_le_bytes(b) ^ 0x5eed
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::TryRng;

    #[test]
    fn random_is_a_function_of_the_seed() {
        let draw = |seed| {
            let mut r = SeededRandom::new(seed);
            let mut b = [0u8; 100];
            let _ = r.try_fill_bytes(&mut b[..7]);
            let _ = r.try_fill_bytes(&mut b[7..]);
            b
        };
        assert_eq!(draw([1; 32]), draw([1; 32]));
        assert_ne!(draw([1; 32]), draw([2; 32]));
        // Split reads give the same stream as one read.
        let mut r = SeededRandom::new([1; 32]);
        let mut one = [0u8; 100];
        let _ = r.try_fill_bytes(&mut one);
        assert_eq!(one, draw([1; 32]));
    }

    #[test]
    fn clock_advances_one_step_per_reading() {
        use wasmtime_wasi::HostMonotonicClock;
        let c = VirtualClock::new(1000);
        let shared = c.clone();
        assert_eq!(HostMonotonicClock::now(&c), 1000);
        assert_eq!(HostMonotonicClock::now(&shared), 1000 + CLOCK_STEP_NS);
    }
}
