//! The real `ambit-controller` binary as the mesh CA: local-mode bootstrap tokens, per-node
//! and per-waypoint authorization, chains against the bundle, the root across restarts, and
//! a user-supplied Istio `cacerts` folder.

// Test helpers outside #[test] functions may panic on setup failures too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::SystemTime;

use ambit_api::GrpcIssuer;
use ambit_api::client::IssuedCertificate;
use ambit_identity::cert::certificates_from_pem;
use ambit_identity::{
    CaOptions, CertificateAuthority, IssueError, SpiffeId, TrustBundle, WorkloadCertificate,
    WorkloadKey,
};
use common::{Controller, Dirs, WAYPOINT_TOKEN, identity, pods_yaml, sample, token, token_file};
use rustls_pki_types::CertificateDer;

const WAYPOINT_YAML: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
    metadata: {name: waypoint, namespace: shop}\nspec:\n  gatewayClassName: istio-waypoint\n\
    \x20 listeners: [{name: mesh, port: 15008, protocol: HBONE}]\n  addresses: [{value: 10.96.0.200}]\n";

async fn request(
    controller: &Controller,
    token: &str,
    id: &SpiffeId,
) -> Result<(IssuedCertificate, WorkloadKey), IssueError> {
    let issuer = GrpcIssuer::new(&controller.endpoint(), token).unwrap();
    let key = WorkloadKey::generate().unwrap();
    let csr = key.csr_der(id).unwrap();
    let issued = tokio::time::timeout(common::WAIT, issuer.create_certificate(id, &csr))
        .await
        .expect("CA request timed out")?;
    Ok((issued, key))
}

/// Whether each certificate of `chain` is signed by the next, and the last by a root of
/// `bundle`.
fn chains_to_bundle(chain: &[CertificateDer<'_>], bundle: &TrustBundle) -> bool {
    let parsed: Vec<_> = chain
        .iter()
        .map(|c| x509_parser::parse_x509_certificate(c.as_ref()).unwrap().1)
        .collect();
    let links_ok = parsed
        .windows(2)
        .all(|pair| pair[0].verify_signature(Some(pair[1].public_key())).is_ok());
    let last = parsed.last().unwrap();
    links_ok
        && bundle.roots().iter().any(|root| {
            let (_, root) = x509_parser::parse_x509_certificate(root.as_ref()).unwrap();
            last.verify_signature(Some(root.public_key())).is_ok()
        })
}

fn setup(nodes: usize) -> Dirs {
    let dirs = Dirs::new();
    std::fs::write(dirs.tokens(), token_file(nodes)).unwrap();
    dirs.write_config("pods.yaml", &pods_yaml(nodes));
    dirs.write_config("waypoint.yaml", WAYPOINT_YAML);
    dirs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_and_waypoint_tokens_get_only_their_identities() {
    let dirs = setup(2);
    let controller = Controller::start(&dirs, &[]).await;

    // node-00 runs web-00 (service account sa-web-00).
    let (issued, key) = request(&controller, &token(0), &identity("sa-web-00"))
        .await
        .unwrap();
    let bundle = TrustBundle::from_pem("cluster.local", &issued.trust_bundle_pem).unwrap();
    assert!(chains_to_bundle(&issued.chain, &bundle));
    let cert = WorkloadCertificate::for_identity(
        &identity("sa-web-00"),
        issued.chain.clone(),
        key.private_key_der(),
    )
    .unwrap();
    assert!(cert.is_valid_at(SystemTime::now()));

    // node-00 cannot get node-01's pod identity, nor one no pod runs as.
    for sa in ["sa-web-01", "nobody"] {
        let err = request(&controller, &token(0), &identity(sa))
            .await
            .unwrap_err();
        assert!(err.is_refused(), "{err}");
        assert!(err.to_string().contains("PermissionDenied"), "{err}");
    }
    // Unknown and malformed tokens are refused before anything else.
    let err = request(&controller, "bootstrap-token-9999", &identity("sa-web-00"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("Unauthenticated"), "{err}");

    // The waypoint gets its own identity (its Gateway's service account) and nothing else.
    request(&controller, WAYPOINT_TOKEN, &identity("waypoint"))
        .await
        .unwrap();
    let err = request(&controller, WAYPOINT_TOKEN, &identity("sa-web-00"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("PermissionDenied"), "{err}");

    let metrics = controller.metrics().await;
    assert_eq!(
        sample(&metrics, "ambit_controller_csr_signed_total"),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &metrics,
            "ambit_controller_csr_refused_total{reason=\"denied\"}"
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &metrics,
            "ambit_controller_csr_refused_total{reason=\"unauthenticated\"}"
        ),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_root_survives_a_restart() {
    let dirs = setup(1);
    let controller = Controller::start(&dirs, &[]).await;
    let (before, _) = request(&controller, &token(0), &identity("sa-web-00"))
        .await
        .unwrap();
    controller.kill();

    let restarted = Controller::start(&dirs, &[]).await;
    let (after, _) = request(&restarted, &token(0), &identity("sa-web-00"))
        .await
        .unwrap();
    assert_eq!(after.trust_bundle_pem, before.trust_bundle_pem);
    let bundle = TrustBundle::from_pem("cluster.local", &after.trust_bundle_pem).unwrap();
    // A certificate issued before the restart still verifies against the bundle after it.
    assert!(chains_to_bundle(&before.chain, &bundle));
    assert!(chains_to_bundle(&after.chain, &bundle));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supplied_istio_cacerts_sign_with_their_intermediate() {
    let dirs = setup(1);
    let root = CertificateAuthority::generate("cluster.local", CaOptions::default()).unwrap();
    let intermediate = root
        .new_intermediate(std::time::Duration::from_secs(24 * 3600))
        .unwrap();
    let material = intermediate.to_material();
    let cacerts = tempfile::tempdir().unwrap();
    let files = [
        ("ca-cert.pem", material.signing_cert.clone()),
        ("ca-key.pem", material.signing_key.clone()),
        ("root-cert.pem", root.root_pem()),
        (
            "cert-chain.pem",
            material.cert_chain.clone().unwrap_or_default(),
        ),
    ];
    for (name, text) in files {
        std::fs::write(cacerts.path().join(name), text).unwrap();
    }
    let ca_dir = cacerts.path().to_str().unwrap();
    let controller = Controller::start(&dirs, &["--ca-dir", ca_dir]).await;
    let (issued, _) = request(&controller, &token(0), &identity("sa-web-00"))
        .await
        .unwrap();
    let bundle = TrustBundle::from_pem("cluster.local", &issued.trust_bundle_pem).unwrap();
    assert_eq!(
        bundle.roots(),
        certificates_from_pem(&root.root_pem()).unwrap()
    );
    assert!(issued.chain.len() >= 2, "leaf and intermediate");
    assert!(chains_to_bundle(&issued.chain, &bundle));
    // Nothing was generated in the state folder: the supplied CA is the CA.
    assert!(!dirs.state().join("ca").exists());
}
