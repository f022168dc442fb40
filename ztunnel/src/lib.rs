//! Ambit's ztunnel: the node-level L4 proxy of the ambient mesh.
//!
//! Only the in-pod redirection core exists so far ([`inpod`]); the binary, proxies and
//! configuration come in later steps.

#![forbid(unsafe_code)]

pub mod inpod;
