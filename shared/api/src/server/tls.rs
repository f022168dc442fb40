//! TLS on the control-plane port: TLS 1.3 with ALPN `h2`, presenting a serving certificate
//! that can be replaced while the listener runs ([`ServerTls::replace`]).
//!
//! The handshake happens here (tokio-rustls) rather than in tonic: tonic's TLS takes a fixed
//! identity, and renewing the certificate would mean rebinding the port.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// A client has this long to finish its handshake; a stalled one must not hold a task forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The first byte of a TLS ClientHello (record content type `handshake`).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// Handshaken connections waiting for the gRPC server to take them.
const ACCEPT_BACKLOG: usize = 64;

/// Why the serving certificate cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerTlsError {
    /// The chain is empty.
    #[error("the serving certificate chain is empty")]
    EmptyChain,
    /// rustls refused the key or the configuration.
    #[error("serving certificate: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The controller port's TLS settings and its current serving certificate. Clones share the
/// certificate: [`replace`](Self::replace) on one is seen by every handshake after it.
#[derive(Debug, Clone)]
pub struct ServerTls {
    config: Arc<rustls::ServerConfig>,
    current: Arc<CurrentCertificate>,
}

/// The certificate handshakes present; swapped whole on renewal.
#[derive(Debug)]
struct CurrentCertificate(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for CurrentCertificate {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

impl ServerTls {
    /// Presents `chain` (leaf first) with `key`.
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, ServerTlsError> {
        let current = Arc::new(CurrentCertificate(ArcSwap::from_pointee(certified_key(
            chain, &key,
        )?)));
        let provider = ambit_identity::tls::crypto_provider();
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        config.alpn_protocols = vec![ambit_identity::tls::ALPN_H2.to_vec()];
        Ok(Self {
            config: Arc::new(config),
            current,
        })
    }

    /// Presents `chain` with `key` from the next handshake on; open connections keep theirs.
    pub fn replace(
        &self,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<(), ServerTlsError> {
        self.current.0.store(Arc::new(certified_key(chain, &key)?));
        Ok(())
    }

    /// The chain presented now, leaf first.
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.current.0.load().cert.clone()
    }
}

fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: &PrivateKeyDer<'static>,
) -> Result<CertifiedKey, ServerTlsError> {
    if chain.is_empty() {
        return Err(ServerTlsError::EmptyChain);
    }
    let provider = ambit_identity::tls::crypto_provider();
    let signing_key = provider.key_provider.load_private_key(key.clone_key())?;
    Ok(CertifiedKey::new(chain, signing_key))
}

/// A TLS connection accepted on the control-plane port.
#[derive(Debug)]
pub(crate) struct TlsConnection {
    stream: TlsStream<TcpStream>,
    remote: Option<SocketAddr>,
    local: Option<SocketAddr>,
}

impl Connected for TlsConnection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        TcpConnectInfo {
            local_addr: self.local,
            remote_addr: self.remote,
        }
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Accepts connections on `listener` and handshakes each in its own task, so a slow or broken
/// client holds up nobody; yields the handshaken ones. Failed handshakes are logged and
/// dropped. The accept loop ends when the receiver is dropped.
pub(crate) fn accept_tls(
    listener: TcpListener,
    tls: &ServerTls,
) -> mpsc::Receiver<io::Result<TlsConnection>> {
    let acceptor = TlsAcceptor::from(tls.config.clone());
    let (connections, receiver) = mpsc::channel(ACCEPT_BACKLOG);
    tokio::spawn(async move {
        loop {
            let (stream, remote) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        // Out of descriptors and the like: pause instead of spinning.
                        tracing::warn!(error = %err, "control-plane accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                () = connections.closed() => return,
            };
            let _ = stream.set_nodelay(true);
            let local = stream.local_addr().ok();
            let acceptor = acceptor.clone();
            let connections = connections.clone();
            tokio::spawn(async move {
                let handshake = async {
                    // Name the usual mistake instead of logging a TLS parse error.
                    let mut first = [0u8; 1];
                    if stream.peek(&mut first).await? == 1 && first[0] != TLS_HANDSHAKE_RECORD {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "not TLS (a plaintext client? proxies need --controller https://)",
                        ));
                    }
                    acceptor.accept(stream).await
                };
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                    Ok(Ok(stream)) => {
                        let connection = TlsConnection {
                            stream,
                            remote: Some(remote),
                            local,
                        };
                        // Only fails when the server is gone.
                        let _ = connections.send(Ok(connection)).await;
                    }
                    Ok(Err(err)) => {
                        tracing::info!(%remote, error = %err, "control-plane TLS handshake failed");
                    }
                    Err(_) => {
                        tracing::info!(%remote, "control-plane TLS handshake timed out");
                    }
                }
            });
        }
    });
    receiver
}
