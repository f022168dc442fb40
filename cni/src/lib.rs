//! Ambit's CNI plugin and node-agent protocol.
#![forbid(unsafe_code)]

pub mod protocol;
mod validate;
