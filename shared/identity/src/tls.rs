//! rustls configurations for HBONE mutual TLS, always built with [`crypto_provider`].
//!
//! Both sides run TLS 1.3 only with ALPN `h2` and no session resumption. Certificates are read
//! from a [`CertificateSource`] at every handshake, so a rotated certificate is used by the next
//! handshake without a new config, and established connections are never touched. Peers are
//! verified by chain (to the [`TrustBundle`]) and by SPIFFE identity; DNS names and SNI play no
//! part. Why a verification failed can be read back with [`verification_failure`].

use std::fmt::Debug;
use std::sync::{Arc, OnceLock};

use rustls::client::ResolvesClientCert;
use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, NoServerSessionStorage, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{SignatureScheme, version};

use crate::SpiffeId;
use crate::cert::{
    CertificateError, TrustBundle, WorkloadCertificate, parse_certificate, spiffe_id_of,
};

mod verify;

pub use verify::{IdentityRejection, VerificationFailure, verification_failure};

/// The ALPN protocol HBONE negotiates.
pub const ALPN_H2: &[u8] = b"h2";

/// Why a TLS peer could not be identified.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerIdentityError {
    #[error("peer presented no certificate")]
    NoCertificate,
    #[error("peer certificate carries no valid SPIFFE identity: {0}")]
    InvalidIdentity(#[source] CertificateError),
}

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsConfigError {
    #[error("rustls refused the configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("a client config needs at least one expected server identity")]
    NoExpectedIdentities,
}

/// Where a TLS config gets the certificate to present: read at every handshake.
pub trait CertificateSource: Send + Sync + Debug {
    /// The certificate to present now, if there is one.
    fn current(&self) -> Option<Arc<WorkloadCertificate>>;
}

/// A [`CertificateSource`] that always presents the same certificate.
#[derive(Debug, Clone)]
pub struct FixedCertificate(pub Arc<WorkloadCertificate>);

/// Presents the source's current certificate, on either side of a handshake.
#[derive(Debug)]
struct SourceResolver {
    source: Arc<dyn CertificateSource>,
}

impl CertificateSource for FixedCertificate {
    fn current(&self) -> Option<Arc<WorkloadCertificate>> {
        Some(self.0.clone())
    }
}

impl SourceResolver {
    fn certified_key(&self) -> Option<Arc<CertifiedKey>> {
        let cert = self.source.current();
        if cert.is_none() {
            tracing::warn!(source = ?self.source, "no certificate to present in TLS handshake");
        }
        cert.map(|c| c.certified_key().clone())
    }
}

impl ResolvesServerCert for SourceResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.certified_key()
    }
}

impl ResolvesClientCert for SourceResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.certified_key()
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The crypto provider every Ambit TLS config is built with: ring, TLS 1.3 AES-GCM suites only,
/// key exchange X25519 and P-256.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            use rustls::crypto::ring::{cipher_suite, default_provider, kx_group};
            Arc::new(CryptoProvider {
                cipher_suites: vec![
                    cipher_suite::TLS13_AES_128_GCM_SHA256,
                    cipher_suite::TLS13_AES_256_GCM_SHA384,
                ],
                kx_groups: vec![kx_group::X25519, kx_group::SECP256R1],
                ..default_provider()
            })
        })
        .clone()
}

/// The HBONE server config: presents `source`'s current certificate and requires a client
/// certificate that chains to `bundle` and names a SPIFFE ID of the bundle's trust domain.
pub fn server_config(
    source: Arc<dyn CertificateSource>,
    bundle: &TrustBundle,
) -> Result<Arc<rustls::ServerConfig>, TlsConfigError> {
    let provider = crypto_provider();
    let verifier = verify::ClientVerifier::new(bundle, provider.clone())?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&version::TLS13])?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_cert_resolver(Arc::new(SourceResolver { source }));
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    // Istio's client never resumes, so neither tickets nor a session cache are worth their cost.
    config.send_tls13_tickets = 0;
    config.session_storage = Arc::new(NoServerSessionStorage {});
    Ok(Arc::new(config))
}

/// The HBONE client config: presents `source`'s current certificate, sends no SNI, and accepts
/// a server only if its chain reaches `bundle` and its SPIFFE ID is one of `expected`.
pub fn client_config(
    source: Arc<dyn CertificateSource>,
    bundle: &TrustBundle,
    expected: Vec<SpiffeId>,
) -> Result<Arc<rustls::ClientConfig>, TlsConfigError> {
    if expected.is_empty() {
        return Err(TlsConfigError::NoExpectedIdentities);
    }
    let provider = crypto_provider();
    let verifier = verify::ServerVerifier::new(bundle, provider.clone(), expected);
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_cert_resolver(Arc::new(SourceResolver { source }));
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    config.enable_sni = false;
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

/// The SPIFFE identity of the peer of an established TLS connection.
pub fn peer_identity(conn: &rustls::CommonState) -> Result<SpiffeId, PeerIdentityError> {
    let leaf = conn
        .peer_certificates()
        .and_then(|chain| chain.first())
        .ok_or(PeerIdentityError::NoCertificate)?;
    let cert = parse_certificate(leaf).map_err(PeerIdentityError::InvalidIdentity)?;
    spiffe_id_of(&cert).map_err(PeerIdentityError::InvalidIdentity)
}
