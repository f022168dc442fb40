//! The CA service: authenticate the caller, authorize the identity, sign the CSR.
//!
//! The checks and signing are tonic-free ([`CaServer::sign`]); [`into_status`] is the one
//! place a refusal becomes a gRPC status.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ambit_identity::cert::certificates_to_pem;
use ambit_identity::{CertificateAuthority, SpiffeId, TrustBundle};
use arc_swap::ArcSwap;
use rustls_pki_types::CertificateSigningRequestDer;
use tonic::{Request, Response, Status};

use super::auth::{Authenticator, Authorizer};
use crate::proto::certificate_service_server::{CertificateService, CertificateServiceServer};
use crate::proto::{CreateCertificateRequest, CreateCertificateResponse};

/// The PEM label of a PKCS#10 CSR.
const CSR_PEM_TAG: &str = "CERTIFICATE REQUEST";

/// The mesh CA served over gRPC. Cheap to clone.
#[derive(Clone, Debug)]
pub struct CaServer {
    inner: Arc<Inner>,
}

/// The tonic service of a [`CaServer`].
#[derive(Clone, Debug)]
pub struct CaService {
    inner: Arc<Inner>,
}

/// Counters of a [`CaServer`] since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CaStats {
    /// Certificates signed.
    pub signed: u64,
    /// Requests without a valid token.
    pub unauthenticated: u64,
    /// Requests for an identity the caller may not hold.
    pub denied: u64,
    /// Malformed requests (CSR, identity, TTL).
    pub invalid: u64,
    /// Requests that failed because a dependency (token check) was unavailable.
    pub unavailable: u64,
}

struct Inner {
    signer: ArcSwap<Signer>,
    authenticator: Arc<dyn Authenticator>,
    authorizer: Arc<dyn Authorizer>,
    signed: AtomicU64,
    unauthenticated: AtomicU64,
    denied: AtomicU64,
    invalid: AtomicU64,
    unavailable: AtomicU64,
}

struct Signer {
    ca: Arc<CertificateAuthority>,
    bundle_pem: String,
}

/// A signed certificate as returned to the caller.
#[derive(Debug)]
struct Issued {
    chain_pem: Vec<String>,
    bundle_pem: String,
}

/// Why the CA did not sign.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
struct Refusal {
    kind: RefusalKind,
    message: String,
}

#[derive(Debug, Clone, Copy)]
enum RefusalKind {
    Unauthenticated,
    Denied,
    Invalid,
    Unavailable,
}

impl CaServer {
    /// A CA signing with `ca` and handing out `bundle` (which may hold more roots than `ca`'s,
    /// during a rotation).
    pub fn new(
        ca: Arc<CertificateAuthority>,
        bundle: &TrustBundle,
        authenticator: Arc<dyn Authenticator>,
        authorizer: Arc<dyn Authorizer>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                signer: ArcSwap::from_pointee(Signer {
                    ca,
                    bundle_pem: bundle.to_pem(),
                }),
                authenticator,
                authorizer,
                signed: AtomicU64::new(0),
                unauthenticated: AtomicU64::new(0),
                denied: AtomicU64::new(0),
                invalid: AtomicU64::new(0),
                unavailable: AtomicU64::new(0),
            }),
        }
    }

    /// Signs with `ca` and hands out `bundle` from now on (root rotation).
    pub fn rotate(&self, ca: Arc<CertificateAuthority>, bundle: &TrustBundle) {
        self.inner.signer.store(Arc::new(Signer {
            ca,
            bundle_pem: bundle.to_pem(),
        }));
    }

    /// The tonic service to serve.
    pub fn service(&self) -> CertificateServiceServer<CaService> {
        CertificateServiceServer::new(CaService {
            inner: self.inner.clone(),
        })
    }

    /// Counters since start.
    pub fn stats(&self) -> CaStats {
        let i = &self.inner;
        CaStats {
            signed: i.signed.load(Ordering::Relaxed),
            unauthenticated: i.unauthenticated.load(Ordering::Relaxed),
            denied: i.denied.load(Ordering::Relaxed),
            invalid: i.invalid.load(Ordering::Relaxed),
            unavailable: i.unavailable.load(Ordering::Relaxed),
        }
    }
}

impl Inner {
    async fn sign(
        &self,
        token: Option<&str>,
        request: &CreateCertificateRequest,
    ) -> Result<Issued, Refusal> {
        let token = token.ok_or_else(|| {
            Refusal::new(
                RefusalKind::Unauthenticated,
                "missing `authorization: Bearer <token>` metadata",
            )
        })?;
        let caller = self
            .authenticator
            .authenticate(token)
            .await
            .map_err(|err| {
                let kind = if err.is_unavailable() {
                    RefusalKind::Unavailable
                } else {
                    RefusalKind::Unauthenticated
                };
                Refusal::new(kind, format!("token not accepted: {err}"))
            })?;
        let requested = SpiffeId::parse(&request.identity).map_err(|err| {
            Refusal::new(
                RefusalKind::Invalid,
                format!("identity {:?}: {err}", request.identity),
            )
        })?;
        self.authorizer
            .authorize(&caller, &requested)
            .map_err(|denied| {
                Refusal::new(
                    RefusalKind::Denied,
                    format!("{caller} may not hold {requested}: {denied}"),
                )
            })?;
        let csr = parse_csr(&request.csr_pem)?;
        let signer = self.signer.load_full();
        let ttl = match request.ttl_seconds {
            Some(seconds) => Duration::from_secs(seconds),
            None => signer.ca.options().default_ttl,
        };
        let chain = signer
            .ca
            .sign_csr(&csr, &requested, ttl)
            .map_err(|err| Refusal::new(RefusalKind::Invalid, format!("cannot sign: {err}")))?;
        tracing::info!(%caller, id = %requested, ttl_secs = ttl.as_secs(), "signed certificate");
        Ok(Issued {
            chain_pem: chain
                .iter()
                .map(|cert| certificates_to_pem(std::slice::from_ref(cert)))
                .collect(),
            bundle_pem: signer.bundle_pem.clone(),
        })
    }

    fn count(&self, result: &Result<Issued, Refusal>) {
        let counter = match result {
            Ok(_) => &self.signed,
            Err(refusal) => match refusal.kind {
                RefusalKind::Unauthenticated => &self.unauthenticated,
                RefusalKind::Denied => &self.denied,
                RefusalKind::Invalid => &self.invalid,
                RefusalKind::Unavailable => &self.unavailable,
            },
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

#[tonic::async_trait]
impl CertificateService for CaService {
    async fn create_certificate(
        &self,
        request: Request<CreateCertificateRequest>,
    ) -> Result<Response<CreateCertificateResponse>, Status> {
        let token = bearer_token(request.metadata());
        let result = self.inner.sign(token, request.get_ref()).await;
        self.inner.count(&result);
        match result {
            Ok(issued) => Ok(Response::new(CreateCertificateResponse {
                cert_chain_pem: issued.chain_pem,
                trust_bundle_pem: issued.bundle_pem,
            })),
            Err(refusal) => {
                tracing::warn!(
                    identity = %request.get_ref().identity,
                    reason = %refusal,
                    "refused certificate request"
                );
                Err(into_status(refusal))
            }
        }
    }
}

impl Refusal {
    fn new(kind: RefusalKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaServer")
            .field("ca", &self.signer.load().ca)
            .field("authenticator", &self.authenticator)
            .field("authorizer", &self.authorizer)
            .finish_non_exhaustive()
    }
}

/// The one place a CA refusal becomes a gRPC status.
fn into_status(refusal: Refusal) -> Status {
    match refusal.kind {
        RefusalKind::Unauthenticated => Status::unauthenticated(refusal.message),
        RefusalKind::Denied => Status::permission_denied(refusal.message),
        RefusalKind::Invalid => Status::invalid_argument(refusal.message),
        RefusalKind::Unavailable => Status::unavailable(refusal.message),
    }
}

/// The token of an `authorization: Bearer <token>` header, if well formed.
pub(super) fn bearer_token(metadata: &tonic::metadata::MetadataMap) -> Option<&str> {
    let value = metadata.get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn parse_csr(csr_pem: &str) -> Result<CertificateSigningRequestDer<'static>, Refusal> {
    let block = pem::parse(csr_pem)
        .map_err(|err| Refusal::new(RefusalKind::Invalid, format!("CSR is not PEM: {err}")))?;
    if block.tag() != CSR_PEM_TAG {
        return Err(Refusal::new(
            RefusalKind::Invalid,
            format!(
                "expected a {CSR_PEM_TAG:?} PEM block, got {:?}",
                block.tag()
            ),
        ));
    }
    Ok(CertificateSigningRequestDer::from(block.into_contents()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_parsed_strictly() {
        let mut metadata = tonic::metadata::MetadataMap::new();
        assert_eq!(bearer_token(&metadata), None);
        metadata.insert("authorization", "Bearer abc".parse().unwrap());
        assert_eq!(bearer_token(&metadata), Some("abc"));
        metadata.insert("authorization", "bearer  abc ".parse().unwrap());
        assert_eq!(bearer_token(&metadata), Some("abc"));
        metadata.insert("authorization", "Basic abc".parse().unwrap());
        assert_eq!(bearer_token(&metadata), None);
        metadata.insert("authorization", "Bearer ".parse().unwrap());
        assert_eq!(bearer_token(&metadata), None);
    }

    #[test]
    fn csr_must_be_a_csr_pem() {
        assert!(parse_csr("garbage").is_err());
        let cert = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(parse_csr(cert).is_err());
    }
}
