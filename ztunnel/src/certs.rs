//! Workload certificates of the pods on this node.
//!
//! Local mode stands in for the controller's CA (issue 5): ztunnel loads the CA material from
//! `--ca-dir` (Istio `cacerts` names) and signs its own pods' CSRs in-process, through the same
//! [`CertStore`] that will later talk to the controller. Keys are made here and never leave.
//!
//! Invariant 2: a certificate is requested only for the identity of a pod enrolled on this
//! node ([`PodCertificates::acquire`]) and forgotten when the last such pod leaves
//! ([`PodCertificates::release`]). The HBONE client TLS refuses any other source identity.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use ambit_hbone::ClientTlsProvider;
use ambit_identity::{
    CaMaterial, CaOptions, CertHandle, CertStore, CertStoreError, CertStoreOptions,
    CertificateAuthority, SpiffeId, TrustBundle, tls,
};

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
    bundle: TrustBundle,
    holders: Mutex<HashMap<SpiffeId, usize>>,
}

impl PodCertificates {
    /// Certificates issued by `issuer` (here the in-process CA), trusted through `bundle`.
    /// Must be called inside a tokio runtime.
    pub fn new(issuer: Arc<CertificateAuthority>, bundle: TrustBundle) -> Self {
        Self {
            store: CertStore::new(issuer, CertStoreOptions::default()),
            bundle,
            holders: Mutex::new(HashMap::new()),
        }
    }

    /// The mesh trust bundle.
    pub fn bundle(&self) -> &TrustBundle {
        &self.bundle
    }

    /// Registers one more pod with identity `id` and returns the handle TLS reads the current
    /// certificate from; the first pod of an identity starts fetching its certificate.
    pub fn acquire(&self, id: &SpiffeId) -> Result<CertHandle, CertStoreError> {
        let handle = self.store.source(id)?;
        *self.holders().entry(id.clone()).or_default() += 1;
        Ok(handle)
    }

    /// Waits for `id`'s certificate (after [`acquire`](Self::acquire)).
    pub async fn ready(&self, id: &SpiffeId) -> Result<(), CertStoreError> {
        self.store.certificate(id).await.map(drop)
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
    ) -> Result<Arc<rustls::ServerConfig>, tls::TlsConfigError> {
        tls::server_config(Arc::new(handle), &self.bundle)
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
        Ok(tls::client_config(
            Arc::new(handle),
            &self.bundle,
            expected.to_vec(),
        )?)
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
        let web = SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/web").unwrap();
        let other = SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/other").unwrap();

        assert!(
            certs
                .client_config(&web, std::slice::from_ref(&other))
                .is_err()
        );
        certs.acquire(&web).unwrap();
        certs.acquire(&web).unwrap();
        certs.ready(&web).await.unwrap();
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
