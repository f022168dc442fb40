//! HBONE: TCP tunnelled through HTTP/2 `CONNECT` inside mutual TLS, wire-compatible with
//! Istio's ztunnel.
//!
//! # Wire format
//! - TCP to port 15008, TLS 1.3 with client certificates and ALPN `h2`. The client sends no
//!   SNI; each side identifies the other by the SPIFFE ID in its certificate's URI SAN.
//! - HTTP/2 with a 4 MiB stream window, a 16 MiB connection window, 1 MiB frames, push
//!   disabled, a PING every 10 s (connection dropped after 20 s without PONG) and GOAWAY on
//!   drain. The server advertises MAX_CONCURRENT_STREAMS 200; a client puts at most
//!   min(100, that) streams on one connection.
//! - One stream per tunnelled TCP connection: HEADERS with only `:method: CONNECT` and
//!   `:authority: <ip>:<port>` (IPv6 in brackets), optionally `traceparent`, `baggage` and
//!   `forwarded`. The server answers `200` (optionally with `baggage`) once the upstream
//!   connection is open; then DATA frames carry the bytes both ways and an empty DATA frame
//!   with END_STREAM half-closes a direction.
//! - Refusals are HEADERS with END_STREAM, then RST_STREAM(NO_ERROR): `405` for a method
//!   other than CONNECT, `400` for a bad `:authority`, `401`/`403` for policy, `503` when the
//!   upstream cannot be reached.
//!
//! # Pieces
//! [`Server`] accepts connections and hands each valid CONNECT to a [`Handler`]; [`Pool`]
//! opens streams on shared client connections; both give an [`HboneStream`], and
//! [`copy_bidirectional`] moves bytes between it and a TCP socket.
#![forbid(unsafe_code)]

pub mod authority;
mod copy;
mod drain;
mod pool;
mod server;
mod settings;
mod stream;

/// Re-exported: what [`ConnectError::verification_failure`] returns.
pub use ambit_identity::tls::VerificationFailure;
pub use authority::{AuthorityError, Target};
pub use copy::{ByteCounters, Transferred, copy_bidirectional};
pub use drain::{Drain, DrainSignal};
pub use pool::{
    ClientTlsProvider, ConnectError, ConnectRequest, Connector, DirectConnector, Pool, PoolConfig,
};
pub use server::{ConnectionError, Handler, InboundRequest, Responder, Server, ServerConfig};
pub use settings::Keepalive;
pub use stream::HboneStream;
