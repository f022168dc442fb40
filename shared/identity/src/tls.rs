//! rustls configurations for HBONE. Placeholder signatures: being implemented.

use std::sync::Arc;

use crate::SpiffeId;

/// Why a TLS peer could not be identified.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerIdentityError {
    #[error("peer presented no certificate")]
    NoCertificate,
}

/// The crypto provider every Ambit TLS config is built with: ring, TLS 1.3 AES-GCM suites only.
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    todo!("identity: crypto provider")
}

/// The SPIFFE identity of the peer of an established TLS connection.
pub fn peer_identity(conn: &rustls::CommonState) -> Result<SpiffeId, PeerIdentityError> {
    let _ = conn;
    todo!("identity: peer identity")
}
