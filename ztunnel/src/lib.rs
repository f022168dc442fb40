//! Ambit's ztunnel: the node-level L4 proxy of the ambient mesh.
//!
//! So far: the in-pod redirection core ([`inpod`]) and the DNS proxy ([`dns`]); the binary,
//! proxies and configuration come in later steps.

#![forbid(unsafe_code)]

pub mod dns;
pub mod inpod;
