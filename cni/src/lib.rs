//! Ambit's CNI plugin and node-agent protocol.
#![forbid(unsafe_code)]

pub mod client;
pub mod protocol;
pub mod server;
pub mod snapshot;
pub mod plugin;
mod validate;
