//! Certificate failures each give a distinguishable ConnectError; rotation spares open streams.
// Helpers outside `#[test]` functions fail the test by panicking, like the tests themselves.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use ambit_hbone::{PoolConfig, ServerConfig, VerificationFailure};
use ambit_identity::Validity;
use ambit_identity::tls::FixedCertificate;
use support::*;

/// A server presenting `cert`, trusting `mesh`'s clients.
async fn server_with(mesh: &Mesh, cert: Arc<ambit_identity::WorkloadCertificate>) -> TestServer {
    let tls =
        ambit_identity::tls::server_config(Arc::new(FixedCertificate(cert)), &mesh.bundle).unwrap();
    TestServer::start(tls, echo_handler(), ServerConfig::default()).await
}

async fn failure_against(
    server: &TestServer,
    pool: &ambit_hbone::Pool,
) -> ambit_hbone::ConnectError {
    let err = within(pool.connect(server.request("10.0.0.1:80")))
        .await
        .unwrap_err();
    assert!(err.is_tls(), "{err}");
    assert!(
        !err.is_connect() && !err.is_timeout() && err.status().is_none(),
        "{err}"
    );
    err
}

#[tokio::test]
async fn server_of_another_trust_domain_is_refused() {
    let mesh = Mesh::new("cluster.local");
    let other = Mesh::new("other.local");
    let other_id = id("other.local", "server");
    let server = server_with(&mesh, other.cert(&other_id)).await;
    // Trusting the other root makes the chain good, so only the trust domain is wrong.
    let bundle = mesh.bundle.with_roots_of(&other.bundle).unwrap();
    let pool = mesh.pool(&bundle, PoolConfig::default());
    let request = ambit_hbone::ConnectRequest::new(
        client_id(),
        vec![other_id],
        server.addr,
        "10.0.0.1:80".parse().unwrap(),
    );
    let err = within(pool.connect(request)).await.unwrap_err();
    assert!(err.is_tls(), "{err}");
    assert_eq!(
        err.verification_failure(),
        Some(VerificationFailure::WrongTrustDomain),
        "{err}"
    );
}

#[tokio::test]
async fn server_of_a_foreign_root_is_refused() {
    let mesh = Mesh::new("cluster.local");
    let foreign = Mesh::new("cluster.local");
    let server = server_with(&mesh, foreign.cert(&server_id())).await;
    let pool = mesh.pool(&mesh.bundle, PoolConfig::default());
    let err = failure_against(&server, &pool).await;
    assert_eq!(
        err.verification_failure(),
        Some(VerificationFailure::UnknownIssuer),
        "{err}"
    );
}

#[tokio::test]
async fn expired_server_certificate_is_refused() {
    let mesh = Mesh::new("cluster.local");
    let now = SystemTime::now();
    let expired = mesh
        .ca
        .issue_workload_with_validity(
            &server_id(),
            Validity {
                not_before: now - Duration::from_secs(7200),
                not_after: now - Duration::from_secs(3600),
            },
        )
        .unwrap();
    let server = server_with(&mesh, Arc::new(expired)).await;
    let pool = mesh.pool(&mesh.bundle, PoolConfig::default());
    let err = failure_against(&server, &pool).await;
    assert_eq!(
        err.verification_failure(),
        Some(VerificationFailure::Expired),
        "{err}"
    );
}

#[tokio::test]
async fn unexpected_server_identity_is_refused() {
    let mesh = Mesh::new("cluster.local");
    let server = server_with(&mesh, mesh.cert(&id("cluster.local", "imposter"))).await;
    let pool = mesh.pool(&mesh.bundle, PoolConfig::default());
    let err = failure_against(&server, &pool).await;
    assert_eq!(
        err.verification_failure(),
        Some(VerificationFailure::UnexpectedIdentity),
        "{err}"
    );
    // Nothing half-made is left in the pool.
    assert_eq!(pool.connection_count(), 0);
}

#[tokio::test]
async fn server_refusing_our_certificate_is_a_tls_error() {
    let mesh = Mesh::new("cluster.local");
    let server = TestServer::start(
        mesh.server_tls(&server_id()),
        echo_handler(),
        ServerConfig::default(),
    )
    .await;
    // Our client certificate comes from a root the server does not trust.
    let foreign = Mesh::new("cluster.local");
    let pool = foreign.pool(&mesh.bundle, PoolConfig::default());
    let err = failure_against(&server, &pool).await;
    // The server's alert says so, but it is not *our* verification that failed.
    assert_eq!(err.verification_failure(), None, "{err}");
}

#[tokio::test]
async fn rotation_keeps_open_streams_and_new_connections_use_the_new_certificate() {
    let mesh = Mesh::new("cluster.local");
    let next = Mesh::new("cluster.local");
    // The server trusts clients of both roots; it starts with a certificate of the first.
    let server_bundle = mesh.bundle.with_roots_of(&next.bundle).unwrap();
    let source = Arc::new(RotatingCert(RwLock::new(mesh.cert(&server_id()))));
    let tls = ambit_identity::tls::server_config(source.clone(), &server_bundle).unwrap();
    let server = TestServer::start(tls, echo_handler(), ServerConfig::default()).await;

    let old_pool = mesh.pool(&mesh.bundle, PoolConfig::default());
    // A client trusting only the next root: refused while the old certificate is served.
    let new_pool = next.pool(&next.bundle, PoolConfig::default());
    let err = within(new_pool.connect(server.request("10.0.0.1:80")))
        .await
        .unwrap_err();
    assert_eq!(
        err.verification_failure(),
        Some(VerificationFailure::UnknownIssuer)
    );

    let mut open = within(old_pool.connect(server.request("10.0.0.1:80")))
        .await
        .unwrap();
    *source.0.write().unwrap() = next.cert(&server_id());

    // New connections get the new certificate...
    let mut fresh = within(new_pool.connect(server.request("10.0.0.1:80")))
        .await
        .unwrap();
    assert_eq!(echo_round_trip(&mut fresh, b"new cert").await, b"new cert");
    // ...while the stream on the old connection carries on.
    let data = payload(512 * 1024);
    assert_eq!(echo_round_trip(&mut open, &data).await, data);
    assert_eq!(server.connections(), 3);
}
