//! The server side of the node-agent protocol: a tokio unix-socket server.
//!
//! ztunnel embeds it with an [`EnrollmentHandler`] ([`Server::serve_ztunnel`]); the node agent
//! embeds it with a [`PodEventHandler`] ([`Server::serve_agent`]) to hear from `ambit-cni`.
//! Each connection runs in its own task and handles its requests in order. A malformed message
//! gets an `error` reply of kind `invalid` and closes *that* connection only; a handler error
//! becomes an `error` reply and the connection continues.

use std::future::Future;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinSet;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::protocol::{
    self, AgentRequest, ErrorKind, FrameScanner, PROTOCOL_VERSION, PodInfo, PodReport,
    ProtocolError, Reply, Request, ZtunnelRequest,
};

/// A boxed, sendable future, as returned by handler methods.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Connections served at once; more are closed on accept. Only root can connect (mode 0600)
/// and there is one agent per node, so this only bounds a misbehaving local client.
const MAX_CONNECTIONS: usize = 128;
/// How long a new connection may take to send `hello`.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long writing one reply may take before the peer is considered stuck.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// What ztunnel does with the node agent's requests.
pub trait EnrollmentHandler: Send + Sync + 'static {
    /// Start serving `pod`.
    fn enroll(&self, pod: PodInfo) -> BoxFuture<'_, Result<(), HandlerError>>;
    /// Stop serving the pod with this UID; unknown UIDs succeed.
    fn unenroll(&self, uid: String) -> BoxFuture<'_, Result<(), HandlerError>>;
    /// Serve exactly `pods`: enroll the new ones, unenroll every pod not listed
    /// ([`crate::snapshot::SnapshotPlan`] computes the difference).
    fn snapshot(&self, pods: Vec<PodInfo>) -> BoxFuture<'_, Result<(), HandlerError>>;
}

/// What the node agent does with the CNI plugin's reports.
pub trait PodEventHandler: Send + Sync + 'static {
    /// A sandbox was created; returns whether the pod is enrolled in the mesh.
    fn add(&self, pod: PodReport) -> BoxFuture<'_, Result<bool, HandlerError>>;
    /// A sandbox is going away; must succeed for pods it does not know.
    fn del(&self, pod: PodReport) -> BoxFuture<'_, Result<(), HandlerError>>;
    /// Returns whether the known pod is enrolled, or an `unknown_pod` error.
    fn check(&self, pod: PodReport) -> BoxFuture<'_, Result<bool, HandlerError>>;
}

/// A handler's failure, sent to the client as an `error` reply.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct HandlerError {
    kind: ErrorKind,
    message: String,
}

/// Why the server could not bind or serve.
#[derive(Debug, thiserror::Error)]
#[error("{message}: {source}")]
pub struct ServerError {
    message: String,
    in_use: bool,
    #[source]
    source: io::Error,
}

/// A bound node-agent socket, ready to serve.
#[derive(Debug)]
pub struct Server {
    listener: UnixListener,
    path: PathBuf,
}

/// Turns one decoded request into one reply.
trait Dispatch<R>: Send + Sync + 'static {
    fn dispatch(&self, request: R) -> BoxFuture<'_, Reply>;
}

struct ZtunnelDispatch(Arc<dyn EnrollmentHandler>);
struct AgentDispatch(Arc<dyn PodEventHandler>);

enum ReadError {
    Io(io::Error),
    Protocol(ProtocolError),
    Timeout,
}

impl HandlerError {
    /// The pod is not known.
    pub fn unknown_pod(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::UnknownPod, message)
    }

    /// A transient condition; the client should retry later.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }

    /// The request is acceptable on the wire but not to the handler.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, message)
    }

    /// Any other failure.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// The error's kind, as sent on the wire.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    fn into_reply(self) -> Reply {
        Reply::error(self.kind, self.message)
    }
}

impl ServerError {
    /// Another server is already listening on the path.
    pub fn is_in_use(&self) -> bool {
        self.in_use
    }

    fn io(message: impl Into<String>, source: io::Error) -> Self {
        Self {
            message: message.into(),
            in_use: false,
            source,
        }
    }
}

impl Server {
    /// Binds the socket at `path` with mode 0600, atomically replacing a stale socket file.
    ///
    /// Fails if a server is still listening there or the path is something other than a
    /// socket. Must be called inside a tokio runtime.
    pub fn bind(path: impl AsRef<Path>) -> Result<Self, ServerError> {
        let path = path.as_ref();
        check_existing(path)?;
        let std_listener = bind_private(path)?;
        std_listener
            .set_nonblocking(true)
            .map_err(|e| ServerError::io("cannot make the listener non-blocking", e))?;
        let listener = UnixListener::from_std(std_listener)
            .map_err(|e| ServerError::io("cannot register the listener with tokio", e))?;
        info!(path = %path.display(), "node-agent socket bound");
        Ok(Self {
            listener,
            path: path.to_owned(),
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves node-agent connections (ztunnel side) until the future is dropped.
    pub async fn serve_ztunnel(self, handler: Arc<dyn EnrollmentHandler>) {
        serve(self.listener, Arc::new(ZtunnelDispatch(handler))).await;
    }

    /// Serves CNI plugin connections (node-agent side) until the future is dropped.
    pub async fn serve_agent(self, handler: Arc<dyn PodEventHandler>) {
        serve(self.listener, Arc::new(AgentDispatch(handler))).await;
    }
}

impl Dispatch<ZtunnelRequest> for ZtunnelDispatch {
    fn dispatch(&self, request: ZtunnelRequest) -> BoxFuture<'_, Reply> {
        Box::pin(async move {
            let result = match request {
                // The connection loop answers `hello` itself.
                ZtunnelRequest::Hello { .. } => Ok(()),
                ZtunnelRequest::Enroll { pod } => self.0.enroll(pod).await,
                ZtunnelRequest::Unenroll { uid } => self.0.unenroll(uid).await,
                ZtunnelRequest::Snapshot { pods } => self.0.snapshot(pods).await,
            };
            match result {
                Ok(()) => Reply::ack(),
                Err(e) => e.into_reply(),
            }
        })
    }
}

impl Dispatch<AgentRequest> for AgentDispatch {
    fn dispatch(&self, request: AgentRequest) -> BoxFuture<'_, Reply> {
        Box::pin(async move {
            let result = match request {
                AgentRequest::Hello { .. } => Ok(None),
                AgentRequest::Add { pod } => self.0.add(pod).await.map(Some),
                AgentRequest::Del { pod } => self.0.del(pod).await.map(|()| None),
                AgentRequest::Check { pod } => self.0.check(pod).await.map(Some),
            };
            match result {
                Ok(enrolled) => Reply::Ack { enrolled },
                Err(e) => e.into_reply(),
            }
        })
    }
}

/// Refuses to replace a live server or a non-socket file; a stale socket is left for
/// [`bind_private`]'s rename to replace.
fn check_existing(path: &Path) -> Result<(), ServerError> {
    let metadata = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(ServerError::io(
                format!("cannot stat {}", path.display()),
                e,
            ));
        }
    };
    if !metadata.file_type().is_socket() {
        return Err(ServerError::io(
            format!("{} exists and is not a socket", path.display()),
            io::Error::from(io::ErrorKind::AlreadyExists),
        ));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(ServerError {
            message: format!("a server is already listening on {}", path.display()),
            in_use: true,
            source: io::Error::from(io::ErrorKind::AddrInUse),
        }),
        Err(e) => {
            debug!(path = %path.display(), error = %e, "replacing stale socket");
            Ok(())
        }
    }
}

/// Binds in a fresh 0700 directory next to `path`, sets mode 0600, then renames the socket
/// into place: no moment where the socket is reachable with looser permissions, and a stale
/// file is replaced atomically.
fn bind_private(path: &Path) -> Result<std::os::unix::net::UnixListener, ServerError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let private_dir = parent.join(format!(
        ".ambit-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&private_dir)
        .map_err(|e| ServerError::io(format!("cannot create {}", private_dir.display()), e))?;
    let staged = private_dir.join("s");
    let result = std::os::unix::net::UnixListener::bind(&staged)
        .map_err(|e| ServerError::io(format!("cannot bind {}", staged.display()), e))
        .and_then(|listener| {
            std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| ServerError::io("cannot set socket mode 0600", e))?;
            std::fs::rename(&staged, path).map_err(|e| {
                ServerError::io(format!("cannot move socket to {}", path.display()), e)
            })?;
            Ok(listener)
        });
    // Best effort: the directory is empty after a successful rename.
    let _ = std::fs::remove_file(&staged);
    let _ = std::fs::remove_dir(&private_dir);
    result
}

async fn serve<R: Request, D: Dispatch<R>>(listener: UnixListener, dispatch: Arc<D>) {
    // Connection tasks live in the set, so dropping the serve future ends them too.
    let mut connections = JoinSet::new();
    let mut next_id: u64 = 0;
    loop {
        while connections.try_join_next().is_some() {}
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Typically EMFILE: back off instead of spinning, the condition may clear.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if connections.len() >= MAX_CONNECTIONS {
            warn!(
                limit = MAX_CONNECTIONS,
                "too many node-agent connections; closing a new one"
            );
            continue;
        }
        next_id += 1;
        let span = info_span!("node_agent_conn", id = next_id);
        connections.spawn(connection::<R, D>(stream, dispatch.clone()).instrument(span));
    }
}

async fn connection<R: Request, D: Dispatch<R>>(stream: UnixStream, dispatch: Arc<D>) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut scanner = FrameScanner::default();
    let mut greeted = false;
    loop {
        let frame = if greeted {
            read_frame(&mut reader, &mut scanner).await
        } else {
            match tokio::time::timeout(HELLO_TIMEOUT, read_frame(&mut reader, &mut scanner)).await {
                Ok(read) => read,
                Err(_) => Err(ReadError::Timeout),
            }
        };
        let frame = match frame {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                debug!("peer closed the connection");
                return;
            }
            Err(ReadError::Io(e)) => {
                debug!(error = %e, "read failed");
                return;
            }
            Err(ReadError::Timeout) => {
                warn!("no hello within {HELLO_TIMEOUT:?}; closing");
                let reply = Reply::error(ErrorKind::Invalid, "expected hello");
                let _ = send(&mut write, &reply).await;
                return;
            }
            Err(ReadError::Protocol(e)) => {
                warn!(error = %e, "bad frame; closing");
                let _ = send(&mut write, &Reply::error(ErrorKind::Invalid, e.to_string())).await;
                return;
            }
        };
        let request: R = match protocol::decode(&frame) {
            Ok(request) => request,
            Err(e) => {
                warn!(error = %e, "bad message; closing");
                let _ = send(&mut write, &Reply::error(ErrorKind::Invalid, e.to_string())).await;
                return;
            }
        };
        let (reply, close) = match (greeted, request.hello_version()) {
            (false, Some(PROTOCOL_VERSION)) => {
                greeted = true;
                (Reply::ack(), false)
            }
            (false, Some(version)) => (
                Reply::error(
                    ErrorKind::Invalid,
                    format!(
                        "protocol version {version} is not supported; this server speaks {PROTOCOL_VERSION}"
                    ),
                ),
                true,
            ),
            (false, None) => (
                Reply::error(
                    ErrorKind::Invalid,
                    format!("expected hello, got {}", request.kind_name()),
                ),
                true,
            ),
            (true, Some(_)) => (Reply::error(ErrorKind::Invalid, "hello sent twice"), true),
            (true, None) => {
                let kind = request.kind_name();
                let reply = dispatch.dispatch(request).await;
                if let Reply::Error {
                    kind: error,
                    message,
                } = &reply
                {
                    info!(request = kind, %error, message, "request failed");
                } else {
                    debug!(request = kind, "request handled");
                }
                (reply, false)
            }
        };
        if let Err(e) = send(&mut write, &reply).await {
            debug!(error = %e, "write failed");
            return;
        }
        if close {
            return;
        }
    }
}

async fn read_frame<B: AsyncBufRead + Unpin>(
    reader: &mut B,
    scanner: &mut FrameScanner,
) -> Result<Option<Vec<u8>>, ReadError> {
    loop {
        let available = reader.fill_buf().await.map_err(ReadError::Io)?;
        if available.is_empty() {
            return match scanner.finish() {
                Ok(()) => Ok(None),
                Err(e) => Err(ReadError::Protocol(e)),
            };
        }
        let used = scanner.feed(available).map_err(ReadError::Protocol)?;
        reader.consume(used);
        if scanner.is_complete() {
            return Ok(Some(scanner.take()));
        }
    }
}

async fn send(write: &mut tokio::net::unix::OwnedWriteHalf, reply: &Reply) -> io::Result<()> {
    let line = protocol::encode(reply).map_err(io::Error::other)?;
    match tokio::time::timeout(WRITE_TIMEOUT, write.write_all(&line)).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::from(io::ErrorKind::TimedOut)),
    }
}
