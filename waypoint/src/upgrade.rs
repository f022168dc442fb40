//! HTTP/1.1 Upgrade passthrough (WebSocket and any other protocol named in `upgrade`).
//!
//! An upgrade request has been authorized and routed like any other request; it is then sent
//! on a connection of its own to the chosen endpoint (never a pooled one: after a `101` the
//! connection belongs to the new protocol). When the endpoint answers `101 Switching
//! Protocols`, the `101` goes back to the client with its `upgrade`/`connection` headers, and
//! a task splices the two upgraded connections both ways until both sides are done. Any
//! other answer is an ordinary response. HTTP/2 extended CONNECT (RFC 8441) is not supported.

use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tracing::{debug, info};

use crate::balance::EndpointTarget;
use crate::errors::ProxyError;
use crate::upstream::{Upstream, UpstreamBody};

/// Whether `parts` asks for a protocol upgrade: HTTP/1.1 with `connection: upgrade` and an
/// `upgrade` header.
pub fn is_upgrade(parts: &Parts) -> bool {
    parts.version == http::Version::HTTP_11
        && parts.headers.contains_key(header::UPGRADE)
        && has_token(&parts.headers, header::CONNECTION, "upgrade")
}

/// Sends the upgrade `request` (already in upstream form, hop-by-hop headers removed) to
/// `endpoint`, restoring `connection`/`upgrade`; on `101`, splices `downstream` to the
/// endpoint once both upgrades complete.
pub async fn forward(
    upstream: &Upstream,
    endpoint: &EndpointTarget,
    mut request: Request<UpstreamBody>,
    protocol: HeaderValue,
    downstream: Option<OnUpgrade>,
) -> Result<Response<Incoming>, ProxyError> {
    let Some(downstream) = downstream else {
        return Err(ProxyError::malformed(
            "upgrade on a connection that cannot upgrade",
        ));
    };
    let headers = request.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol);
    let stream = upstream.tunnel(endpoint).await?;
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(ProxyError::connect_failure)?;
    let addr = endpoint.addr;
    tokio::spawn(async move {
        if let Err(err) = connection.with_upgrades().await {
            debug!(%addr, %err, "upstream upgrade connection ended with an error");
        }
    });
    let mut response = sender
        .send_request(request)
        .await
        .map_err(|err| ProxyError::upstream_reset(err.is_canceled(), err))?;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Ok(response);
    }
    let upstream_upgrade = hyper::upgrade::on(&mut response);
    tokio::spawn(async move {
        let (down, up) = match tokio::try_join!(downstream, upstream_upgrade) {
            Ok(pair) => pair,
            Err(err) => {
                debug!(%addr, %err, "upgrade did not complete");
                return;
            }
        };
        let (mut down, mut up) = (TokioIo::new(down), TokioIo::new(up));
        match tokio::io::copy_bidirectional(&mut down, &mut up).await {
            Ok((sent, received)) => {
                info!(target: "ambit_waypoint::access", endpoint = %addr, sent, received, "upgraded connection closed");
            }
            Err(err) => debug!(endpoint = %addr, %err, "upgraded connection ended with an error"),
        }
    });
    Ok(response)
}

/// Puts back the headers a `101` needs, which the hop-by-hop filter removed.
pub fn restore_switching_headers(response_headers: &mut HeaderMap, upstream: &HeaderMap) {
    if let Some(protocol) = upstream.get(header::UPGRADE) {
        response_headers.insert(header::UPGRADE, protocol.clone());
    }
    response_headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
}

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| item.trim().eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrade_requests_are_recognised() {
        let request = |version, connection: &str, upgrade: Option<&str>| {
            let mut builder = Request::builder()
                .version(version)
                .header("connection", connection);
            if let Some(upgrade) = upgrade {
                builder = builder.header("upgrade", upgrade);
            }
            builder.body(()).unwrap().into_parts().0
        };
        assert!(is_upgrade(&request(
            http::Version::HTTP_11,
            "keep-alive, Upgrade",
            Some("websocket")
        )));
        assert!(!is_upgrade(&request(
            http::Version::HTTP_11,
            "keep-alive",
            Some("websocket")
        )));
        assert!(!is_upgrade(&request(
            http::Version::HTTP_11,
            "upgrade",
            None
        )));
        assert!(!is_upgrade(&request(
            http::Version::HTTP_10,
            "upgrade",
            Some("websocket")
        )));
    }
}
