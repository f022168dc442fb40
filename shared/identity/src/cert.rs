//! Workload keys, certificate signing requests, workload certificates and trust bundles.
//!
//! A workload's private key is made where the workload runs and never leaves it: the node
//! makes a [`WorkloadKey`], sends a CSR to the CA, and combines the issued chain with the key
//! into a [`WorkloadCertificate`].

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType};
use rustls::RootCertStore;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{
    CertificateDer, CertificateSigningRequestDer, PrivateKeyDer, PrivatePkcs8KeyDer,
};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::spiffe::{SpiffeId, SpiffeIdError, validate_trust_domain};
use crate::tls::crypto_provider;

/// Why key material, a certificate or a trust bundle could not be made or loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertificateError {
    #[error("PEM input holds no {0}")]
    MissingPem(&'static str),
    #[error("malformed PEM: {0}")]
    Pem(String),
    #[error("certificate chain is empty")]
    EmptyChain,
    #[error("certificate cannot be parsed: {0}")]
    Malformed(String),
    #[error("leaf certificate carries {0} URI SANs, exactly one is required")]
    UriSanCount(usize),
    #[error("leaf URI SAN is not a valid SPIFFE ID: {0}")]
    InvalidSpiffeId(#[from] SpiffeIdError),
    #[error("leaf identity {found} is not the expected {expected}")]
    IdentityMismatch { expected: SpiffeId, found: SpiffeId },
    #[error("private key does not fit the leaf certificate or cannot be used: {0}")]
    Key(rustls::Error),
    #[error("certificate or key generation failed: {0}")]
    Generation(#[from] rcgen::Error),
    #[error("trust bundle has no root certificate")]
    EmptyBundle,
    #[error("root certificate is not a usable trust anchor: {0}")]
    BadRoot(rustls::Error),
}

/// A workload's ECDSA P-256 key pair, made on the node that uses it.
pub struct WorkloadKey {
    key_pair: KeyPair,
}

/// A workload's certificate chain (leaf first) with its private key and identity.
pub struct WorkloadCertificate {
    id: SpiffeId,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    not_before: SystemTime,
    not_after: SystemTime,
    certified_key: Arc<CertifiedKey>,
}

/// The root certificates trusted for one trust domain; several at once while a root rotates.
#[derive(Clone)]
pub struct TrustBundle {
    trust_domain: String,
    roots: Vec<CertificateDer<'static>>,
    store: Arc<RootCertStore>,
}

impl WorkloadKey {
    /// Generates a fresh ECDSA P-256 key pair.
    pub fn generate() -> Result<Self, CertificateError> {
        let key_pair = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        Ok(Self { key_pair })
    }

    /// A PKCS#10 CSR (DER) asking for a certificate for `id` (one URI SAN, empty subject).
    pub fn csr_der(
        &self,
        id: &SpiffeId,
    ) -> Result<CertificateSigningRequestDer<'static>, CertificateError> {
        Ok(self.csr(id)?.der().clone())
    }

    /// The same CSR as [`WorkloadKey::csr_der`], PEM encoded.
    pub fn csr_pem(&self, id: &SpiffeId) -> Result<String, CertificateError> {
        Ok(self.csr(id)?.pem()?)
    }

    /// The private key as PKCS#8 DER.
    pub fn private_key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_pair.serialize_der()))
    }

    /// The private key as PKCS#8 PEM.
    pub fn private_key_pem(&self) -> String {
        self.key_pair.serialize_pem()
    }

    fn csr(&self, id: &SpiffeId) -> Result<rcgen::CertificateSigningRequest, CertificateError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![spiffe_san(id)?];
        Ok(params.serialize_request(&self.key_pair)?)
    }
}

impl fmt::Debug for WorkloadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        f.debug_struct("WorkloadKey").finish_non_exhaustive()
    }
}

impl WorkloadCertificate {
    /// Combines a chain (leaf first) and its private key, checking that the leaf carries
    /// exactly one URI SAN that is a valid SPIFFE ID and that the key matches the leaf.
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, CertificateError> {
        let leaf = chain.first().ok_or(CertificateError::EmptyChain)?;
        let (id, not_before, not_after) = {
            let cert = parse_certificate(leaf)?;
            let validity = cert.validity();
            (
                spiffe_id_of(&cert)?,
                unix_seconds(validity.not_before.timestamp()),
                unix_seconds(validity.not_after.timestamp()),
            )
        };
        let certified_key =
            CertifiedKey::from_der(chain.clone(), key.clone_key(), &crypto_provider())
                .map_err(CertificateError::Key)?;
        // `from_der` tolerates keys whose public half it cannot compute; we never want those.
        certified_key.keys_match().map_err(CertificateError::Key)?;
        Ok(Self {
            id,
            chain,
            key,
            not_before,
            not_after,
            certified_key: Arc::new(certified_key),
        })
    }

    /// Like [`WorkloadCertificate::new`], and also checks that the leaf is for `expected`.
    pub fn for_identity(
        expected: &SpiffeId,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, CertificateError> {
        let cert = Self::new(chain, key)?;
        if cert.id != *expected {
            return Err(CertificateError::IdentityMismatch {
                expected: expected.clone(),
                found: cert.id,
            });
        }
        Ok(cert)
    }

    /// Loads a PEM certificate chain (leaf first) and a PEM private key (PKCS#8, SEC1 or PKCS#1).
    pub fn from_pem(chain_pem: &str, key_pem: &str) -> Result<Self, CertificateError> {
        let chain = certificates_from_pem(chain_pem)?;
        let key =
            PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(pem_error("private key"))?;
        Self::new(chain, key)
    }

    /// The identity in the leaf's URI SAN.
    pub fn id(&self) -> &SpiffeId {
        &self.id
    }

    /// The chain, leaf first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// The leaf certificate.
    pub fn leaf(&self) -> &CertificateDer<'static> {
        // `new` refuses empty chains.
        &self.chain[0]
    }

    /// The private key of the leaf.
    pub fn private_key(&self) -> &PrivateKeyDer<'static> {
        &self.key
    }

    /// Start of the leaf's validity.
    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    /// End of the leaf's validity.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// The leaf's whole validity period.
    pub fn lifetime(&self) -> Duration {
        self.not_after
            .duration_since(self.not_before)
            .unwrap_or_default()
    }

    /// Whether the leaf is valid at `now`.
    pub fn is_valid_at(&self, now: SystemTime) -> bool {
        self.not_before <= now && now <= self.not_after
    }

    /// The chain as PEM, leaf first.
    pub fn chain_pem(&self) -> String {
        certificates_to_pem(&self.chain)
    }

    /// The chain and key in the form rustls presents in a handshake.
    pub(crate) fn certified_key(&self) -> &Arc<CertifiedKey> {
        &self.certified_key
    }
}

impl fmt::Debug for WorkloadCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkloadCertificate")
            .field("id", &self.id)
            .field("chain_len", &self.chain.len())
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl TrustBundle {
    /// A bundle of DER root certificates for `trust_domain`.
    pub fn new(
        trust_domain: &str,
        roots: Vec<CertificateDer<'static>>,
    ) -> Result<Self, CertificateError> {
        validate_trust_domain(trust_domain)?;
        if roots.is_empty() {
            return Err(CertificateError::EmptyBundle);
        }
        let mut store = RootCertStore::empty();
        for root in &roots {
            parse_certificate(root)?;
            store.add(root.clone()).map_err(CertificateError::BadRoot)?;
        }
        Ok(Self {
            trust_domain: trust_domain.to_owned(),
            roots,
            store: Arc::new(store),
        })
    }

    /// A bundle from PEM text holding one or more root certificates.
    pub fn from_pem(trust_domain: &str, pem: &str) -> Result<Self, CertificateError> {
        Self::new(trust_domain, certificates_from_pem(pem)?)
    }

    /// The trust domain peers verified with this bundle must belong to.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The root certificates.
    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    /// The roots as PEM.
    pub fn to_pem(&self) -> String {
        certificates_to_pem(&self.roots)
    }

    /// This bundle plus the roots of `other` (same trust domain is not required: the
    /// bundle's own trust domain stays the one peers must belong to).
    pub fn with_roots_of(&self, other: &TrustBundle) -> Result<Self, CertificateError> {
        let mut roots = self.roots.clone();
        roots.extend(
            other
                .roots
                .iter()
                .filter(|r| !self.roots.contains(r))
                .cloned(),
        );
        Self::new(&self.trust_domain, roots)
    }

    pub(crate) fn root_store(&self) -> Arc<RootCertStore> {
        self.store.clone()
    }
}

impl fmt::Debug for TrustBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustBundle")
            .field("trust_domain", &self.trust_domain)
            .field("roots", &self.roots.len())
            .finish()
    }
}

/// Parses every certificate in a PEM text, in order.
pub fn certificates_from_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>, CertificateError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error("certificate"))?;
    if certs.is_empty() {
        return Err(CertificateError::MissingPem("certificate"));
    }
    Ok(certs)
}

/// Encodes certificates as concatenated PEM blocks.
pub fn certificates_to_pem(certs: &[CertificateDer<'_>]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    certs
        .iter()
        .map(|c| pem::encode_config(&pem::Pem::new("CERTIFICATE", c.as_ref()), config))
        .collect()
}

pub(crate) fn parse_certificate<'a>(
    der: &'a CertificateDer<'_>,
) -> Result<X509Certificate<'a>, CertificateError> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(CertificateError::Malformed("trailing bytes".to_owned())),
        Err(e) => Err(CertificateError::Malformed(e.to_string())),
    }
}

/// The SPIFFE ID in a certificate's single URI SAN.
pub(crate) fn spiffe_id_of(cert: &X509Certificate<'_>) -> Result<SpiffeId, CertificateError> {
    let sans = cert
        .subject_alternative_name()
        .map_err(|e| CertificateError::Malformed(e.to_string()))?;
    let uris: Vec<&str> = sans
        .iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        })
        .collect();
    match uris.as_slice() {
        [uri] => Ok(SpiffeId::parse(uri)?),
        other => Err(CertificateError::UriSanCount(other.len())),
    }
}

pub(crate) fn spiffe_san(id: &SpiffeId) -> Result<SanType, CertificateError> {
    let uri = rcgen::string::Ia5String::try_from(id.to_string())?;
    Ok(SanType::URI(uri))
}

fn unix_seconds(timestamp: i64) -> SystemTime {
    let offset = Duration::from_secs(timestamp.unsigned_abs());
    let time = if timestamp >= 0 {
        UNIX_EPOCH.checked_add(offset)
    } else {
        UNIX_EPOCH.checked_sub(offset)
    };
    // Only absurd dates overflow; pinning them to the epoch makes such a certificate expired.
    time.unwrap_or(UNIX_EPOCH)
}

fn pem_error(what: &'static str) -> impl Fn(rustls_pki_types::pem::Error) -> CertificateError {
    move |err| match err {
        rustls_pki_types::pem::Error::NoItemsFound => CertificateError::MissingPem(what),
        other => CertificateError::Pem(other.to_string()),
    }
}

#[cfg(test)]
mod tests;
