//! Process plumbing shared by Ambit's proxies: graceful shutdown, readiness, and the small
//! admin, metrics and readiness HTTP servers.
#![forbid(unsafe_code)]

mod pending;
mod ready;
mod shutdown;

pub use ready::{Ready, ReadyToken};
pub use shutdown::{DrainTrigger, DrainWatch, Shutdown, ShutdownReason, ShutdownReport, TaskGuard};
