//! GETs JSON documents from a proxy's admin port (ztunnel: 127.0.0.1:15000).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// The largest admin document read (config dumps of big meshes are a few MiB).
pub(crate) const MAX_DOCUMENT: usize = 64 * 1024 * 1024;

/// Why an admin document could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Nothing answered at the address.
    #[error(
        "cannot reach the admin server at {addr} ({source}); is ztunnel running, and is --admin \
         right? (for a cluster's ztunnel: --node NAME or --pod NAMESPACE/NAME)"
    )]
    Connect {
        /// The admin address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("GET http://{addr}{path}: {message}")]
    Http {
        /// The admin address.
        addr: SocketAddr,
        /// The endpoint.
        path: String,
        /// Why.
        message: String,
    },
    /// The server answered with an error status.
    #[error("GET http://{addr}{path} answered {status}: {body}")]
    Status {
        /// The admin address.
        addr: SocketAddr,
        /// The endpoint.
        path: String,
        /// The status.
        status: StatusCode,
        /// The start of the body.
        body: String,
    },
    /// No answer in time.
    #[error("GET http://{addr}{path}: no answer within {timeout:?}")]
    Timeout {
        /// The admin address.
        addr: SocketAddr,
        /// The endpoint.
        path: String,
        /// The limit.
        timeout: Duration,
    },
    /// The body is not JSON.
    #[error("GET http://{addr}{path}: the answer is not JSON: {source}")]
    Json {
        /// The admin address.
        addr: SocketAddr,
        /// The endpoint.
        path: String,
        /// Why.
        source: serde_json::Error,
    },
}

/// GETs `path` from the admin server at `addr` and parses the answer as JSON.
pub async fn get_json(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<serde_json::Value, AdminError> {
    let body = tokio::time::timeout(timeout, get(addr, path))
        .await
        .map_err(|_| AdminError::Timeout {
            addr,
            path: path.to_owned(),
            timeout,
        })??;
    serde_json::from_slice(&body).map_err(|source| AdminError::Json {
        addr,
        path: path.to_owned(),
        source,
    })
}

async fn get(addr: SocketAddr, path: &str) -> Result<Bytes, AdminError> {
    let http_error = |message: String| AdminError::Http {
        addr,
        path: path.to_owned(),
        message,
    };
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|source| AdminError::Connect { addr, source })?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|error| http_error(error.to_string()))?;
    tokio::spawn(connection);
    let request = Request::get(path)
        .header(http::header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())
        .map_err(|error| http_error(error.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|error| http_error(error.to_string()))?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_DOCUMENT)
        .collect()
        .await
        .map_err(|error| http_error(format!("reading the body: {error}")))?
        .to_bytes();
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body);
        return Err(AdminError::Status {
            addr,
            path: path.to_owned(),
            status,
            body: text.trim().chars().take(200).collect(),
        });
    }
    Ok(body)
}
