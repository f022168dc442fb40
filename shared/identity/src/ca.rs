//! The mesh certificate authority: signs workload CSRs for SPIFFE identities of its trust domain.
//!
//! The CA never makes workload keys; it only signs CSRs after checking them strictly. Its own
//! material is a root plus a signing certificate and key, which is either the root itself or an
//! intermediate (the layout of Istio's `cacerts` secret).

use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};
use rustls_pki_types::{
    CertificateDer, CertificateSigningRequestDer, PrivateKeyDer, PrivatePkcs8KeyDer,
};
use time::OffsetDateTime;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::cert::{
    CertificateError, TrustBundle, WorkloadCertificate, WorkloadKey, certificates_from_pem,
    certificates_to_pem, parse_certificate, spiffe_san,
};
use crate::issuer::{CertificateIssuer, IssueError, IssueFuture};
use crate::spiffe::{SpiffeId, validate_trust_domain};

/// Leaf certificates start this long before they are signed, so that peers whose clocks lag
/// a little do not see them as not yet valid.
const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(60);
/// Serial numbers are 128 random bits (RFC 5280 allows up to 20 octets).
const SERIAL_LEN: usize = 16;

/// Why the CA refused a request or could not be set up. Use the predicates to tell refusals apart.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct CaError {
    reason: Reason,
}

#[derive(Debug, thiserror::Error)]
enum Reason {
    #[error("CSR cannot be parsed: {0}")]
    MalformedCsr(String),
    #[error("CSR signature does not verify")]
    BadCsrSignature,
    #[error("CSR key is not ECDSA P-256 ({0})")]
    UnsupportedKey(String),
    #[error("CSR asks for SAN {found}, only {requested} may be requested")]
    UnexpectedSan { requested: SpiffeId, found: String },
    #[error("identity {id} is not in the CA's trust domain {trust_domain:?}")]
    ForeignTrustDomain { id: SpiffeId, trust_domain: String },
    #[error("TTL {ttl:?} must be above zero and at most {max:?}")]
    BadTtl { ttl: Duration, max: Duration },
    #[error("validity window ends before it starts")]
    BadValidity,
    #[error("a server certificate needs at least one DNS name or IP address")]
    NoServerName,
    #[error("{0:?} is not a valid DNS name")]
    BadServerName(String),
    #[error("CA material is unusable: {0}")]
    Material(String),
    #[error(transparent)]
    Certificate(#[from] CertificateError),
    #[error("signing failed: {0}")]
    Signing(#[from] rcgen::Error),
}

/// Settings of a [`CertificateAuthority`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CaOptions {
    /// Lifetime of workload certificates issued without an explicit TTL (24 h).
    pub default_ttl: Duration,
    /// Longest TTL a caller may ask for (90 days, as Istio).
    pub max_ttl: Duration,
    /// Lifetime of a generated root (10 years).
    pub root_ttl: Duration,
}

/// The CA's certificates and key as PEM, in the layout of Istio's `cacerts` secret.
#[derive(Clone)]
pub struct CaMaterial {
    /// `root-cert.pem`: the root every workload trusts.
    pub root_cert: String,
    /// `ca-cert.pem`: the certificate that signs workload certificates (the root or an intermediate).
    pub signing_cert: String,
    /// `ca-key.pem`: the signing certificate's private key.
    pub signing_key: String,
    /// `cert-chain.pem`: the signing certificate up to the root; `None` means just the signing certificate.
    pub cert_chain: Option<String>,
}

/// An explicit validity window for a certificate (for tests: e.g. an already expired one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// First instant the certificate is valid.
    pub not_before: SystemTime,
    /// Last instant the certificate is valid.
    pub not_after: SystemTime,
}

/// The mesh CA for one trust domain.
pub struct CertificateAuthority {
    trust_domain: String,
    options: CaOptions,
    root: CertificateDer<'static>,
    /// Certificates between issued leaves and the root, signing certificate first; empty when
    /// the root signs directly.
    intermediates: Vec<CertificateDer<'static>>,
    signing_cert: CertificateDer<'static>,
    signer: Issuer<'static, KeyPair>,
}

impl CaError {
    /// The CSR's signature does not verify with its own public key.
    pub fn is_bad_csr_signature(&self) -> bool {
        matches!(self.reason, Reason::BadCsrSignature)
    }

    /// The CSR is not DER of a PKCS#10 request.
    pub fn is_malformed_csr(&self) -> bool {
        matches!(self.reason, Reason::MalformedCsr(_))
    }

    /// The CSR's key is not ECDSA P-256.
    pub fn is_unsupported_key(&self) -> bool {
        matches!(self.reason, Reason::UnsupportedKey(_))
    }

    /// The CSR asks for a SAN other than the requested identity.
    pub fn is_unexpected_san(&self) -> bool {
        matches!(self.reason, Reason::UnexpectedSan { .. })
    }

    /// The requested identity belongs to another trust domain.
    pub fn is_foreign_trust_domain(&self) -> bool {
        matches!(self.reason, Reason::ForeignTrustDomain { .. })
    }

    /// The TTL is zero or above the maximum, or the validity window is empty.
    pub fn is_bad_lifetime(&self) -> bool {
        matches!(self.reason, Reason::BadTtl { .. } | Reason::BadValidity)
    }

    /// The CA's own certificates or key could not be loaded or do not fit together.
    pub fn is_bad_material(&self) -> bool {
        matches!(self.reason, Reason::Material(_) | Reason::Certificate(_))
    }
}

impl From<Reason> for CaError {
    fn from(reason: Reason) -> Self {
        Self { reason }
    }
}

impl From<CertificateError> for CaError {
    fn from(err: CertificateError) -> Self {
        Reason::Certificate(err).into()
    }
}

impl From<rcgen::Error> for CaError {
    fn from(err: rcgen::Error) -> Self {
        Reason::Signing(err).into()
    }
}

impl Default for CaOptions {
    fn default() -> Self {
        Self {
            default_ttl: Duration::from_secs(24 * 3600),
            max_ttl: Duration::from_secs(90 * 24 * 3600),
            root_ttl: Duration::from_secs(10 * 365 * 24 * 3600),
        }
    }
}

impl fmt::Debug for CaMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The signing key stays out of logs.
        f.debug_struct("CaMaterial")
            .field("has_cert_chain", &self.cert_chain.is_some())
            .finish_non_exhaustive()
    }
}

impl Validity {
    /// The window `[now - allowance, now + ttl]`.
    pub fn starting_now(ttl: Duration) -> Self {
        let now = SystemTime::now();
        Self {
            not_before: now.checked_sub(CLOCK_SKEW_ALLOWANCE).unwrap_or(now),
            not_after: now + ttl,
        }
    }
}

impl CertificateAuthority {
    /// Creates a CA with a fresh self-signed ECDSA P-256 root that signs directly.
    pub fn generate(trust_domain: &str, options: CaOptions) -> Result<Self, CaError> {
        validate_trust_domain(trust_domain).map_err(CertificateError::from)?;
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = ca_params(trust_domain, "Ambit root CA", None);
        let validity = Validity::starting_now(options.root_ttl);
        set_validity(&mut params, validity);
        let root = params.self_signed(&key)?.der().clone();
        let signer = Issuer::new(params, key);
        Ok(Self {
            trust_domain: trust_domain.to_owned(),
            options,
            signing_cert: root.clone(),
            root,
            intermediates: Vec::new(),
            signer,
        })
    }

    /// Loads a CA from PEM material, checking that the signing key fits the signing
    /// certificate, that it may sign certificates, and that the chain leads to the root.
    pub fn from_pem(
        trust_domain: &str,
        material: &CaMaterial,
        options: CaOptions,
    ) -> Result<Self, CaError> {
        validate_trust_domain(trust_domain).map_err(CertificateError::from)?;
        let root = single_certificate(&material.root_cert, "root certificate")?;
        let signing_cert = single_certificate(&material.signing_cert, "signing certificate")?;
        let key = KeyPair::from_pem(&material.signing_key)
            .map_err(|e| Reason::Material(format!("signing key: {e}")))?;

        // Istio's cert-chain.pem may or may not end with the root; leaves never carry it.
        let intermediates = match &material.cert_chain {
            Some(pem) => certificates_from_pem(pem)?
                .into_iter()
                .filter(|c| *c != root)
                .collect(),
            None if signing_cert == root => Vec::new(),
            None => vec![signing_cert.clone()],
        };
        if signing_cert != root && intermediates.first() != Some(&signing_cert) {
            return Err(Reason::Material(
                "cert-chain must start with the signing certificate".to_owned(),
            )
            .into());
        }
        check_chain(&root, &intermediates)?;
        check_signing_cert(&signing_cert, &key)?;

        let signer = Issuer::from_ca_cert_der(&signing_cert, key)?;
        Ok(Self {
            trust_domain: trust_domain.to_owned(),
            options,
            root,
            intermediates,
            signing_cert,
            signer,
        })
    }

    /// A new CA whose signing certificate is an intermediate signed by this CA.
    pub fn new_intermediate(&self, ttl: Duration) -> Result<Self, CaError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = ca_params(&self.trust_domain, "Ambit intermediate CA", Some(0));
        set_validity(&mut params, Validity::starting_now(ttl));
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.signer)?.der().clone();
        let mut intermediates = vec![cert.clone()];
        intermediates.extend(self.intermediates.iter().cloned());
        Ok(Self {
            trust_domain: self.trust_domain.clone(),
            options: self.options.clone(),
            root: self.root.clone(),
            intermediates,
            signing_cert: cert,
            signer: Issuer::new(params, key),
        })
    }

    /// The trust domain this CA issues identities for.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The CA's settings.
    pub fn options(&self) -> &CaOptions {
        &self.options
    }

    /// The root certificate.
    pub fn root(&self) -> &CertificateDer<'static> {
        &self.root
    }

    /// The root as PEM (`root-cert.pem`).
    pub fn root_pem(&self) -> String {
        certificates_to_pem(std::slice::from_ref(&self.root))
    }

    /// The certificates that issued leaves carry after the leaf, as PEM (empty without intermediates).
    pub fn chain_pem(&self) -> String {
        certificates_to_pem(&self.intermediates)
    }

    /// A trust bundle holding just this CA's root.
    pub fn trust_bundle(&self) -> Result<TrustBundle, CaError> {
        Ok(TrustBundle::new(
            &self.trust_domain,
            vec![self.root.clone()],
        )?)
    }

    /// Everything needed to load this CA again with [`CertificateAuthority::from_pem`].
    pub fn to_material(&self) -> CaMaterial {
        let mut chain = self.intermediates.clone();
        chain.push(self.root.clone());
        CaMaterial {
            root_cert: self.root_pem(),
            signing_cert: certificates_to_pem(std::slice::from_ref(&self.signing_cert)),
            signing_key: self.signer.key().serialize_pem(),
            cert_chain: Some(certificates_to_pem(&chain)),
        }
    }

    /// Signs a workload CSR for `requested`, valid for `ttl` from now. Returns the chain
    /// to present: the leaf, then any intermediates.
    pub fn sign_csr(
        &self,
        csr: &CertificateSigningRequestDer<'_>,
        requested: &SpiffeId,
        ttl: Duration,
    ) -> Result<Vec<CertificateDer<'static>>, CaError> {
        if ttl.is_zero() || ttl > self.options.max_ttl {
            return Err(Reason::BadTtl {
                ttl,
                max: self.options.max_ttl,
            }
            .into());
        }
        self.sign_csr_with_validity(csr, requested, Validity::starting_now(ttl))
    }

    /// Like [`CertificateAuthority::sign_csr`] with an explicit window, which is not bounded
    /// by the maximum TTL and may lie in the past (to make expired certificates for tests).
    pub fn sign_csr_with_validity(
        &self,
        csr: &CertificateSigningRequestDer<'_>,
        requested: &SpiffeId,
        validity: Validity,
    ) -> Result<Vec<CertificateDer<'static>>, CaError> {
        if requested.trust_domain() != self.trust_domain {
            return Err(Reason::ForeignTrustDomain {
                id: requested.clone(),
                trust_domain: self.trust_domain.clone(),
            }
            .into());
        }
        if validity.not_after <= validity.not_before {
            return Err(Reason::BadValidity.into());
        }
        let public_key = checked_csr_key(csr, requested)?;

        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![spiffe_san(requested)?];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, validity);
        let leaf = params.signed_by(&public_key, &self.signer)?.der().clone();

        let mut chain = Vec::with_capacity(1 + self.intermediates.len());
        chain.push(leaf);
        chain.extend(self.intermediates.iter().cloned());
        tracing::debug!(id = %requested, "signed workload certificate");
        Ok(chain)
    }

    /// Makes a key pair and a CSR for `id` and signs it in-process: for local mode and tests.
    pub fn issue_workload(
        &self,
        id: &SpiffeId,
        ttl: Duration,
    ) -> Result<WorkloadCertificate, CaError> {
        let key = WorkloadKey::generate()?;
        let chain = self.sign_csr(&key.csr_der(id)?, id, ttl)?;
        Ok(WorkloadCertificate::for_identity(
            id,
            chain,
            key.private_key_der(),
        )?)
    }

    /// Like [`CertificateAuthority::issue_workload`] with an explicit validity window.
    pub fn issue_workload_with_validity(
        &self,
        id: &SpiffeId,
        validity: Validity,
    ) -> Result<WorkloadCertificate, CaError> {
        let key = WorkloadKey::generate()?;
        let chain = self.sign_csr_with_validity(&key.csr_der(id)?, id, validity)?;
        Ok(WorkloadCertificate::for_identity(
            id,
            chain,
            key.private_key_der(),
        )?)
    }
}

/// A TLS server certificate the CA issued for itself (the controller's gRPC port): DNS and IP
/// names instead of a SPIFFE ID, and a key made in-process.
pub struct ServerCertificate {
    /// The leaf, then any intermediates (what the server presents).
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key (PKCS#8).
    pub key: PrivateKeyDer<'static>,
}

impl fmt::Debug for ServerCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the key.
        f.debug_struct("ServerCertificate")
            .field("chain", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Makes a key and a server certificate (`serverAuth` only) for `dns_names` and `ips`,
    /// valid for `validity`; returns the chain to present and the key.
    pub fn issue_server_certificate(
        &self,
        dns_names: &[String],
        ips: &[IpAddr],
        validity: Validity,
    ) -> Result<ServerCertificate, CaError> {
        if dns_names.is_empty() && ips.is_empty() {
            return Err(Reason::NoServerName.into());
        }
        if validity.not_after <= validity.not_before {
            return Err(Reason::BadValidity.into());
        }
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, self.trust_domain.as_str());
        if let Some(first) = dns_names.first() {
            name.push(DnType::CommonName, first.as_str());
        }
        params.distinguished_name = name;
        let mut sans = Vec::with_capacity(dns_names.len() + ips.len());
        for dns in dns_names {
            let ia5 = rcgen::string::Ia5String::try_from(dns.as_str())
                .map_err(|_| Reason::BadServerName(dns.clone()))?;
            sans.push(SanType::DnsName(ia5));
        }
        sans.extend(ips.iter().copied().map(SanType::IpAddress));
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, validity);
        let leaf = params.signed_by(&key, &self.signer)?.der().clone();
        let mut chain = Vec::with_capacity(1 + self.intermediates.len());
        chain.push(leaf);
        chain.extend(self.intermediates.iter().cloned());
        Ok(ServerCertificate {
            chain,
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        })
    }
}

impl CertificateIssuer for CertificateAuthority {
    fn issue<'a>(
        &'a self,
        id: &'a SpiffeId,
        csr: CertificateSigningRequestDer<'static>,
    ) -> IssueFuture<'a> {
        let result = self
            .sign_csr(&csr, id, self.options.default_ttl)
            .map_err(IssueError::refused);
        Box::pin(std::future::ready(result))
    }
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("trust_domain", &self.trust_domain)
            .field("intermediates", &self.intermediates.len())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// Parses and checks a CSR; returns its public key if it may be certified for `requested`.
fn checked_csr_key(
    csr: &CertificateSigningRequestDer<'_>,
    requested: &SpiffeId,
) -> Result<rcgen::SubjectPublicKeyInfo, CaError> {
    let request = match X509CertificationRequest::from_der(csr.as_ref()) {
        Ok(([], request)) => request,
        Ok(_) => return Err(Reason::MalformedCsr("trailing bytes".to_owned()).into()),
        Err(e) => return Err(Reason::MalformedCsr(e.to_string()).into()),
    };
    let spki = &request.certification_request_info.subject_pki;
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok());
    if spki.algorithm.algorithm != OID_KEY_TYPE_EC_PUBLIC_KEY || curve != Some(OID_EC_P256) {
        return Err(Reason::UnsupportedKey(format!(
            "algorithm {}, parameters {:?}",
            spki.algorithm.algorithm,
            curve.map(|c| c.to_id_string())
        ))
        .into());
    }
    request
        .verify_signature()
        .map_err(|_| Reason::BadCsrSignature)?;

    let wanted = requested.to_string();
    for extension in request.requested_extensions().into_iter().flatten() {
        match extension {
            ParsedExtension::SubjectAlternativeName(san) => {
                for name in &san.general_names {
                    if !matches!(name, GeneralName::URI(uri) if *uri == wanted) {
                        return Err(Reason::UnexpectedSan {
                            requested: requested.clone(),
                            found: name.to_string(),
                        }
                        .into());
                    }
                }
            }
            ParsedExtension::ParseError { error } => {
                return Err(Reason::MalformedCsr(format!("requested extension: {error}")).into());
            }
            // Key usages, basic constraints and the like are the CA's choice, not the
            // requester's: the leaf is built from scratch, so other requests are ignored.
            _ => {}
        }
    }
    Ok(rcgen::SubjectPublicKeyInfo::from_der(spki.raw)?)
}

fn ca_params(trust_domain: &str, common_name: &str, path_len: Option<u8>) -> CertificateParams {
    let mut params = CertificateParams::default();
    // A random tag keeps the names of distinct CAs distinct: chain building matches issuers by
    // name, and two roots with one name make a foreign chain look like a bad signature instead
    // of an unknown issuer.
    let tag: u32 = rand::random();
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, trust_domain);
    name.push(DnType::CommonName, format!("{common_name} {tag:08x}"));
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(match path_len {
        Some(len) => BasicConstraints::Constrained(len),
        None => BasicConstraints::Unconstrained,
    });
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(random_serial());
    params
}

fn set_validity(params: &mut CertificateParams, validity: Validity) {
    params.not_before = OffsetDateTime::from(validity.not_before);
    params.not_after = OffsetDateTime::from(validity.not_after);
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; SERIAL_LEN] = rand::random();
    // Positive and minimally encoded: top bit clear, first octet never zero.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

fn single_certificate(pem: &str, what: &str) -> Result<CertificateDer<'static>, CaError> {
    let mut certs = certificates_from_pem(pem)?;
    if certs.len() != 1 {
        return Err(Reason::Material(format!(
            "{what} PEM holds {} certificates, expected one",
            certs.len()
        ))
        .into());
    }
    Ok(certs.remove(0))
}

/// Each certificate must be a CA signed by the next one, the last by the root, the root by itself.
fn check_chain(
    root: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
) -> Result<(), CaError> {
    let root_cert = parse_certificate(root)?;
    if !root_cert.is_ca() {
        return Err(Reason::Material("root certificate is not a CA".to_owned()).into());
    }
    verify_signed_by(&root_cert, &root_cert, "root is not self-signed")?;
    let parsed = intermediates
        .iter()
        .map(parse_certificate)
        .collect::<Result<Vec<_>, _>>()?;
    for (index, cert) in parsed.iter().enumerate() {
        if !cert.is_ca() {
            return Err(Reason::Material(format!("chain certificate {index} is not a CA")).into());
        }
        let issuer = parsed.get(index + 1).unwrap_or(&root_cert);
        verify_signed_by(cert, issuer, "chain does not lead to the root")?;
    }
    Ok(())
}

fn verify_signed_by(
    cert: &X509Certificate<'_>,
    issuer: &X509Certificate<'_>,
    failure: &str,
) -> Result<(), CaError> {
    cert.verify_signature(Some(issuer.public_key()))
        .map_err(|e| Reason::Material(format!("{failure}: {e}")).into())
}

fn check_signing_cert(cert: &CertificateDer<'_>, key: &KeyPair) -> Result<(), CaError> {
    let cert = parse_certificate(cert)?;
    if !cert.is_ca() {
        return Err(Reason::Material("signing certificate is not a CA".to_owned()).into());
    }
    let may_sign = cert
        .key_usage()
        .map_err(|e| Reason::Material(e.to_string()))?
        .is_none_or(|usage| usage.value.key_cert_sign());
    if !may_sign {
        return Err(Reason::Material("signing certificate lacks keyCertSign".to_owned()).into());
    }
    if cert.public_key().subject_public_key.data.as_ref() != key.der_bytes() {
        return Err(Reason::Material(
            "signing key does not match the signing certificate".to_owned(),
        )
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
