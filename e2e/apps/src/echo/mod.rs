//! The echo server: one port for HTTP/1.1, h2c, gRPC-shaped requests and WebSocket.
//!
//! Each request is answered with a JSON description of the server (`version`, pod) and of the
//! request as received (method, path, headers, protocol, peer address), so a test behind a
//! proxy can see what the proxy changed. Failures and delays come from the server's flags or,
//! for one request, from `?status=`/`?delay=` (or the `x-echo-status`/`x-echo-delay`
//! headers, which survive paths that do not carry a query, like gRPC's).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::client::{Client, Protocol, Target};
use crate::duration::parse_duration;

pub mod body;
pub mod grpc;
pub mod ws;

use body::ReplyBody;

/// The largest request body the server reads.
pub const MAX_REQUEST_BODY: usize = 4 * 1024 * 1024;

/// Headers copied from an incoming request onto `--call` requests, as bookinfo's services do,
/// so header routes (`end-user`) and traces (`traceparent`, B3) follow the call chain.
pub const PROPAGATED_HEADERS: &[&str] = &[
    "end-user",
    "x-request-id",
    "traceparent",
    "tracestate",
    "baggage",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
];

/// Everything the echo server is told by its flags.
#[derive(Debug, Clone)]
pub struct EchoConfig {
    /// Reported as `version` in every answer (`v1`, `v2`…).
    pub version: String,
    /// Reported as `pod.name` (from `POD_NAME`).
    pub pod_name: Option<String>,
    /// Reported as `pod.namespace` (from `POD_NAMESPACE`).
    pub pod_namespace: Option<String>,
    /// Fraction of requests, 0 to 1, answered with `fail_status`.
    pub fail_ratio: f64,
    /// The status of injected failures (4xx or 5xx).
    pub fail_status: StatusCode,
    /// Added before every answer.
    pub delay: Duration,
    /// Seeds the failure draws so a test sees the same sequence every run.
    pub seed: Option<u64>,
    /// URLs called on every request; their answers are embedded under `calls`.
    pub calls: Vec<Target>,
    /// Limit of each `--call` request.
    pub call_timeout: Duration,
}

/// A configuration the server refuses.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// `fail_ratio` outside 0..=1.
    #[error("--fail-ratio must be between 0 and 1, got {0}")]
    FailRatio(f64),
    /// `fail_status` is not an error status.
    #[error("--fail-status must be a 4xx or 5xx status, got {0}")]
    FailStatus(u16),
    /// Empty version.
    #[error("--version must not be empty")]
    EmptyVersion,
}

/// A validated echo server, ready to serve listeners.
#[derive(Debug, Clone)]
pub struct EchoServer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: EchoConfig,
    // One generator for the whole server: with a seed, the n-th request handled draws the
    // n-th number whatever connection it came on.
    rng: Mutex<StdRng>,
}

/// Per-request overrides from the query string or `x-echo-*` headers.
#[derive(Debug, Default, PartialEq, Eq)]
struct Overrides {
    status: Option<StatusCode>,
    delay: Option<Duration>,
}

impl Default for EchoConfig {
    fn default() -> Self {
        Self {
            version: "v1".to_owned(),
            pod_name: None,
            pod_namespace: None,
            fail_ratio: 0.0,
            fail_status: StatusCode::SERVICE_UNAVAILABLE,
            delay: Duration::ZERO,
            seed: None,
            calls: Vec::new(),
            call_timeout: Duration::from_secs(5),
        }
    }
}

impl EchoServer {
    /// Validates `config`.
    pub fn new(config: EchoConfig) -> Result<Self, ConfigError> {
        if !(0.0..=1.0).contains(&config.fail_ratio) {
            return Err(ConfigError::FailRatio(config.fail_ratio));
        }
        if !(400..=599).contains(&config.fail_status.as_u16()) {
            return Err(ConfigError::FailStatus(config.fail_status.as_u16()));
        }
        if config.version.trim().is_empty() {
            return Err(ConfigError::EmptyVersion);
        }
        let rng = match config.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                rng: Mutex::new(rng),
            }),
        })
    }

    /// Accepts connections on `listener` until the task is dropped. Each connection is
    /// HTTP/1.1 (with upgrades) or h2c, chosen by its first bytes.
    pub async fn serve(self, listener: TcpListener) -> std::io::Result<()> {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Per-connection failures (reset before accept, fd limits) must not stop
                    // the server.
                    tracing::warn!(%error, "accept failed");
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let inner = self.inner.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let inner = inner.clone();
                    async move { Ok::<_, Infallible>(inner.handle(request, peer).await) }
                });
                let result = auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await;
                if let Err(error) = result {
                    tracing::debug!(%peer, %error, "connection ended with an error");
                }
            });
        }
    }
}

impl Inner {
    async fn handle(&self, request: Request<Incoming>, peer: SocketAddr) -> Response<ReplyBody> {
        let overrides = match Overrides::from_request(&request) {
            Ok(overrides) => overrides,
            Err(message) => return text(StatusCode::BAD_REQUEST, &format!("{message}\n")),
        };
        let delay = overrides.delay.unwrap_or(self.config.delay);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if request.uri().path() == "/ws" {
            if ws::is_upgrade(&request) {
                return ws::accept(request);
            }
            return text(
                StatusCode::UPGRADE_REQUIRED,
                "/ws speaks WebSocket only: send an HTTP/1.1 upgrade\n",
            );
        }
        let is_grpc = request
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.starts_with("application/grpc"));
        let (parts, body) = request.into_parts();
        let body = match Limited::new(body, MAX_REQUEST_BODY).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(error) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    &format!("reading the request body: {error}\n"),
                );
            }
        };

        let mut status = match overrides.status {
            Some(status) => status,
            None => self.draw_status(),
        };
        let calls = self.fan_out(&parts.headers).await;
        let call_failed = calls.iter().any(|call| {
            call.get("status")
                .and_then(Value::as_u64)
                .is_none_or(|s| s >= 400)
        });
        if call_failed && overrides.status.is_none() && status.is_success() {
            status = StatusCode::BAD_GATEWAY;
        }

        let mut info = json!({
            "version": self.config.version,
            "pod": {
                "name": self.config.pod_name,
                "namespace": self.config.pod_namespace,
            },
            "method": parts.method.as_str(),
            "path": parts.uri.path(),
            "query": parts.uri.query().unwrap_or(""),
            "protocol": protocol_name(parts.version),
            "remoteAddr": peer.to_string(),
            "status": status.as_u16(),
            "headers": headers_json(&parts.headers),
            "bodyBytes": body.len(),
        });
        if !self.config.calls.is_empty() {
            info["calls"] = Value::Array(calls);
        }
        if is_grpc {
            return grpc_reply(&body, status, info);
        }
        let mut response = Response::new(ReplyBody::full(info.to_string()));
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response
    }

    fn draw_status(&self) -> StatusCode {
        let ratio = self.config.fail_ratio;
        if ratio <= 0.0 {
            return StatusCode::OK;
        }
        // The generator holds no invariant a panicking holder could break.
        let mut rng = self.rng.lock().unwrap_or_else(PoisonError::into_inner);
        if rng.random_bool(ratio) {
            self.config.fail_status
        } else {
            StatusCode::OK
        }
    }

    async fn fan_out(&self, incoming: &HeaderMap) -> Vec<Value> {
        let mut propagated = HeaderMap::new();
        for name in PROPAGATED_HEADERS {
            for value in incoming.get_all(*name) {
                propagated.append(*name, value.clone());
            }
        }
        let mut results = Vec::with_capacity(self.config.calls.len());
        for target in &self.config.calls {
            let url = format!("http://{}{}", target.authority(), target.path_and_query());
            let mut client = Client::new(target.clone(), Protocol::Http1, self.config.call_timeout)
                .keepalive(false);
            let result = match client.get(&propagated).await {
                Ok(reply) => {
                    let body = serde_json::from_slice::<Value>(&reply.body).unwrap_or_else(|_| {
                        Value::String(String::from_utf8_lossy(&reply.body).into_owned())
                    });
                    json!({"url": url, "status": reply.status.as_u16(), "body": body})
                }
                Err(error) => json!({"url": url, "error": error.to_string()}),
            };
            results.push(result);
        }
        results
    }
}

impl Overrides {
    fn from_request<B>(request: &Request<B>) -> Result<Self, String> {
        let mut overrides = Self::default();
        let query = request.uri().query().unwrap_or("");
        let from_query = query.split('&').filter_map(|pair| pair.split_once('='));
        let from_headers = ["x-echo-status", "x-echo-delay"]
            .into_iter()
            .filter_map(|name| {
                let value = request.headers().get(name)?.to_str().unwrap_or("\u{fffd}");
                Some((name.trim_start_matches("x-echo-"), value))
            });
        for (key, value) in from_query.chain(from_headers) {
            match key {
                "status" => {
                    let status = value
                        .parse::<u16>()
                        .ok()
                        .filter(|code| (200..=599).contains(code))
                        .and_then(|code| StatusCode::from_u16(code).ok())
                        .ok_or_else(|| {
                            format!("status override {value:?} is not a status in 200..=599")
                        })?;
                    overrides.status = Some(status);
                }
                "delay" => {
                    let delay = parse_duration(value).map_err(|error| error.to_string())?;
                    overrides.delay = Some(delay);
                }
                _ => {}
            }
        }
        Ok(overrides)
    }
}

/// A plain-text answer.
pub(crate) fn text(status: StatusCode, message: &str) -> Response<ReplyBody> {
    let mut response = Response::new(ReplyBody::full(message.to_owned()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn grpc_reply(body: &[u8], status: StatusCode, info: Value) -> Response<ReplyBody> {
    let reply_body = match grpc::decode_messages(body) {
        Err(error) => ReplyBody::empty()
            .with_trailers(grpc::trailers(grpc::INVALID_ARGUMENT, &error.to_string())),
        Ok(_) if !status.is_success() => {
            let message = format!("injected failure (HTTP status {})", status.as_u16());
            ReplyBody::empty()
                .with_trailers(grpc::trailers(grpc::status_for_http(status), &message))
        }
        Ok(_) => ReplyBody::full(grpc::encode_message(info.to_string().as_bytes()))
            .with_trailers(grpc::trailers(grpc::OK, "")),
    };
    // gRPC reports outcomes in trailers; the HTTP status stays 200.
    let mut response = Response::new(reply_body);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    response
}

fn protocol_name(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "unknown",
    }
}

/// Header names to values; repeated headers are joined with `, ` as HTTP allows.
fn headers_json(headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut map: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        map.entry(name.as_str().to_owned())
            .and_modify(|joined| {
                joined.push_str(", ");
                joined.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::builder().uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn overrides_come_from_the_query_or_headers() {
        let overrides =
            Overrides::from_request(&request("/x?a=1&status=503&delay=100ms", &[])).unwrap();
        assert_eq!(overrides.status, Some(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(overrides.delay, Some(Duration::from_millis(100)));

        let overrides =
            Overrides::from_request(&request("/pkg.Svc/Call", &[("x-echo-status", "429")]))
                .unwrap();
        assert_eq!(overrides.status, Some(StatusCode::TOO_MANY_REQUESTS));
        assert_eq!(overrides.delay, None);
    }

    #[test]
    fn bad_overrides_are_refused() {
        for uri in ["/?status=abc", "/?status=99", "/?status=600", "/?delay=5"] {
            assert!(
                Overrides::from_request(&request(uri, &[])).is_err(),
                "{uri}"
            );
        }
    }

    #[test]
    fn invalid_configs_are_refused() {
        let with = |change: fn(&mut EchoConfig)| {
            let mut config = EchoConfig::default();
            change(&mut config);
            EchoServer::new(config).map(drop)
        };
        assert_eq!(
            with(|c| c.fail_ratio = 1.5),
            Err(ConfigError::FailRatio(1.5))
        );
        assert_eq!(
            with(|c| c.fail_ratio = -0.1),
            Err(ConfigError::FailRatio(-0.1))
        );
        assert_eq!(
            with(|c| c.fail_status = StatusCode::OK),
            Err(ConfigError::FailStatus(200))
        );
        assert_eq!(
            with(|c| c.version = " ".to_owned()),
            Err(ConfigError::EmptyVersion)
        );
        assert_eq!(with(|c| c.fail_ratio = 1.0), Ok(()));
    }

    #[test]
    fn repeated_headers_are_joined() {
        let mut headers = HeaderMap::new();
        headers.append("x-a", HeaderValue::from_static("1"));
        headers.append("x-a", HeaderValue::from_static("2"));
        headers.append("x-b", HeaderValue::from_static("3"));
        let map = headers_json(&headers);
        assert_eq!(map["x-a"], "1, 2");
        assert_eq!(map["x-b"], "3");
    }
}
