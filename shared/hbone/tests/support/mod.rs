//! Shared fixtures for the integration tests: a test CA, TLS configs, an HBONE server on an
//! ephemeral port that counts its TCP connections, and an echo handler.
// Test fixtures: each test binary uses a different subset, and a failed setup should panic.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::error::Error as StdError;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use ambit_hbone::{
    ClientTlsProvider, ConnectRequest, Drain, Handler, HboneStream, InboundRequest, Pool,
    PoolConfig, Responder, Server, ServerConfig, Target,
};
use ambit_identity::tls::{CertificateSource, FixedCertificate};
use ambit_identity::{CaOptions, CertificateAuthority, SpiffeId, TrustBundle, WorkloadCertificate};
use http::{HeaderMap, HeaderValue};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Bound on every network wait in the tests.
pub const TIMEOUT: Duration = Duration::from_secs(10);

pub type BoxError = Box<dyn StdError + Send + Sync>;

/// Awaits `future`, failing the test if it takes longer than [`TIMEOUT`].
pub async fn within<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(TIMEOUT, future)
        .await
        .expect("timed out")
}

pub fn id(trust_domain: &str, sa: &str) -> SpiffeId {
    SpiffeId::new(trust_domain, "test", sa).unwrap()
}

pub fn client_id() -> SpiffeId {
    id("cluster.local", "client")
}

pub fn server_id() -> SpiffeId {
    id("cluster.local", "server")
}

/// A CA for one trust domain and the bundle that trusts it.
pub struct Mesh {
    pub ca: Arc<CertificateAuthority>,
    pub bundle: TrustBundle,
}

impl Mesh {
    pub fn new(trust_domain: &str) -> Self {
        let ca =
            Arc::new(CertificateAuthority::generate(trust_domain, CaOptions::default()).unwrap());
        let bundle = ca.trust_bundle().unwrap();
        Self { ca, bundle }
    }

    pub fn cert(&self, id: &SpiffeId) -> Arc<WorkloadCertificate> {
        Arc::new(
            self.ca
                .issue_workload(id, Duration::from_secs(3600))
                .unwrap(),
        )
    }

    /// A server config presenting a fresh certificate for `id`, trusting `bundle` for clients.
    pub fn server_tls(&self, id: &SpiffeId) -> Arc<rustls::ServerConfig> {
        ambit_identity::tls::server_config(Arc::new(FixedCertificate(self.cert(id))), &self.bundle)
            .unwrap()
    }

    /// A pool whose client certificates come from this CA and which trusts `bundle`.
    pub fn pool(&self, bundle: &TrustBundle, config: PoolConfig) -> Pool {
        Pool::new(Arc::new(TestTls::new(self, bundle.clone())), config)
    }
}

/// Client TLS for tests: one certificate per source identity, issued on first use.
pub struct TestTls {
    certs: RwLock<Vec<(SpiffeId, Arc<WorkloadCertificate>)>>,
    ca: Arc<CertificateAuthority>,
    bundle: TrustBundle,
}

impl TestTls {
    pub fn new(mesh: &Mesh, bundle: TrustBundle) -> Self {
        Self {
            certs: RwLock::new(Vec::new()),
            ca: mesh.ca.clone(),
            bundle,
        }
    }
}

impl ClientTlsProvider for TestTls {
    fn client_config(
        &self,
        source: &SpiffeId,
        expected: &[SpiffeId],
    ) -> Result<Arc<rustls::ClientConfig>, BoxError> {
        let known = self
            .certs
            .read()
            .unwrap()
            .iter()
            .find(|(id, _)| id == source)
            .map(|(_, cert)| cert.clone());
        let cert = match known {
            Some(cert) => cert,
            None => {
                let cert = Arc::new(self.ca.issue_workload(source, Duration::from_secs(3600))?);
                self.certs
                    .write()
                    .unwrap()
                    .push((source.clone(), cert.clone()));
                cert
            }
        };
        let config = ambit_identity::tls::client_config(
            Arc::new(FixedCertificate(cert)),
            &self.bundle,
            expected.to_vec(),
        )?;
        Ok(config)
    }
}

/// A certificate source whose certificate can be replaced, as a rotation would.
#[derive(Debug)]
pub struct RotatingCert(pub RwLock<Arc<WorkloadCertificate>>);

impl CertificateSource for RotatingCert {
    fn current(&self) -> Option<Arc<WorkloadCertificate>> {
        Some(self.0.read().unwrap().clone())
    }
}

/// An HBONE server on 127.0.0.1 with its own accept loop, counting TCP connections.
pub struct TestServer {
    pub addr: SocketAddr,
    pub accepted: Arc<AtomicUsize>,
    /// The drain handed to connections accepted from now on.
    connection_drain: Arc<Mutex<Drain>>,
    task: JoinHandle<()>,
}

impl TestServer {
    pub async fn start(
        tls: Arc<rustls::ServerConfig>,
        handler: impl Handler,
        config: ServerConfig,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = Server::new(tls, handler, config);
        let accepted = Arc::new(AtomicUsize::new(0));
        let connection_drain = Arc::new(Mutex::new(Drain::new()));
        let counter = accepted.clone();
        let drains = connection_drain.clone();
        let task = tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                counter.fetch_add(1, Ordering::SeqCst);
                let server = server.clone();
                let signal = drains.lock().unwrap().signal();
                tokio::spawn(async move {
                    let _ = server.serve_connection(tcp, signal).await;
                });
            }
        });
        Self {
            addr,
            accepted,
            connection_drain,
            task,
        }
    }

    /// Drains (GOAWAY) every connection accepted so far; later ones are not affected.
    pub fn drain_connections(&self) {
        let old = std::mem::take(&mut *self.connection_drain.lock().unwrap());
        old.start();
    }

    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// A request from the usual client to the usual server identity, for `target`.
    pub fn request(&self, target: &str) -> ConnectRequest {
        ConnectRequest::new(
            client_id(),
            vec![server_id()],
            self.addr,
            target.parse::<Target>().unwrap(),
        )
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Accepts every tunnel (answering with a `baggage` header) and echoes bytes until EOF,
/// then half-closes.
pub fn echo_handler() -> impl Handler {
    |_request: InboundRequest, responder: Responder| async move {
        let mut headers = HeaderMap::new();
        headers.insert(
            "baggage",
            HeaderValue::from_static("k8s.namespace.name=test"),
        );
        let Ok(stream) = responder.accept(headers) else {
            return;
        };
        let (mut reader, mut writer) = tokio::io::split(stream);
        let _ = tokio::io::copy(&mut reader, &mut writer).await;
        let _ = writer.shutdown().await;
    }
}

/// What a handler saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub peer: SpiffeId,
    pub local_addr: SocketAddr,
    pub remote_addr: SocketAddr,
    pub target: Target,
    pub headers: HeaderMap,
}

/// An echo handler that also reports each request it sees.
pub fn recording_echo_handler() -> (impl Handler, mpsc::UnboundedReceiver<Seen>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let echo = Arc::new(echo_handler());
    let handler = move |request: InboundRequest, responder: Responder| {
        let _ = tx.send(Seen {
            peer: request.peer_identity().clone(),
            local_addr: request.local_addr(),
            remote_addr: request.remote_addr(),
            target: request.target().clone(),
            headers: request.headers().clone(),
        });
        echo.handle(request, responder)
    };
    (handler, rx)
}

/// Writes `data`, shuts down, and reads everything back.
pub async fn echo_round_trip(stream: &mut HboneStream, data: &[u8]) -> Vec<u8> {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let write = async {
        writer.write_all(data).await.unwrap();
        writer.shutdown().await.unwrap();
    };
    let read = async {
        let mut back = Vec::new();
        reader.read_to_end(&mut back).await.unwrap();
        back
    };
    let ((), back) = within(async { tokio::join!(write, read) }).await;
    back
}

/// Deterministic, non-repeating test payload.
pub fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// A TCP relay in front of a server that can be frozen: it then stops forwarding in both
/// directions without closing anything, like a peer that hangs.
pub struct FreezableRelay {
    pub addr: SocketAddr,
    frozen: tokio::sync::watch::Sender<bool>,
}

impl FreezableRelay {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (frozen, _) = tokio::sync::watch::channel(false);
        let frozen_rx = frozen.subscribe();
        tokio::spawn(async move {
            while let Ok((downstream, _)) = listener.accept().await {
                let Ok(upstream) = tokio::net::TcpStream::connect(upstream).await else {
                    continue;
                };
                let (down_read, down_write) = downstream.into_split();
                let (up_read, up_write) = upstream.into_split();
                tokio::spawn(relay(down_read, up_write, frozen_rx.clone()));
                tokio::spawn(relay(up_read, down_write, frozen_rx.clone()));
            }
        });
        Self { addr, frozen }
    }

    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }
}

async fn relay(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: tokio::sync::watch::Receiver<bool>,
) {
    let mut buf = vec![0; 16 * 1024];
    loop {
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = async { frozen.wait_for(|f| *f).await.map(|_| ()) } => {
                // Hold both sockets open forever, forwarding nothing.
                std::future::pending::<()>().await;
                return;
            }
        };
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
