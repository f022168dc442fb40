//! The one tiny HTTP/1.1 server loop behind the admin, metrics and readiness endpoints.
//!
//! Handlers are synchronous and boxed: these endpoints answer from memory, and one
//! non-generic server keeps compile times and code size down.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};

use crate::shutdown::DrainWatch;

/// Response body of every endpoint.
pub(crate) type Body = Full<Bytes>;

/// Answers one request from its method and URI.
pub(crate) type Handler = Arc<dyn Fn(&Method, &http::Uri) -> Response<Body> + Send + Sync>;

/// Slow clients cannot hold a connection open by trickling headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause after a failed accept (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `handler` on `listener` until `stop` reports the shutdown is over.
///
/// Must run inside a Tokio runtime; the listener is registered with that runtime's reactor.
pub(crate) async fn serve(
    name: &'static str,
    listener: std::net::TcpListener,
    handler: Handler,
    mut stop: DrainWatch,
) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    tracing::debug!(server = name, addr = ?listener.local_addr().ok(), "serving");
    loop {
        tokio::select! {
            () = stop.stopped() => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tokio::spawn(serve_connection(name, stream, peer, handler.clone(), stop.clone()));
                }
                Err(error) => {
                    tracing::warn!(server = name, %error, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                }
            },
        }
    }
}

async fn serve_connection(
    name: &'static str,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    handler: Handler,
    mut stop: DrainWatch,
) {
    let service = service_fn(move |request: Request<Incoming>| {
        let response = handler(request.method(), request.uri());
        async move { Ok::<_, Infallible>(response) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = stop.stopped() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(server = name, %peer, %error, "connection ended with an error");
    }
}

/// A plain-text response.
pub(crate) fn text(status: StatusCode, body: impl Into<String>) -> Response<Body> {
    with_type(status, "text/plain; charset=utf-8", body.into().into())
}

/// A JSON response.
pub(crate) fn json(value: &serde_json::Value) -> Response<Body> {
    match serde_json::to_vec_pretty(value) {
        Ok(body) => with_type(StatusCode::OK, "application/json", body.into()),
        Err(error) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding JSON failed: {error}\n"),
        ),
    }
}

/// A response with an explicit content type.
pub(crate) fn with_type(status: StatusCode, content_type: &str, body: Bytes) -> Response<Body> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    if let Ok(value) = header::HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

/// 404 for paths no endpoint serves.
pub(crate) fn not_found() -> Response<Body> {
    text(StatusCode::NOT_FOUND, "not found\n")
}

/// 405 naming the allowed method.
pub(crate) fn method_not_allowed(allowed: &Method) -> Response<Body> {
    let mut response = text(StatusCode::METHOD_NOT_ALLOWED, format!("use {allowed}\n"));
    if let Ok(value) = header::HeaderValue::from_str(allowed.as_str()) {
        response.headers_mut().insert(header::ALLOW, value);
    }
    response
}

/// The percent-decoded value of query parameter `key`; `Err` if it is badly encoded.
pub(crate) fn query_param(uri: &http::Uri, key: &str) -> Option<Result<String, ()>> {
    let query = uri.query()?;
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then(|| percent_decode(v))
    })
}

fn percent_decode(text: &str) -> Result<String, ()> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or(())?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return Err(());
                }
                let hex = std::str::from_utf8(hex).map_err(|_| ())?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| ())?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> http::Uri {
        s.parse().unwrap()
    }

    #[test]
    fn query_params_are_decoded() {
        let level = |s: &str| query_param(&uri(s), "level");
        assert_eq!(level("/logging?level=debug"), Some(Ok("debug".into())));
        assert_eq!(
            level("/logging?x=1&level=info%2Cambit_hbone%3Dtrace"),
            Some(Ok("info,ambit_hbone=trace".into()))
        );
        assert_eq!(
            level("/logging?level=info,ambit_hbone=trace"),
            Some(Ok("info,ambit_hbone=trace".into()))
        );
        assert_eq!(level("/logging?level="), Some(Ok(String::new())));
        assert_eq!(level("/logging?level=%zz"), Some(Err(())));
        assert_eq!(level("/logging?level=%4"), Some(Err(())));
        assert_eq!(level("/logging?level=%+5"), Some(Err(())));
        assert_eq!(level("/logging?other=1"), None);
        assert_eq!(level("/logging"), None);
    }
}
