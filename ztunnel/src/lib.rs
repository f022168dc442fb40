//! Ambit's ztunnel: the node-level L4 proxy of the ambient mesh.
//!
//! One file per stage: [`config`] (file → state), [`certs`] (pod certificates), [`pods`]
//! (enrollment), [`outbound`] (15001), [`inbound`] (15008), [`inbound_plaintext`] (15006),
//! [`dns`] (15053), [`socks5`] (127.0.0.1:15080), [`observe`] (metrics, access log, live connections), [`inpod`] (rules and sockets inside pod namespaces); [`app`] wires them.

#![forbid(unsafe_code)]

pub mod app;
pub mod certs;
pub mod config;
pub mod dns;
pub mod inbound;
pub mod inbound_plaintext;
pub mod inpod;
pub mod names;
pub mod observe;
pub mod outbound;
pub mod pods;
pub mod proxy;
pub mod socks5;
