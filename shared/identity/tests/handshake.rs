//! Real TLS handshakes over loopback TCP with the HBONE configs: identities seen on both sides,
//! each kind of verification failure classified on the verifying side, and rotation.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers fail the test by panicking"
)]

use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ambit_identity::tls::ALPN_H2;
use ambit_identity::{
    CaOptions, CertStore, CertStoreOptions, CertificateAuthority, CertificateSource,
    FixedCertificate, SpiffeId, TrustBundle, Validity, VerificationFailure, WorkloadCertificate,
    client_config, crypto_provider, peer_identity, server_config, verification_failure,
};
use arc_swap::ArcSwap;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_rustls::client::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

const HOUR: Duration = Duration::from_secs(3600);
const WAIT: Duration = Duration::from_secs(10);

/// A server on 127.0.0.1 that reports each handshake's outcome and echoes bytes afterwards.
struct Server {
    addr: std::net::SocketAddr,
    outcomes: mpsc::UnboundedReceiver<io::Result<SpiffeId>>,
}

/// A certificate source whose certificate the test swaps, as the store does on renewal.
#[derive(Debug)]
struct Rotating(ArcSwap<WorkloadCertificate>);

/// A source with nothing to present.
#[derive(Debug)]
struct Empty;

impl CertificateSource for Rotating {
    fn current(&self) -> Option<Arc<WorkloadCertificate>> {
        Some(self.0.load_full())
    }
}

impl CertificateSource for Empty {
    fn current(&self) -> Option<Arc<WorkloadCertificate>> {
        None
    }
}

impl Server {
    async fn start(config: Arc<rustls::ServerConfig>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (report, outcomes) = mpsc::unbounded_channel();
        let acceptor = TlsAcceptor::from(config);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let report = report.clone();
                tokio::spawn(async move {
                    match acceptor.accept(tcp).await {
                        Ok(mut tls) => {
                            let conn = tls.get_ref().1;
                            // HBONE clients send no SNI; a name here would be a config bug.
                            let outcome = match conn.server_name() {
                                None => Ok(peer_identity(conn).unwrap()),
                                Some(name) => Err(io::Error::other(format!("SNI sent: {name}"))),
                            };
                            let _ = report.send(outcome);
                            let mut buf = [0u8; 64];
                            while let Ok(n @ 1..) = tls.read(&mut buf).await {
                                if tls.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                        Err(err) => {
                            let _ = report.send(Err(err));
                        }
                    }
                });
            }
        });
        Self { addr, outcomes }
    }

    async fn next_outcome(&mut self) -> io::Result<SpiffeId> {
        timeout(WAIT, self.outcomes.recv()).await.unwrap().unwrap()
    }
}

/// Connects, completes the handshake and one echo round trip.
async fn connect(
    config: Arc<rustls::ClientConfig>,
    addr: std::net::SocketAddr,
) -> io::Result<TlsStream<TcpStream>> {
    timeout(WAIT, async {
        let tcp = TcpStream::connect(addr).await?;
        // An IP address: the verifier must not care about names.
        let name = ServerName::IpAddress(addr.ip().into());
        let mut tls = TlsConnector::from(config).connect(name, tcp).await?;
        echo(&mut tls).await?;
        Ok(tls)
    })
    .await
    .unwrap()
}

async fn echo(tls: &mut TlsStream<TcpStream>) -> io::Result<()> {
    tls.write_all(b"ping").await?;
    let mut buf = [0u8; 4];
    tls.read_exact(&mut buf).await?;
    assert_eq!(&buf, b"ping");
    Ok(())
}

fn id(td: &str, sa: &str) -> SpiffeId {
    SpiffeId::new(td, "default", sa).unwrap()
}

fn ca(td: &str) -> CertificateAuthority {
    CertificateAuthority::generate(td, CaOptions::default()).unwrap()
}

fn fixed(cert: WorkloadCertificate) -> Arc<dyn CertificateSource> {
    Arc::new(FixedCertificate(Arc::new(cert)))
}

fn failure(err: &io::Error) -> Option<VerificationFailure> {
    verification_failure(err)
}

fn expired(ca: &CertificateAuthority, id: &SpiffeId) -> WorkloadCertificate {
    let now = SystemTime::now();
    let window = Validity {
        not_before: now - 3 * HOUR,
        not_after: now - HOUR,
    };
    ca.issue_workload_with_validity(id, window).unwrap()
}

/// Runs one handshake with the given sources and bundles; returns (server outcome, client outcome).
async fn handshake(
    server_source: Arc<dyn CertificateSource>,
    server_bundle: &TrustBundle,
    client_source: Arc<dyn CertificateSource>,
    client_bundle: &TrustBundle,
    expected: Vec<SpiffeId>,
) -> (io::Result<SpiffeId>, io::Result<SpiffeId>) {
    let mut server = Server::start(server_config(server_source, server_bundle).unwrap()).await;
    let client = client_config(client_source, client_bundle, expected).unwrap();
    let client_outcome = connect(client, server.addr)
        .await
        .map(|tls| peer_identity(tls.get_ref().1).unwrap());
    // A client that fails before sending its certificate leaves the server with a plain error.
    (server.next_outcome().await, client_outcome)
}

#[tokio::test]
async fn mutual_handshake_shows_each_side_the_other_identity() {
    let ca = ca("cluster.local");
    let bundle = ca.trust_bundle().unwrap();
    let (server_id, client_id) = (id("cluster.local", "server"), id("cluster.local", "client"));
    let server_cert = fixed(ca.issue_workload(&server_id, HOUR).unwrap());
    let mut server = Server::start(server_config(server_cert, &bundle).unwrap()).await;
    let client = client_config(
        fixed(ca.issue_workload(&client_id, HOUR).unwrap()),
        &bundle,
        vec![id("cluster.local", "other"), server_id.clone()],
    )
    .unwrap();

    let tls = connect(client, server.addr).await.unwrap();
    let conn = tls.get_ref().1;
    assert_eq!(peer_identity(conn).unwrap(), server_id);
    assert_eq!(conn.alpn_protocol(), Some(ALPN_H2));
    assert_eq!(
        conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    let suite = conn.negotiated_cipher_suite().unwrap().suite();
    assert!(matches!(
        suite,
        rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
            | rustls::CipherSuite::TLS13_AES_256_GCM_SHA384
    ));
    assert_eq!(server.next_outcome().await.unwrap(), client_id);
}

#[tokio::test]
async fn store_handles_serve_both_sides() {
    let ca = Arc::new(ca("cluster.local"));
    let bundle = ca.trust_bundle().unwrap();
    let store = CertStore::new(ca.clone(), CertStoreOptions::default());
    let (server_id, client_id) = (id("cluster.local", "server"), id("cluster.local", "client"));
    store.certificate(&server_id).await.unwrap();
    store.certificate(&client_id).await.unwrap();
    let (server, client) = handshake(
        Arc::new(store.source(&server_id).unwrap()),
        &bundle,
        Arc::new(store.source(&client_id).unwrap()),
        &bundle,
        vec![server_id.clone()],
    )
    .await;
    assert_eq!(server.unwrap(), client_id);
    assert_eq!(client.unwrap(), server_id);
}

#[tokio::test]
async fn chains_through_an_intermediate_verify_against_the_root() {
    let root = ca("cluster.local");
    let intermediate = root.new_intermediate(HOUR).unwrap();
    let bundle = root.trust_bundle().unwrap();
    let (server_id, client_id) = (id("cluster.local", "server"), id("cluster.local", "client"));
    let server_cert = intermediate.issue_workload(&server_id, HOUR).unwrap();
    assert_eq!(server_cert.chain().len(), 2);
    let (server, client) = handshake(
        fixed(server_cert),
        &bundle,
        fixed(intermediate.issue_workload(&client_id, HOUR).unwrap()),
        &bundle,
        vec![server_id.clone()],
    )
    .await;
    assert_eq!(server.unwrap(), client_id);
    assert_eq!(client.unwrap(), server_id);
}

#[tokio::test]
async fn client_of_another_trust_domain_is_rejected_even_if_its_root_is_trusted() {
    let home = ca("cluster.local");
    let other = ca("other.domain");
    let bundle = home
        .trust_bundle()
        .unwrap()
        .with_roots_of(&other.trust_bundle().unwrap())
        .unwrap();
    let server_id = id("cluster.local", "server");
    let (server, _) = handshake(
        fixed(home.issue_workload(&server_id, HOUR).unwrap()),
        &bundle,
        fixed(
            other
                .issue_workload(&id("other.domain", "client"), HOUR)
                .unwrap(),
        ),
        &bundle,
        vec![server_id],
    )
    .await;
    let err = server.unwrap_err();
    assert_eq!(
        failure(&err),
        Some(VerificationFailure::WrongTrustDomain),
        "{err}"
    );
}

#[tokio::test]
async fn server_of_another_trust_domain_is_rejected_even_if_expected() {
    let home = ca("cluster.local");
    let other = ca("other.domain");
    let bundle = home
        .trust_bundle()
        .unwrap()
        .with_roots_of(&other.trust_bundle().unwrap())
        .unwrap();
    let foreign_server = id("other.domain", "server");
    let (_, client) = handshake(
        fixed(other.issue_workload(&foreign_server, HOUR).unwrap()),
        &other.trust_bundle().unwrap(),
        fixed(
            home.issue_workload(&id("cluster.local", "client"), HOUR)
                .unwrap(),
        ),
        &bundle,
        vec![foreign_server],
    )
    .await;
    let err = client.unwrap_err();
    assert_eq!(
        failure(&err),
        Some(VerificationFailure::WrongTrustDomain),
        "{err}"
    );
}

#[tokio::test]
async fn certificates_from_a_foreign_root_are_unknown_issuers_on_both_sides() {
    let home = ca("cluster.local");
    let stranger = ca("cluster.local");
    let bundle = home.trust_bundle().unwrap();
    let server_id = id("cluster.local", "server");

    let (server, _) = handshake(
        fixed(home.issue_workload(&server_id, HOUR).unwrap()),
        &bundle,
        fixed(
            stranger
                .issue_workload(&id("cluster.local", "client"), HOUR)
                .unwrap(),
        ),
        &bundle,
        vec![server_id.clone()],
    )
    .await;
    let err = server.unwrap_err();
    assert_eq!(
        failure(&err),
        Some(VerificationFailure::UnknownIssuer),
        "{err}"
    );

    let (_, client) = handshake(
        fixed(stranger.issue_workload(&server_id, HOUR).unwrap()),
        &stranger.trust_bundle().unwrap(),
        fixed(
            home.issue_workload(&id("cluster.local", "client"), HOUR)
                .unwrap(),
        ),
        &bundle,
        vec![server_id],
    )
    .await;
    let err = client.unwrap_err();
    assert_eq!(
        failure(&err),
        Some(VerificationFailure::UnknownIssuer),
        "{err}"
    );
}

#[tokio::test]
async fn expired_certificates_are_rejected_on_both_sides() {
    let ca = ca("cluster.local");
    let bundle = ca.trust_bundle().unwrap();
    let (server_id, client_id) = (id("cluster.local", "server"), id("cluster.local", "client"));

    let (server, _) = handshake(
        fixed(ca.issue_workload(&server_id, HOUR).unwrap()),
        &bundle,
        fixed(expired(&ca, &client_id)),
        &bundle,
        vec![server_id.clone()],
    )
    .await;
    let err = server.unwrap_err();
    assert_eq!(failure(&err), Some(VerificationFailure::Expired), "{err}");

    let (_, client) = handshake(
        fixed(expired(&ca, &server_id)),
        &bundle,
        fixed(ca.issue_workload(&client_id, HOUR).unwrap()),
        &bundle,
        vec![server_id],
    )
    .await;
    let err = client.unwrap_err();
    assert_eq!(failure(&err), Some(VerificationFailure::Expired), "{err}");
}

#[tokio::test]
async fn server_with_an_unexpected_identity_is_rejected() {
    let ca = ca("cluster.local");
    let bundle = ca.trust_bundle().unwrap();
    let (_, client) = handshake(
        fixed(
            ca.issue_workload(&id("cluster.local", "impostor"), HOUR)
                .unwrap(),
        ),
        &bundle,
        fixed(
            ca.issue_workload(&id("cluster.local", "client"), HOUR)
                .unwrap(),
        ),
        &bundle,
        vec![
            id("cluster.local", "server"),
            id("cluster.local", "server-2"),
        ],
    )
    .await;
    let err = client.unwrap_err();
    assert_eq!(
        failure(&err),
        Some(VerificationFailure::UnexpectedIdentity),
        "{err}"
    );
}

#[tokio::test]
async fn client_without_a_certificate_is_rejected() {
    let ca = ca("cluster.local");
    let bundle = ca.trust_bundle().unwrap();
    let server_id = id("cluster.local", "server");
    let (server, client) = handshake(
        fixed(ca.issue_workload(&server_id, HOUR).unwrap()),
        &bundle,
        Arc::new(Empty),
        &bundle,
        vec![server_id],
    )
    .await;
    let err = server.unwrap_err();
    assert_eq!(
        failure(&err),
        Some(VerificationFailure::NoClientCertificate),
        "{err}"
    );
    // The client only hears an alert: that is not its own verification failure.
    let err = client.unwrap_err();
    assert_eq!(failure(&err), None, "{err}");
}

#[tokio::test]
async fn rotated_server_certificate_is_used_by_the_next_handshake_only() {
    let ca = ca("cluster.local");
    let bundle = ca.trust_bundle().unwrap();
    let server_id = id("cluster.local", "server");
    let first = Arc::new(ca.issue_workload(&server_id, HOUR).unwrap());
    let source = Arc::new(Rotating(ArcSwap::new(first.clone())));
    let mut server = Server::start(server_config(source.clone(), &bundle).unwrap()).await;
    let client = client_config(
        fixed(
            ca.issue_workload(&id("cluster.local", "client"), HOUR)
                .unwrap(),
        ),
        &bundle,
        vec![server_id],
    )
    .unwrap();

    let mut before = connect(client.clone(), server.addr).await.unwrap();
    server.next_outcome().await.unwrap();
    let leaf_of =
        |tls: &TlsStream<TcpStream>| tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    assert_eq!(leaf_of(&before), *first.leaf());

    let second = Arc::new(
        ca.issue_workload(&id("cluster.local", "server"), HOUR)
            .unwrap(),
    );
    source.0.store(second.clone());
    let after = connect(client, server.addr).await.unwrap();
    server.next_outcome().await.unwrap();
    assert_eq!(leaf_of(&after), *second.leaf());
    assert_ne!(first.leaf(), second.leaf());

    // The connection made with the old certificate carries on.
    timeout(WAIT, echo(&mut before)).await.unwrap().unwrap();
}

#[test]
fn provider_offers_only_tls13_aes_gcm_and_two_groups() {
    let provider = crypto_provider();
    let suites: Vec<_> = provider.cipher_suites.iter().map(|s| s.suite()).collect();
    assert_eq!(
        suites,
        [
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256,
            rustls::CipherSuite::TLS13_AES_256_GCM_SHA384
        ]
    );
    let groups: Vec<_> = provider.kx_groups.iter().map(|g| g.name()).collect();
    assert_eq!(
        groups,
        [rustls::NamedGroup::X25519, rustls::NamedGroup::secp256r1]
    );
}

#[test]
fn classification_ignores_unrelated_errors_and_sees_through_io_errors() {
    assert_eq!(failure(&io::Error::other("connection reset")), None);
    let alert = rustls::Error::AlertReceived(rustls::AlertDescription::BadCertificate);
    assert_eq!(verification_failure(&alert), None);
    let wrapped = io::Error::new(
        io::ErrorKind::InvalidData,
        rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
    );
    assert_eq!(failure(&wrapped), Some(VerificationFailure::UnknownIssuer));
    let bad_sig = rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature);
    assert_eq!(
        verification_failure(&bad_sig),
        Some(VerificationFailure::Other)
    );
}

#[test]
fn client_config_needs_an_expected_identity() {
    let ca = ca("cluster.local");
    let cert = fixed(
        ca.issue_workload(&id("cluster.local", "client"), HOUR)
            .unwrap(),
    );
    assert!(client_config(cert, &ca.trust_bundle().unwrap(), vec![]).is_err());
}
