//! Test fixtures: a CA, a "destination ztunnel" (an HBONE server on 127.0.0.1 that forwards
//! each tunnel to the `127.0.0.1:port` it names), hyper upstreams, a waypoint configured from
//! JSON (which the YAML loader accepts), and an HBONE client speaking HTTP/1.1 or h2c.
// Fixtures: each test binary uses a subset, and a failed setup should panic.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ambit_hbone::{
    ByteCounters, ConnectRequest, HboneStream, InboundRequest, Pool, PoolConfig, Responder, Server,
    ServerConfig, Target,
};
use ambit_identity::tls::FixedCertificate;
use ambit_identity::{CaOptions, CertificateAuthority, SpiffeId, TrustBundle};
use ambit_telemetry::{Metrics, MetricsRegistry};
use ambit_waypoint::config::{ConfigHandle, parse};
use ambit_waypoint::{Waypoint, WaypointOptions};
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};

/// Bound on every network wait.
pub const TIMEOUT: Duration = Duration::from_secs(20);

pub async fn within<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(TIMEOUT, future)
        .await
        .expect("timed out")
}

pub fn id(sa: &str) -> SpiffeId {
    SpiffeId::new("cluster.local", "test", sa).unwrap()
}

/// How an upstream answers.
#[derive(Debug, Clone)]
pub enum Behavior {
    /// 200 with details of the request.
    Echo,
    /// 503 for every other request it receives (the 1st, 3rd, …), else like `Echo`.
    FailEveryOther,
    /// Waits this long, then like `Echo`.
    Delay(Duration),
}

/// An HTTP upstream (h1 and h2c) on 127.0.0.1 that counts its requests.
pub struct Upstream {
    pub addr: SocketAddr,
    pub requests: Arc<AtomicUsize>,
}

impl Upstream {
    pub async fn start(name: &'static str, behavior: Behavior) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let counter = counter.clone();
                let behavior = behavior.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let n = counter.fetch_add(1, Ordering::SeqCst);
                        let behavior = behavior.clone();
                        async move { Ok::<_, hyper::Error>(answer(name, behavior, n, request).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Self { addr, requests }
    }

    pub fn count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

async fn answer(
    name: &str,
    behavior: Behavior,
    n: usize,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    match behavior {
        Behavior::FailEveryOther if n.is_multiple_of(2) => {
            return Response::builder()
                .status(StatusCode::SERVICE_UNAVAILABLE)
                .header("x-backend", name)
                .body(Full::new(Bytes::from_static(b"flaky")))
                .unwrap();
        }
        Behavior::Delay(delay) => tokio::time::sleep(delay).await,
        _ => {}
    }
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut response = Response::builder()
        .header("x-backend", name)
        .header("x-version", format!("{:?}", parts.version))
        .header("x-method", parts.method.as_str())
        .header("x-uri", parts.uri.to_string())
        .header("server", "test-upstream/1.0");
    for (header, value) in &parts.headers {
        let echoed = format!("x-echo-{header}");
        response = response.header(echoed, value);
    }
    response.body(Full::new(body)).unwrap()
}

/// A CA, a destination ztunnel, and a waypoint.
pub struct Harness {
    pub ca: Arc<CertificateAuthority>,
    pub bundle: TrustBundle,
    pub ztunnel: SocketAddr,
    pub waypoint: Waypoint,
    pub config: ConfigHandle,
    /// The registry the waypoint records its request metrics in.
    pub registry: Arc<MetricsRegistry>,
}

/// The identity every test endpoint runs as (the destination ztunnel presents it).
pub const BACKEND_SA: &str = "backend";

impl Harness {
    /// Starts the ztunnel, then the waypoint with the config `build(ztunnel_port)` returns.
    pub async fn start(build: impl FnOnce(u16) -> Value) -> Self {
        Self::start_with(build, |_| {}).await
    }

    /// Like [`Harness::start`], with `customize` adjusting the waypoint's options.
    pub async fn start_with(
        build: impl FnOnce(u16) -> Value,
        customize: impl FnOnce(&mut WaypointOptions),
    ) -> Self {
        let ca = Arc::new(
            CertificateAuthority::generate("cluster.local", CaOptions::default()).unwrap(),
        );
        let bundle = ca.trust_bundle().unwrap();
        let cert = |sa: &str| {
            Arc::new(FixedCertificate(Arc::new(
                ca.issue_workload(&id(sa), Duration::from_secs(3600))
                    .unwrap(),
            )))
        };
        let ztunnel_tls = ambit_identity::tls::server_config(cert(BACKEND_SA), &bundle).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ztunnel = listener.local_addr().unwrap();
        let server = Server::new(ztunnel_tls, forward_to_target, ServerConfig::default());
        tokio::spawn(async move {
            server
                .serve(listener, ambit_hbone::DrainSignal::never())
                .await
        });

        let text = serde_json::to_string(&build(ztunnel.port())).unwrap();
        let config = ConfigHandle::new(parse(&text, 1).unwrap());
        let mut registry = MetricsRegistry::new();
        let mut options = WaypointOptions::new(id("waypoint"), "127.0.0.1:0".parse().unwrap());
        options.metrics = Some(Metrics::register(&mut registry));
        customize(&mut options);
        let waypoint = Waypoint::start(options, config.clone(), cert("waypoint"), bundle.clone())
            .await
            .unwrap();
        Self {
            ca,
            bundle,
            ztunnel,
            waypoint,
            config,
            registry: Arc::new(registry),
        }
    }

    /// An HBONE tunnel from `client_sa` through the waypoint to `target`.
    pub async fn tunnel_as(&self, client_sa: &str, target: &str) -> HboneStream {
        self.tunnel_with(client_sa, target, None, None).await
    }

    /// Like [`Self::tunnel_as`], with the CONNECT headers a client ztunnel adds.
    pub async fn tunnel_with(
        &self,
        client_sa: &str,
        target: &str,
        forwarded: Option<&'static str>,
        baggage: Option<&'static str>,
    ) -> HboneStream {
        let ca = self.ca.clone();
        let bundle = self.bundle.clone();
        let tls = move |source: &SpiffeId, expected: &[SpiffeId]| {
            let cert = ca.issue_workload(source, Duration::from_secs(3600))?;
            let config = ambit_identity::tls::client_config(
                Arc::new(FixedCertificate(Arc::new(cert))),
                &bundle,
                expected.to_vec(),
            )?;
            Ok(config)
        };
        let pool = Pool::new(Arc::new(tls), PoolConfig::default());
        let mut request = ConnectRequest::new(
            id(client_sa),
            vec![id("waypoint")],
            self.waypoint.local_addr(),
            target.parse::<Target>().unwrap(),
        );
        if let Some(value) = forwarded {
            request = request.with_forwarded(http::HeaderValue::from_static(value));
        }
        if let Some(value) = baggage {
            request = request.with_baggage(http::HeaderValue::from_static(value));
        }
        within(pool.connect(request)).await.unwrap()
    }

    /// An HTTP client (h1 or h2c) from `client_sa` to `target` through the waypoint.
    pub async fn client_as(&self, client_sa: &str, target: &str, h2: bool) -> Client {
        let stream = self.tunnel_as(client_sa, target).await;
        Client::handshake(stream, h2).await
    }

    pub async fn client(&self, target: &str, h2: bool) -> Client {
        self.client_as("client", target, h2).await
    }
}

/// The destination ztunnel: connects to the tunnel's target on 127.0.0.1 and copies bytes.
async fn forward_to_target(request: InboundRequest, responder: Responder) {
    let Target::Socket(addr) = request.target().clone() else {
        responder.reject(StatusCode::BAD_REQUEST);
        return;
    };
    // Pod IPs in the tests are all 127.0.0.1; the port names the upstream.
    let local = SocketAddr::new("127.0.0.1".parse().unwrap(), addr.port());
    match TcpStream::connect(local).await {
        Ok(mut tcp) => {
            let Ok(mut stream) = responder.accept(HeaderMap::new()) else {
                return;
            };
            let _ =
                ambit_hbone::copy_bidirectional(&mut stream, &mut tcp, &ByteCounters::default())
                    .await;
        }
        Err(_) => responder.reject(StatusCode::SERVICE_UNAVAILABLE),
    }
}

/// HTTP over one HBONE tunnel.
pub enum Client {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

/// A response with its body read.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Client {
    pub async fn handshake(stream: HboneStream, h2: bool) -> Self {
        let io = TokioIo::new(stream);
        if h2 {
            let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .unwrap();
            tokio::spawn(conn);
            Self::H2(send)
        } else {
            let (send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            Self::H1(send)
        }
    }

    /// Sends `request` (a path like `/a?b`, plus headers); `host` becomes Host/:authority.
    pub async fn send(&mut self, request: Request<Full<Bytes>>) -> Answer {
        let response = within(async {
            match self {
                Self::H1(send) => {
                    send.ready().await.unwrap();
                    send.send_request(request).await.unwrap()
                }
                Self::H2(send) => {
                    let (mut parts, body) = request.into_parts();
                    if parts.uri.authority().is_none() {
                        parts.uri = format!("http://cart.test{}", parts.uri).parse().unwrap();
                    }
                    send.send_request(Request::from_parts(parts, body))
                        .await
                        .unwrap()
                }
            }
        })
        .await;
        let (parts, body) = response.into_parts();
        let body = within(body.collect()).await.unwrap().to_bytes();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    pub async fn get(&mut self, path: &str) -> Answer {
        self.send(request("GET", path, &[])).await
    }
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn backend(&self) -> &str {
        self.header("x-backend").unwrap_or("-")
    }
}

pub fn request(method: &str, path: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "cart.test");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Full::new(Bytes::new())).unwrap()
}

// ─── Config builders (JSON, which the YAML loader reads) ──────────────────────────────────

/// A service `name` with VIP `vip`, ports `(name, port, target)` and endpoint UIDs.
pub fn service(
    name: &str,
    vip: &str,
    ports: &[(Option<&str>, u16, u16)],
    endpoints: &[&str],
) -> Value {
    let ports: Vec<Value> = ports
        .iter()
        .map(|(port_name, port, target)| {
            let mut port = json!({ "port": port, "targetPort": target });
            if let Some(port_name) = port_name {
                port["name"] = json!(port_name);
            }
            port
        })
        .collect();
    let endpoints: serde_json::Map<String, Value> = endpoints
        .iter()
        .map(|uid| (uid.to_string(), json!({})))
        .collect();
    json!({ "name": name, "namespace": "test", "vips": [vip], "ports": ports, "endpoints": endpoints })
}

/// A workload on 127.0.0.1 running as [`BACKEND_SA`].
pub fn workload(uid: &str) -> Value {
    json!({
        "uid": uid, "name": uid, "namespace": "test", "serviceAccount": BACKEND_SA,
        "node": "node", "ips": ["127.0.0.1"], "protocol": "HBONE"
    })
}

/// An HTTPRoute on service `parent` with `rules`.
pub fn route(name: &str, parent: &str, rules: Value) -> Value {
    json!({
        "name": name, "namespace": "test",
        "spec": { "parentRefs": [{ "group": "", "kind": "Service", "name": parent }], "rules": rules }
    })
}

pub fn config(
    ztunnel_port: u16,
    services: Vec<Value>,
    workloads: Vec<Value>,
    policies: Vec<Value>,
    routes: Vec<Value>,
) -> Value {
    json!({
        "waypoint": { "name": "waypoint", "namespace": "test" },
        "endpointHbonePort": ztunnel_port,
        "services": services,
        "workloads": workloads,
        "policies": policies,
        "routes": routes,
    })
}
