use std::time::Duration;

use rcgen::{CertificateParams, KeyPair, SanType};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::ParsedExtension;

use super::*;
use crate::{CaOptions, CertificateAuthority};

fn id(sa: &str) -> SpiffeId {
    SpiffeId::new("cluster.local", "default", sa).unwrap()
}

/// A self-signed certificate with the given SANs and its key, as PEM.
fn self_signed(sans: Vec<SanType>) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.subject_alt_names = sans;
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn uri(s: &str) -> SanType {
    SanType::URI(s.try_into().unwrap())
}

#[test]
fn csr_asks_for_exactly_the_spiffe_id_with_an_empty_subject() {
    let key = WorkloadKey::generate().unwrap();
    let csr = key.csr_der(&id("a")).unwrap();
    let (_, request) = X509CertificationRequest::from_der(&csr).unwrap();
    request.verify_signature().unwrap();
    assert_eq!(request.certification_request_info.subject.iter().count(), 0);
    let sans: Vec<String> = request
        .requested_extensions()
        .unwrap()
        .filter_map(|e| match e {
            ParsedExtension::SubjectAlternativeName(san) => Some(san),
            _ => None,
        })
        .flat_map(|san| san.general_names.iter().map(|n| n.to_string()))
        .collect();
    assert_eq!(sans, ["URI(spiffe://cluster.local/ns/default/sa/a)"]);
    assert!(
        key.csr_pem(&id("a"))
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE REQUEST-----")
    );
    assert!(format!("{key:?}").find("BEGIN").is_none());
}

#[test]
fn workload_certificate_round_trips_through_pem() {
    let ca = CertificateAuthority::generate("cluster.local", CaOptions::default()).unwrap();
    let key = WorkloadKey::generate().unwrap();
    let chain = ca
        .sign_csr(
            &key.csr_der(&id("a")).unwrap(),
            &id("a"),
            Duration::from_secs(3600),
        )
        .unwrap();
    let cert = WorkloadCertificate::from_pem(&certificates_to_pem(&chain), &key.private_key_pem())
        .unwrap();
    assert_eq!(cert.id(), &id("a"));
    assert_eq!(cert.chain(), chain.as_slice());
    assert!(cert.is_valid_at(SystemTime::now()));
    // One minute of clock-skew allowance before, the TTL after.
    assert_eq!(cert.lifetime(), Duration::from_secs(3600 + 60));
    let again = WorkloadCertificate::from_pem(&cert.chain_pem(), &key.private_key_pem()).unwrap();
    assert_eq!(again.chain(), cert.chain());
}

#[test]
fn workload_certificate_needs_exactly_one_valid_uri_san() {
    let (pem, key) = self_signed(vec![]);
    assert!(matches!(
        WorkloadCertificate::from_pem(&pem, &key),
        Err(CertificateError::UriSanCount(0))
    ));
    let (pem, key) = self_signed(vec![
        uri("spiffe://cluster.local/ns/a/sa/a"),
        uri("spiffe://cluster.local/ns/b/sa/b"),
    ]);
    assert!(matches!(
        WorkloadCertificate::from_pem(&pem, &key),
        Err(CertificateError::UriSanCount(2))
    ));
    let (pem, key) = self_signed(vec![uri("https://example.com/")]);
    assert!(matches!(
        WorkloadCertificate::from_pem(&pem, &key),
        Err(CertificateError::InvalidSpiffeId(_))
    ));
    // DNS names do not count as identities, the URI SAN does.
    let (pem, key) = self_signed(vec![
        SanType::DnsName("a.example".try_into().unwrap()),
        uri("spiffe://cluster.local/ns/a/sa/a"),
    ]);
    let cert = WorkloadCertificate::from_pem(&pem, &key).unwrap();
    assert_eq!(cert.id().to_string(), "spiffe://cluster.local/ns/a/sa/a");
}

#[test]
fn workload_certificate_refuses_a_key_of_another_certificate() {
    let (pem, _) = self_signed(vec![uri("spiffe://cluster.local/ns/a/sa/a")]);
    let (_, other_key) = self_signed(vec![uri("spiffe://cluster.local/ns/a/sa/a")]);
    assert!(matches!(
        WorkloadCertificate::from_pem(&pem, &other_key),
        Err(CertificateError::Key(_))
    ));
    assert!(matches!(
        WorkloadCertificate::from_pem("", &other_key),
        Err(CertificateError::MissingPem(_))
    ));
}

#[test]
fn for_identity_checks_the_identity() {
    let (pem, key) = self_signed(vec![uri("spiffe://cluster.local/ns/default/sa/a")]);
    let chain = certificates_from_pem(&pem).unwrap();
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let err =
        WorkloadCertificate::for_identity(&id("b"), chain.clone(), key.clone_key()).unwrap_err();
    assert!(matches!(err, CertificateError::IdentityMismatch { .. }));
    WorkloadCertificate::for_identity(&id("a"), chain, key).unwrap();
}

#[test]
fn trust_bundle_holds_several_roots_from_one_pem() {
    let one = CertificateAuthority::generate("cluster.local", CaOptions::default()).unwrap();
    let two = CertificateAuthority::generate("cluster.local", CaOptions::default()).unwrap();
    let pem = format!("{}{}", one.root_pem(), two.root_pem());
    let bundle = TrustBundle::from_pem("cluster.local", &pem).unwrap();
    assert_eq!(bundle.roots(), [one.root().clone(), two.root().clone()]);
    assert_eq!(bundle.trust_domain(), "cluster.local");
    let reparsed = TrustBundle::from_pem("cluster.local", &bundle.to_pem()).unwrap();
    assert_eq!(reparsed.roots(), bundle.roots());

    let merged = one.trust_bundle().unwrap().with_roots_of(&bundle).unwrap();
    assert_eq!(merged.roots().len(), 2);

    assert!(matches!(
        TrustBundle::new("cluster.local", vec![]),
        Err(CertificateError::EmptyBundle)
    ));
    assert!(matches!(
        TrustBundle::from_pem("Not A Domain", &pem),
        Err(CertificateError::InvalidSpiffeId(_))
    ));
    assert!(TrustBundle::new("cluster.local", vec![CertificateDer::from(vec![1, 2, 3])]).is_err());
}
