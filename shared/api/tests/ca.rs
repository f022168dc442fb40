//! The CA over real gRPC on 127.0.0.1: authentication, authorization, chains, rotation, and
//! `GrpcIssuer` feeding a `CertStore`.

// Test helpers outside #[test] functions may panic on setup failures too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ambit_api::proto::certificate_service_client::CertificateServiceClient;
use ambit_api::proto::{CreateCertificateRequest, CreateCertificateResponse};
use ambit_api::server::{CaServer, Caller, HostedIdentities, StaticTokens};
use ambit_api::{ControllerEndpoint, GrpcIssuer};
use ambit_identity::cert::certificates_from_pem;
use ambit_identity::{
    CaOptions, CertStore, CertStoreOptions, CertificateAuthority, CertificateIssuer, SpiffeId,
    TrustBundle, WorkloadCertificate, WorkloadKey,
};
use common::{TestServer, WAIT};
use rustls_pki_types::CertificateDer;
use tonic::Code;

const TRUST_DOMAIN: &str = "cluster.local";

struct Fixture {
    server: TestServer,
    ca: CaServer,
}

fn id(sa: &str) -> SpiffeId {
    SpiffeId::new(TRUST_DOMAIN, "shop", sa).unwrap()
}

fn authority() -> Arc<CertificateAuthority> {
    Arc::new(CertificateAuthority::generate(TRUST_DOMAIN, CaOptions::default()).unwrap())
}

/// node-a runs `web`, node-b runs `db`; the waypoint holds `waypoint`.
async fn start(authority: Arc<CertificateAuthority>) -> Fixture {
    let tokens = StaticTokens::new();
    tokens.insert("token-a", Caller::Node("node-a".into()), None);
    tokens.insert("token-b", Caller::Node("node-b".into()), None);
    tokens.insert("token-waypoint", Caller::Waypoint(id("waypoint")), None);
    let expired = SystemTime::now() - Duration::from_secs(60);
    tokens.insert("token-old", Caller::Node("node-a".into()), Some(expired));
    let hosts = HostedIdentities::new(|node, id| {
        matches!(
            (node, id.service_account()),
            ("node-a", "web") | ("node-b", "db")
        )
    });
    let bundle = authority.trust_bundle().unwrap();
    let ca = CaServer::new(authority, &bundle, Arc::new(tokens), Arc::new(hosts));
    let server = TestServer::start(None, Some(ca.clone())).await;
    Fixture { server, ca }
}

async fn request(
    server: &TestServer,
    authorization: Option<&str>,
    identity: &SpiffeId,
    key: &WorkloadKey,
) -> Result<CreateCertificateResponse, tonic::Status> {
    let mut client = CertificateServiceClient::connect(server.uri().to_string())
        .await
        .unwrap();
    let mut request = tonic::Request::new(CreateCertificateRequest {
        csr_pem: key.csr_pem(identity).unwrap(),
        identity: identity.to_string(),
        ttl_seconds: Some(3600),
    });
    if let Some(value) = authorization {
        request
            .metadata_mut()
            .insert("authorization", value.parse().unwrap());
    }
    tokio::time::timeout(WAIT, client.create_certificate(request))
        .await
        .expect("CA did not answer in time")
        .map(tonic::Response::into_inner)
}

fn chain_of(response: &CreateCertificateResponse) -> Vec<CertificateDer<'static>> {
    response
        .cert_chain_pem
        .iter()
        .flat_map(|pem| certificates_from_pem(pem).unwrap())
        .collect()
}

/// Whether `chain`'s leaf is signed by one of `bundle`'s roots (the chain has no intermediates).
fn signed_by_bundle(chain: &[CertificateDer<'_>], bundle: &TrustBundle) -> bool {
    let (_, leaf) = x509_parser::parse_x509_certificate(chain[0].as_ref()).unwrap();
    bundle.roots().iter().any(|root| {
        let (_, root) = x509_parser::parse_x509_certificate(root.as_ref()).unwrap();
        leaf.verify_signature(Some(root.public_key())).is_ok()
    })
}

#[tokio::test]
async fn valid_request_returns_chain_that_verifies_against_bundle() {
    let fixture = start(authority()).await;
    let key = WorkloadKey::generate().unwrap();
    let response = request(&fixture.server, Some("Bearer token-a"), &id("web"), &key)
        .await
        .unwrap();
    let bundle = TrustBundle::from_pem(TRUST_DOMAIN, &response.trust_bundle_pem).unwrap();
    let chain = chain_of(&response);
    assert!(signed_by_bundle(&chain, &bundle));
    let cert = WorkloadCertificate::for_identity(&id("web"), chain, key.private_key_der()).unwrap();
    assert!(cert.is_valid_at(SystemTime::now()));
    let lifetime = cert.lifetime();
    assert!(lifetime <= Duration::from_secs(3600 + 600), "{lifetime:?}");
    assert_eq!(fixture.ca.stats().signed, 1);
}

#[tokio::test]
async fn node_token_cannot_get_identity_not_on_its_node() {
    let fixture = start(authority()).await;
    let key = WorkloadKey::generate().unwrap();
    let status = request(&fixture.server, Some("Bearer token-a"), &id("db"), &key)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains("node node-a"),
        "{}",
        status.message()
    );
    assert!(status.message().contains("sa/db"), "{}", status.message());

    // The waypoint may hold only its own identity.
    let status = request(
        &fixture.server,
        Some("Bearer token-waypoint"),
        &id("web"),
        &key,
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    request(
        &fixture.server,
        Some("Bearer token-waypoint"),
        &id("waypoint"),
        &key,
    )
    .await
    .unwrap();
    assert_eq!(fixture.ca.stats().denied, 2);
    assert_eq!(fixture.ca.stats().signed, 1);
}

#[tokio::test]
async fn bad_missing_and_expired_tokens_are_unauthenticated() {
    let fixture = start(authority()).await;
    let key = WorkloadKey::generate().unwrap();
    for authorization in [
        None,
        Some("Bearer nope"),
        Some("Basic token-a"),
        Some("Bearer token-old"),
    ] {
        let status = request(&fixture.server, authorization, &id("web"), &key)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{authorization:?}");
    }
    assert_eq!(fixture.ca.stats().unauthenticated, 4);
    assert_eq!(fixture.ca.stats().signed, 0);
}

#[tokio::test]
async fn csr_for_another_identity_is_invalid() {
    let fixture = start(authority()).await;
    let key = WorkloadKey::generate().unwrap();
    let mut client = CertificateServiceClient::connect(fixture.server.uri().to_string())
        .await
        .unwrap();
    // The CSR names `db` while the request asks for `web`.
    let mut request = tonic::Request::new(CreateCertificateRequest {
        csr_pem: key.csr_pem(&id("db")).unwrap(),
        identity: id("web").to_string(),
        ttl_seconds: None,
    });
    request
        .metadata_mut()
        .insert("authorization", "Bearer token-a".parse().unwrap());
    let status = tokio::time::timeout(WAIT, client.create_certificate(request))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(fixture.ca.stats().invalid, 1);
}

#[tokio::test]
async fn grpc_issuer_feeds_a_cert_store() {
    let fixture = start(authority()).await;
    let issuer = Arc::new(GrpcIssuer::new(&fixture.server.endpoint(), "token-a").unwrap());
    let store = CertStore::new(issuer.clone(), CertStoreOptions::default());
    let cert = tokio::time::timeout(WAIT, store.certificate(&id("web")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cert.id(), &id("web"));
    let bundle = TrustBundle::from_pem(TRUST_DOMAIN, &issuer.trust_bundle_pem().unwrap()).unwrap();
    assert!(signed_by_bundle(cert.chain(), &bundle));

    // A refusal reaches the store as a refusal, not as an outage.
    let err = tokio::time::timeout(WAIT, store.certificate(&id("db")))
        .await
        .unwrap()
        .unwrap_err();
    assert!(err.issue_error().is_some_and(|e| e.is_refused()), "{err}");
}

#[tokio::test]
async fn unreachable_ca_is_unavailable_not_refused() {
    // Bind and drop, so nothing listens on the port.
    let addr = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let endpoint =
        ControllerEndpoint::plaintext(format!("http://{addr}").parse().unwrap()).unwrap();
    let issuer = GrpcIssuer::new(&endpoint, "token-a").unwrap();
    let key = WorkloadKey::generate().unwrap();
    let err = tokio::time::timeout(
        WAIT,
        issuer.issue(&id("web"), key.csr_der(&id("web")).unwrap()),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert!(!err.is_refused(), "{err}");
}

#[tokio::test]
async fn after_root_rotation_old_certificates_still_verify() {
    let old = authority();
    let fixture = start(old.clone()).await;
    let key = WorkloadKey::generate().unwrap();
    let before = request(&fixture.server, Some("Bearer token-a"), &id("web"), &key)
        .await
        .unwrap();
    let old_chain = chain_of(&before);

    // Rotate: a new root signs from now on; both roots are trusted until old leaves expire.
    let new = authority();
    let bundle = new
        .trust_bundle()
        .unwrap()
        .with_roots_of(&old.trust_bundle().unwrap())
        .unwrap();
    fixture.ca.rotate(new.clone(), &bundle);
    let after = request(&fixture.server, Some("Bearer token-a"), &id("web"), &key)
        .await
        .unwrap();
    let returned = TrustBundle::from_pem(TRUST_DOMAIN, &after.trust_bundle_pem).unwrap();
    assert_eq!(returned.roots().len(), 2);
    let new_chain = chain_of(&after);
    assert!(signed_by_bundle(&new_chain, &returned));
    assert!(signed_by_bundle(&old_chain, &returned));
    assert!(!signed_by_bundle(&new_chain, &old.trust_bundle().unwrap()));
}
