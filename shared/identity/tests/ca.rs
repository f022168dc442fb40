//! The CA: what issued leaves look like, loading and exporting material, and every refusal.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers fail the test by panicking"
)]

use std::time::{Duration, SystemTime};

use ambit_identity::{
    CaMaterial, CaOptions, CertificateAuthority, CertificateIssuer, SpiffeId, Validity, WorkloadKey,
};
use rcgen::{CertificateParams, KeyPair, SanType};
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

const HOUR: Duration = Duration::from_secs(3600);

fn id(td: &str, sa: &str) -> SpiffeId {
    SpiffeId::new(td, "default", sa).unwrap()
}

fn ca() -> CertificateAuthority {
    CertificateAuthority::generate("cluster.local", CaOptions::default()).unwrap()
}

fn csr_with(
    alg: &'static rcgen::SignatureAlgorithm,
    sans: Vec<SanType>,
) -> CertificateSigningRequestDer<'static> {
    let key = KeyPair::generate_for(alg).unwrap();
    let mut params = CertificateParams::default();
    params.subject_alt_names = sans;
    params.serialize_request(&key).unwrap().der().clone()
}

fn uri(id: &SpiffeId) -> SanType {
    SanType::URI(id.to_string().try_into().unwrap())
}

fn parse<'a>(der: &'a CertificateDer<'_>) -> X509Certificate<'a> {
    X509Certificate::from_der(der).unwrap().1
}

#[test]
fn issued_leaf_has_the_istio_shape() {
    let ca = ca();
    let me = id("cluster.local", "a");
    let key = WorkloadKey::generate().unwrap();
    let chain = ca
        .sign_csr(&key.csr_der(&me).unwrap(), &me, 2 * HOUR)
        .unwrap();
    assert_eq!(chain.len(), 1, "the root signs directly, no intermediate");
    let leaf = parse(&chain[0]);

    assert_eq!(leaf.subject().iter().count(), 0);
    let san = leaf.subject_alternative_name().unwrap().unwrap();
    assert!(
        san.critical,
        "SAN must be critical when the subject is empty"
    );
    assert_eq!(san.value.general_names, [GeneralName::URI(&me.to_string())]);
    let eku = leaf.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    let ku = leaf.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && !ku.key_cert_sign());
    assert!(!leaf.is_ca());
    let validity = leaf.validity();
    let lifetime = validity.not_after.timestamp() - validity.not_before.timestamp();
    assert_eq!(lifetime, 2 * 3600 + 60);
    let root = parse(ca.root());
    leaf.verify_signature(Some(root.public_key())).unwrap();

    let again = ca.sign_csr(&key.csr_der(&me).unwrap(), &me, HOUR).unwrap();
    assert_ne!(parse(&again[0]).serial, leaf.serial, "serials are random");
}

#[tokio::test]
async fn issuer_trait_uses_the_default_ttl() {
    let ca = ca();
    let me = id("cluster.local", "a");
    let key = WorkloadKey::generate().unwrap();
    let chain = ca.issue(&me, key.csr_der(&me).unwrap()).await.unwrap();
    let validity = parse(&chain[0]).validity().clone();
    assert_eq!(
        validity.not_after.timestamp() - validity.not_before.timestamp(),
        24 * 3600 + 60
    );
    let refused = ca
        .issue(&id("other.domain", "a"), key.csr_der(&me).unwrap())
        .await
        .unwrap_err();
    assert!(refused.is_refused());
}

#[test]
fn root_is_a_ca_that_may_sign_certificates() {
    let ca = ca();
    let root = parse(ca.root());
    assert!(root.is_ca());
    assert!(root.key_usage().unwrap().unwrap().value.key_cert_sign());
    assert_eq!(root.subject(), root.issuer());
    let bundle = ca.trust_bundle().unwrap();
    assert_eq!(bundle.roots(), [ca.root().clone()]);
    assert_eq!(bundle.trust_domain(), "cluster.local");
}

#[test]
fn intermediate_is_sent_after_the_leaf_and_survives_a_reload() {
    let root_ca = ca();
    let intermediate = root_ca.new_intermediate(24 * HOUR).unwrap();
    let cert = intermediate
        .issue_workload(&id("cluster.local", "a"), HOUR)
        .unwrap();
    assert_eq!(cert.chain().len(), 2);
    let inter = parse(&cert.chain()[1]);
    assert!(inter.is_ca());
    parse(cert.leaf())
        .verify_signature(Some(inter.public_key()))
        .unwrap();
    inter
        .verify_signature(Some(parse(root_ca.root()).public_key()))
        .unwrap();

    let material = intermediate.to_material();
    let reloaded =
        CertificateAuthority::from_pem("cluster.local", &material, CaOptions::default()).unwrap();
    assert_eq!(reloaded.root(), root_ca.root());
    let cert2 = reloaded
        .issue_workload(&id("cluster.local", "b"), HOUR)
        .unwrap();
    assert_eq!(cert2.chain()[1], cert.chain()[1]);
    parse(cert2.leaf())
        .verify_signature(Some(inter.public_key()))
        .unwrap();

    // Istio's layout without cert-chain.pem: the signing certificate alone is the chain.
    let without_chain = CaMaterial {
        cert_chain: None,
        ..material.clone()
    };
    let reloaded =
        CertificateAuthority::from_pem("cluster.local", &without_chain, CaOptions::default())
            .unwrap();
    assert_eq!(reloaded.chain_pem(), intermediate.chain_pem());
}

#[test]
fn generated_root_survives_a_reload() {
    let ca = ca();
    let material = ca.to_material();
    assert_eq!(material.root_cert, material.signing_cert);
    let reloaded =
        CertificateAuthority::from_pem("cluster.local", &material, CaOptions::default()).unwrap();
    let cert = reloaded
        .issue_workload(&id("cluster.local", "a"), HOUR)
        .unwrap();
    assert_eq!(cert.chain().len(), 1);
    parse(cert.leaf())
        .verify_signature(Some(parse(ca.root()).public_key()))
        .unwrap();
}

#[test]
fn material_that_does_not_fit_together_is_refused() {
    let one = ca();
    let two = ca();
    let mut mixed = one.to_material();
    mixed.signing_key = two.to_material().signing_key;
    let err =
        CertificateAuthority::from_pem("cluster.local", &mixed, CaOptions::default()).unwrap_err();
    assert!(err.is_bad_material(), "{err}");

    // An intermediate of another root.
    let mut foreign = one.new_intermediate(HOUR).unwrap().to_material();
    foreign.root_cert = two.root_pem();
    let err = CertificateAuthority::from_pem("cluster.local", &foreign, CaOptions::default())
        .unwrap_err();
    assert!(err.is_bad_material(), "{err}");

    // A workload leaf is no signing certificate.
    let leaf = one.issue_workload(&id("cluster.local", "a"), HOUR).unwrap();
    let as_signer = CaMaterial {
        root_cert: one.root_pem(),
        signing_cert: leaf.chain_pem(),
        signing_key: one.to_material().signing_key,
        cert_chain: None,
    };
    let err = CertificateAuthority::from_pem("cluster.local", &as_signer, CaOptions::default())
        .unwrap_err();
    assert!(err.is_bad_material(), "{err}");
}

#[test]
fn refuses_a_csr_whose_signature_does_not_verify() {
    let me = id("cluster.local", "a");
    let good = WorkloadKey::generate().unwrap().csr_der(&me).unwrap();
    let mut bytes = good.as_ref().to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    let err = ca().sign_csr(&bytes.into(), &me, HOUR).unwrap_err();
    assert!(err.is_bad_csr_signature(), "{err}");

    let err = ca()
        .sign_csr(&vec![0x30, 0x03, 1, 2, 3].into(), &me, HOUR)
        .unwrap_err();
    assert!(err.is_malformed_csr(), "{err}");
}

#[test]
fn refuses_an_identity_of_a_foreign_trust_domain() {
    let foreign = id("other.domain", "a");
    let csr = WorkloadKey::generate().unwrap().csr_der(&foreign).unwrap();
    let err = ca().sign_csr(&csr, &foreign, HOUR).unwrap_err();
    assert!(err.is_foreign_trust_domain(), "{err}");
}

#[test]
fn refuses_any_san_but_the_requested_identity() {
    let ca = ca();
    let me = id("cluster.local", "a");
    let extra_dns = csr_with(
        &rcgen::PKCS_ECDSA_P256_SHA256,
        vec![
            uri(&me),
            SanType::DnsName("evil.example".try_into().unwrap()),
        ],
    );
    let err = ca.sign_csr(&extra_dns, &me, HOUR).unwrap_err();
    assert!(err.is_unexpected_san(), "{err}");

    let other_id = csr_with(
        &rcgen::PKCS_ECDSA_P256_SHA256,
        vec![uri(&id("cluster.local", "admin"))],
    );
    let err = ca.sign_csr(&other_id, &me, HOUR).unwrap_err();
    assert!(err.is_unexpected_san(), "{err}");

    // A CSR without SANs is fine: the CA writes the identity itself.
    let bare = csr_with(&rcgen::PKCS_ECDSA_P256_SHA256, vec![]);
    let chain = ca.sign_csr(&bare, &me, HOUR).unwrap();
    let leaf = parse(&chain[0]);
    let san = leaf.subject_alternative_name().unwrap().unwrap();
    assert_eq!(san.value.general_names, [GeneralName::URI(&me.to_string())]);
}

#[test]
fn refuses_keys_other_than_p256() {
    let me = id("cluster.local", "a");
    for alg in [&rcgen::PKCS_ECDSA_P384_SHA384, &rcgen::PKCS_ED25519] {
        let csr = csr_with(alg, vec![uri(&me)]);
        let err = ca().sign_csr(&csr, &me, HOUR).unwrap_err();
        assert!(err.is_unsupported_key(), "{err}");
    }
}

#[test]
fn refuses_a_zero_or_too_long_ttl() {
    let mut options = CaOptions::default();
    options.max_ttl = 48 * HOUR;
    let ca = CertificateAuthority::generate("cluster.local", options).unwrap();
    let me = id("cluster.local", "a");
    let csr = WorkloadKey::generate().unwrap().csr_der(&me).unwrap();
    assert!(
        ca.sign_csr(&csr, &me, Duration::ZERO)
            .unwrap_err()
            .is_bad_lifetime()
    );
    assert!(
        ca.sign_csr(&csr, &me, 49 * HOUR)
            .unwrap_err()
            .is_bad_lifetime()
    );
    ca.sign_csr(&csr, &me, 48 * HOUR).unwrap();
    let now = SystemTime::now();
    let backwards = Validity {
        not_before: now,
        not_after: now - HOUR,
    };
    assert!(
        ca.sign_csr_with_validity(&csr, &me, backwards)
            .unwrap_err()
            .is_bad_lifetime()
    );
}

#[test]
fn explicit_validity_makes_expired_certificates() {
    let now = SystemTime::now();
    let past = Validity {
        not_before: now - 3 * HOUR,
        not_after: now - HOUR,
    };
    let cert = ca()
        .issue_workload_with_validity(&id("cluster.local", "a"), past)
        .unwrap();
    assert!(!cert.is_valid_at(now));
    assert!(cert.is_valid_at(now - 2 * HOUR));
}
