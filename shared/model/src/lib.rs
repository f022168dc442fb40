//! The mesh model: the small, validated types the controller pushes and the proxies consume.
//!
//! Everything here is pure data plus validation: no IO, no clock. Every type is `Clone`,
//! `Debug`, `PartialEq` and serde-serializable so it can travel in a snapshot. Types that
//! carry invariants have private fields, are built through a constructor that validates, and
//! deserialize through the same constructor, so an invalid object can never exist.
#![forbid(unsafe_code)]

pub mod authz;
pub mod destination_rule;
pub mod error;
pub mod grpc_route;
pub mod labels;
pub mod pattern;
pub mod peer_auth;
pub mod protocol;
pub mod rate_limit;
pub mod request_authn;
pub mod route;
pub mod service;
pub mod virtual_service;
pub mod waypoint;
pub mod workload;

mod identity_serde;

pub use authz::{Action, AuthorizationPolicy, AuthorizationPolicySpec, PolicyScope};
pub use destination_rule::DestinationRule;
pub use error::ModelError;
pub use grpc_route::GrpcRoute;
pub use labels::{Labels, WorkloadSelector};
pub use pattern::StringMatch;
pub use peer_auth::{MtlsMode, PeerAuthentication, PeerAuthenticationSpec, effective_mtls_mode};
pub use protocol::{AppProtocol, select_protocol};
pub use rate_limit::LocalRateLimit;
pub use request_authn::{RequestAuthentication, RequestAuthenticationSpec};
pub use route::HttpRoute;
pub use service::{Endpoint, Service, ServicePort, ServiceSpec};
pub use virtual_service::VirtualService;
pub use waypoint::{WaypointFor, WaypointRef};
pub use workload::{TransportProtocol, Workload, WorkloadSpec};

/// The Istio root namespace used when none is configured: mesh-wide policies live here.
pub const DEFAULT_ROOT_NAMESPACE: &str = "istio-system";

/// The cluster DNS suffix of service hostnames.
pub const CLUSTER_DOMAIN: &str = "cluster.local";
