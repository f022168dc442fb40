//! A minimal HTTP client over plain TCP (HTTP/1.1 or h2c with prior knowledge) that keeps one
//! connection open and reconnects when the server closes it. Used by `load` and by the echo
//! server's `--call` fan-out.

use std::time::Duration;

use bytes::Bytes;
use http::header::{HOST, HeaderMap};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

/// The largest response body a client reads; bigger ones are a transport error.
pub const MAX_BODY: usize = 16 * 1024 * 1024;

/// Which HTTP version a client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// HTTP/1.1 with keep-alive.
    #[default]
    Http1,
    /// HTTP/2 over cleartext TCP, without the HTTP/1.1 upgrade dance.
    H2c,
}

/// A URL the client can reach: `http://host[:port]/path?query`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    host: String,
    port: u16,
    authority: String,
    path_and_query: String,
}

/// What a URL was wrong about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid URL {url:?}: {reason}")]
pub struct TargetError {
    url: String,
    reason: String,
}

/// A request that got no HTTP response: connect, I/O, protocol error or timeout.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// TCP connect failed.
    #[error("connecting to {addr}: {source}")]
    Connect {
        /// `host:port` the client tried.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The HTTP exchange failed after connecting.
    #[error("HTTP exchange with {addr}: {source}")]
    Http {
        /// `host:port` of the server.
        addr: String,
        /// Why.
        source: hyper::Error,
    },
    /// The body could not be read (reset, or larger than [`MAX_BODY`]).
    #[error("reading the response body from {addr}: {message}")]
    Body {
        /// `host:port` of the server.
        addr: String,
        /// Why.
        message: String,
    },
    /// The whole request took longer than the client's timeout.
    #[error("no complete response from {addr} within {timeout:?}")]
    Timeout {
        /// `host:port` of the server.
        addr: String,
        /// The limit.
        timeout: Duration,
    },
}

/// A response read completely.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub status: StatusCode,
    /// Response headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

/// One connection's worth of client: requests go one at a time over a kept-alive connection.
#[derive(Debug)]
pub struct Client {
    target: Target,
    protocol: Protocol,
    timeout: Duration,
    keepalive: bool,
    sender: Option<Sender>,
}

#[derive(Debug)]
enum Sender {
    Http1(http1::SendRequest<Empty<Bytes>>),
    H2c(http2::SendRequest<Empty<Bytes>>),
}

impl Target {
    /// Parses an `http://` URL; `https` is refused since the mesh, not the app, does TLS.
    pub fn parse(url: &str) -> Result<Self, TargetError> {
        let error = |reason: &str| TargetError {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        if !url.contains("://") {
            return Err(error("missing http:// scheme"));
        }
        let uri: Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| error(&e.to_string()))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => {
                return Err(error(&format!("scheme {other} is not supported, use http")));
            }
            None => return Err(error("missing http:// scheme")),
        }
        let authority = uri.authority().ok_or_else(|| error("missing host"))?;
        let host = authority.host();
        if host.is_empty() {
            return Err(error("missing host"));
        }
        let port = authority.port_u16().unwrap_or(80);
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let path_and_query = uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), ToString::to_string);
        Ok(Self {
            host,
            port,
            authority: authority.as_str().to_owned(),
            path_and_query,
        })
    }

    /// `host:port` as given (IPv6 in brackets), also the `Host` header.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The path and query to request.
    pub fn path_and_query(&self) -> &str {
        &self.path_and_query
    }

    fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl Client {
    /// A client for `target`; it connects on the first request. Each request, connect included,
    /// must complete within `timeout`.
    pub fn new(target: Target, protocol: Protocol, timeout: Duration) -> Self {
        Self {
            target,
            protocol,
            timeout,
            keepalive: true,
            sender: None,
        }
    }

    /// With `false`, every request opens its own connection (so L4 balancing spreads them).
    pub fn keepalive(mut self, keepalive: bool) -> Self {
        self.keepalive = keepalive;
        self
    }

    /// GETs the target's path with `headers` added, and reads the whole response.
    pub async fn get(&mut self, headers: &HeaderMap) -> Result<Reply, TransportError> {
        let addr = self.target.addr();
        let timeout = self.timeout;
        let result = tokio::time::timeout(timeout, self.exchange(headers)).await;
        let reply = match result {
            Ok(reply) => reply,
            Err(_) => Err(TransportError::Timeout { addr, timeout }),
        };
        if reply.is_err() || !self.keepalive {
            // A connection that failed mid-request is not reused.
            self.sender = None;
        }
        reply
    }

    async fn exchange(&mut self, headers: &HeaderMap) -> Result<Reply, TransportError> {
        let addr = self.target.addr();
        let request = self.request(headers);
        let sender = match self.sender.take() {
            Some(sender) if sender.is_usable() => sender,
            _ => self.connect().await?,
        };
        let sender = self.sender.insert(sender);
        let response = sender
            .send(request)
            .await
            .map_err(|source| TransportError::Http {
                addr: addr.clone(),
                source,
            })?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, MAX_BODY)
            .collect()
            .await
            .map_err(|error| TransportError::Body {
                addr,
                message: error.to_string(),
            })?
            .to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    fn request(&self, headers: &HeaderMap) -> Request<Empty<Bytes>> {
        let mut request = Request::new(Empty::new());
        *request.method_mut() = Method::GET;
        let uri = match self.protocol {
            // h2 needs the absolute form to carry :scheme and :authority.
            Protocol::H2c => format!(
                "http://{}{}",
                self.target.authority, self.target.path_and_query
            ),
            Protocol::Http1 => self.target.path_and_query.clone(),
        };
        // The target was parsed from a valid URI, so its parts form a valid URI again.
        *request.uri_mut() = uri.parse().unwrap_or_default();
        if self.protocol == Protocol::Http1
            && let Ok(host) = self.target.authority.parse()
        {
            request.headers_mut().insert(HOST, host);
        }
        for (name, value) in headers {
            request.headers_mut().append(name, value.clone());
        }
        request
    }

    async fn connect(&self) -> Result<Sender, TransportError> {
        let addr = self.target.addr();
        let stream = TcpStream::connect((self.target.host.as_str(), self.target.port))
            .await
            .map_err(|source| TransportError::Connect {
                addr: addr.clone(),
                source,
            })?;
        // Small request/response exchanges; Nagle would only add latency.
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(stream);
        let http_error = |source| TransportError::Http {
            addr: addr.clone(),
            source,
        };
        match self.protocol {
            Protocol::Http1 => {
                let (sender, connection) = http1::handshake(io).await.map_err(http_error)?;
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        tracing::debug!(%error, "HTTP/1.1 client connection ended");
                    }
                });
                Ok(Sender::Http1(sender))
            }
            Protocol::H2c => {
                let (sender, connection) = http2::handshake(TokioExecutor::new(), io)
                    .await
                    .map_err(http_error)?;
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        tracing::debug!(%error, "h2c client connection ended");
                    }
                });
                Ok(Sender::H2c(sender))
            }
        }
    }
}

impl Sender {
    fn is_usable(&self) -> bool {
        match self {
            Self::Http1(sender) => !sender.is_closed(),
            Self::H2c(sender) => !sender.is_closed(),
        }
    }

    async fn send(
        &mut self,
        request: Request<Empty<Bytes>>,
    ) -> Result<http::Response<hyper::body::Incoming>, hyper::Error> {
        match self {
            Self::Http1(sender) => {
                sender.ready().await?;
                sender.send_request(request).await
            }
            Self::H2c(sender) => {
                sender.ready().await?;
                sender.send_request(request).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_host_port_and_path() {
        let target = Target::parse("http://reviews.default:9080/reviews/1?x=1").unwrap();
        assert_eq!(target.addr(), "reviews.default:9080");
        assert_eq!(target.authority(), "reviews.default:9080");
        assert_eq!(target.path_and_query(), "/reviews/1?x=1");

        let target = Target::parse("http://10.96.0.20").unwrap();
        assert_eq!(target.addr(), "10.96.0.20:80");
        assert_eq!(target.path_and_query(), "/");

        let target = Target::parse("http://[fd00::1]:8080/").unwrap();
        assert_eq!(target.addr(), "[fd00::1]:8080");
        assert_eq!(target.authority(), "[fd00::1]:8080");
    }

    #[test]
    fn unsupported_urls_are_refused_with_a_reason() {
        for (url, reason) in [
            ("https://example.com/", "scheme https"),
            ("example.com/path", "missing http:// scheme"),
            ("http:///path", "invalid"),
            ("not a url", "invalid"),
        ] {
            let error = Target::parse(url).unwrap_err().to_string();
            assert!(error.contains(reason), "{url}: {error}");
        }
    }
}
