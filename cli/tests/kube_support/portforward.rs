//! A real (plain HTTP) fake of the Kubernetes API server for `ztunnel-config` against a
//! cluster: it answers pod GETs by exact path from canned JSON, and upgrades
//! `GET /api/v1/namespaces/<ns>/pods/<pod>/portforward?ports=N` to a WebSocket speaking the
//! port-forward protocol (`v4.channel.k8s.io`) the way the API server and kubelet do: binary
//! messages whose first byte is the channel (0 data, 1 error for the first port), the first
//! message on each channel carrying the port (2 bytes, little endian), then channel 0 relayed
//! to a real TCP connection to the "pod's" port, or the dial error sent on channel 1. The
//! tower-test mock of this module's parent cannot do this: it has no HTTP upgrade.
//!
//! Also: [`AdminStub`], a tiny hyper server standing for ztunnel's admin port.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::header::{
    CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL, UPGRADE,
};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

/// The subprotocol the fake speaks (kube-rs offers v5 then v4; v4 is the one every kubelet
/// has).
pub const PORT_FORWARD_PROTOCOL: &str = "v4.channel.k8s.io";

/// How the fake answers a port-forward request.
#[derive(Debug, Clone)]
pub enum Forward {
    /// Upgrade, then relay to this address as the kubelet relays to the pod's port (a dial
    /// failure goes on the error channel, worded as the kubelet words it).
    To(SocketAddr),
    /// Refuse the request with this status and a `Status` body (RBAC: 403).
    Refuse(StatusCode),
}

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Seen {
    /// `GET`.
    pub method: String,
    /// The path without the query.
    pub path: String,
    /// The raw query (`ports=15000`).
    pub query: String,
    /// The WebSocket subprotocols offered, if any.
    pub protocols: Option<String>,
}

impl Seen {
    /// `GET /path?query`, for exact comparisons.
    pub fn line(&self) -> String {
        if self.query.is_empty() {
            format!("{} {}", self.method, self.path)
        } else {
            format!("{} {}?{}", self.method, self.path, self.query)
        }
    }
}

struct State {
    routes: HashMap<String, Value>,
    forward: Forward,
    seen: Vec<Seen>,
}

/// The fake API server; dropping it does not stop it (it lives as long as the test runtime).
#[derive(Clone)]
pub struct FakeApi {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl FakeApi {
    /// Serves GETs of the paths in `routes` (anything else is a 404 `Status`) and
    /// port-forwards as `forward` says.
    pub async fn start(routes: Vec<(String, Value)>, forward: Forward) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api = Self {
            addr: listener.local_addr().unwrap(),
            state: Arc::new(Mutex::new(State {
                routes: routes.into_iter().collect(),
                forward,
                seen: Vec::new(),
            })),
        };
        let served = api.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let api = served.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let api = api.clone();
                        async move { Ok::<_, Infallible>(api.answer(request)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        api
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kube client for this server.
    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url().parse().unwrap());
        kube::Client::try_from(config).unwrap()
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    fn answer(&self, mut request: Request<Incoming>) -> Response<Full<Bytes>> {
        let seen = Seen {
            method: request.method().to_string(),
            path: request.uri().path().to_owned(),
            query: request.uri().query().unwrap_or_default().to_owned(),
            protocols: request
                .headers()
                .get(SEC_WEBSOCKET_PROTOCOL)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned),
        };
        let (route, forward) = {
            let mut state = self.state.lock().unwrap();
            state.seen.push(seen.clone());
            (state.routes.get(&seen.path).cloned(), state.forward.clone())
        };
        if seen.path.ends_with("/portforward") {
            return match forward {
                Forward::Refuse(status) => json_response(
                    status,
                    &status_body(
                        status,
                        "pods \"x\" is forbidden: cannot create pods/portforward",
                    ),
                ),
                Forward::To(target) => upgrade(&mut request, &seen.query, target),
            };
        }
        match route {
            Some(body) => json_response(StatusCode::OK, &body),
            None => json_response(
                StatusCode::NOT_FOUND,
                &status_body(StatusCode::NOT_FOUND, &format!("{} not found", seen.path)),
            ),
        }
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(body).unwrap())))
        .unwrap()
}

fn status_body(status: StatusCode, message: &str) -> Value {
    super::status(
        status.as_u16(),
        status.canonical_reason().unwrap_or_default(),
        message,
    )
}

/// Answers the WebSocket handshake (only when v4 is offered, as the API server does) and
/// spawns the fake kubelet on the upgraded connection.
fn upgrade(
    request: &mut Request<Incoming>,
    query: &str,
    target: SocketAddr,
) -> Response<Full<Bytes>> {
    let offered = request
        .headers()
        .get(SEC_WEBSOCKET_PROTOCOL)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|offered| {
            offered
                .split(',')
                .any(|protocol| protocol.trim() == PORT_FORWARD_PROTOCOL)
        });
    let (Some(key), true) = (request.headers().get(SEC_WEBSOCKET_KEY), offered) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &status_body(StatusCode::BAD_REQUEST, "not a v4 WebSocket request"),
        );
    };
    // `ports=15000` (kube-rs sends `&ports=…`, the empty pair is skipped).
    let ports: Vec<u16> = query
        .split('&')
        .filter_map(|pair| pair.strip_prefix("ports="))
        .flat_map(|ports| ports.split("%2C"))
        .map(|port| port.parse().unwrap())
        .collect();
    assert_eq!(ports.len(), 1, "the fake forwards one port: {query}");
    let accept = derive_accept_key(key.as_bytes());
    let upgrade = hyper::upgrade::on(request);
    tokio::spawn(async move {
        let upgraded = upgrade.await.unwrap();
        let socket =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        kubelet(socket, ports[0], target).await;
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(UPGRADE, "websocket")
        .header(CONNECTION, "Upgrade")
        .header(
            SEC_WEBSOCKET_ACCEPT,
            HeaderValue::from_str(&accept).unwrap(),
        )
        .header(SEC_WEBSOCKET_PROTOCOL, PORT_FORWARD_PROTOCOL)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// What the kubelet does for one forwarded port: announce it on both channels, dial it (a
/// failure is reported on the error channel, then the socket closes), then relay channel 0
/// both ways until either side closes.
async fn kubelet<S>(mut socket: WebSocketStream<S>, port: u16, target: SocketAddr)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let [low, high] = port.to_le_bytes();
    for channel in [0u8, 1] {
        if socket
            .send(Message::binary(vec![channel, low, high]))
            .await
            .is_err()
        {
            return;
        }
    }
    let mut pod = match TcpStream::connect(target).await {
        Ok(pod) => pod,
        Err(error) => {
            let message = format!(
                "an error occurred forwarding {port} -> {port}: error forwarding port {port} to \
                 pod fake, uid : failed to execute portforward in network namespace \
                 \"/var/run/netns/cni-fake\": failed to connect to localhost:{port} inside \
                 namespace \"fake\", IPv4: dial tcp4 {target}: connect: {error} IPv6 dial tcp6: \
                 address localhost: no suitable address"
            );
            let mut frame = vec![1u8];
            frame.extend_from_slice(message.as_bytes());
            let _ = socket.send(Message::binary(frame)).await;
            let _ = socket.close(None).await;
            return;
        }
    };
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            message = socket.next() => match message {
                Some(Ok(Message::Binary(data))) if data.first() == Some(&0) => {
                    if pod.write_all(&data[1..]).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
            read = pod.read(&mut buffer) => match read {
                Ok(0) | Err(_) => {
                    let _ = socket.close(None).await;
                    break;
                }
                Ok(count) => {
                    let mut frame = Vec::with_capacity(count + 1);
                    frame.push(0u8);
                    frame.extend_from_slice(&buffer[..count]);
                    if socket.send(Message::binary(frame)).await.is_err() {
                        break;
                    }
                }
            },
        }
    }
}

/// A tiny admin server standing for ztunnel's: answers each GET by path with the status and
/// body `answer` gives; records the paths and Host headers it saw.
#[derive(Clone)]
pub struct AdminStub {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<(String, String)>>>,
}

impl AdminStub {
    pub async fn start(
        answer: impl Fn(&str) -> (StatusCode, String) + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stub = Self {
            addr: listener.local_addr().unwrap(),
            seen: Arc::new(Mutex::new(Vec::new())),
        };
        let answer = Arc::new(answer);
        let seen = stub.seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (answer, seen) = (answer.clone(), seen.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let host = request
                            .headers()
                            .get(http::header::HOST)
                            .and_then(|value| value.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        let path = request.uri().path().to_owned();
                        let (status, body) = answer(&path);
                        seen.lock().unwrap().push((path, host));
                        async move {
                            Ok::<_, Infallible>(
                                Response::builder()
                                    .status(status)
                                    .body(Full::new(Bytes::from(body)))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        stub
    }

    /// The (path, Host) of every request so far.
    pub fn seen(&self) -> Vec<(String, String)> {
        self.seen.lock().unwrap().clone()
    }
}

/// An address nothing listens on (bound, then released).
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}
