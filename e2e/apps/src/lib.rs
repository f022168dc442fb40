//! Sample applications for Ambit's demos and end-to-end tests.
//!
//! Three small binaries share this library:
//! - `echo-server` ([`echo`]): HTTP/1.1, h2c (prior knowledge) and gRPC-shaped requests on one
//!   port, told apart by sniffing the connection preface and the `content-type`. It answers a
//!   JSON description of itself and of the request (version, pod, method, path, headers), can
//!   fail a fraction of requests or add delay, echoes WebSocket messages on `/ws`, and can fan
//!   out to other services (`--call`) the way bookinfo's productpage calls reviews.
//! - `tcp-echo` ([`tcp_echo`]): echoes bytes, after an optional banner.
//! - `load` ([`load`], [`client`]): a curl-like client and load generator whose report counts
//!   statuses and the `version` the echo servers answered with.
//!
//! Every binary takes its whole configuration from validated flags, prints
//! `listening on <addr>` once it accepts connections (servers), and logs to stderr.
#![forbid(unsafe_code)]

pub mod client;
pub mod duration;
pub mod echo;
pub mod load;
pub mod tcp_echo;

/// Installs the stderr logger every binary uses (`RUST_LOG` filter, `info` by default).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
