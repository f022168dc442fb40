//! Process plumbing shared by Ambit's proxies: graceful shutdown, readiness, and the small
//! admin, metrics and readiness HTTP servers.
//!
//! # Wiring (what a proxy's `app.rs` does)
//! 1. `let shutdown = Shutdown::new(grace)?` inside the main runtime: SIGTERM/SIGINT are now
//!    caught. Hand `shutdown.watch()` to every listener (stop accepting on
//!    [`DrainWatch::draining`], e.g. by starting `ambit_hbone::Drain`) and register the work
//!    to wait for with [`DrainWatch::track`].
//! 2. `let ready = Ready::new()` and register each condition (`"config"`,
//!    `"certificates"`) before serving readiness.
//! 3. Start a [`ControlRuntime`] and spawn on it [`AdminServer::serve`] (listener bound to
//!    127.0.0.1:15000), [`serve_metrics`] (15020) and [`serve_readiness`] (15021).
//! 4. `shutdown.run().await` returns once the drain is over; then exit.
//!
//! # Choices
//! - The servers run on a dedicated single-threaded runtime ([`ControlRuntime`]) so they
//!   never take a worker thread from the data path and keep answering when it is busy.
//! - One boxed, non-generic HTTP/1.1 server loop serves all three; handlers answer from
//!   memory and ignore request bodies.
#![forbid(unsafe_code)]

mod control;
mod endpoints;
mod pending;
mod ready;
mod server;
mod shutdown;

pub use control::ControlRuntime;
pub use endpoints::{AdminServer, JsonSource, serve_metrics, serve_readiness};
pub use ready::{Ready, ReadyToken};
pub use shutdown::{DrainTrigger, DrainWatch, Shutdown, ShutdownReason, ShutdownReport, TaskGuard};
