//! Workload identity for the mesh: SPIFFE IDs, the certificate authority, trust bundles,
//! rustls configurations built with an explicit crypto provider, and the certificate store
//! that keeps each workload's certificate fresh.
#![forbid(unsafe_code)]

pub mod spiffe;
pub mod tls;

pub use spiffe::{DEFAULT_TRUST_DOMAIN, SpiffeId, SpiffeIdError};
