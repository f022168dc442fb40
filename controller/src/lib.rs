//! The Ambit control plane library: where objects come from ([`source`], [`local`]), what they
//! are ([`objects`]), and how they become the mesh model ([`translate`]).
//!
//! Translation is pure: the same objects always give the same [`translate::MeshConfig`], so
//! everything but the Kubernetes watch layer is tested from YAML fixtures without a cluster.
#![forbid(unsafe_code)]

pub mod kube;
pub mod local;
pub mod objects;
pub mod source;
pub mod translate;

pub use source::{Snapshot, Source};
