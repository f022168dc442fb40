//! Where certificates come from: the [`CertificateIssuer`] trait the certificate store calls.
//!
//! The in-process [`CertificateAuthority`](crate::CertificateAuthority) implements it (local
//! mode, tests); a gRPC client to the controller's CA will implement it too.

use std::error::Error as StdError;
use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;

use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer};

use crate::SpiffeId;

/// The future an issuer returns: the issued chain, leaf first.
pub type IssueFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<CertificateDer<'static>>, IssueError>> + Send + 'a>>;

/// Signs CSRs for workload identities.
pub trait CertificateIssuer: Send + Sync + Debug {
    /// Asks for a certificate for `id` with the key in `csr` (PKCS#10 DER).
    fn issue<'a>(
        &'a self,
        id: &'a SpiffeId,
        csr: CertificateSigningRequestDer<'static>,
    ) -> IssueFuture<'a>;
}

/// Why an issuer produced no certificate.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", if *.refused { "certificate request refused" } else { "certificate issuer unavailable" })]
pub struct IssueError {
    refused: bool,
    /// A refusal that depends on what the issuer knows, which may catch up (a node asking for
    /// the identity of a pod the control plane has not seen yet).
    for_now: bool,
    source: Box<dyn StdError + Send + Sync>,
}

impl IssueError {
    /// The issuer answered and said no (bad request, identity not allowed, ...).
    pub fn refused(source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self {
            refused: true,
            for_now: false,
            source: source.into(),
        }
    }

    /// The issuer said no because of what it knows now (the caller does not, yet, host the
    /// identity); the same request may succeed once its view catches up.
    pub fn refused_for_now(source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self {
            refused: true,
            for_now: true,
            source: source.into(),
        }
    }

    /// The issuer could not be reached or failed internally; worth retrying.
    pub fn unavailable(source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self {
            refused: false,
            for_now: false,
            source: source.into(),
        }
    }

    /// Whether asking again later may succeed: the issuer was unavailable, or refused only
    /// for now.
    pub fn may_succeed_later(&self) -> bool {
        !self.refused || self.for_now
    }

    /// Whether the issuer refused the request (as opposed to being unavailable).
    pub fn is_refused(&self) -> bool {
        self.refused
    }
}
