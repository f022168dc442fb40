//! The Ambit waypoint: the per-namespace L7 proxy of the ambient mesh.
//!
//! A client's ztunnel sends HBONE to the waypoint with `:authority` = the original
//! destination (service VIP:port or pod IP:port). The waypoint authorizes each HTTP request
//! against the AuthorizationPolicies targeting the service or the waypoint, routes it by
//! HTTPRoute, GRPCRoute or VirtualService (Gateway API routes win for a service), picks an endpoint and re-originates HBONE to that endpoint's ztunnel with its
//! own certificate. Ports declared TCP (or detected as non-HTTP) are proxied as opaque bytes
//! under L4 policy.
//!
//! Where things happen:
//! - [`app`]: wiring (HBONE server, client pool, stack);
//! - [`stack`]: every phase of a tunnel and of a request, top to bottom;
//! - [`detect`]: HTTP/1, h2c or opaque;
//! - [`authz`]: which policies apply, request attributes;
//! - [`route`]: rule selection (Gateway API precedence; VirtualService order), and
//!   [`route::filters`], [`route::fault`] (delay/abort injection), [`route::mirror`];
//! - [`balance`], [`retry`]: backend/endpoint choice, retry decisions and backoff;
//! - [`upstream`]: HBONE + HTTP/1.1 or HTTP/2 to endpoints;
//! - [`errors`]: the only place failures become responses;
//! - [`config`]: the static YAML file, reloaded on change;
//! - [`metrics`]: Istio's request metrics with `reporter="waypoint"`;
//! - [`jwt`]: RequestAuthentication (JWT validation, JWKS cache);
//! - [`tracing_ctx`], [`otlp`]: trace context propagation, request spans, OTLP export;
//! - [`access_log`]: the JSON access log;
//! - [`control`]: the admin (15000), metrics (15020) and readiness (15021) servers.
//!
//! - [`balance`], [`lb`], [`cluster`], [`outlier`], [`pool_limits`]: DestinationRule —
//!   endpoint choice (round robin, least request, random, consistent hash; subsets),
//!   outlier ejection and connection-pool limits;
//! - [`ratelimit`]: LocalRateLimit token buckets (docs/ratelimit.md);
//! - [`upgrade`]: HTTP/1.1 Upgrade (WebSocket) passthrough.
//!
//! Not yet implemented (issue 4): the controller's gRPC config, RequestAuthentication (JWT),
//! GRPCRoute, VirtualService, RequestMirror, tracing/OTLP, the JSON access log, h2 extended
//! CONNECT, and DestinationRule policies on opaque TCP (round robin only there).
//! Not yet implemented (issue 4): the controller's gRPC config, WebSocket/Upgrade,
//! GRPCRoute, VirtualService, RequestAuthentication (JWT), DestinationRule (subsets, LB
//! algorithms, connection pools, outlier detection), RequestMirror, rate limiting, tracing/OTLP
//! and the JSON access log.
#![forbid(unsafe_code)]

pub mod access_log;
pub mod app;
pub mod authz;
pub mod baggage;
pub mod balance;
pub mod cluster;
pub mod config;
pub mod control;
pub mod controller;
pub mod detect;
pub mod errors;
pub mod jwt;
pub mod lb;
pub mod metrics;
pub mod otlp;
pub mod outlier;
pub mod pool_limits;
pub mod ratelimit;
pub mod retry;
pub mod route;
pub mod stack;
pub mod tracing_ctx;
pub mod upgrade;
pub mod upstream;

pub use app::{StartError, Waypoint, WaypointOptions};
pub use config::{ConfigHandle, ConfigWatcher, Snapshot};
pub use control::{ControlAddrs, ControlInputs, ControlServers};
pub use errors::{ProxyError, ResponseFlag};
pub use stack::{HttpLimits, Observability};
