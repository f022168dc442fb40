//! Every failure of the L7 stack, and the one place where a failure becomes a response.
//!
//! A [`ProxyError`] records *what* went wrong, *where* ([`Side`]), whether another try may
//! succeed, and the Envoy/Istio response flag (`UH`, `UF`, `UT`, …) that access logs and
//! metrics report. [`respond`] turns it into the HTTP answer — or, for a gRPC request, into
//! a trailers-only `200` carrying `grpc-status` — so status codes, bodies and headers of
//! error responses are decided here and nowhere else. Error responses carry no `server` or
//! version header.
//!
//! The one exception is malformed HTTP/1.1 framing (a bad request line, too many or too
//! large headers): hyper answers it itself (`400`/`431`) before a request exists for us to
//! see, and closes that connection only.

use std::error::Error as StdError;
use std::fmt;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{HeaderMap, Response, StatusCode};
use http_body_util::{BodyExt, Full};

/// A boxed error, as bodies and IO layers produce them.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// The body type of every response the waypoint sends downstream.
pub type ResponseBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// Which side of the proxy a failure came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The client or its request.
    Downstream,
    /// The endpoint or the path to it.
    Upstream,
    /// The waypoint's own decision (policy, routing, configuration).
    Internal,
}

/// Envoy's response flags, as Istio's metrics and access logs report them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ResponseFlag {
    /// `UH`: no healthy upstream endpoint.
    NoHealthyUpstream,
    /// `UF`: connecting to the upstream failed.
    UpstreamConnectionFailure,
    /// `UT`: the upstream did not answer in time.
    UpstreamRequestTimeout,
    /// `UC`: the upstream connection ended before a response.
    UpstreamConnectionTermination,
    /// `URX`: retries were exhausted (reported with the last try's status).
    UpstreamRetryLimitExceeded,
    /// `NR`: no route matched.
    NoRouteFound,
    /// `DPE`: the downstream request was malformed.
    DownstreamProtocolError,
    /// `UO`: a connection-pool limit of the destination overflowed (circuit breaking).
    UpstreamOverflow,
    /// `RL`: a local rate limit refused the request.
    RateLimited,
    /// `NC`: the route names a subset (cluster) that does not exist.
    NoClusterFound,
}

/// A failure of one request in the L7 stack. Opaque; ask it with the predicates.
#[derive(Debug)]
pub struct ProxyError {
    kind: ErrorKind,
    source: Option<BoxError>,
}

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ErrorKind {
    NoHealthyUpstream,
    ConnectFailure,
    Timeout,
    PerTryTimeout,
    UpstreamReset { before_request_sent: bool },
    Denied(String),
    Unauthenticated(String),
    NoRoute,
    BadBackend(String),
    Malformed(String),
    HeadersTooLarge,
    BodyTooLarge(usize),
    Overflow(&'static str),
    RateLimited { retry_after_secs: u64 },
    UnknownSubset(String),
}

impl ResponseFlag {
    /// The short code Envoy writes (`UH`, `UF`, …).
    pub fn code(self) -> &'static str {
        match self {
            Self::NoHealthyUpstream => "UH",
            Self::UpstreamConnectionFailure => "UF",
            Self::UpstreamRequestTimeout => "UT",
            Self::UpstreamConnectionTermination => "UC",
            Self::UpstreamRetryLimitExceeded => "URX",
            Self::NoRouteFound => "NR",
            Self::DownstreamProtocolError => "DPE",
            Self::UpstreamOverflow => "UO",
            Self::RateLimited => "RL",
            Self::NoClusterFound => "NC",
        }
    }
}

impl fmt::Display for ResponseFlag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl ProxyError {
    fn new(kind: ErrorKind) -> Self {
        Self { kind, source: None }
    }

    fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// The backend service has no endpoint that can take the request.
    pub fn no_healthy_upstream() -> Self {
        Self::new(ErrorKind::NoHealthyUpstream)
    }

    /// The HBONE tunnel or the HTTP handshake to the endpoint failed.
    pub fn connect_failure(source: impl Into<BoxError>) -> Self {
        Self::new(ErrorKind::ConnectFailure).with_source(source)
    }

    /// The route's request timeout passed.
    pub fn timeout() -> Self {
        Self::new(ErrorKind::Timeout)
    }

    /// One try's backend-request timeout passed.
    pub fn per_try_timeout() -> Self {
        Self::new(ErrorKind::PerTryTimeout)
    }

    /// The upstream connection failed while the request was in flight. `before_request_sent`:
    /// the request never left the waypoint, so trying again is safe.
    pub fn upstream_reset(before_request_sent: bool, source: impl Into<BoxError>) -> Self {
        Self::new(ErrorKind::UpstreamReset {
            before_request_sent,
        })
        .with_source(source)
    }

    /// Authorization denied the request; `reason` is logged, never sent.
    pub fn denied(reason: impl Into<String>) -> Self {
        Self::new(ErrorKind::Denied(reason.into()))
    }

    /// The request carried a JWT that failed validation; `reason` is logged, never sent.
    pub fn unauthenticated(reason: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unauthenticated(reason.into()))
    }

    /// Routes are attached to the service but none matches the request.
    pub fn no_route() -> Self {
        Self::new(ErrorKind::NoRoute)
    }

    /// The matched rule points at a backend that does not exist or has no such port.
    pub fn bad_backend(what: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadBackend(what.into()))
    }

    /// The request cannot be proxied as it is (bad authority, bad URI after a rewrite, …).
    pub fn malformed(what: impl Into<String>) -> Self {
        Self::new(ErrorKind::Malformed(what.into()))
    }

    /// The request headers exceed the configured limits.
    pub fn headers_too_large() -> Self {
        Self::new(ErrorKind::HeadersTooLarge)
    }

    /// A request body that must be buffered (for retries) is larger than `limit` bytes.
    pub fn body_too_large(limit: usize) -> Self {
        Self::new(ErrorKind::BodyTooLarge(limit))
    }

    /// A connection-pool limit (`limit` names it) of the destination is reached.
    pub fn overflow(limit: &'static str) -> Self {
        Self::new(ErrorKind::Overflow(limit))
    }

    /// A local rate limit refused the request; a token is expected in `retry_after_secs`.
    pub fn rate_limited(retry_after_secs: u64) -> Self {
        Self::new(ErrorKind::RateLimited { retry_after_secs })
    }

    /// The route names a subset the destination rule of the service does not define.
    pub fn unknown_subset(what: impl Into<String>) -> Self {
        Self::new(ErrorKind::UnknownSubset(what.into()))
    }

    /// Whether another try (on another endpoint) may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::ConnectFailure
                | ErrorKind::PerTryTimeout
                | ErrorKind::UpstreamReset {
                    before_request_sent: true
                }
        )
    }

    /// Whether nothing reached the upstream: the connection or the stream could not be opened
    /// (Envoy's `connect-failure` and `refused-stream`).
    pub fn is_connect_failure(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::ConnectFailure
                | ErrorKind::UpstreamReset {
                    before_request_sent: true
                }
        )
    }

    /// Whether the upstream reset or closed after the request was sent (Envoy's `reset`).
    pub fn is_reset(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::UpstreamReset {
                before_request_sent: false
            }
        )
    }

    /// Whether one try's backend-request (per-try) timeout caused this.
    pub fn is_per_try_timeout(&self) -> bool {
        matches!(self.kind, ErrorKind::PerTryTimeout)
    }

    /// Whether a timeout (overall or per try) caused this.
    pub fn is_timeout(&self) -> bool {
        matches!(self.kind, ErrorKind::Timeout | ErrorKind::PerTryTimeout)
    }

    /// Whether authorization denied the request.
    pub fn is_denied(&self) -> bool {
        matches!(self.kind, ErrorKind::Denied(_))
    }

    /// Where the failure came from.
    pub fn side(&self) -> Side {
        match self.kind {
            ErrorKind::NoHealthyUpstream
            | ErrorKind::ConnectFailure
            | ErrorKind::Timeout
            | ErrorKind::PerTryTimeout
            | ErrorKind::UpstreamReset { .. }
            | ErrorKind::Overflow(_) => Side::Upstream,
            ErrorKind::Denied(_)
            | ErrorKind::NoRoute
            | ErrorKind::BadBackend(_)
            | ErrorKind::RateLimited { .. }
            | ErrorKind::UnknownSubset(_) => Side::Internal,
            ErrorKind::Malformed(_)
            | ErrorKind::HeadersTooLarge
            | ErrorKind::BodyTooLarge(_)
            | ErrorKind::Unauthenticated(_) => Side::Downstream,
        }
    }

    /// The response flag for logs and metrics, if the failure has one.
    pub fn flag(&self) -> Option<ResponseFlag> {
        match self.kind {
            ErrorKind::NoHealthyUpstream => Some(ResponseFlag::NoHealthyUpstream),
            ErrorKind::ConnectFailure => Some(ResponseFlag::UpstreamConnectionFailure),
            ErrorKind::Timeout | ErrorKind::PerTryTimeout => {
                Some(ResponseFlag::UpstreamRequestTimeout)
            }
            ErrorKind::UpstreamReset { .. } => Some(ResponseFlag::UpstreamConnectionTermination),
            ErrorKind::NoRoute => Some(ResponseFlag::NoRouteFound),
            ErrorKind::Malformed(_) | ErrorKind::HeadersTooLarge => {
                Some(ResponseFlag::DownstreamProtocolError)
            }
            ErrorKind::Overflow(_) => Some(ResponseFlag::UpstreamOverflow),
            ErrorKind::RateLimited { .. } => Some(ResponseFlag::RateLimited),
            ErrorKind::UnknownSubset(_) => Some(ResponseFlag::NoClusterFound),
            ErrorKind::Denied(_)
            | ErrorKind::Unauthenticated(_)
            | ErrorKind::BadBackend(_)
            | ErrorKind::BodyTooLarge(_) => None,
        }
    }

    /// The HTTP status the client receives (for gRPC, the status this maps from).
    pub fn status(&self) -> StatusCode {
        match self.kind {
            ErrorKind::NoHealthyUpstream
            | ErrorKind::ConnectFailure
            | ErrorKind::UpstreamReset { .. }
            | ErrorKind::Overflow(_)
            | ErrorKind::UnknownSubset(_) => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::Timeout | ErrorKind::PerTryTimeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::Denied(_) => StatusCode::FORBIDDEN,
            ErrorKind::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ErrorKind::NoRoute => StatusCode::NOT_FOUND,
            ErrorKind::BadBackend(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::Malformed(_) => StatusCode::BAD_REQUEST,
            ErrorKind::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ErrorKind::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }

    /// The short text sent to the client; never internal details.
    fn public_message(&self) -> &'static str {
        match self.kind {
            ErrorKind::NoHealthyUpstream => "no healthy upstream",
            ErrorKind::ConnectFailure => "upstream connect error",
            ErrorKind::Timeout | ErrorKind::PerTryTimeout => "upstream request timeout",
            ErrorKind::UpstreamReset { .. } => "upstream reset before response",
            ErrorKind::Denied(_) => "RBAC: access denied",
            ErrorKind::Unauthenticated(_) => "Jwt verification fails",
            ErrorKind::NoRoute => "no route matched",
            ErrorKind::BadBackend(_) => "route backend unavailable",
            ErrorKind::Malformed(_) => "bad request",
            ErrorKind::HeadersTooLarge => "request headers too large",
            ErrorKind::BodyTooLarge(_) => "request body too large",
            ErrorKind::Overflow(_) => {
                "upstream connect error or disconnect/reset before headers. reset reason: overflow"
            }
            ErrorKind::RateLimited { .. } => "local_rate_limited",
            ErrorKind::UnknownSubset(_) => "no healthy upstream",
        }
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ErrorKind::NoHealthyUpstream => f.write_str("no healthy upstream endpoint"),
            ErrorKind::ConnectFailure => f.write_str("connecting to the upstream failed"),
            ErrorKind::Timeout => f.write_str("request timeout"),
            ErrorKind::PerTryTimeout => f.write_str("backend request timeout"),
            ErrorKind::UpstreamReset {
                before_request_sent,
            } => write!(
                f,
                "upstream connection ended (request sent: {})",
                !before_request_sent
            ),
            ErrorKind::Denied(reason) => write!(f, "denied by policy: {reason}"),
            ErrorKind::Unauthenticated(reason) => write!(f, "invalid JWT: {reason}"),
            ErrorKind::NoRoute => f.write_str("no route matched"),
            ErrorKind::BadBackend(what) => write!(f, "bad route backend: {what}"),
            ErrorKind::Malformed(what) => write!(f, "malformed request: {what}"),
            ErrorKind::HeadersTooLarge => f.write_str("request headers too large"),
            ErrorKind::BodyTooLarge(limit) => {
                write!(
                    f,
                    "request body larger than the {limit} bytes that can be retried"
                )
            }
            ErrorKind::Overflow(limit) => write!(f, "connection pool overflow: {limit}"),
            ErrorKind::RateLimited { retry_after_secs } => {
                write!(f, "rate limited; retry after {retry_after_secs}s")
            }
            ErrorKind::UnknownSubset(what) => write!(f, "unknown subset: {what}"),
        }?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl StdError for ProxyError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_ref()
            .map(|source| &**source as &(dyn StdError + 'static))
    }
}

/// Whether a request is gRPC (`content-type: application/grpc[+proto|…]`).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/grpc"))
}

/// The response for `error`. gRPC requests get HTTP `200` with `grpc-status` and
/// `grpc-message` in the headers (a trailers-only response), as gRPC clients expect.
pub fn respond(error: &ProxyError, grpc: bool) -> Response<ResponseBody> {
    if grpc {
        let mut response = Response::new(empty_body());
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert(
            "grpc-status",
            HeaderValue::from(grpc_status(error.status())),
        );
        headers.insert(
            "grpc-message",
            HeaderValue::from_static(error.public_message()),
        );
        return response;
    }
    let mut response = Response::new(full_body(error.public_message()));
    *response.status_mut() = error.status();
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    if let ErrorKind::RateLimited { retry_after_secs } = error.kind {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(retry_after_secs));
    }
    response
}

/// The gRPC status code for an HTTP status, as Envoy and the gRPC spec map them.
fn grpc_status(status: StatusCode) -> u16 {
    match status.as_u16() {
        400 => 13, // INTERNAL
        401 => 16, // UNAUTHENTICATED
        403 => 7,  // PERMISSION_DENIED
        404 => 12, // UNIMPLEMENTED
        429 | 502..=504 => 14,
        _ => 2, // UNKNOWN
    }
}

/// A response body from a static string.
pub(crate) fn full_body(text: &'static str) -> ResponseBody {
    Full::new(Bytes::from_static(text.as_bytes()))
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty response body.
pub(crate) fn empty_body() -> ResponseBody {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_flag_and_retry_table() {
        let cases = [
            (ProxyError::no_healthy_upstream(), 503, Some("UH"), false),
            (
                ProxyError::connect_failure("refused"),
                503,
                Some("UF"),
                true,
            ),
            (ProxyError::timeout(), 504, Some("UT"), false),
            (ProxyError::per_try_timeout(), 504, Some("UT"), true),
            (
                ProxyError::upstream_reset(true, "closed"),
                503,
                Some("UC"),
                true,
            ),
            (
                ProxyError::upstream_reset(false, "reset"),
                503,
                Some("UC"),
                false,
            ),
            (ProxyError::denied("policy x"), 403, None, false),
            (ProxyError::no_route(), 404, Some("NR"), false),
            (ProxyError::bad_backend("svc"), 500, None, false),
            (ProxyError::malformed("uri"), 400, Some("DPE"), false),
            (ProxyError::headers_too_large(), 431, Some("DPE"), false),
            (ProxyError::body_too_large(10), 413, None, false),
            (
                ProxyError::overflow("maxConnections"),
                503,
                Some("UO"),
                false,
            ),
            (ProxyError::rate_limited(2), 429, Some("RL"), false),
            (ProxyError::unknown_subset("v9"), 503, Some("NC"), false),
        ];
        for (error, status, flag, retryable) in cases {
            assert_eq!(error.status().as_u16(), status, "{error}");
            assert_eq!(error.flag().map(ResponseFlag::code), flag, "{error}");
            assert_eq!(error.is_retryable(), retryable, "{error}");
            let response = respond(&error, false);
            assert_eq!(response.status().as_u16(), status);
            assert!(response.headers().get("server").is_none());
        }
    }

    #[test]
    fn rate_limited_carries_retry_after() {
        let response = respond(&ProxyError::rate_limited(3), false);
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[RETRY_AFTER], "3");
    }

    #[test]
    fn grpc_errors_are_trailers_only_200() {
        let response = respond(&ProxyError::denied("p"), true);
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["grpc-status"], "7");
        let response = respond(&ProxyError::no_healthy_upstream(), true);
        assert_eq!(response.headers()["grpc-status"], "14");
        let response = respond(&ProxyError::timeout(), true);
        assert_eq!(response.headers()["grpc-status"], "14");
    }

    #[test]
    fn grpc_detection() {
        let mut headers = HeaderMap::new();
        assert!(!is_grpc(&headers));
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/grpc+proto"),
        );
        assert!(is_grpc(&headers));
    }
}
