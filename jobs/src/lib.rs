//! Example jobs for Phase Boot's WASM executor: one binary each in src/bin/ (docs/jobs.md).
