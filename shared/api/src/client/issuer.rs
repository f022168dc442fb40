//! [`GrpcIssuer`]: the controller's CA as an [`ambit_identity::CertificateIssuer`].

use std::fmt;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use ambit_identity::cert::certificates_from_pem;
use ambit_identity::{CertificateIssuer, IssueError, IssueFuture, SpiffeId};
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer};
use tonic::Code;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

use super::endpoint::ControllerEndpoint;
use super::token::{InvalidToken, TokenSource};
use crate::proto::CreateCertificateRequest;
use crate::proto::certificate_service_client::CertificateServiceClient;

/// Asks the controller's CA for certificates, authenticated with a bearer token.
#[derive(Clone)]
pub struct GrpcIssuer {
    client: CertificateServiceClient<Channel>,
    token: TokenSource,
    ttl: Option<Duration>,
    bundle: std::sync::Arc<Mutex<Option<String>>>,
}

/// A signed certificate chain and the trust bundle the CA returned with it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct IssuedCertificate {
    /// The chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// Every root the mesh trusts, PEM.
    pub trust_bundle_pem: String,
}

impl GrpcIssuer {
    /// An issuer for the CA at `controller` sending `token`. Connects lazily (and reconnects)
    /// on use; must be called inside a tokio runtime.
    pub fn new(controller: &ControllerEndpoint, token: &str) -> Result<Self, InvalidToken> {
        Ok(Self::with_token_source(
            controller,
            TokenSource::fixed(token)?,
        ))
    }

    /// An issuer for the CA at `controller` that reads its token from `path` before every request, so
    /// a rotated token (a projected service-account token, a renewed bootstrap token) is used
    /// without a restart. A missing, empty or unusable file fails that request as refused.
    pub fn with_token_file(controller: &ControllerEndpoint, path: impl Into<PathBuf>) -> Self {
        Self::with_token_source(controller, TokenSource::File(path.into()))
    }

    fn with_token_source(controller: &ControllerEndpoint, token: TokenSource) -> Self {
        let endpoint = controller
            .tonic_endpoint()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30));
        let channel = controller.connect_lazy(&endpoint);
        Self {
            client: CertificateServiceClient::new(channel),
            token,
            ttl: None,
            bundle: Default::default(),
        }
    }

    /// Asks for certificates of this lifetime instead of the CA's default.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// The trust bundle from the last successful request.
    pub fn trust_bundle_pem(&self) -> Option<String> {
        self.bundle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Sends `csr` for `id`; returns the chain and the trust bundle.
    pub async fn create_certificate(
        &self,
        id: &SpiffeId,
        csr: &CertificateSigningRequestDer<'_>,
    ) -> Result<IssuedCertificate, IssueError> {
        let csr_pem = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", csr.as_ref()));
        let mut request = tonic::Request::new(CreateCertificateRequest {
            csr_pem,
            identity: id.to_string(),
            ttl_seconds: self.ttl.map(|ttl| ttl.as_secs()),
        });
        let authorization = self.authorization().await?;
        request
            .metadata_mut()
            .insert("authorization", authorization);
        let response = self
            .client
            .clone()
            .create_certificate(request)
            .await
            .map_err(issue_error)?
            .into_inner();
        let chain = response
            .cert_chain_pem
            .iter()
            .map(|pem| certificates_from_pem(pem))
            .collect::<Result<Vec<_>, _>>()
            .map_err(IssueError::unavailable)?
            .into_iter()
            .flatten()
            .collect::<Vec<_>>();
        if chain.is_empty() {
            return Err(IssueError::unavailable("the CA returned an empty chain"));
        }
        *self.bundle.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(response.trust_bundle_pem.clone());
        Ok(IssuedCertificate {
            chain,
            trust_bundle_pem: response.trust_bundle_pem,
        })
    }
}

impl GrpcIssuer {
    async fn authorization(&self) -> Result<MetadataValue<Ascii>, IssueError> {
        self.token
            .authorization()
            .await
            .map_err(IssueError::refused)
    }
}

impl CertificateIssuer for GrpcIssuer {
    fn issue<'a>(
        &'a self,
        id: &'a SpiffeId,
        csr: CertificateSigningRequestDer<'static>,
    ) -> IssueFuture<'a> {
        Box::pin(async move {
            let issued = self.create_certificate(id, &csr).await?;
            Ok(issued.chain)
        })
    }
}

impl fmt::Debug for GrpcIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the token.
        f.debug_struct("GrpcIssuer")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// A CA answer that says no is a refusal; anything else may succeed on retry.
fn issue_error(status: tonic::Status) -> IssueError {
    let message = format!("{:?}: {}", status.code(), status.message());
    match status.code() {
        Code::Unauthenticated | Code::InvalidArgument => IssueError::refused(message),
        // The CA decides from its view of pods and nodes, which may lag behind the pod that
        // is enrolling: asking again may succeed.
        Code::PermissionDenied => IssueError::refused_for_now(message),
        _ => IssueError::unavailable(message),
    }
}
