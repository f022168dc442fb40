//! The HBONE client: a pool of mutual-TLS HTTP/2 connections, each carrying many CONNECT
//! streams.
//!
//! Connections are keyed by (source identity, expected destination identities, next hop).
//! A key gets a new connection only when all of its connections are full, and only one
//! handshake per key runs at a time; callers arriving meanwhile wait for it and share its
//! outcome.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use ambit_identity::SpiffeId;
use ambit_identity::tls::VerificationFailure;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use h2::client::SendRequest;
use h2::{Ping, PingPong};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use rustls::pki_types::ServerName;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};
use tokio_rustls::TlsConnector;
use tracing::{debug, info, warn};

use crate::authority::Target;
use crate::settings::{
    CONNECTION_WINDOW, Keepalive, KeepaliveEnd, MAX_FRAME_SIZE, MAX_HEADER_LIST_SIZE,
    MAX_SEND_BUFFER, STREAM_WINDOW,
};
use crate::stream::HboneStream;

/// How often a stream refused by a GOAWAY is retried on a fresh connection.
const GOAWAY_RETRIES: usize = 2;

/// Supplies the rustls client configuration for a (source, expected destinations) pair.
///
/// The configuration must present `source`'s certificate, accept only servers whose SPIFFE
/// ID is in `expected`, and offer ALPN `h2`.
pub trait ClientTlsProvider: Send + Sync + 'static {
    /// The client configuration for connections from `source` to one of `expected`.
    fn client_config(
        &self,
        source: &SpiffeId,
        expected: &[SpiffeId],
    ) -> Result<Arc<rustls::ClientConfig>, Box<dyn StdError + Send + Sync>>;
}

/// Opens the TCP connections a [`Pool`] runs TLS over.
///
/// The default, [`DirectConnector`], is `TcpStream::connect`; ztunnel swaps in one that makes
/// its sockets inside a pod's network namespace with the mark its redirection rules skip.
pub trait Connector: Send + Sync + 'static {
    /// Connects to `next_hop` (the HBONE server's `ip:15008`).
    fn connect(&self, next_hop: SocketAddr) -> BoxFuture<'static, io::Result<TcpStream>>;
}

/// The default [`Connector`]: a plain `TcpStream::connect` in the caller's namespace.
#[derive(Debug, Clone, Copy, Default)]
pub struct DirectConnector;

/// Pool tuning; the defaults are HBONE's.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PoolConfig {
    /// Streams per connection before another is opened (also capped by the server's
    /// MAX_CONCURRENT_STREAMS).
    pub max_streams_per_connection: u32,
    /// Bound on a whole [`Pool::connect`]: TCP, TLS, HTTP/2 and the server's answer.
    pub connect_timeout: Duration,
    /// A connection without streams for this long is closed.
    pub idle_timeout: Duration,
    /// PING keepalive.
    pub keepalive: Keepalive,
}

/// One tunnel to open.
#[derive(Debug, Clone)]
pub struct ConnectRequest {
    source: SpiffeId,
    expected: Vec<SpiffeId>,
    next_hop: SocketAddr,
    target: Target,
    headers: HeaderMap,
}

/// Opens HBONE streams over pooled connections. Cheap to clone; clones share connections.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<PoolInner>,
}

/// Why [`Pool::connect`] failed. Cheap to clone.
#[derive(Clone)]
pub struct ConnectError {
    kind: Arc<ErrorKind>,
}

#[derive(Debug, thiserror::Error)]
enum ErrorKind {
    #[error("no TLS client configuration: {0}")]
    TlsConfig(#[source] Box<dyn StdError + Send + Sync>),
    #[error("TCP connect to {addr} failed: {error}")]
    Connect {
        addr: SocketAddr,
        #[source]
        error: io::Error,
    },
    #[error("TLS handshake with {addr} failed: {error}")]
    Tls {
        addr: SocketAddr,
        #[source]
        error: io::Error,
    },
    #[error("HTTP/2 with {addr} failed: {error}")]
    H2 {
        addr: SocketAddr,
        #[source]
        error: h2::Error,
    },
    #[error("server refused the tunnel with status {0}")]
    Status(StatusCode),
    #[error("no tunnel within {0:?}")]
    Timeout(Duration),
}

struct PoolInner {
    tls: Arc<dyn ClientTlsProvider>,
    connector: Arc<dyn Connector>,
    config: PoolConfig,
    keys: Mutex<HashMap<PoolKey, KeyEntry>>,
    next_connection_id: AtomicU64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    source: SpiffeId,
    /// Sorted and deduplicated, so the same set always maps to the same key.
    expected: Vec<SpiffeId>,
    next_hop: SocketAddr,
}

#[derive(Default)]
struct KeyEntry {
    connections: Vec<PooledConnection>,
    /// Present while a handshake for this key runs: its id and a receiver that resolves to
    /// its outcome.
    handshake: Option<(u64, watch::Receiver<HandshakeState>)>,
}

type HandshakeState = Option<Result<(), ConnectError>>;

struct PooledConnection {
    id: u64,
    send: SendRequest<Bytes>,
    active_streams: usize,
    idle_since: Instant,
}

/// One stream's claim on a pooled connection, released on drop.
struct StreamSlot {
    pool: Weak<PoolInner>,
    key: PoolKey,
    connection_id: u64,
}

/// Clears the key's in-flight handshake when the handshaking caller finishes or is cancelled.
struct HandshakeGuard {
    pool: Arc<PoolInner>,
    key: PoolKey,
    id: u64,
    done: watch::Sender<HandshakeState>,
}

enum Acquired {
    Stream(SendRequest<Bytes>, StreamSlot),
    Wait(watch::Receiver<HandshakeState>),
    Handshake(HandshakeGuard),
}

impl<F> ClientTlsProvider for F
where
    F: Fn(
            &SpiffeId,
            &[SpiffeId],
        ) -> Result<Arc<rustls::ClientConfig>, Box<dyn StdError + Send + Sync>>
        + Send
        + Sync
        + 'static,
{
    fn client_config(
        &self,
        source: &SpiffeId,
        expected: &[SpiffeId],
    ) -> Result<Arc<rustls::ClientConfig>, Box<dyn StdError + Send + Sync>> {
        self(source, expected)
    }
}

impl<F, Fut> Connector for F
where
    F: Fn(SocketAddr) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = io::Result<TcpStream>> + Send + 'static,
{
    fn connect(&self, next_hop: SocketAddr) -> BoxFuture<'static, io::Result<TcpStream>> {
        Box::pin(self(next_hop))
    }
}

impl Connector for DirectConnector {
    fn connect(&self, next_hop: SocketAddr) -> BoxFuture<'static, io::Result<TcpStream>> {
        Box::pin(TcpStream::connect(next_hop))
    }
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            max_streams_per_connection: 100,
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            keepalive: Keepalive::default(),
        }
    }
}

impl ConnectRequest {
    /// A tunnel from `source` to `target` through the HBONE server at `next_hop`, whose
    /// certificate must carry one of the `expected` identities.
    pub fn new(
        source: SpiffeId,
        expected: Vec<SpiffeId>,
        next_hop: SocketAddr,
        target: Target,
    ) -> Self {
        Self {
            source,
            expected,
            next_hop,
            target,
            headers: HeaderMap::new(),
        }
    }

    /// Sends a W3C `traceparent` header.
    pub fn with_traceparent(self, value: HeaderValue) -> Self {
        self.with_header(HeaderName::from_static("traceparent"), value)
    }

    /// Sends a `baggage` header describing the source.
    pub fn with_baggage(self, value: HeaderValue) -> Self {
        self.with_header(HeaderName::from_static("baggage"), value)
    }

    /// Sends a `forwarded` header (`for="<client ip:port>"`).
    pub fn with_forwarded(self, value: HeaderValue) -> Self {
        self.with_header(http::header::FORWARDED, value)
    }

    fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.insert(name, value);
        self
    }

    fn key(&self) -> PoolKey {
        let mut expected = self.expected.clone();
        expected.sort();
        expected.dedup();
        PoolKey {
            source: self.source.clone(),
            expected,
            next_hop: self.next_hop,
        }
    }

    fn to_http(&self) -> Request<()> {
        let mut request = Request::new(());
        *request.method_mut() = Method::CONNECT;
        // An authority-only URI: h2 then sends just :method and :authority.
        match http::Uri::builder()
            .authority(self.target.to_string())
            .build()
        {
            Ok(uri) => *request.uri_mut() = uri,
            // Unreachable for a parsed `Target`; an empty authority makes the server say 400.
            Err(err) => warn!(%err, target = %self.target, "target is not a valid authority"),
        }
        *request.headers_mut() = self.headers.clone();
        request
    }
}

impl Pool {
    /// A pool that gets TLS client configurations from `tls`.
    pub fn new(tls: Arc<dyn ClientTlsProvider>, config: PoolConfig) -> Self {
        Self::with_connector(tls, config, Arc::new(DirectConnector))
    }

    /// A pool that opens its TCP connections through `connector`.
    pub fn with_connector(
        tls: Arc<dyn ClientTlsProvider>,
        config: PoolConfig,
        connector: Arc<dyn Connector>,
    ) -> Self {
        Self {
            inner: Arc::new(PoolInner {
                tls,
                connector,
                config,
                keys: Mutex::new(HashMap::new()),
                next_connection_id: AtomicU64::new(1),
            }),
        }
    }

    /// Opens a tunnel: returns once the server answered `200`.
    pub async fn connect(&self, request: ConnectRequest) -> Result<HboneStream, ConnectError> {
        let timeout = self.inner.config.connect_timeout;
        tokio::time::timeout(timeout, self.connect_inner(&request))
            .await
            .unwrap_or_else(|_| Err(ErrorKind::Timeout(timeout).into()))
    }

    /// Connections currently open (or being closed) in the pool, across all keys.
    pub fn connection_count(&self) -> usize {
        self.inner
            .lock()
            .values()
            .map(|entry| entry.connections.len())
            .sum()
    }

    async fn connect_inner(&self, request: &ConnectRequest) -> Result<HboneStream, ConnectError> {
        let key = request.key();
        let mut retries = 0;
        loop {
            let (mut send, slot) = self.acquire(&key).await?;
            let connection_id = slot.connection_id;
            let outcome = open_stream(&mut send, request).await;
            match outcome {
                Ok((response_headers, send_stream, recv_stream)) => {
                    return Ok(
                        HboneStream::new(send_stream, recv_stream, MAX_FRAME_SIZE as usize)
                            .with_peer_headers(response_headers)
                            .with_slot(slot),
                    );
                }
                // The server is going away and never saw this stream: retry elsewhere.
                Err(StreamFailure::Refused(error)) if retries < GOAWAY_RETRIES => {
                    debug!(%error, next_hop = %key.next_hop, "connection going away; retrying on a fresh one");
                    self.inner.remove_connection(&key, connection_id);
                    retries += 1;
                }
                Err(StreamFailure::Refused(error) | StreamFailure::Failed(error)) => {
                    return Err(ErrorKind::H2 {
                        addr: key.next_hop,
                        error,
                    }
                    .into());
                }
                Err(StreamFailure::Status(status)) => return Err(ErrorKind::Status(status).into()),
            }
        }
    }

    /// A stream slot on a connection for `key`, opening a connection if all are full.
    async fn acquire(
        &self,
        key: &PoolKey,
    ) -> Result<(SendRequest<Bytes>, StreamSlot), ConnectError> {
        loop {
            match self.inner.try_acquire(key) {
                Acquired::Stream(send, slot) => return Ok((send, slot)),
                Acquired::Wait(mut handshake) => {
                    let outcome = handshake
                        .wait_for(Option::is_some)
                        .await
                        .ok()
                        .and_then(|state| state.clone());
                    // A failed handshake fails everyone who waited for it; a cancelled one
                    // (`None`) lets the next caller try again.
                    if let Some(Err(err)) = outcome {
                        return Err(err);
                    }
                }
                Acquired::Handshake(guard) => match self.establish(key).await {
                    Ok(connection) => guard.succeed(connection),
                    Err(err) => {
                        guard.fail(err.clone());
                        return Err(err);
                    }
                },
            }
        }
    }

    /// Opens a new connection for `key`: TCP, TLS, HTTP/2, and the server's SETTINGS.
    async fn establish(&self, key: &PoolKey) -> Result<PooledConnection, ConnectError> {
        let addr = key.next_hop;
        let tls_config = self
            .inner
            .tls
            .client_config(&key.source, &key.expected)
            .map_err(ErrorKind::TlsConfig)?;
        let tcp = self
            .inner
            .connector
            .connect(addr)
            .await
            .map_err(|error| ErrorKind::Connect { addr, error })?;
        // Tunnelled bytes are often small interactive writes; don't let Nagle delay them.
        if let Err(err) = tcp.set_nodelay(true) {
            debug!(%err, "could not set TCP_NODELAY");
        }
        // An IP address as server name: rustls then sends no SNI, as HBONE requires. The
        // server is authenticated by its SPIFFE ID, never by this name.
        let server_name = ServerName::IpAddress(addr.ip().into());
        let tls = TlsConnector::from(tls_config)
            .connect(server_name, tcp)
            .await
            .map_err(|error| ErrorKind::Tls { addr, error })?;
        // h2 keeps only the kind and text of I/O errors; record the rustls error itself so a
        // TLS alert arriving after the handshake can still be classified.
        let tls_failure = Arc::new(Mutex::new(None));
        let tls = RecordTlsErrors {
            inner: tls,
            failure: tls_failure.clone(),
        };
        let (send, connection) = h2::client::Builder::new()
            .enable_push(false)
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_frame_size(MAX_FRAME_SIZE)
            .max_header_list_size(MAX_HEADER_LIST_SIZE)
            .max_send_buffer_size(MAX_SEND_BUFFER)
            .handshake::<_, Bytes>(tls)
            .await
            .map_err(|error| h2_error(addr, error))?;
        let id = self
            .inner
            .next_connection_id
            .fetch_add(1, Ordering::Relaxed);
        let (ready_tx, ready_rx) = oneshot::channel();
        tokio::spawn(drive_connection(
            connection,
            self.inner.config.clone(),
            ready_tx,
            Arc::downgrade(&self.inner),
            key.clone(),
            id,
        ));
        match ready_rx.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                let recorded = tls_failure
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .take();
                return Err(match recorded {
                    Some(tls) => ErrorKind::Tls {
                        addr,
                        error: io::Error::new(io::ErrorKind::InvalidData, tls),
                    }
                    .into(),
                    None => h2_error(addr, error),
                });
            }
            Err(_) => {
                return Err(ErrorKind::H2 {
                    addr,
                    error: h2::Error::from(h2::Reason::INTERNAL_ERROR),
                }
                .into());
            }
        }
        debug!(%addr, source = %key.source, id, max_streams = send.current_max_send_streams(), "HBONE connection established");
        Ok(PooledConnection {
            id,
            send,
            active_streams: 0,
            idle_since: Instant::now(),
        })
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("config", &self.inner.config)
            .field("connections", &self.connection_count())
            .finish_non_exhaustive()
    }
}

impl PoolInner {
    fn lock(&self) -> MutexGuard<'_, HashMap<PoolKey, KeyEntry>> {
        // The map stays consistent even if a holder panicked: every update is a single step.
        self.keys
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn try_acquire(self: &Arc<Self>, key: &PoolKey) -> Acquired {
        let mut keys = self.lock();
        let entry = keys.entry(key.clone()).or_default();
        let configured = self.config.max_streams_per_connection.max(1) as usize;
        let free = entry.connections.iter_mut().find(|connection| {
            connection.active_streams < configured.min(connection.send.current_max_send_streams())
        });
        if let Some(connection) = free {
            connection.active_streams += 1;
            let slot = StreamSlot {
                pool: Arc::downgrade(self),
                key: key.clone(),
                connection_id: connection.id,
            };
            return Acquired::Stream(connection.send.clone(), slot);
        }
        if let Some((_, handshake)) = &entry.handshake {
            return Acquired::Wait(handshake.clone());
        }
        let (done, waiting) = watch::channel(None);
        let id = self.next_connection_id.fetch_add(1, Ordering::Relaxed);
        entry.handshake = Some((id, waiting));
        Acquired::Handshake(HandshakeGuard {
            pool: self.clone(),
            key: key.clone(),
            id,
            done,
        })
    }

    fn release_stream(&self, key: &PoolKey, connection_id: u64) {
        let mut keys = self.lock();
        let Some(entry) = keys.get_mut(key) else {
            return;
        };
        if let Some(connection) = entry.connections.iter_mut().find(|c| c.id == connection_id) {
            connection.active_streams = connection.active_streams.saturating_sub(1);
            if connection.active_streams == 0 {
                connection.idle_since = Instant::now();
            }
        }
    }

    /// Takes a connection out of the pool; it closes once its last stream ends.
    fn remove_connection(&self, key: &PoolKey, connection_id: u64) {
        let mut keys = self.lock();
        if let Some(entry) = keys.get_mut(key) {
            entry.connections.retain(|c| c.id != connection_id);
            if entry.connections.is_empty() && entry.handshake.is_none() {
                keys.remove(key);
            }
        }
    }

    /// Removes the connection if it has had no streams for the idle timeout.
    fn remove_if_idle(&self, key: &PoolKey, connection_id: u64) -> bool {
        let idle = self.lock().get(key).is_some_and(|entry| {
            entry.connections.iter().any(|c| {
                c.id == connection_id
                    && c.active_streams == 0
                    && c.idle_since.elapsed() >= self.config.idle_timeout
            })
        });
        if idle {
            self.remove_connection(key, connection_id);
        }
        idle
    }
}

impl HandshakeGuard {
    /// Adds the new connection and wakes the waiters, who will find it in the pool.
    fn succeed(self, connection: PooledConnection) {
        {
            let mut keys = self.pool.lock();
            let entry = keys.entry(self.key.clone()).or_default();
            entry.connections.push(connection);
            entry.handshake = None;
        }
        self.done.send_replace(Some(Ok(())));
    }

    /// Wakes the waiters with the error.
    fn fail(self, err: ConnectError) {
        self.done.send_replace(Some(Err(err)));
    }
}

impl Drop for HandshakeGuard {
    fn drop(&mut self) {
        let mut keys = self.pool.lock();
        if let Some(entry) = keys.get_mut(&self.key) {
            if entry
                .handshake
                .as_ref()
                .is_some_and(|(id, _)| *id == self.id)
            {
                entry.handshake = None;
            }
            if entry.connections.is_empty() && entry.handshake.is_none() {
                keys.remove(&self.key);
            }
        }
        // Dropping `done` then wakes waiters; a handshake cancelled midway leaves `None`
        // for them, and the first to retry starts a new one.
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.upgrade() {
            pool.release_stream(&self.key, self.connection_id);
        }
    }
}

impl ConnectError {
    /// The TLS handshake failed, the peer's certificate was refused (by us or by it), or no
    /// TLS configuration could be made.
    pub fn is_tls(&self) -> bool {
        matches!(&*self.kind, ErrorKind::TlsConfig(_) | ErrorKind::Tls { .. })
    }

    /// The TCP connection to the next hop could not be made.
    pub fn is_connect(&self) -> bool {
        matches!(&*self.kind, ErrorKind::Connect { .. })
    }

    /// Nothing came back within the connect timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(&*self.kind, ErrorKind::Timeout(_))
    }

    /// Why our verification of the server's certificate failed (wrong trust domain, unknown
    /// issuer, expired, unexpected identity, …). `None` for other failures, including the
    /// server refusing *our* certificate, which shows as [`ConnectError::is_tls`] only.
    pub fn verification_failure(&self) -> Option<VerificationFailure> {
        match &*self.kind {
            ErrorKind::Tls { error, .. } => ambit_identity::tls::verification_failure(error),
            _ => None,
        }
    }

    /// The status of a non-`200` answer from the server (`401`, `503`, …).
    pub fn status(&self) -> Option<StatusCode> {
        match &*self.kind {
            ErrorKind::Status(status) => Some(*status),
            _ => None,
        }
    }
}

impl From<ErrorKind> for ConnectError {
    fn from(kind: ErrorKind) -> Self {
        Self {
            kind: Arc::new(kind),
        }
    }
}

impl fmt::Debug for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.kind, f)
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.kind, f)
    }
}

impl StdError for ConnectError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.kind.source()
    }
}

/// Why opening a stream on an established connection failed.
enum StreamFailure {
    /// Refused by a GOAWAY before the server processed it: safe to retry.
    Refused(h2::Error),
    Failed(h2::Error),
    Status(StatusCode),
}

/// Sends the CONNECT and waits for the answer.
async fn open_stream(
    send: &mut SendRequest<Bytes>,
    request: &ConnectRequest,
) -> Result<(HeaderMap, h2::SendStream<Bytes>, h2::RecvStream), StreamFailure> {
    let classify = |error: h2::Error| {
        if error.is_go_away() && error.is_remote()
            || error.reason() == Some(h2::Reason::REFUSED_STREAM)
        {
            StreamFailure::Refused(error)
        } else {
            StreamFailure::Failed(error)
        }
    };
    let mut ready = send.clone().ready().await.map_err(classify)?;
    let (response, send_stream) = ready
        .send_request(request.to_http(), false)
        .map_err(classify)?;
    let response = response.await.map_err(classify)?;
    if response.status() != StatusCode::OK {
        return Err(StreamFailure::Status(response.status()));
    }
    let (parts, recv_stream) = response.into_parts();
    Ok((parts.headers, send_stream, recv_stream))
}

/// Drives one client connection: first confirms the server's SETTINGS arrived (so its
/// MAX_CONCURRENT_STREAMS is known), then keeps it alive, closes it when idle, and takes it
/// out of the pool when it ends.
async fn drive_connection<T>(
    mut connection: h2::client::Connection<T, Bytes>,
    config: PoolConfig,
    ready: oneshot::Sender<Result<(), h2::Error>>,
    pool: Weak<PoolInner>,
    key: PoolKey,
    id: u64,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Some(mut ping_pong) = connection.ping_pong() else {
        let _ = ready.send(Err(h2::Error::from(h2::Reason::INTERNAL_ERROR)));
        return;
    };
    // The server sends SETTINGS before anything else, so once our PING is answered its
    // settings are in effect. This also proves the server accepted our certificate.
    let synced = tokio::select! {
        biased;
        closed = &mut connection => Err(closed.err().unwrap_or_else(|| h2::Error::from(h2::Reason::NO_ERROR))),
        pong = ping_pong.ping(Ping::opaque()) => match pong {
            Ok(_) => Ok(()),
            // The connection's own error says more than the failed PING (e.g. a TLS alert).
            Err(ping_error) => Err((&mut connection).await.err().unwrap_or(ping_error)),
        },
    };
    if let Err(error) = synced {
        let _ = ready.send(Err(error));
        return;
    }
    if ready.send(Ok(())).is_err() {
        // The caller gave up (timeout); nobody will use this connection.
        return;
    }
    run_connection(connection, ping_pong, &config, &pool, &key, id).await;
    if let Some(pool) = pool.upgrade() {
        pool.remove_connection(&key, id);
    }
}

async fn run_connection<T>(
    mut connection: h2::client::Connection<T, Bytes>,
    ping_pong: PingPong,
    config: &PoolConfig,
    pool: &Weak<PoolInner>,
    key: &PoolKey,
    id: u64,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let keepalive = config.keepalive.run(ping_pong);
    tokio::pin!(keepalive);
    let mut keepalive_running = true;
    // Checked at half the timeout, so an idle connection lives between 1 and 1.5 timeouts.
    let mut idle_check = tokio::time::interval(config.idle_timeout / 2);
    idle_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut removed = false;
    loop {
        tokio::select! {
            closed = &mut connection => {
                match closed {
                    Ok(()) => debug!(next_hop = %key.next_hop, id, "HBONE connection closed"),
                    Err(err) => info!(next_hop = %key.next_hop, id, %err, "HBONE connection failed"),
                }
                return;
            }
            end = &mut keepalive, if keepalive_running => match end {
                KeepaliveEnd::Timeout => {
                    warn!(next_hop = %key.next_hop, id, timeout = ?config.keepalive.timeout, "HBONE peer stopped answering PINGs; closing");
                    return;
                }
                KeepaliveEnd::Closed => keepalive_running = false,
            },
            _ = idle_check.tick(), if !removed => {
                // Once out of the pool, the connection sends GOAWAY and ends by itself as
                // no request handle is left.
                if let Some(pool) = pool.upgrade()
                    && pool.remove_if_idle(key, id)
                {
                    debug!(next_hop = %key.next_hop, id, "closing idle HBONE connection");
                    removed = true;
                }
            }
        }
    }
}

/// Passes I/O through, keeping the first rustls error seen.
struct RecordTlsErrors<T> {
    inner: T,
    failure: Arc<Mutex<Option<rustls::Error>>>,
}

impl<T> RecordTlsErrors<T> {
    fn record<R>(&self, result: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if let Poll::Ready(Err(error)) = &result
            && let Some(tls) = error
                .get_ref()
                .and_then(|e| e.downcast_ref::<rustls::Error>())
        {
            let mut failure = self
                .failure
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            failure.get_or_insert_with(|| tls.clone());
        }
        result
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for RecordTlsErrors<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.record(result)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for RecordTlsErrors<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.record(result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.record(result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        self.record(result)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.record(result)
    }
}

fn h2_error(addr: SocketAddr, error: h2::Error) -> ConnectError {
    ErrorKind::H2 { addr, error }.into()
}
