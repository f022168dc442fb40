//! The Ambit control plane: where objects come from ([`source`], [`local`]), what they are
//! ([`objects`]), how they become the mesh model ([`translate`]), and how the model reaches the
//! proxies: one snapshot per scope ([`scopes`]) published by the [`pipeline`] into the gRPC
//! config server of `ambit-api`, next to the CA ([`ca`], [`tokens`]). [`app`] wires the
//! `ambit-controller` binary; [`metrics`] is what it exports. The gRPC port is TLS with a
//! serving certificate the controller's own CA issues and renews ([`serving`]).
//!
//! Translation is pure: the same objects always give the same [`translate::MeshConfig`], so
//! everything but the Kubernetes watch layer is tested from YAML fixtures without a cluster.
//!
//! # Scopes
//! - **Node** (`ScopeKey::Node(name)`, a ztunnel): every workload, service and peer
//!   authentication (any of them may be a destination of a local client, and ztunnel resolves
//!   destinations and reports their labels from its own copy), plus only the authorization
//!   policies that select a workload on that node. A pod change therefore reaches every
//!   ztunnel; a policy change only the nodes it applies to.
//! - **Waypoint** (`ScopeKey::Waypoint{namespace, name}`): the services bound to it, the
//!   workloads behind them (and bound to it directly), the policies targeting it, its services
//!   or the `istio-waypoint` GatewayClass, and the HTTPRoutes attached to its services or to it.
//!
//! # CA (local mode)
//! Callers authenticate with a bootstrap token from `--node-tokens` ([`tokens`]); a node's
//! ztunnel may get certificates only for identities of enrolled pods on that node, a waypoint
//! only for its own identity ([`pipeline::Pipeline::authorizer`]).
//!
//! # CA (Kubernetes mode)
//! Callers present projected ServiceAccount tokens, checked by TokenReview and bound to their
//! pod ([`kube::TokenReviewAuthenticator`]); ztunnel's pods may get the identities of the pods
//! scheduled on their node, a waypoint pod only its own ([`kube::PodIdentities`]).
#![forbid(unsafe_code)]

pub mod app;
pub mod ca;
pub mod kube;
pub mod local;
pub mod metrics;
pub mod objects;
pub mod pipeline;
pub mod scopes;
pub mod serving;
pub mod source;
pub mod tokens;
pub mod translate;

pub use source::{Snapshot, Source};
