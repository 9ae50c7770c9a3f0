//! The release provider: `phase provider serve DIR` on any Linux host, and (later) the
//! same code inside every booted node serving its own verified release.

pub mod announce;
pub mod fair;
pub mod http;
pub mod medium;
pub mod serve;
