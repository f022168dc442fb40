//! A small blocking client for the node-agent protocol.
//!
//! The CNI plugin is a short-lived process, so it uses plain blocking sockets: no runtime to
//! start for one request. Connecting and each call have their own deadline.

use std::io::{self, BufRead, BufReader, Write};
use std::marker::PhantomData;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, UnixAddr};

use crate::protocol::{self, ErrorKind, FrameScanner, ProtocolError, Reply, Request};

/// How long a blocked connect (full listen backlog) waits between attempts.
const CONNECT_RETRY: Duration = Duration::from_millis(5);

/// Timeouts of a [`Client`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// Deadline for establishing the connection.
    pub connect_timeout: Duration,
    /// Deadline for each request and its reply, `hello` included.
    pub call_timeout: Duration,
}

/// A connection to a node-agent protocol server speaking requests of type `R`.
#[derive(Debug)]
pub struct Client<R> {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
    scanner: FrameScanner,
    call_timeout: Duration,
    broken: bool,
    _request: PhantomData<fn(R)>,
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ClientError {
    kind: ClientErrorKind,
    message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClientErrorKind {
    Unavailable,
    Timeout,
    Closed,
    Protocol,
    Rejected(ErrorKind),
    InvalidRequest,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            call_timeout: Duration::from_secs(10),
        }
    }
}

impl<R: Request> Client<R> {
    /// Connects to the socket at `path` and exchanges `hello`.
    pub fn connect(path: &Path, config: &ClientConfig) -> Result<Self, ClientError> {
        let stream = connect_with_deadline(path, Instant::now() + config.connect_timeout)?;
        let reader = stream.try_clone().map_err(|e| {
            ClientError::new(
                ClientErrorKind::Unavailable,
                format!("cannot clone socket: {e}"),
            )
        })?;
        let mut client = Self {
            writer: stream,
            reader: BufReader::new(reader),
            scanner: FrameScanner::default(),
            call_timeout: config.call_timeout,
            broken: false,
            _request: PhantomData,
        };
        match client.call(&R::hello())? {
            Reply::Ack { .. } => Ok(client),
            Reply::Error { kind, message } => Err(ClientError::new(
                ClientErrorKind::Rejected(kind),
                format!("{} refused hello: {message}", path.display()),
            )),
        }
    }

    /// Sends one request and waits for its reply. An `error` reply is returned as
    /// `Ok(Reply::Error { .. })`; after a transport or protocol failure the client is unusable.
    pub fn call(&mut self, request: &R) -> Result<Reply, ClientError> {
        if self.broken {
            return Err(ClientError::new(
                ClientErrorKind::Closed,
                "connection is unusable after an earlier failure",
            ));
        }
        let line = protocol::encode(request).map_err(|e| {
            ClientError::new(
                ClientErrorKind::InvalidRequest,
                format!("invalid request: {e}"),
            )
        })?;
        let deadline = Instant::now() + self.call_timeout;
        let result = self.exchange(&line, deadline);
        if result.is_err() {
            self.broken = true;
        }
        result
    }

    fn exchange(&mut self, line: &[u8], deadline: Instant) -> Result<Reply, ClientError> {
        self.writer
            .set_write_timeout(Some(remaining(deadline)?))
            .map_err(io_error)?;
        self.writer.write_all(line).map_err(io_error)?;
        let frame = self.read_frame(deadline)?;
        protocol::decode(&frame).map_err(protocol_error)
    }

    fn read_frame(&mut self, deadline: Instant) -> Result<Vec<u8>, ClientError> {
        loop {
            self.reader
                .get_ref()
                .set_read_timeout(Some(remaining(deadline)?))
                .map_err(io_error)?;
            let available = match self.reader.fill_buf() {
                Ok(available) => available,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_error(e)),
            };
            if available.is_empty() {
                self.scanner.finish().map_err(protocol_error)?;
                return Err(ClientError::new(
                    ClientErrorKind::Closed,
                    "server closed the connection without replying",
                ));
            }
            let used = self.scanner.feed(available).map_err(protocol_error)?;
            self.reader.consume(used);
            if self.scanner.is_complete() {
                return Ok(self.scanner.take());
            }
        }
    }
}

impl ClientError {
    /// Nobody is listening on the socket (missing file, connection refused, ...).
    pub fn is_unavailable(&self) -> bool {
        self.kind == ClientErrorKind::Unavailable
    }

    /// A deadline passed.
    pub fn is_timeout(&self) -> bool {
        self.kind == ClientErrorKind::Timeout
    }

    /// The server closed the connection or a read/write failed mid-call.
    pub fn is_closed(&self) -> bool {
        self.kind == ClientErrorKind::Closed
    }

    /// The server's reply could not be decoded.
    pub fn is_protocol(&self) -> bool {
        self.kind == ClientErrorKind::Protocol
    }

    /// The server refused the `hello`; the kind it gave.
    pub fn rejected_kind(&self) -> Option<ErrorKind> {
        match self.kind {
            ClientErrorKind::Rejected(kind) => Some(kind),
            _ => None,
        }
    }

    /// The request failed validation and was not sent.
    pub fn is_invalid_request(&self) -> bool {
        self.kind == ClientErrorKind::InvalidRequest
    }

    fn new(kind: ClientErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// Connects a non-blocking socket so a full listen backlog cannot block past `deadline`
/// (a blocking unix-socket connect waits for backlog space indefinitely).
fn connect_with_deadline(path: &Path, deadline: Instant) -> Result<UnixStream, ClientError> {
    let unavailable = |e: Errno| {
        ClientError::new(
            ClientErrorKind::Unavailable,
            format!("cannot connect to {}: {}", path.display(), e.desc()),
        )
    };
    let address = UnixAddr::new(path).map_err(unavailable)?;
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(unavailable)?;
    loop {
        match socket::connect(fd.as_raw_fd(), &address) {
            Ok(()) | Err(Errno::EISCONN) => break,
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN | Errno::EINPROGRESS | Errno::EALREADY) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(ClientError::new(
                        ClientErrorKind::Timeout,
                        format!("timed out connecting to {}", path.display()),
                    ));
                }
                std::thread::sleep(left.min(CONNECT_RETRY));
            }
            Err(e) => return Err(unavailable(e)),
        }
    }
    let stream = UnixStream::from(fd);
    stream.set_nonblocking(false).map_err(|e| {
        ClientError::new(
            ClientErrorKind::Unavailable,
            format!("cannot configure socket: {e}"),
        )
    })?;
    Ok(stream)
}

fn remaining(deadline: Instant) -> Result<Duration, ClientError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(ClientError::new(ClientErrorKind::Timeout, "call timed out"))
    } else {
        Ok(left)
    }
}

fn io_error(e: io::Error) -> ClientError {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            ClientError::new(ClientErrorKind::Timeout, "call timed out")
        }
        _ => ClientError::new(ClientErrorKind::Closed, format!("connection failed: {e}")),
    }
}

fn protocol_error(e: ProtocolError) -> ClientError {
    ClientError::new(ClientErrorKind::Protocol, format!("bad reply: {e}"))
}
