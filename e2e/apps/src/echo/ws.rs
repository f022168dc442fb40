//! WebSocket echo on `/ws`: the HTTP/1.1 upgrade handshake, then every text or binary message
//! is sent back unchanged until the client closes.

use futures_util::{SinkExt, StreamExt};
use http::header::{CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE};
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::body::ReplyBody;

/// Whether the request asks for a WebSocket upgrade.
pub fn is_upgrade(request: &Request<Incoming>) -> bool {
    let header_has = |name, token: &str| {
        request
            .headers()
            .get_all(name)
            .iter()
            .any(|value: &HeaderValue| {
                value.to_str().is_ok_and(|text| {
                    text.split(',')
                        .any(|part| part.trim().eq_ignore_ascii_case(token))
                })
            })
    };
    header_has(UPGRADE, "websocket") && header_has(CONNECTION, "upgrade")
}

/// Answers the handshake and spawns the echo loop on the upgraded connection.
pub fn accept(mut request: Request<Incoming>) -> Response<ReplyBody> {
    let Some(key) = request.headers().get(SEC_WEBSOCKET_KEY) else {
        return super::text(StatusCode::BAD_REQUEST, "missing sec-websocket-key\n");
    };
    let accept = derive_accept_key(key.as_bytes());
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => {
                let socket =
                    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None)
                        .await;
                echo(socket).await;
            }
            Err(error) => tracing::debug!(%error, "WebSocket upgrade failed"),
        }
    });
    let mut response = Response::new(ReplyBody::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    if let Ok(value) = HeaderValue::from_str(&accept) {
        headers.insert(SEC_WEBSOCKET_ACCEPT, value);
    }
    response
}

async fn echo<S>(mut socket: WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    while let Some(message) = socket.next().await {
        let result = match message {
            Ok(message @ (Message::Text(_) | Message::Binary(_))) => socket.send(message).await,
            // tungstenite answers pings and close frames itself.
            Ok(_) => Ok(()),
            Err(error) => Err(error),
        };
        if let Err(error) = result {
            tracing::debug!(%error, "WebSocket echo ended");
            return;
        }
    }
}
