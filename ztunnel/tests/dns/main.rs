//! The DNS proxy on loopback sockets: mesh answers, forwarding to a fake upstream, bad input.
//!
//! Module names start with `dns_` so `cargo nextest run -p ambit-ztunnel dns` selects them.

mod dns_forward;
mod dns_malformed;
mod dns_mesh;
mod support;
