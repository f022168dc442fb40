//! The HBONE server: mutual TLS, then HTTP/2, then one CONNECT stream per tunnelled connection.
//!
//! Each request is checked here (method, pseudo-headers, `:authority`) and answered with the
//! HBONE error codes; a valid one goes to the [`Handler`], which decides with its
//! [`Responder`] whether the tunnel is accepted.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ambit_identity::SpiffeId;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use h2::RecvStream;
use h2::server::SendResponse;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::authority::{self, Target};
use crate::drain::DrainSignal;
use crate::settings::{
    CONNECTION_WINDOW, Keepalive, KeepaliveEnd, MAX_FRAME_SIZE, MAX_HEADER_LIST_SIZE,
    MAX_SEND_BUFFER, STREAM_WINDOW,
};
use crate::stream::{HboneStream, h2_to_io};

/// Back-off after a failed `accept`, so running out of file descriptors does not spin a core.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// Server tuning; the defaults are HBONE's.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// SETTINGS_MAX_CONCURRENT_STREAMS advertised to clients.
    pub max_concurrent_streams: u32,
    /// PING keepalive.
    pub keepalive: Keepalive,
    /// Time allowed for the TLS and HTTP/2 handshakes of a new connection.
    pub handshake_timeout: Duration,
}

/// Decides what to do with each valid CONNECT request.
///
/// The returned future is the life of the tunnel: typically it connects upstream, calls
/// [`Responder::accept`] and copies bytes until both sides are done.
pub trait Handler: Send + Sync + 'static {
    /// Handles one CONNECT stream.
    fn handle(&self, request: InboundRequest, responder: Responder) -> BoxFuture<'static, ()>;
}

/// A valid CONNECT request as the handler sees it.
#[derive(Debug)]
pub struct InboundRequest {
    peer: SpiffeId,
    local_addr: SocketAddr,
    remote_addr: SocketAddr,
    target: Target,
    headers: HeaderMap,
}

/// Answers one CONNECT request. Dropping it without answering replies `503`.
pub struct Responder {
    respond: Option<SendResponse<Bytes>>,
    body: Option<RecvStream>,
}

/// The HBONE server. Cheap to clone.
#[derive(Clone)]
pub struct Server {
    inner: Arc<ServerInner>,
}

struct ServerInner {
    tls: TlsAcceptor,
    handler: Arc<dyn Handler>,
    config: ServerConfig,
}

/// Why a connection ended abnormally.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct ConnectionError(#[from] ConnectionErrorKind);

#[derive(Debug, thiserror::Error)]
enum ConnectionErrorKind {
    #[error("TLS handshake failed: {0}")]
    Tls(#[source] io::Error),
    #[error("peer certificate carries no usable identity: {0}")]
    Identity(#[source] ambit_identity::tls::PeerIdentityError),
    #[error("TLS and HTTP/2 handshakes did not finish within {0:?}")]
    HandshakeTimeout(Duration),
    #[error("HTTP/2 handshake failed: {0}")]
    H2Handshake(#[source] h2::Error),
    #[error("HTTP/2 connection failed: {0}")]
    H2(#[source] h2::Error),
    #[error("peer did not answer PING within {0:?}")]
    KeepaliveTimeout(Duration),
}

/// What a connection's streams share.
#[derive(Debug)]
pub(crate) struct ConnectionInfo {
    pub(crate) peer: SpiffeId,
    pub(crate) local_addr: SocketAddr,
    pub(crate) remote_addr: SocketAddr,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_concurrent_streams: 200,
            keepalive: Keepalive::default(),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

impl<F, Fut> Handler for F
where
    F: Fn(InboundRequest, Responder) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    fn handle(&self, request: InboundRequest, responder: Responder) -> BoxFuture<'static, ()> {
        Box::pin(self(request, responder))
    }
}

impl InboundRequest {
    /// The client's verified SPIFFE identity.
    pub fn peer_identity(&self) -> &SpiffeId {
        &self.peer
    }

    /// Our address on the connection (the :15008 socket the request arrived on).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The client's address on the connection.
    pub fn remote_addr(&self) -> SocketAddr {
        self.remote_addr
    }

    /// Where the client asks to be connected.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The request headers (`traceparent`, `baggage`, `forwarded`, …), pseudo-headers excluded.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }
}

impl Responder {
    /// Sends `200` with `headers` (e.g. `baggage`) and returns the tunnel.
    pub fn accept(mut self, headers: HeaderMap) -> io::Result<HboneStream> {
        let (Some(mut respond), Some(body)) = (self.respond.take(), self.body.take()) else {
            return Err(io::Error::other("HBONE request already answered"));
        };
        let send = respond
            .send_response(response(StatusCode::OK, headers), false)
            .map_err(h2_to_io)?;
        Ok(HboneStream::new(send, body, MAX_FRAME_SIZE as usize))
    }

    /// Refuses the tunnel with `status` (`401`, `403`, `503`, …): HEADERS with END_STREAM,
    /// then the stream is reset with NO_ERROR. A 1xx or 2xx status is replaced by `500`,
    /// since only [`Responder::accept`] may open a tunnel.
    pub fn reject(mut self, status: StatusCode) {
        let status = if status.is_informational() || status.is_success() {
            warn!(%status, "handler rejected with a non-error status; sending 500");
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            status
        };
        self.finish(status);
    }

    fn finish(&mut self, status: StatusCode) {
        if let Some(mut respond) = self.respond.take()
            && let Err(err) = respond.send_response(response(status, HeaderMap::new()), true)
        {
            debug!(%err, %status, "could not send HBONE error response");
        }
        // Dropping our half of a stream whose request side is still open makes h2 reset it
        // with NO_ERROR, which tells the client to stop sending.
        self.body = None;
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if self.respond.is_some() {
            debug!("HBONE handler dropped its responder without answering; sending 503");
            self.finish(StatusCode::SERVICE_UNAVAILABLE);
        }
    }
}

impl fmt::Debug for Responder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Responder")
            .field("answered", &self.respond.is_none())
            .finish()
    }
}

impl Server {
    /// A server terminating TLS with `tls` (which must require client certificates and offer
    /// ALPN `h2`) and handing valid requests to `handler`.
    pub fn new(
        tls: Arc<rustls::ServerConfig>,
        handler: impl Handler,
        config: ServerConfig,
    ) -> Self {
        Self {
            inner: Arc::new(ServerInner {
                tls: TlsAcceptor::from(tls),
                handler: Arc::new(handler),
                config,
            }),
        }
    }

    /// Accepts connections until `drain` fires, then waits for every connection to finish
    /// its in-flight streams (connections receive the same signal and send GOAWAY).
    pub async fn serve(&self, listener: TcpListener, mut drain: DrainSignal) {
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                biased;
                () = drain.draining() => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                accepted = listener.accept() => match accepted {
                    Ok((tcp, remote)) => {
                        let server = self.clone();
                        let drain = drain.clone();
                        connections.spawn(async move {
                            if let Err(err) = server.serve_connection(tcp, drain).await {
                                info!(%remote, %err, "HBONE connection closed with an error");
                            }
                        });
                    }
                    Err(err) => {
                        warn!(%err, "accepting an HBONE connection failed");
                        tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    }
                },
            }
        }
        drop(listener);
        while connections.join_next().await.is_some() {}
    }

    /// Serves one accepted TCP connection until it closes, fails, or drains.
    pub async fn serve_connection(
        &self,
        tcp: TcpStream,
        drain: DrainSignal,
    ) -> Result<(), ConnectionError> {
        let config = &self.inner.config;
        let local_addr = tcp.local_addr().map_err(ConnectionErrorKind::Tls)?;
        let remote_addr = tcp.peer_addr().map_err(ConnectionErrorKind::Tls)?;
        // Tunnelled bytes are often small interactive writes; don't let Nagle delay them.
        if let Err(err) = tcp.set_nodelay(true) {
            debug!(%err, "could not set TCP_NODELAY");
        }
        let tls = tokio::time::timeout(config.handshake_timeout, self.inner.tls.accept(tcp))
            .await
            .map_err(|_| ConnectionErrorKind::HandshakeTimeout(config.handshake_timeout))?
            .map_err(ConnectionErrorKind::Tls)?;
        let peer = ambit_identity::tls::peer_identity(tls.get_ref().1)
            .map_err(ConnectionErrorKind::Identity)?;
        let info = Arc::new(ConnectionInfo {
            peer,
            local_addr,
            remote_addr,
        });
        serve_h2(tls, info, self.inner.handler.clone(), config, drain).await
    }
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl ConnectionError {
    /// The TLS handshake failed or the client's identity was unusable.
    pub fn is_tls(&self) -> bool {
        matches!(
            self.0,
            ConnectionErrorKind::Tls(_) | ConnectionErrorKind::Identity(_)
        )
    }

    /// A handshake or a keepalive PING took too long.
    pub fn is_timeout(&self) -> bool {
        matches!(
            self.0,
            ConnectionErrorKind::HandshakeTimeout(_) | ConnectionErrorKind::KeepaliveTimeout(_)
        )
    }
}

/// Runs HTTP/2 over an established (normally TLS) connection.
pub(crate) async fn serve_h2<IO>(
    io: IO,
    info: Arc<ConnectionInfo>,
    handler: Arc<dyn Handler>,
    config: &ServerConfig,
    mut drain: DrainSignal,
) -> Result<(), ConnectionError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let handshake = h2::server::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME_SIZE)
        .max_concurrent_streams(config.max_concurrent_streams)
        .max_header_list_size(MAX_HEADER_LIST_SIZE)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .handshake::<_, Bytes>(io);
    let mut conn = tokio::time::timeout(config.handshake_timeout, handshake)
        .await
        .map_err(|_| ConnectionErrorKind::HandshakeTimeout(config.handshake_timeout))?
        .map_err(ConnectionErrorKind::H2Handshake)?;
    let keepalive = match conn.ping_pong() {
        Some(ping_pong) => futures_util::future::Either::Left(config.keepalive.run(ping_pong)),
        None => futures_util::future::Either::Right(std::future::pending()),
    };
    tokio::pin!(keepalive);
    let mut draining = false;
    loop {
        tokio::select! {
            accepted = conn.accept() => match accepted {
                Some(Ok((request, respond))) => {
                    tokio::spawn(handle_stream(handler.clone(), info.clone(), request, respond));
                }
                Some(Err(err)) => {
                    // Stream-level errors are handled inside h2; this one ends the connection.
                    return Err(ConnectionErrorKind::H2(err).into());
                }
                None => return Ok(()),
            },
            () = drain.draining(), if !draining => {
                debug!(peer = %info.peer, "draining HBONE connection: sending GOAWAY");
                draining = true;
                conn.graceful_shutdown();
            }
            end = &mut keepalive => match end {
                KeepaliveEnd::Timeout => {
                    return Err(ConnectionErrorKind::KeepaliveTimeout(config.keepalive.timeout).into());
                }
                // The connection failed under the PING; `accept` reports how.
                KeepaliveEnd::Closed => keepalive.set(futures_util::future::Either::Right(std::future::pending())),
            },
        }
    }
}

/// Validates one request and hands it to the handler.
async fn handle_stream(
    handler: Arc<dyn Handler>,
    info: Arc<ConnectionInfo>,
    request: Request<RecvStream>,
    respond: SendResponse<Bytes>,
) {
    let (parts, body) = request.into_parts();
    let responder = Responder {
        respond: Some(respond),
        body: Some(body),
    };
    let target = match check_request(&parts) {
        Ok(target) => target,
        Err(status) => {
            debug!(peer = %info.peer, method = %parts.method, uri = %parts.uri, %status, "refusing HBONE request");
            responder.reject(status);
            return;
        }
    };
    let request = InboundRequest {
        peer: info.peer.clone(),
        local_addr: info.local_addr,
        remote_addr: info.remote_addr,
        target,
        headers: parts.headers,
    };
    handler.handle(request, responder).await;
}

/// HBONE accepts only a plain CONNECT with a valid `:authority`.
fn check_request(parts: &http::request::Parts) -> Result<Target, StatusCode> {
    if parts.method != Method::CONNECT {
        return Err(StatusCode::METHOD_NOT_ALLOWED);
    }
    // h2 already resets a plain CONNECT carrying :scheme or :path (PROTOCOL_ERROR), and
    // refuses :protocol as extended CONNECT is not enabled; checked again so this function
    // alone states the rule.
    if parts.uri.scheme().is_some()
        || parts.uri.path_and_query().is_some()
        || parts.extensions.get::<h2::ext::Protocol>().is_some()
    {
        return Err(StatusCode::BAD_REQUEST);
    }
    let authority = parts.uri.authority().ok_or(StatusCode::BAD_REQUEST)?;
    authority::parse(authority.as_str()).map_err(|err| {
        debug!(%authority, %err, "bad HBONE :authority");
        StatusCode::BAD_REQUEST
    })
}

fn response(status: StatusCode, headers: HeaderMap) -> Response<()> {
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
