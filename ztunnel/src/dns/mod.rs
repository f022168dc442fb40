//! The DNS proxy ztunnel runs on port 15053 inside each enrolled pod's network namespace.
//!
//! The pod's rules redirect its DNS (UDP and TCP port 53) here. A/AAAA queries for mesh names
//! — Kubernetes Services under their full and short names, ServiceEntry hosts — are answered
//! from ztunnel's state ([`MeshNames`]) with a 30 s TTL; everything else is forwarded to the
//! upstream resolvers, the way Istio's ztunnel does it, so pods resolve ServiceEntry hosts that
//! cluster DNS does not know.
//!
//! - [`server`]: [`DnsProxy`], the UDP and TCP serving loops and the per-query decision.
//! - [`names`]: [`MeshNames`] and how a queried name expands through the pod's search path.
//! - [`upstream`]: forwarding, and [`UpstreamSockets`] so ztunnel can mark its upstream sockets.
//! - [`resolv_conf`]: upstreams and search domains from a `resolv.conf`.
//! - [`metrics`]: counters of requests, forwards and failures by reason.
//!
//! The wire format is hickory-proto's; `message` holds the parsing and reply building.

mod message;
pub mod metrics;
pub mod names;
pub mod resolv_conf;
pub mod server;
pub mod upstream;

pub use metrics::{DnsMetrics, Failure};
pub use names::{MeshNames, StaticMeshNames};
pub use resolv_conf::ResolvConf;
pub use server::{ConfigError, DnsConfig, DnsProxy};
pub use upstream::{PlainSockets, UpstreamSockets};
