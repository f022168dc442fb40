//! Workload identity for the mesh.
//!
//! - [`spiffe`]: SPIFFE IDs (`spiffe://<trust-domain>/ns/<ns>/sa/<sa>`), parsed strictly.
//! - [`cert`]: workload key pairs and CSRs (keys never leave the node that made them),
//!   [`WorkloadCertificate`] (chain + key + identity) and [`TrustBundle`] (one or more roots).
//! - [`ca`]: the mesh [`CertificateAuthority`]: a generated or loaded root, optionally an
//!   intermediate, signing CSRs for identities of its trust domain after strict checks.
//! - [`issuer`]: the [`CertificateIssuer`] trait the store asks for certificates (implemented by
//!   the in-process CA; later by the gRPC client of the controller's CA).
//! - [`store`]: the [`CertStore`], one current certificate per identity, renewed at about half
//!   life by a single background actor and swapped in atomically.
//! - [`tls`]: rustls configs for HBONE built with an explicit [`tls::crypto_provider`], peer
//!   verification by SPIFFE identity, and [`tls::verification_failure`] to tell why a handshake
//!   was rejected.
//!
//! For tests and local mode, [`CertificateAuthority::issue_workload`] makes a key, a CSR and a
//! signed certificate in one call.
#![forbid(unsafe_code)]

pub mod ca;
pub mod cert;
pub mod issuer;
pub mod spiffe;
pub mod store;
pub mod tls;

pub use ca::{CaError, CaMaterial, CaOptions, CertificateAuthority, ServerCertificate, Validity};
pub use cert::{CertificateError, TrustBundle, WorkloadCertificate, WorkloadKey};
pub use issuer::{CertificateIssuer, IssueError, IssueFuture};
pub use spiffe::{DEFAULT_TRUST_DOMAIN, SpiffeId, SpiffeIdError};
pub use store::{CertHandle, CertStore, CertStoreError, CertStoreOptions};
pub use tls::{
    CertificateSource, FixedCertificate, PeerIdentityError, TlsConfigError, VerificationFailure,
    client_config, crypto_provider, peer_identity, server_config, verification_failure,
};
