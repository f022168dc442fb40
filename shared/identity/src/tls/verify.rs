//! Peer verification by chain and SPIFFE identity, and classification of why it failed.

use std::error::Error as StdError;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{
    CertificateError as TlsCertificateError, DigitallySignedStruct, DistinguishedName, OtherError,
    RootCertStore, SignatureScheme,
};

use crate::SpiffeId;
use crate::cert::{CertificateError, TrustBundle, parse_certificate, spiffe_id_of};
use crate::tls::TlsConfigError;

/// Why a TLS handshake's peer verification failed, as far as it can be told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum VerificationFailure {
    /// The peer's chain is good but its SPIFFE ID is of another trust domain.
    WrongTrustDomain,
    /// The peer's chain does not reach a root of the trust bundle.
    UnknownIssuer,
    /// A certificate of the peer's chain has expired.
    Expired,
    /// The server's SPIFFE ID is not one the client expected for this destination.
    UnexpectedIdentity,
    /// The peer's leaf has no single valid SPIFFE ID URI SAN.
    InvalidIdentity,
    /// The client presented no certificate.
    NoClientCertificate,
    /// Any other certificate problem (bad signature, wrong key usage, not yet valid, ...).
    Other,
}

/// An identity check that failed after the chain verified; carried inside the rustls error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityRejection {
    #[error("peer identity {found} is not in trust domain {expected:?}")]
    WrongTrustDomain { expected: String, found: SpiffeId },
    #[error("server identity {found} is not one of the expected {expected:?}")]
    UnexpectedIdentity {
        expected: Arc<[SpiffeId]>,
        found: SpiffeId,
    },
    #[error("peer certificate has no valid SPIFFE identity: {0}")]
    InvalidIdentity(#[source] CertificateError),
}

/// Server side: chain to the bundle (webpki, clientAuth) and a SPIFFE ID of the trust domain.
#[derive(Debug)]
pub(super) struct ClientVerifier {
    chain: Arc<dyn ClientCertVerifier>,
    trust_domain: String,
}

/// Client side: chain to the bundle (serverAuth), then the SPIFFE ID, never the server name.
#[derive(Debug)]
pub(super) struct ServerVerifier {
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
    trust_domain: String,
    expected: Arc<[SpiffeId]>,
}

impl IdentityRejection {
    fn failure(&self) -> VerificationFailure {
        match self {
            Self::WrongTrustDomain { .. } => VerificationFailure::WrongTrustDomain,
            Self::UnexpectedIdentity { .. } => VerificationFailure::UnexpectedIdentity,
            Self::InvalidIdentity(_) => VerificationFailure::InvalidIdentity,
        }
    }

    fn into_rustls(self) -> rustls::Error {
        rustls::Error::InvalidCertificate(TlsCertificateError::Other(OtherError(Arc::new(self))))
    }
}

impl ClientVerifier {
    pub(super) fn new(
        bundle: &TrustBundle,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, TlsConfigError> {
        // No CA names in the CertificateRequest: clients have one certificate anyway, and the
        // names would tell anyone connecting which roots the mesh trusts.
        let chain = WebPkiClientVerifier::builder_with_provider(bundle.root_store(), provider)
            .clear_root_hint_subjects()
            .build()?;
        Ok(Self {
            chain,
            trust_domain: bundle.trust_domain().to_owned(),
        })
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .chain
            .verify_client_cert(end_entity, intermediates, now)?;
        let id = identity_of(end_entity)?;
        check_trust_domain(&id, &self.trust_domain)?;
        tracing::trace!(client = %id, "verified client certificate");
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}

impl ServerVerifier {
    pub(super) fn new(
        bundle: &TrustBundle,
        provider: Arc<CryptoProvider>,
        expected: Vec<SpiffeId>,
    ) -> Self {
        Self {
            roots: bundle.root_store(),
            provider,
            trust_domain: bundle.trust_domain().to_owned(),
            expected: expected.into(),
        }
    }
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        // Callers pass the peer's IP address; identity is the SPIFFE ID, never a name.
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        let id = identity_of(end_entity)?;
        check_trust_domain(&id, &self.trust_domain)?;
        if !self.expected.contains(&id) {
            return Err(IdentityRejection::UnexpectedIdentity {
                expected: self.expected.clone(),
                found: id,
            }
            .into_rustls());
        }
        tracing::trace!(server = %id, "verified server certificate");
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Classifies why a handshake failed on the side that verified the peer. Walks `source()`
/// chains, including through `std::io::Error`s that wrap a `rustls::Error` (as tokio-rustls
/// returns). `None` means the error is not a certificate verification failure — for example
/// an alert from a peer that rejected *our* certificate.
pub fn verification_failure(err: &(dyn StdError + 'static)) -> Option<VerificationFailure> {
    let mut current = Some(err);
    while let Some(err) = current {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return classify_rustls(tls);
        }
        if let Some(rejection) = err.downcast_ref::<IdentityRejection>() {
            return Some(rejection.failure());
        }
        // io::Error::source() skips the wrapped error itself, so step into it explicitly.
        current = match err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn StdError + 'static)),
            None => err.source(),
        };
    }
    None
}

fn classify_rustls(err: &rustls::Error) -> Option<VerificationFailure> {
    match err {
        rustls::Error::NoCertificatesPresented => Some(VerificationFailure::NoClientCertificate),
        rustls::Error::InvalidCertificate(cert) => Some(match cert {
            TlsCertificateError::UnknownIssuer => VerificationFailure::UnknownIssuer,
            TlsCertificateError::Expired | TlsCertificateError::ExpiredContext { .. } => {
                VerificationFailure::Expired
            }
            TlsCertificateError::Other(OtherError(inner)) => inner
                .downcast_ref::<IdentityRejection>()
                .map_or(VerificationFailure::Other, IdentityRejection::failure),
            _ => VerificationFailure::Other,
        }),
        _ => None,
    }
}

fn identity_of(end_entity: &CertificateDer<'_>) -> Result<SpiffeId, rustls::Error> {
    parse_certificate(end_entity)
        .and_then(|cert| spiffe_id_of(&cert))
        .map_err(|e| IdentityRejection::InvalidIdentity(e).into_rustls())
}

fn check_trust_domain(id: &SpiffeId, trust_domain: &str) -> Result<(), rustls::Error> {
    if id.trust_domain() == trust_domain {
        return Ok(());
    }
    Err(IdentityRejection::WrongTrustDomain {
        expected: trust_domain.to_owned(),
        found: id.clone(),
    }
    .into_rustls())
}
