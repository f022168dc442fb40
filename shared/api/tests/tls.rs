//! TLS on the control-plane port, over real sockets on 127.0.0.1: the proxies' clients
//! connect only to a server whose certificate chains to their roots file and names the host
//! they expect; plaintext clients get nowhere; a replaced serving certificate is presented to
//! new connections; a rewritten roots file is used on the next connect.

// Test helpers outside #[test] functions may panic on setup failures too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ambit_api::server::{
    self, CaServer, Caller, HostedIdentities, ServerTls, ServerTransport, StaticTokens,
};
use ambit_api::{
    ConfigClient, ConfigClientOptions, ConfigServer, ConfigServerOptions, ControllerEndpoint,
    GrpcIssuer, ScopeKey,
};
use ambit_identity::{
    CaOptions, CertificateAuthority, CertificateIssuer, IssueError, SpiffeId, Validity, WorkloadKey,
};
use common::{WAIT, snapshot, wait_for, workload};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

const TRUST_DOMAIN: &str = "cluster.local";
const DNS_NAME: &str = "ambit-controller.ambit-system.svc";
const TOKEN: &str = "token-node-a-0123456789";

struct TlsServer {
    addr: SocketAddr,
    tls: ServerTls,
    ca: Arc<CertificateAuthority>,
    config: ConfigServer,
    dir: tempfile::TempDir,
    _stop: oneshot::Sender<()>,
}

fn serving_tls(ca: &CertificateAuthority) -> ServerTls {
    let cert = issue(ca);
    ServerTls::new(cert.chain, cert.key).unwrap()
}

fn issue(ca: &CertificateAuthority) -> ambit_identity::ServerCertificate {
    ca.issue_server_certificate(
        &[DNS_NAME.to_owned()],
        &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
        Validity::starting_now(Duration::from_secs(3600)),
    )
    .unwrap()
}

impl TlsServer {
    async fn start() -> Self {
        let ca =
            Arc::new(CertificateAuthority::generate(TRUST_DOMAIN, CaOptions::default()).unwrap());
        let tls = serving_tls(&ca);
        let tokens = StaticTokens::new();
        tokens.insert(TOKEN, Caller::Node("node-a".into()), None);
        let bundle = ca.trust_bundle().unwrap();
        let ca_server = CaServer::new(
            ca.clone(),
            &bundle,
            Arc::new(tokens),
            Arc::new(HostedIdentities::new(|_, _| true)),
        );
        let config = ConfigServer::new(
            ConfigServerOptions::default().with_debounce(Duration::from_millis(10)),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(server::serve(
            listener,
            ServerTransport::Tls(tls.clone()),
            Some(config.clone()),
            Some(ca_server),
            async {
                let _ = stopped.await;
            },
        ));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("root-cert.pem"), ca.root_pem()).unwrap();
        Self {
            addr,
            tls,
            ca,
            config,
            dir,
            _stop: stop,
        }
    }

    fn roots(&self) -> PathBuf {
        self.dir.path().join("root-cert.pem")
    }

    fn https(&self) -> http::Uri {
        format!("https://{}", self.addr).parse().unwrap()
    }

    fn endpoint(&self, roots: &Path, server_name: Option<&str>) -> ControllerEndpoint {
        ControllerEndpoint::tls(self.https(), roots, server_name).unwrap()
    }
}

/// A root of another CA, written to its own file.
fn foreign_roots(dir: &Path) -> PathBuf {
    let other = CertificateAuthority::generate(TRUST_DOMAIN, CaOptions::default()).unwrap();
    let path = dir.join("foreign-root.pem");
    std::fs::write(&path, other.root_pem()).unwrap();
    path
}

async fn issue_once(endpoint: &ControllerEndpoint) -> Result<(), IssueError> {
    let issuer = GrpcIssuer::new(endpoint, TOKEN).unwrap();
    let id = SpiffeId::new(TRUST_DOMAIN, "shop", "web").unwrap();
    let key = WorkloadKey::generate().unwrap();
    tokio::time::timeout(WAIT, issuer.issue(&id, key.csr_der(&id).unwrap()))
        .await
        .expect("the issuer hung")
        .map(|_| ())
}

#[tokio::test]
async fn client_trusting_the_root_gets_config_and_certificates() {
    let server = TlsServer::start().await;
    let node = ScopeKey::node("node-a");
    let version = server
        .config
        .publish(node.clone(), snapshot(&[workload("a", "node-a")]));
    // By IP (local mode) and by DNS name (the Service's name, as in Kubernetes).
    for name in [None, Some(DNS_NAME)] {
        let client = ConfigClient::start(
            server.endpoint(&server.roots(), name),
            node.clone(),
            ConfigClientOptions::new("ztunnel/node-a")
                .with_backoff(Duration::from_millis(20), Duration::from_millis(100)),
        );
        wait_for(&mut client.config(), "config over TLS", |c| {
            c.version() == Some(version)
        })
        .await;
        issue_once(&server.endpoint(&server.roots(), name))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn untrusted_root_is_refused_clearly() {
    let server = TlsServer::start().await;
    let roots = foreign_roots(server.dir.path());
    let err = issue_once(&server.endpoint(&roots, None))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        !err.is_refused(),
        "a TLS failure is an outage, not a CA refusal: {text}"
    );
    assert!(text.contains("TLS handshake"), "{text}");
    assert!(text.contains("UnknownIssuer"), "{text}");
}

#[tokio::test]
async fn server_name_mismatch_is_refused() {
    let server = TlsServer::start().await;
    let err = issue_once(&server.endpoint(&server.roots(), Some("elsewhere.example")))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("TLS handshake"), "{err}");
    assert!(err.contains("elsewhere.example"), "{err}");
    assert!(err.contains("not valid for name"), "{err}");
}

#[tokio::test]
async fn plaintext_client_gets_nowhere() {
    let server = TlsServer::start().await;
    let plaintext =
        ControllerEndpoint::plaintext(format!("http://{}", server.addr).parse().unwrap()).unwrap();
    let err = issue_once(&plaintext).await.unwrap_err();
    assert!(!err.is_refused(), "{err}");
    assert_eq!(server.config.stats().denied, 0);

    // What a plaintext HTTP/2 client sees on the wire: the connection closes without a
    // SETTINGS frame or anything else (the server sees no TLS record and says nothing).
    let mut raw = TcpStream::connect(server.addr).await.unwrap();
    raw.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    let mut reply = Vec::new();
    // Closed with the preface unread, so the peer may see a reset rather than an EOF.
    match tokio::time::timeout(WAIT, raw.read_to_end(&mut reply))
        .await
        .unwrap()
    {
        Ok(_) => assert!(reply.is_empty(), "{reply:?}"),
        Err(err) => assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}"),
    }
}

#[tokio::test]
async fn missing_roots_file_is_named() {
    let server = TlsServer::start().await;
    let missing = server.dir.path().join("nope.pem");
    let err = issue_once(&server.endpoint(&missing, None))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope.pem"), "{err}");
}

#[tokio::test]
async fn rewritten_roots_file_is_used_on_the_next_connect() {
    let server = TlsServer::start().await;
    let roots = server.dir.path().join("rotating-root.pem");
    std::fs::copy(foreign_roots(server.dir.path()), &roots).unwrap();
    let issuer = GrpcIssuer::new(&server.endpoint(&roots, None), TOKEN).unwrap();
    let id = SpiffeId::new(TRUST_DOMAIN, "shop", "web").unwrap();
    let key = WorkloadKey::generate().unwrap();
    let csr = key.csr_der(&id).unwrap();
    let first = tokio::time::timeout(WAIT, issuer.issue(&id, csr.clone()))
        .await
        .unwrap();
    assert!(first.is_err());
    // The mesh root is added (as during a rotation: both roots trusted).
    let both = format!(
        "{}{}",
        std::fs::read_to_string(&roots).unwrap(),
        server.ca.root_pem()
    );
    std::fs::write(&roots, both).unwrap();
    let second = tokio::time::timeout(WAIT, issuer.issue(&id, csr))
        .await
        .unwrap();
    assert!(second.is_ok(), "{:?}", second.err());
}

/// The leaf a fresh TLS connection is shown.
async fn presented_leaf(
    addr: SocketAddr,
    root: &CertificateDer<'static>,
) -> CertificateDer<'static> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let config =
        rustls::ClientConfig::builder_with_provider(ambit_identity::tls::crypto_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(DNS_NAME).unwrap(), tcp)
        .await
        .unwrap();
    let (_, connection) = tls.get_ref();
    assert_eq!(
        connection.alpn_protocol(),
        None,
        "ALPN is only answered when offered"
    );
    connection.peer_certificates().unwrap()[0].clone()
}

#[tokio::test]
async fn replaced_certificate_is_presented_to_new_connections() {
    let server = TlsServer::start().await;
    let before = presented_leaf(server.addr, server.ca.root()).await;
    assert_eq!(before, server.tls.chain()[0]);
    let renewed = issue(&server.ca);
    let renewed_leaf = renewed.chain[0].clone();
    server.tls.replace(renewed.chain, renewed.key).unwrap();
    let after = presented_leaf(server.addr, server.ca.root()).await;
    assert_eq!(after, renewed_leaf);
    assert_ne!(after, before);
}
