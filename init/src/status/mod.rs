//! Status you can see: the node's state over HTTP, as JSON (`GET /status`) and as
//! Prometheus text (`GET /metrics`), and `phase status [ADDR]` to read it as a person.
//!
//! [`report`] (PURE) builds both bodies from a [`report::Report`]; [`bind`] (PURE) decides
//! where the endpoint listens; [`server`] is the small HTTP loop PID 1 runs as the
//! supervised task `status`; [`cli`] is the host command.

pub mod bind;
pub mod cli;
pub mod report;
pub mod server;

/// The TCP port of the status endpoint (the release provider is on 8080).
pub const STATUS_PORT: u16 = 8090;
#[cfg(test)]
mod tests;
