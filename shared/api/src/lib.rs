//! The control-plane protocol: config distribution and the CA over gRPC (tonic).
//!
//! - [`server`]: the controller's side. [`ConfigServer`] takes one [`Snapshot`] per
//!   [`ScopeKey`] from the controller ([`ConfigServer::publish`]) and streams each connected
//!   proxy the difference to what it last acknowledged; [`CaServer`] signs CSRs for callers an
//!   [`Authenticator`](server::Authenticator) and [`Authorizer`](server::Authorizer) accept.
//! - [`client`]: the proxies' side. [`ConfigClient`] keeps a validated [`ConfigView`]
//!   (last good config) in a `watch` channel; [`GrpcIssuer`] is a
//!   [`CertificateIssuer`](ambit_identity::CertificateIssuer) for the
//!   [`CertStore`](ambit_identity::CertStore).
//! - [`proto`]: the generated messages and stubs of `proto/ambit/v1/{config,ca}.proto`.
//!
//! # Protocol
//!
//! `ambit.v1.ConfigDistribution/Subscribe` is a bidirectional stream shaped like xDS: the
//! client sends `Subscribe{scope, client}` then one `Ack{version, nonce, error_detail?}` per
//! update; the server sends `ConfigUpdate{version, nonce, full, upserts, removals}`. Every
//! stream starts with a full resync; later updates are diffs against the last ACKed update.
//! At most one update is in flight per client. A NACK leaves the client on its last good
//! config and the server diffs the next publish against that. Versions are per publish,
//! increasing, seeded from the clock so a restarted controller keeps counting up.
//!
//! A server given an authenticator ([`ConfigServer::with_authenticator`]) requires
//! `authorization: Bearer <token>` metadata on the stream, as the CA does, and serves a caller
//! only its own scope ([`server::ScopeAccess`]): `UNAUTHENTICATED` for a missing or refused
//! token, `UNAVAILABLE` when it cannot be checked, `PERMISSION_DENIED` for another scope.
//! [`ConfigClient`] sends the token of [`ConfigClientOptions::with_token_file`], re-read on
//! every reconnect.
//!
//! # Payload encoding
//!
//! A `Resource` is `{key: {kind, namespace, name}, payload: bytes}` and the payload is the
//! model type's canonical serde JSON, with `kind` as the type tag (like an xDS `Any` with a
//! type URL). This is a deliberate first cut: `ambit-model` already defines one validated
//! serialized form per type and decoding goes through its validating constructors, so there is
//! exactly one schema to keep correct. The trade-off: payloads are larger and slower to parse
//! than typed protobuf, and the schema is not visible to non-Rust clients in the `.proto`.
//! Typed messages per model type can replace the payload later behind [`MeshResource`]
//! without changing the stream protocol.
//!
//! `ambit.v1.CertificateService/CreateCertificate` takes a PEM CSR, the requested SPIFFE ID
//! and an optional TTL, authenticated by `authorization: Bearer <token>`; it answers with the
//! chain (one PEM per certificate, leaf first) and the trust bundle.
//!
//! # Transport
//!
//! TLS 1.3 with ALPN `h2`. The server ([`server::serve`] with [`server::ServerTransport::Tls`])
//! presents a [`server::ServerTls`] certificate that can be replaced while it serves (the
//! controller renews its own at half life). Clients reach it through a [`ControllerEndpoint`]
//! (from the proxies' [`ControllerFlags`]): the roots file is re-read on every connect and the
//! server name defaults to the URL's host. Plaintext exists on both sides for tests only.
#![forbid(unsafe_code)]

pub mod client;
pub mod proto;
pub mod resource;
pub mod scope;
pub mod server;
pub mod snapshot;

pub use client::{
    ConfigClient, ConfigClientOptions, ConfigView, ControllerEndpoint, ControllerFlags, GrpcIssuer,
};
pub use resource::{MeshResource, ResourceError, ResourceKey, ResourceKind};
pub use scope::ScopeKey;
pub use server::{CaServer, ConfigServer, ConfigServerOptions};
pub use snapshot::Snapshot;
