//! The compute node: what a booted machine is for. [`executor`] runs WASM jobs in a sandbox
//! with every limit enforced; [`receipt`] signs what happened with the node key; [`job_cli`]
//! is `phase job run --local` and `phase receipt verify` on top of both; [`bench`] is
//! `phase job bench` (the executor's figures for `make bench`).

pub mod bench;
pub mod executor;
pub mod job_cli;
pub mod receipt;
