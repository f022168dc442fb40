//! Workload certificates of the pods on this node.
//!
//! Two issuers feed the same [`CertStore`]: the controller's CA over gRPC ([`GrpcIssuer`],
//! `--controller`), whose answers also carry the trust bundle, or — for tests and `--config`
//! runs without a controller — CA material loaded from `--ca-dir` (Istio `cacerts` names)
//! signing in-process. Keys are made here and never leave.
//!
//! Invariant 2: a certificate is requested only for the identity of a pod enrolled on this
//! node ([`PodCertificates::acquire`]) and forgotten when the last such pod leaves
//! ([`PodCertificates::release`]). The HBONE client TLS refuses any other source identity.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use ambit_api::GrpcIssuer;
use ambit_hbone::ClientTlsProvider;
use ambit_identity::{
    CaMaterial, CaOptions, CertHandle, CertStore, CertStoreError, CertStoreOptions,
    CertificateAuthority, CertificateIssuer, IssueError, IssueFuture, SpiffeId, TrustBundle, tls,
};
use rustls_pki_types::CertificateSigningRequestDer;

/// Why the CA directory could not be used.
#[derive(Debug, thiserror::Error)]
#[error("CA directory {dir}: {message}")]
pub struct CaDirError {
    dir: String,
    message: String,
}

/// Certificates of the identities of this node's enrolled pods, reference-counted by pod.
#[derive(Debug)]
pub struct PodCertificates {
    store: CertStore,
    bundle: Arc<SharedBundle>,
    holders: Mutex<HashMap<SpiffeId, usize>>,
}

/// How often [`PodCertificates::ready`] looks again after a failure the store will retry.
const CERT_RECHECK: Duration = Duration::from_millis(200);

/// No certificate for a pod.
#[derive(Debug, thiserror::Error)]
pub enum CertWaitError {
    /// The store failed (the CA refused, or was unreachable until the deadline).
    #[error(transparent)]
    Failed(CertStoreError),
    /// Nothing came back in time.
    #[error("no certificate within {0:?}")]
    Timeout(Duration),
}

/// TLS cannot be set up for a pod.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// The controller's CA has not answered yet, so nothing can be verified.
    #[error("no trust bundle from the CA yet")]
    NoTrustBundle,
    /// rustls refused the configuration.
    #[error(transparent)]
    Tls(#[from] tls::TlsConfigError),
}

/// The mesh trust bundle; replaced with each answer of the controller's CA (its roots may
/// change during a rotation).
#[derive(Debug, Default)]
struct SharedBundle(RwLock<Option<TrustBundle>>);

/// The controller's CA, remembering the trust bundle each answer carries.
#[derive(Debug)]
struct ControllerIssuer {
    grpc: GrpcIssuer,
    trust_domain: String,
    bundle: Arc<SharedBundle>,
}

impl PodCertificates {
    /// Certificates issued by `issuer` (the in-process CA of `--ca-dir`), trusted through
    /// `bundle`. Must be called inside a tokio runtime.
    pub fn new(issuer: Arc<dyn CertificateIssuer>, bundle: TrustBundle) -> Self {
        Self {
            store: CertStore::new(issuer, CertStoreOptions::default()),
            bundle: Arc::new(SharedBundle(RwLock::new(Some(bundle)))),
            holders: Mutex::new(HashMap::new()),
        }
    }

    /// Certificates from the controller's CA; the trust bundle is the one its answers carry,
    /// for `trust_domain`. Must be called inside a tokio runtime.
    pub fn from_controller(grpc: GrpcIssuer, trust_domain: &str) -> Self {
        let bundle = Arc::new(SharedBundle::default());
        let issuer = ControllerIssuer {
            grpc,
            trust_domain: trust_domain.to_owned(),
            bundle: bundle.clone(),
        };
        Self {
            store: CertStore::new(Arc::new(issuer), CertStoreOptions::default()),
            bundle,
            holders: Mutex::new(HashMap::new()),
        }
    }

    /// The mesh trust bundle, once known.
    pub fn bundle(&self) -> Option<TrustBundle> {
        self.bundle.current()
    }

    /// Registers one more pod with identity `id` and returns the handle TLS reads the current
    /// certificate from; the first pod of an identity starts fetching its certificate.
    pub fn acquire(&self, id: &SpiffeId) -> Result<CertHandle, CertStoreError> {
        let handle = self.store.source(id)?;
        *self.holders().entry(id.clone()).or_default() += 1;
        Ok(handle)
    }

    /// Waits up to `deadline` for `id`'s certificate (after [`acquire`](Self::acquire)).
    ///
    /// A pod is enrolled as soon as its sandbox exists, often before the controller has seen
    /// it, so the CA may refuse "for now"; the store retries with backoff and this keeps
    /// waiting. A definite refusal (bad token, invalid request) ends the wait at once. On
    /// timeout the last error is returned.
    pub async fn ready(&self, id: &SpiffeId, deadline: Duration) -> Result<(), CertWaitError> {
        let mut last = None;
        let waited = tokio::time::timeout(deadline, async {
            loop {
                match self.store.certificate(id).await {
                    Ok(_) => return Ok(()),
                    Err(err)
                        if err
                            .issue_error()
                            .is_some_and(ambit_identity::IssueError::may_succeed_later) =>
                    {
                        last = Some(err);
                        tokio::time::sleep(CERT_RECHECK).await;
                    }
                    Err(err) => return Err(CertWaitError::Failed(err)),
                }
            }
        })
        .await;
        match waited {
            Ok(result) => result,
            Err(_) => Err(match last {
                Some(err) => CertWaitError::Failed(err),
                None => CertWaitError::Timeout(deadline),
            }),
        }
    }

    /// One pod with identity `id` left; the last one makes the store forget the identity.
    pub fn release(&self, id: &SpiffeId) {
        let mut holders = self.holders();
        if let Some(count) = holders.get_mut(id) {
            *count -= 1;
            if *count == 0 {
                holders.remove(id);
                self.store.forget(id);
            }
        }
    }

    /// Identities with a certificate in the store (for the admin `/certs` page and tests).
    pub fn identities(&self) -> Vec<SpiffeId> {
        self.store.identities()
    }

    /// The HBONE server config for a pod with identity `id`.
    pub fn server_config(
        &self,
        handle: CertHandle,
    ) -> Result<Arc<rustls::ServerConfig>, TlsSetupError> {
        let bundle = self.bundle.current().ok_or(TlsSetupError::NoTrustBundle)?;
        Ok(tls::server_config(Arc::new(handle), &bundle)?)
    }

    fn holders(&self) -> std::sync::MutexGuard<'_, HashMap<SpiffeId, usize>> {
        self.holders.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ClientTlsProvider for PodCertificates {
    fn client_config(
        &self,
        source: &SpiffeId,
        expected: &[SpiffeId],
    ) -> Result<Arc<rustls::ClientConfig>, Box<dyn StdError + Send + Sync>> {
        if !self.holders().contains_key(source) {
            return Err(format!("{source} is not the identity of a pod on this node").into());
        }
        let handle = self.store.source(source)?;
        let bundle = self.bundle.current().ok_or(TlsSetupError::NoTrustBundle)?;
        Ok(tls::client_config(
            Arc::new(handle),
            &bundle,
            expected.to_vec(),
        )?)
    }
}

impl SharedBundle {
    fn current(&self) -> Option<TrustBundle> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn replace(&self, bundle: TrustBundle) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Some(bundle);
    }
}

impl CertificateIssuer for ControllerIssuer {
    fn issue<'a>(
        &'a self,
        id: &'a SpiffeId,
        csr: CertificateSigningRequestDer<'static>,
    ) -> IssueFuture<'a> {
        Box::pin(async move {
            let issued = self.grpc.create_certificate(id, &csr).await?;
            // A chain we could not verify peers with is no use: refuse the answer whole.
            let bundle = TrustBundle::from_pem(&self.trust_domain, &issued.trust_bundle_pem)
                .map_err(|err| IssueError::unavailable(format!("trust bundle: {err}")))?;
            self.bundle.replace(bundle);
            Ok(issued.chain)
        })
    }
}

/// Loads the CA from `dir` in Istio's `cacerts` layout: `root-cert.pem`, `ca-cert.pem`,
/// `ca-key.pem` and optionally `cert-chain.pem`.
pub fn load_ca(dir: &Path, trust_domain: &str) -> Result<CertificateAuthority, CaDirError> {
    let error = |message: String| CaDirError {
        dir: dir.display().to_string(),
        message,
    };
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name)).map_err(|err| error(format!("{name}: {err}")))
    };
    let cert_chain = match std::fs::read_to_string(dir.join("cert-chain.pem")) {
        Ok(chain) => Some(chain),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
        Err(err) => return Err(error(format!("cert-chain.pem: {err}"))),
    };
    let material = CaMaterial {
        root_cert: read("root-cert.pem")?,
        signing_cert: read("ca-cert.pem")?,
        signing_key: read("ca-key.pem")?,
        cert_chain,
    };
    CertificateAuthority::from_pem(trust_domain, &material, CaOptions::default())
        .map_err(|err| error(err.to_string()))
}

/// Writes `ca`'s material to `dir` in the layout [`load_ca`] reads (for tests and local mode).
pub fn write_ca(ca: &CertificateAuthority, dir: &Path) -> std::io::Result<()> {
    let material = ca.to_material();
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("root-cert.pem"), &material.root_cert)?;
    std::fs::write(dir.join("ca-cert.pem"), &material.signing_cert)?;
    std::fs::write(dir.join("ca-key.pem"), &material.signing_key)?;
    if let Some(chain) = &material.cert_chain {
        std::fs::write(dir.join("cert-chain.pem"), chain)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn certificates_only_for_enrolled_identities_and_forgotten_with_the_last_pod() {
        let dir = std::env::temp_dir().join(format!("ambit-ca-{}", std::process::id()));
        let ca = CertificateAuthority::generate("cluster.local", CaOptions::default()).unwrap();
        write_ca(&ca, &dir).unwrap();
        let loaded = Arc::new(load_ca(&dir, "cluster.local").unwrap());
        let bundle = loaded.trust_bundle().unwrap();
        let certs = PodCertificates::new(loaded, bundle);
        assert!(certs.bundle().is_some());
        let web = SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/web").unwrap();
        let other = SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/other").unwrap();

        assert!(
            certs
                .client_config(&web, std::slice::from_ref(&other))
                .is_err()
        );
        certs.acquire(&web).unwrap();
        certs.acquire(&web).unwrap();
        certs.ready(&web, Duration::from_secs(10)).await.unwrap();
        assert!(
            certs
                .client_config(&web, std::slice::from_ref(&other))
                .is_ok()
        );
        assert_eq!(certs.identities(), vec![web.clone()]);

        certs.release(&web);
        assert_eq!(certs.identities(), vec![web.clone()], "one pod is left");
        certs.release(&web);
        assert!(certs.identities().is_empty());
        assert!(certs.client_config(&web, &[other]).is_err());

        std::fs::remove_file(dir.join("ca-key.pem")).unwrap();
        let err = load_ca(&dir, "cluster.local").unwrap_err();
        assert!(err.to_string().contains("ca-key.pem"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
