//! DestinationRule (load balancing, subsets, connection pools, outlier detection), local rate
//! limiting and WebSocket passthrough, through the waypoint with real HBONE on both sides.
// The fixtures below are not `#[test]` functions; a failed setup should panic.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ambit_waypoint::balance::{self, PickRequest};
use ambit_waypoint::cluster::Clusters;
use ambit_waypoint::config::{ServiceKey, parse};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};

const VIP: &str = "10.96.0.20:80";

/// How a [`Backend`] answers.
#[derive(Clone)]
enum Mode {
    /// This status, with `x-backend`.
    Status(u16),
    /// Reports arrival on the channel, waits for a permit, then 200.
    Hold(mpsc::UnboundedSender<()>, Arc<Semaphore>),
    /// `101` to an upgrade request, then echoes bytes.
    WebSocketEcho,
}

/// An HTTP/1.1 + h2c upstream that counts requests and accepted connections.
struct Backend {
    port: u16,
    requests: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
}

impl Backend {
    async fn start(name: &'static str, mode: Mode) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let (req_count, conn_count) = (requests.clone(), connections.clone());
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                conn_count.fetch_add(1, Ordering::SeqCst);
                let (req_count, mode) = (req_count.clone(), mode.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        req_count.fetch_add(1, Ordering::SeqCst);
                        let mode = mode.clone();
                        async move { Ok::<_, hyper::Error>(answer(name, mode, request).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Self {
            port,
            requests,
            connections,
        }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

async fn answer(name: &str, mode: Mode, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let status = match mode {
        Mode::Status(status) => status,
        Mode::Hold(arrived, gate) => {
            let _ = arrived.send(());
            gate.acquire().await.unwrap().forget();
            200
        }
        Mode::WebSocketEcho => {
            let upgrade = request.headers().get("upgrade").cloned();
            tokio::spawn(async move {
                let upgraded = hyper::upgrade::on(request).await.unwrap();
                let mut io = TokioIo::new(upgraded);
                let mut buf = [0u8; 1024];
                loop {
                    match io.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => io.write_all(&buf[..n]).await.unwrap(),
                    }
                }
            });
            let mut response = Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header("connection", "upgrade")
                .header("x-backend", name);
            if let Some(upgrade) = upgrade {
                response = response.header("upgrade", upgrade);
            }
            return response.body(Full::default()).unwrap();
        }
    };
    Response::builder()
        .status(status)
        .header("x-backend", name)
        .body(Full::new(Bytes::from_static(b"ok")))
        .unwrap()
}

/// Service `cart` at [`VIP`] whose endpoints `(uid, port, version)` are workloads on
/// 127.0.0.1 with label `version`; plus `rules` and `limits`.
fn mesh(zt: u16, endpoints: &[(&str, u16, &str)], rules: Value, limits: Value) -> Value {
    let eps: serde_json::Map<String, Value> = endpoints
        .iter()
        .map(|(uid, port, _)| (uid.to_string(), json!({ "ports": { "80": port } })))
        .collect();
    let service = json!({ "name": "cart", "namespace": "test", "vips": ["10.96.0.20"],
        "ports": [{ "name": "http", "port": 80 }], "endpoints": eps });
    let workloads: Vec<Value> = endpoints
        .iter()
        .map(|(uid, _, version)| {
            let mut w = workload(uid);
            w["labels"] = json!({ "app": "cart", "version": version });
            w
        })
        .collect();
    let mut cfg = config(zt, vec![service], workloads, vec![], vec![]);
    cfg["destinationRules"] = rules;
    cfg["localRateLimits"] = limits;
    cfg
}

/// The config text for `mesh`: endpoint port maps get integer keys, which the YAML loader
/// needs (JSON text is YAML, but `"80"` is a string key there).
fn mesh_text(zt: u16, endpoints: &[(&str, u16, &str)], rules: Value, limits: Value) -> String {
    mesh(zt, endpoints, rules, limits)
        .to_string()
        .replace("{\"80\":", "{80: ")
}

/// A harness serving `cart` as [`mesh`] describes it.
async fn start(endpoints: &[(&str, u16, &str)], rules: Value, limits: Value) -> Harness {
    let harness = Harness::start(|zt| config(zt, vec![], vec![], vec![], vec![])).await;
    publish(&harness, 2, endpoints, rules, limits);
    harness
}

/// Replaces the harness's config with `mesh`, as generation `generation`.
fn publish(
    harness: &Harness,
    generation: u64,
    endpoints: &[(&str, u16, &str)],
    rules: Value,
    limits: Value,
) {
    let text = mesh_text(harness.ztunnel.port(), endpoints, rules, limits);
    harness.config.publish(parse(&text, generation).unwrap());
}

fn rule(policy: Value) -> Value {
    json!([{ "name": "cart", "namespace": "test", "spec": { "host": "cart", "trafficPolicy": policy } }])
}

fn lb(simple: &str) -> Value {
    rule(json!({ "loadBalancer": { "simple": simple } }))
}

/// Sends `n` sequential requests and counts answers per backend.
async fn spread(client: &mut Client, n: usize, headers: &[(&str, &str)]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        let answer = client.send(request("GET", "/", headers)).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        *counts.entry(answer.backend().to_owned()).or_default() += 1;
    }
    counts
}

async fn three_backends() -> [Backend; 3] {
    [
        Backend::start("a", Mode::Status(200)).await,
        Backend::start("b", Mode::Status(200)).await,
        Backend::start("c", Mode::Status(200)).await,
    ]
}

#[tokio::test]
async fn round_robin_is_even_and_random_is_spread() {
    let [a, b, c] = three_backends().await;
    let eps = [
        ("a", a.port, "v1"),
        ("b", b.port, "v1"),
        ("c", c.port, "v1"),
    ];
    let harness = start(&eps, lb("ROUND_ROBIN"), json!([])).await;
    let mut client = harness.client(VIP, false).await;
    let counts = spread(&mut client, 90, &[]).await;
    assert_eq!(
        counts.values().copied().collect::<HashSet<_>>(),
        [30].into(),
        "{counts:?}"
    );

    publish(&harness, 3, &eps, lb("RANDOM"), json!([]));
    let counts = spread(&mut client, 300, &[]).await;
    // Binomial(300, 1/3): mean 100, sd ≈ 8.2; ±50 is 6 sd.
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(
        counts.values().all(|n| (50..=150).contains(n)),
        "{counts:?}"
    );
}

#[tokio::test]
async fn least_request_avoids_the_busy_endpoint() {
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel();
    let gate = Arc::new(Semaphore::new(0));
    let slow = Backend::start("slow", Mode::Hold(arrived_tx, gate.clone())).await;
    let fast = Backend::start("fast", Mode::Status(200)).await;
    let eps = [("slow", slow.port, "v1"), ("fast", fast.port, "v1")];
    let harness = start(&eps, lb("LEAST_REQUEST"), json!([])).await;
    let harness = Arc::new(harness);
    // Each request on its own connection; a request held by `slow` stays in flight.
    let mut held = Vec::new();
    let mut fast_answers = 0;
    for _ in 0..20 {
        let harness = harness.clone();
        let mut task = tokio::spawn(async move {
            let mut client = harness.client(VIP, false).await;
            client.get("/").await
        });
        tokio::select! {
            answer = &mut task => {
                assert_eq!(answer.unwrap().backend(), "fast");
                fast_answers += 1;
            }
            _ = arrived.recv() => held.push(task),
        }
    }
    // Power of two choices over two endpoints compares both: once `slow` has a request in
    // flight, every other request goes to `fast`.
    assert!(held.len() <= 1, "{} held by the busy endpoint", held.len());
    assert_eq!(fast_answers + held.len(), 20);
    gate.add_permits(20);
    for task in held {
        assert_eq!(within(task).await.unwrap().status, 200);
    }
}

#[tokio::test]
async fn consistent_hash_sticks_per_header_cookie_and_source_ip() {
    let [a, b, c] = three_backends().await;
    let eps = [
        ("a", a.port, "v1"),
        ("b", b.port, "v1"),
        ("c", c.port, "v1"),
    ];
    let by_header =
        rule(json!({ "loadBalancer": { "consistentHash": { "httpHeaderName": "x-user" } } }));
    let harness = start(&eps, by_header.clone(), json!([])).await;
    let mut client = harness.client(VIP, false).await;
    let mut home = HashMap::new();
    for user in 0..30 {
        let user = format!("user-{user}");
        let first = client.send(request("GET", "/", &[("x-user", &user)])).await;
        for _ in 0..4 {
            let again = client.send(request("GET", "/", &[("x-user", &user)])).await;
            assert_eq!(again.backend(), first.backend(), "{user} moved");
        }
        home.insert(user, first.backend().to_owned());
    }
    let used: HashSet<&String> = home.values().collect();
    assert!(used.len() >= 2, "30 users all on {used:?}");

    // Remove endpoint c: users of a and b stay where they were.
    let two = [eps[0], eps[1]];
    publish(&harness, 3, &two, by_header, json!([]));
    for (user, backend) in &home {
        let now = client.send(request("GET", "/", &[("x-user", user)])).await;
        if backend != "c" {
            assert_eq!(
                now.backend(),
                backend,
                "{user} moved off a remaining endpoint"
            );
        }
    }

    // Cookie with a TTL: generated on the first answer, then sticky.
    let by_cookie = rule(json!({ "loadBalancer": { "consistentHash": {
        "httpCookie": { "name": "affinity", "ttl": "60s", "path": "/" } } } }));
    publish(&harness, 4, &eps, by_cookie, json!([]));
    let first = client.get("/").await;
    let set_cookie = first
        .header("set-cookie")
        .expect("cookie generated")
        .to_owned();
    assert!(
        set_cookie.starts_with("affinity=") && set_cookie.contains("Max-Age=60"),
        "{set_cookie}"
    );
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    for _ in 0..10 {
        let again = client
            .send(request("GET", "/", &[("cookie", &cookie)]))
            .await;
        assert_eq!(again.backend(), first.backend());
        assert!(
            again.header("set-cookie").is_none(),
            "cookie present: none generated"
        );
    }

    // Source IP: every request of this client lands on one endpoint.
    let by_ip = rule(json!({ "loadBalancer": { "consistentHash": { "useSourceIp": true } } }));
    publish(&harness, 5, &eps, by_ip, json!([]));
    let counts = spread(&mut client, 20, &[]).await;
    assert_eq!(counts.len(), 1, "{counts:?}");
}

#[tokio::test]
async fn subsets_choose_labelled_endpoints_with_their_own_policy() {
    let eps: Vec<(String, u16, &str)> = (0..6)
        .map(|i| (format!("p{i}"), 9000 + i, if i < 2 { "v1" } else { "v2" }))
        .collect();
    let eps_ref: Vec<(&str, u16, &str)> =
        eps.iter().map(|(u, p, v)| (u.as_str(), *p, *v)).collect();
    let rules = json!([{ "name": "cart", "namespace": "test", "spec": { "host": "cart",
        "trafficPolicy": { "loadBalancer": { "simple": "ROUND_ROBIN" },
                           "connectionPool": { "http": { "http2MaxRequests": 7 } } },
        "subsets": [
            { "name": "v1", "labels": { "version": "v1" } },
            { "name": "v2", "labels": { "version": "v2" },
              "trafficPolicy": { "loadBalancer": { "consistentHash": { "httpHeaderName": "x-user" } } } }
        ] } }]);
    let snapshot = parse(&mesh_text(15008, &eps_ref, rules, json!([])), 1).unwrap();
    let entry = snapshot
        .service(&ServiceKey {
            namespace: "test".into(),
            name: "cart".into(),
        })
        .unwrap();
    let clusters = Clusters::default();
    let (parts, ()) = Request::get("/")
        .header("x-user", "u1")
        .body(())
        .unwrap()
        .into_parts();
    let pick = |subset| {
        balance::pick(
            &snapshot,
            &clusters,
            entry,
            80,
            PickRequest {
                parts: &parts,
                client_ip: "10.0.0.9".parse().unwrap(),
                subset,
            },
        )
    };
    let ports = |subset| -> HashSet<u16> {
        (0..20)
            .map(|_| pick(subset).unwrap().endpoint.addr.port())
            .collect()
    };
    assert_eq!(ports(Some("v1")), [9000, 9001].into());
    assert_eq!(ports(None).len(), 6);
    let v2 = ports(Some("v2"));
    assert_eq!(
        v2.len(),
        1,
        "consistent hash from the subset's policy: {v2:?}"
    );
    assert!(v2.iter().all(|p| *p >= 9002));
    // The subset inherits the rule's connection pool.
    assert_eq!(
        pick(Some("v2"))
            .unwrap()
            .policy
            .connection_pool
            .max_requests,
        Some(7)
    );
    let err = pick(Some("v9")).unwrap_err();
    assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(err.flag().map(|f| f.code()), Some("NC"));
}

/// Publishes `mesh` plus VirtualServices `vs`, as generation `generation`.
fn publish_routed(
    harness: &Harness,
    generation: u64,
    endpoints: &[(&str, u16, &str)],
    rules: Value,
    vs: Value,
) {
    let mut cfg = mesh(harness.ztunnel.port(), endpoints, rules, json!([]));
    cfg["virtualServices"] = vs;
    let text = cfg.to_string().replace("{\"80\":", "{80: ");
    harness.config.publish(parse(&text, generation).unwrap());
}

/// The backends that answered `n` requests with `headers`.
async fn reached(client: &mut Client, n: usize, headers: &[(&str, &str)]) -> HashSet<String> {
    spread(client, n, headers).await.into_keys().collect()
}

fn names(names: &[&str]) -> HashSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

#[tokio::test]
async fn virtual_service_subsets_reach_only_their_endpoints() {
    let backends = [
        Backend::start("a1", Mode::Status(200)).await,
        Backend::start("a2", Mode::Status(200)).await,
        Backend::start("b1", Mode::Status(200)).await,
        Backend::start("b2", Mode::Status(200)).await,
        Backend::start("c1", Mode::Status(200)).await,
    ];
    let versions = ["v1", "v1", "v2", "v2", "v3"];
    let uids = ["a1", "a2", "b1", "b2", "c1"];
    let eps: Vec<(&str, u16, &str)> = (0..5)
        .map(|i| (uids[i], backends[i].port, versions[i]))
        .collect();
    // Round robin, so a subset's every endpoint shows up within a few requests.
    let rules = json!([{ "name": "cart", "namespace": "test", "spec": { "host": "cart",
        "trafficPolicy": { "loadBalancer": { "simple": "ROUND_ROBIN" } },
        "subsets": [
            { "name": "v1", "labels": { "version": "v1" } },
            { "name": "v2", "labels": { "version": "v2" } }
        ] } }]);
    let canary = json!([{ "name": "cart", "namespace": "test", "spec": { "hosts": ["cart"], "http": [
        { "match": [{ "headers": { "x-canary": { "exact": "yes" } } }],
          "route": [{ "destination": { "host": "cart", "subset": "v2" } }] },
        { "route": [{ "destination": { "host": "cart", "subset": "v1" } }] }
    ] } }]);
    let harness = Harness::start(|zt| config(zt, vec![], vec![], vec![], vec![])).await;
    publish_routed(&harness, 2, &eps, rules.clone(), canary);
    let mut client = harness.client(VIP, false).await;

    assert_eq!(reached(&mut client, 12, &[]).await, names(&["a1", "a2"]));
    assert_eq!(
        reached(&mut client, 12, &[("x-canary", "yes")]).await,
        names(&["b1", "b2"])
    );

    // A 50/50 split over the two subsets: both subsets' endpoints, never the unlabelled one.
    let split = json!([{ "name": "cart", "namespace": "test", "spec": { "hosts": ["cart"], "http": [
        { "route": [
            { "destination": { "host": "cart", "subset": "v1" }, "weight": 50 },
            { "destination": { "host": "cart", "subset": "v2" }, "weight": 50 }
        ] }
    ] } }]);
    publish_routed(&harness, 3, &eps, rules.clone(), split);
    // 200 requests: the chance that one of four round-robin endpoints is never reached is
    // below 2 * 2^-50.
    assert_eq!(
        reached(&mut client, 200, &[]).await,
        names(&["a1", "a2", "b1", "b2"])
    );
    assert_eq!(backends[4].requests(), 0, "v3 is in no subset routed to");

    // Without the VirtualService, the service's every endpoint takes traffic.
    publish_routed(&harness, 4, &eps, rules.clone(), json!([]));
    assert_eq!(
        reached(&mut client, 10, &[]).await,
        names(&["a1", "a2", "b1", "b2", "c1"])
    );

    // A mirror to a subset: requests to v1, their copies to v2's endpoints only.
    let mirrored = json!([{ "name": "cart", "namespace": "test", "spec": { "hosts": ["cart"], "http": [
        { "route": [{ "destination": { "host": "cart", "subset": "v1" } }],
          "mirror": { "host": "cart", "subset": "v2" } }
    ] } }]);
    publish_routed(&harness, 5, &eps, rules, mirrored);
    let before: Vec<usize> = backends.iter().map(Backend::requests).collect();
    assert_eq!(reached(&mut client, 10, &[]).await, names(&["a1", "a2"]));
    let copies = |backends: &[Backend]| {
        backends[2].requests() + backends[3].requests() - before[2] - before[3]
    };
    within(async {
        while copies(&backends) < 10 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(copies(&backends), 10, "one copy per request, to v2");
    assert!(backends[2].requests() > before[2] && backends[3].requests() > before[3]);
    assert_eq!(backends[4].requests(), before[4], "v3 gets no copy");
}

#[tokio::test]
async fn pool_overflow_is_503_uo() {
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel();
    let gate = Arc::new(Semaphore::new(0));
    let held = Backend::start("held", Mode::Hold(arrived_tx, gate.clone())).await;
    let eps = [("held", held.port, "v1")];
    let pool = rule(json!({ "connectionPool": {
        "tcp": { "maxConnections": 1 }, "http": { "http1MaxPendingRequests": 1 } } }));
    let harness = Arc::new(start(&eps, pool, json!([])).await);
    let send = |harness: Arc<Harness>| {
        tokio::spawn(async move { harness.client(VIP, false).await.get("/").await })
    };
    let first = send(harness.clone());
    within(arrived.recv()).await.unwrap();
    // The one connection is busy: of two more requests one waits, the other overflows.
    let (mut second, mut third) = (send(harness.clone()), send(harness.clone()));
    let (overflowed, waiting) = tokio::select! {
        answer = &mut second => (answer.unwrap(), third),
        answer = &mut third => (answer.unwrap(), second),
    };
    assert_eq!(overflowed.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        String::from_utf8_lossy(&overflowed.body).contains("overflow"),
        "{overflowed:?}"
    );
    gate.add_permits(2);
    assert_eq!(within(first).await.unwrap().status, 200);
    assert_eq!(
        within(waiting).await.unwrap().status,
        200,
        "the pending request got the connection"
    );
    assert_eq!(held.connections(), 1, "never more than maxConnections");
    let metrics = harness.registry.encode().unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("istio_requests_total")
                && l.contains("response_code=\"503\"")
                && l.contains("response_flags=\"UO\"")),
        "{metrics}"
    );

    // http2MaxRequests: one request active at a time.
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel();
    let gate = Arc::new(Semaphore::new(0));
    let held = Backend::start("held2", Mode::Hold(arrived_tx, gate.clone())).await;
    let eps = [("held2", held.port, "v1")];
    let active = rule(json!({ "connectionPool": { "http": { "http2MaxRequests": 1 } } }));
    publish(&harness, 3, &eps, active, json!([]));
    let first = send(harness.clone());
    within(arrived.recv()).await.unwrap();
    let mut client = harness.client(VIP, true).await;
    let answer = client.get("/").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    // One permit for the held request, one for the next.
    gate.add_permits(2);
    assert_eq!(within(first).await.unwrap().status, 200);
    assert_eq!(client.get("/").await.status, 200, "room again");
}

#[tokio::test]
async fn max_requests_per_connection_replaces_connections() {
    let backend = Backend::start("a", Mode::Status(200)).await;
    let eps = [("a", backend.port, "v1")];
    let pool = rule(json!({ "connectionPool": { "http": { "maxRequestsPerConnection": 2 } } }));
    let harness = start(&eps, pool, json!([])).await;
    let mut client = harness.client(VIP, false).await;
    for _ in 0..6 {
        assert_eq!(client.get("/").await.status, 200);
    }
    assert_eq!(backend.requests(), 6);
    assert_eq!(
        backend.connections(),
        3,
        "two requests per upstream connection"
    );
}

#[tokio::test]
async fn outlier_ejection_after_5xx_and_return_after_base_ejection_time() {
    let bad = Backend::start("bad", Mode::Status(500)).await;
    let good = Backend::start("good", Mode::Status(200)).await;
    let eps = [("bad", bad.port, "v1"), ("good", good.port, "v1")];
    // Long enough that the checks below finish inside one ejection even on a busy machine.
    let base = Duration::from_secs(1);
    let outlier = rule(json!({
        "loadBalancer": { "simple": "ROUND_ROBIN" },
        "outlierDetection": { "consecutive5xxErrors": 2, "interval": "10s",
                              "baseEjectionTime": "1s", "maxEjectionPercent": 50 } }));
    let harness = start(&eps, outlier, json!([])).await;
    let mut client = harness.client(VIP, false).await;
    // Round robin alternates until `bad` has failed twice, then only `good` answers.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(client.get("/").await.status.as_u16());
    }
    assert_eq!(bad.requests(), 2, "{statuses:?}");
    let before = bad.requests();
    let counts = spread(&mut client, 10, &[]).await;
    assert_eq!(counts.get("good"), Some(&10), "ejected endpoint skipped");
    assert_eq!(bad.requests(), before);
    // After baseEjectionTime it takes traffic again (and, still failing, is ejected again
    // after two more errors, for twice as long).
    tokio::time::sleep(base).await;
    let mut back = 0;
    for _ in 0..6 {
        if client.get("/").await.backend() == "bad" {
            back += 1;
        }
    }
    assert_eq!(back, 2, "returned, failed twice, ejected again");
}

#[tokio::test]
async fn rate_limit_is_429_with_retry_after() {
    let backend = Backend::start("a", Mode::Status(200)).await;
    let eps = [("a", backend.port, "v1")];
    let limits = json!([{ "name": "rl", "namespace": "test", "spec": {
        "targetRefs": [{ "group": "", "kind": "Service", "name": "cart" }],
        "rules": [{ "match": { "pathPrefix": "/api" }, "perSourceIdentity": true,
                    "tokensPerFill": 1, "fillInterval": "1h", "maxTokens": 3 }] } }]);
    let harness = start(&eps, json!([]), limits).await;
    let mut alice = harness.client_as("alice", VIP, false).await;
    for _ in 0..3 {
        assert_eq!(alice.get("/api/items").await.status, 200);
    }
    let limited = alice.get("/api/items").await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((3590..=3600).contains(&retry_after), "{retry_after}");
    assert_eq!(
        alice.get("/other").await.status,
        200,
        "unmatched path not limited"
    );
    let mut bob = harness.client_as("bob", VIP, true).await;
    assert_eq!(bob.get("/api/items").await.status, 200, "own bucket");
    assert_eq!(backend.requests(), 5);
    let metrics = harness.registry.encode().unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("istio_requests_total")
                && l.contains("response_code=\"429\"")
                && l.contains("response_flags=\"RL\"")
                && l.ends_with(" 1")),
        "{metrics}"
    );
}

#[tokio::test]
async fn websocket_upgrade_is_spliced_both_ways() {
    let backend = Backend::start("ws", Mode::WebSocketEcho).await;
    let eps = [("ws", backend.port, "v1")];
    let harness = start(&eps, json!([]), json!([])).await;
    let stream = harness.tunnel_as("client", VIP).await;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn.with_upgrades());
    let upgrade_request = Request::get("/chat")
        .header("host", "cart.test")
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = within(send.send_request(upgrade_request)).await.unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(response.headers()["upgrade"], "websocket");
    assert_eq!(response.headers()["x-backend"], "ws");
    let upgraded = within(hyper::upgrade::on(response)).await.unwrap();
    let mut io = TokioIo::new(upgraded);
    for message in [
        &b"hello"[..],
        &[0x81, 0x02, b'h', b'i'][..],
        &[7u8; 600][..],
    ] {
        io.write_all(message).await.unwrap();
        let mut echoed = vec![0u8; message.len()];
        within(io.read_exact(&mut echoed)).await.unwrap();
        assert_eq!(echoed, message);
    }
    io.shutdown().await.unwrap();
    let mut rest = Vec::new();
    within(io.read_to_end(&mut rest)).await.unwrap();
    assert!(rest.is_empty());

    // An upgrade the endpoint declines is an ordinary response.
    let plain = Backend::start("plain", Mode::Status(200)).await;
    publish(
        &harness,
        3,
        &[("plain", plain.port, "v1")],
        json!([]),
        json!([]),
    );
    let mut client = harness.client(VIP, false).await;
    let answer = client
        .send(request(
            "GET",
            "/",
            &[("connection", "upgrade"), ("upgrade", "websocket")],
        ))
        .await;
    assert_eq!(answer.status, 200);
}

#[tokio::test]
async fn max_retries_bounds_retries() {
    let bad = Backend::start("bad", Mode::Status(503)).await;
    let eps = [("bad", bad.port, "v1")];
    let with_routes = |max_retries: u32| {
        let mut cfg = mesh(
            0,
            &eps,
            rule(json!({ "connectionPool": { "http": { "maxRetries": max_retries } } })),
            json!([]),
        );
        cfg["routes"] = json!([route(
            "retry",
            "cart",
            json!([{
                "backendRefs": [{ "name": "cart", "port": 80 }],
                "retry": { "attempts": 3, "codes": [503], "backoff": "1ms" }
            }])
        )]);
        cfg
    };
    let harness = Harness::start(|zt| config(zt, vec![], vec![], vec![], vec![])).await;
    for (generation, max_retries, expected) in [(2, 0, 1), (3, 1, 4)] {
        let mut cfg = with_routes(max_retries);
        cfg["endpointHbonePort"] = json!(harness.ztunnel.port());
        let text = cfg.to_string().replace("{\"80\":", "{80: ");
        harness.config.publish(parse(&text, generation).unwrap());
        let before = bad.requests();
        let mut client = harness.client(VIP, false).await;
        assert_eq!(client.get("/").await.status, 503);
        assert_eq!(
            bad.requests() - before,
            expected,
            "maxRetries {max_retries}"
        );
    }
}

#[tokio::test]
async fn max_connections_moves_between_endpoints() {
    // One connection for the whole destination, round robin over two endpoints: the idle
    // connection to one endpoint must give way to a request for the other.
    let a = Backend::start("a", Mode::Status(200)).await;
    let b = Backend::start("b", Mode::Status(200)).await;
    let eps = [("a", a.port, "v1"), ("b", b.port, "v1")];
    let pool = rule(json!({ "loadBalancer": { "simple": "ROUND_ROBIN" },
        "connectionPool": { "tcp": { "maxConnections": 1 } } }));
    let harness = start(&eps, pool, json!([])).await;
    let mut client = harness.client(VIP, false).await;
    let counts = spread(&mut client, 6, &[]).await;
    assert_eq!(counts.get("a"), Some(&3), "{counts:?}");
    assert_eq!(counts.get("b"), Some(&3), "{counts:?}");
}
