//! The gRPC port's serving certificate, issued by the controller's own CA (as istiod does) for
//! the names proxies reach it by, and renewed at half life without touching the listener.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ambit_api::server::{ServerTls, ServerTlsError};
use ambit_identity::{CaError, CertificateAuthority, Validity};

/// Lifetime of a serving certificate.
pub const SERVING_CERT_TTL: Duration = Duration::from_secs(24 * 3600);
/// After a failed renewal, try again this soon (the old certificate is still valid for a while).
const RETRY_AFTER: Duration = Duration::from_secs(60);

/// Why the serving certificate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ServingCertError {
    /// The CA refused (no names, bad name) or failed.
    #[error("issuing the gRPC serving certificate: {0}")]
    Issue(#[from] CaError),
    /// rustls refused the result.
    #[error(transparent)]
    Tls(#[from] ServerTlsError),
}

/// The names the serving certificate carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServingNames {
    /// DNS names (`--grpc-dns-name`).
    pub dns: Vec<String>,
    /// IP addresses (`--grpc-ip-san`).
    pub ips: Vec<IpAddr>,
}

/// Keeps the serving certificate of a [`ServerTls`] fresh.
#[derive(Debug)]
pub struct ServingCertificate {
    ca: Arc<CertificateAuthority>,
    names: ServingNames,
    ttl: Duration,
    tls: ServerTls,
    /// The current certificate's validity window.
    validity: Validity,
}

impl ServingCertificate {
    /// Issues the first certificate, valid for `ttl`.
    pub fn issue(
        ca: Arc<CertificateAuthority>,
        names: ServingNames,
        ttl: Duration,
    ) -> Result<Self, ServingCertError> {
        let validity = Validity::starting_now(ttl);
        let cert = ca.issue_server_certificate(&names.dns, &names.ips, validity)?;
        let tls = ServerTls::new(cert.chain, cert.key)?;
        Ok(Self {
            ca,
            names,
            ttl,
            tls,
            validity,
        })
    }

    /// The TLS settings to serve with; they follow every renewal.
    pub fn tls(&self) -> ServerTls {
        self.tls.clone()
    }

    /// Renews the certificate at half its lifetime, forever (spawn it; it holds no listener).
    pub async fn renew(mut self) {
        loop {
            tokio::time::sleep(self.until_renewal()).await;
            match self.renew_now() {
                Ok(()) => tracing::info!(
                    names = ?self.names,
                    "renewed the gRPC serving certificate"
                ),
                Err(err) => {
                    tracing::warn!(error = %err, retry_in = ?RETRY_AFTER, "cannot renew the gRPC serving certificate");
                    tokio::time::sleep(RETRY_AFTER).await;
                }
            }
        }
    }

    /// Replaces the certificate with a new one now.
    pub fn renew_now(&mut self) -> Result<(), ServingCertError> {
        let validity = Validity::starting_now(self.ttl);
        let cert = self
            .ca
            .issue_server_certificate(&self.names.dns, &self.names.ips, validity)?;
        self.tls.replace(cert.chain, cert.key)?;
        self.validity = validity;
        Ok(())
    }

    /// How long until the current certificate is half way through its life.
    fn until_renewal(&self) -> Duration {
        let Validity {
            not_before,
            not_after,
        } = self.validity;
        let lifetime = not_after.duration_since(not_before).unwrap_or_default();
        (not_before + lifetime / 2)
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use ambit_identity::CaOptions;
    use x509_parser::extensions::GeneralName;
    use x509_parser::prelude::{FromDer, X509Certificate};

    use super::*;

    fn names() -> ServingNames {
        ServingNames {
            dns: vec![
                "ambit-controller.ambit-system.svc".to_owned(),
                "ambit-controller.ambit-system.svc.cluster.local".to_owned(),
            ],
            ips: vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))],
        }
    }

    #[test]
    fn serving_certificate_has_the_names_and_chains_to_the_root() {
        let root = CertificateAuthority::generate("cluster.local", CaOptions::default()).unwrap();
        // Through an intermediate, as with a `--ca-dir` in Istio's cacerts layout.
        let ca = Arc::new(root.new_intermediate(Duration::from_secs(3600)).unwrap());
        let serving = ServingCertificate::issue(ca, names(), SERVING_CERT_TTL).unwrap();
        let chain = serving.tls().chain();
        assert_eq!(chain.len(), 2, "leaf and intermediate");
        let (_, leaf) = X509Certificate::from_der(&chain[0]).unwrap();
        let (_, intermediate) = X509Certificate::from_der(&chain[1]).unwrap();
        let (_, root_cert) = X509Certificate::from_der(root.root()).unwrap();
        leaf.verify_signature(Some(intermediate.public_key()))
            .unwrap();
        intermediate
            .verify_signature(Some(root_cert.public_key()))
            .unwrap();
        let sans = leaf.subject_alternative_name().unwrap().unwrap();
        let mut dns = Vec::new();
        let mut ips = Vec::new();
        for name in &sans.value.general_names {
            match name {
                GeneralName::DNSName(name) => dns.push((*name).to_owned()),
                GeneralName::IPAddress(bytes) => ips.push(bytes.to_vec()),
                other => panic!("unexpected SAN {other:?}"),
            }
        }
        assert_eq!(dns, names().dns);
        assert_eq!(ips, [vec![10, 0, 0, 1]]);
        let usage = leaf.extended_key_usage().unwrap().unwrap().value;
        assert!(usage.server_auth && !usage.client_auth);
        assert!(!leaf.is_ca());
        let lifetime =
            leaf.validity().not_after.timestamp() - leaf.validity().not_before.timestamp();
        // The CA backdates by a minute for clock skew.
        assert!(
            (SERVING_CERT_TTL.as_secs() as i64..=SERVING_CERT_TTL.as_secs() as i64 + 120)
                .contains(&lifetime)
        );
    }

    #[test]
    fn without_names_there_is_no_certificate() {
        let ca = Arc::new(
            CertificateAuthority::generate("cluster.local", CaOptions::default()).unwrap(),
        );
        let none = ServingNames {
            dns: Vec::new(),
            ips: Vec::new(),
        };
        assert!(ServingCertificate::issue(ca, none, SERVING_CERT_TTL).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn renewal_swaps_the_certificate_at_half_life() {
        let ca = Arc::new(
            CertificateAuthority::generate("cluster.local", CaOptions::default()).unwrap(),
        );
        let ttl = Duration::from_secs(3600);
        let serving = ServingCertificate::issue(ca, names(), ttl).unwrap();
        let tls = serving.tls();
        let first = tls.chain()[0].clone();
        // Paused time: the sleeps below advance the clock the renewal task waits on, but
        // the certificate's validity uses the wall clock, which stands still; the renewal
        // is due half of the lifetime (plus the one-minute backdating) after issue.
        tokio::spawn(serving.renew());
        tokio::time::sleep(Duration::from_secs(1700)).await;
        assert_eq!(tls.chain()[0], first, "renewed too early");
        tokio::time::sleep(Duration::from_secs(200)).await;
        let renewed = tls.chain()[0].clone();
        assert_ne!(renewed, first, "not renewed at half life");
        let (_, leaf) = X509Certificate::from_der(&renewed).unwrap();
        assert_eq!(
            leaf.subject_alternative_name()
                .unwrap()
                .unwrap()
                .value
                .general_names
                .len(),
            3
        );
    }
}
