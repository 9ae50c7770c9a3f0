//! The memory cap of one job: the total of all its linear memories and tables, counted by
//! the store's resource limiter at every growth (instantiation included), refused before it
//! would pass the cap. Plus the admission policy: which requested limits a node accepts.

use phase_release::receipt::{Limits, RefusedReason};

/// Bytes one table element is charged (a function reference is a pointer and a type id).
pub const TABLE_ELEMENT_BYTES: u64 = 16;

/// The limiter installed in each job's store.
#[derive(Debug, Default)]
pub struct JobLimiter {
    cap: u64,
    used: u64,
    peak: u64,
    exceeded: bool,
}

/// The error a refused growth traps with.
#[derive(Debug, thiserror::Error)]
#[error("memory cap of {0} bytes reached")]
pub struct MemoryCapReached(pub u64);

impl JobLimiter {
    pub fn new(cap: u64) -> Self {
        JobLimiter {
            cap,
            ..Default::default()
        }
    }
    /// Most bytes held at once (memories + tables).
    pub fn peak(&self) -> u64 {
        self.peak
    }
    /// A growth was refused.
    pub fn exceeded(&self) -> bool {
        self.exceeded
    }
    fn grow(&mut self, bytes: u64) -> wasmtime::Result<bool> {
        let next = self.used.saturating_add(bytes);
        if next > self.cap {
            self.exceeded = true;
            return Err(wasmtime::Error::new(MemoryCapReached(self.cap)));
        }
        self.used = next;
        self.peak = self.peak.max(next);
        Ok(true)
    }
}

impl wasmtime::ResourceLimiter for JobLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.grow(desired.saturating_sub(current) as u64)
    }
    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.grow((desired.saturating_sub(current) as u64).saturating_mul(TABLE_ELEMENT_BYTES))
    }
    fn instances(&self) -> usize {
        1
    }
    fn memories(&self) -> usize {
        1
    }
    fn tables(&self) -> usize {
        1
    }
}

/// What a node accepts from a job request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodePolicy {
    /// Highest limits a job may ask for.
    pub max: Limits,
    pub max_module_bytes: usize,
    /// stdin + args + env.
    pub max_input_bytes: usize,
}

impl Default for NodePolicy {
    fn default() -> Self {
        NodePolicy {
            max: Limits {
                memory_bytes: 256 << 20,
                fuel: 100_000_000_000,
                timeout_ms: 60_000,
                stdout_bytes: 4 << 20,
                stderr_bytes: 1 << 20,
            },
            max_module_bytes: 16 << 20,
            max_input_bytes: 4 << 20,
        }
    }
}

impl NodePolicy {
    /// `Err(reason)` if the job is refused before it runs.
    pub fn admit(
        &self,
        limits: &Limits,
        module_len: usize,
        input_len: usize,
    ) -> Result<(), RefusedReason> {
        let m = &self.max;
        if limits.memory_bytes > m.memory_bytes
            || limits.fuel > m.fuel
            || limits.timeout_ms > m.timeout_ms
            || limits.stdout_bytes > m.stdout_bytes
            || limits.stderr_bytes > m.stderr_bytes
        {
            return Err(RefusedReason::LimitsAboveNode);
        }
        if module_len > self.max_module_bytes {
            return Err(RefusedReason::ModuleTooLarge);
        }
        if input_len > self.max_input_bytes {
            return Err(RefusedReason::InputTooLarge);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::ResourceLimiter;

    #[test]
    fn memories_and_tables_share_one_cap() {
        let mut l = JobLimiter::new(1000);
        assert!(l.memory_growing(0, 600, None).is_ok());
        // 25 elements * 16 = 400: exactly at the cap.
        assert!(l.table_growing(0, 25, None).is_ok());
        assert!(l.memory_growing(600, 601, None).is_err());
        assert!(l.exceeded());
        assert_eq!(l.peak(), 1000);
    }

    #[test]
    fn admission_table() {
        let p = NodePolicy::default();
        let ok = p.max;
        assert_eq!(p.admit(&ok, 10, 10), Ok(()));
        let fields: [fn(&mut Limits); 5] = [
            |l| l.memory_bytes += 1,
            |l| l.fuel += 1,
            |l| l.timeout_ms += 1,
            |l| l.stdout_bytes += 1,
            |l| l.stderr_bytes += 1,
        ];
        for f in fields {
            let mut l = ok;
            f(&mut l);
            assert_eq!(p.admit(&l, 10, 10), Err(RefusedReason::LimitsAboveNode));
        }
        assert_eq!(
            p.admit(&ok, p.max_module_bytes + 1, 0),
            Err(RefusedReason::ModuleTooLarge)
        );
        assert_eq!(
            p.admit(&ok, 0, p.max_input_bytes + 1),
            Err(RefusedReason::InputTooLarge)
        );
    }
}
