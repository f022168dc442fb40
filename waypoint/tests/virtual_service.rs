//! VirtualService through the waypoint: matches, weighted destinations, precedence of
//! HTTPRoute, fault injection, mirroring and retries; and GRPCRoute method matching.
// Test fixtures: a failed setup should panic.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use support::*;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// A copy a mirror upstream received: `Host`/`:authority`, path and body.
#[derive(Debug)]
struct Copy {
    host: String,
    path: String,
    body: Bytes,
}

/// An upstream that reports every request it gets, after waiting `delay`.
async fn mirror_upstream(delay: Duration) -> (SocketAddr, mpsc::UnboundedReceiver<Copy>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (sender, receiver) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let sender = sender.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let sender = sender.clone();
                    async move {
                        let (parts, body) = request.into_parts();
                        let host = parts
                            .uri
                            .authority()
                            .map(|a| a.to_string())
                            .or_else(|| {
                                parts
                                    .headers
                                    .get("host")
                                    .map(|h| h.to_str().unwrap().to_owned())
                            })
                            .unwrap_or_default();
                        let body = body.collect().await.unwrap().to_bytes();
                        let path = parts.uri.path().to_owned();
                        let _ = sender.send(Copy { host, path, body });
                        tokio::time::sleep(delay).await;
                        Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from_static(
                            b"mirror",
                        ))))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (addr, receiver)
}

fn virtual_service(name: &str, host: &str, http: Value) -> Value {
    json!({ "name": name, "namespace": "test", "spec": { "hosts": [host], "http": http } })
}

/// The usual two services `cart` (v1, subset `v1` by its `version` label) and `cart-v2` with
/// VirtualServices `vs`, plus routes.
async fn two_versions(vs: Vec<Value>, routes: Vec<Value>) -> (Harness, Upstream, Upstream) {
    let v1 = Upstream::start("v1", Behavior::Echo).await;
    let v2 = Upstream::start("v2", Behavior::Echo).await;
    let (p1, p2) = (v1.addr.port(), v2.addr.port());
    let mut v1_workload = workload("v1-1");
    v1_workload["labels"] = json!({ "version": "v1" });
    let harness = Harness::start(|zt| {
        let mut config = config(
            zt,
            vec![
                service("cart", "10.96.0.10", &[(Some("http"), 80, p1)], &["v1-1"]),
                service(
                    "cart-v2",
                    "10.96.0.11",
                    &[(Some("http"), 80, p2)],
                    &["v2-1"],
                ),
            ],
            vec![v1_workload, workload("v2-1")],
            vec![],
            routes,
        );
        config["virtualServices"] = json!(vs);
        // Subset `v1` of `cart`, which the VirtualServices here route to.
        config["destinationRules"] = json!([{ "name": "cart", "namespace": "test", "spec": {
            "host": "cart", "subsets": [{ "name": "v1", "labels": { "version": "v1" } }]
        } }]);
        config
    })
    .await;
    (harness, v1, v2)
}

#[tokio::test]
async fn matches_rewrites_header_operations_and_weights() {
    let vs = virtual_service(
        "cart",
        "cart",
        json!([
            { "match": [{ "uri": { "prefix": "/v2" }, "headers": { "x-user": { "regex": "jo.*" } } }],
              "rewrite": { "uri": "/api" },
              "headers": { "request": { "set": { "x-routed": "vs" }, "remove": ["x-drop"] },
                           "response": { "add": { "x-served-by": "vs" } } },
              "route": [{ "destination": { "host": "cart-v2" },
                          "headers": { "request": { "set": { "x-dest": "v2" } },
                                       "response": { "set": { "x-dest-answer": "v2" } } } }] },
            { "match": [{ "method": { "exact": "DELETE" } }, { "queryParams": { "canary": { "exact": "1" } } }],
              "route": [{ "destination": { "host": "cart-v2", "port": { "number": 80 } } }] },
            { "match": [{ "uri": { "exact": "/old" } }],
              "redirect": { "uri": "/new", "redirectCode": 302 } },
            { "route": [
                { "destination": { "host": "cart", "subset": "v1" }, "weight": 80 },
                { "destination": { "host": "cart-v2" }, "weight": 20 }
            ] }
        ]),
    );
    let (harness, _v1, _v2) = two_versions(vec![vs], vec![]).await;
    let mut client = harness.client("10.96.0.10:80", false).await;

    let answer = client
        .send(request(
            "GET",
            "/v2/items?x=1",
            &[("x-user", "joe"), ("x-drop", "1")],
        ))
        .await;
    assert_eq!(answer.backend(), "v2");
    assert_eq!(
        answer.header("x-uri"),
        Some("/api/items?x=1"),
        "prefix rewritten"
    );
    assert_eq!(answer.header("x-echo-x-routed"), Some("vs"));
    assert_eq!(answer.header("x-echo-x-dest"), Some("v2"));
    assert_eq!(answer.header("x-echo-x-drop"), None);
    assert_eq!(answer.header("x-served-by"), Some("vs"));
    assert_eq!(answer.header("x-dest-answer"), Some("v2"));

    for request in [
        request("DELETE", "/items", &[]),
        request("GET", "/items?canary=1", &[]),
    ] {
        let answer = client.send(request).await;
        assert_eq!(answer.backend(), "v2");
        assert_eq!(answer.header("x-served-by"), None, "headers are per route");
    }

    let answer = client.get("/old").await;
    assert_eq!(answer.status, 302);
    assert_eq!(answer.header("location"), Some("http://cart.test/new"));

    // 80/20 over 400 requests: binomial sd = 8; 5 sd of slack.
    let mut v2 = 0;
    for _ in 0..400 {
        let answer = client.get("/items").await;
        assert_eq!(answer.status, 200);
        v2 += usize::from(answer.backend() == "v2");
    }
    assert!((40..=120).contains(&v2), "{v2} of 400 went to v2");
}

#[tokio::test]
async fn httproute_wins_over_virtual_service() {
    let vs = virtual_service(
        "cart",
        "cart",
        json!([{ "route": [{ "destination": { "host": "cart-v2" } }] }]),
    );
    // The VirtualService alone sends everything to v2.
    let (harness, _v1, _v2) = two_versions(vec![vs.clone()], vec![]).await;
    let mut client = harness.client("10.96.0.10:80", false).await;
    assert_eq!(client.get("/items").await.backend(), "v2");
    drop(harness);

    let http_route = route(
        "cart",
        "cart",
        json!([{ "matches": [{ "path": { "type": "PathPrefix", "value": "/items" } }],
                 "backendRefs": [{ "name": "cart", "port": 80 }] }]),
    );
    let (harness, _v1, _v2) = two_versions(vec![vs], vec![http_route]).await;
    let mut client = harness.client("10.96.0.10:80", false).await;
    assert_eq!(client.get("/items").await.backend(), "v1");
    // The VirtualService is not a fallback: the HTTPRoute has no rule for this path.
    assert_eq!(client.get("/other").await.status, 404);
}

#[tokio::test]
async fn fault_abort_and_delay_percentages() {
    let vs = virtual_service(
        "cart",
        "cart",
        json!([
            { "match": [{ "uri": { "prefix": "/abort" } }],
              "fault": { "abort": { "httpStatus": 418, "percentage": { "value": 25 } } },
              "route": [{ "destination": { "host": "cart" } }] },
            { "match": [{ "uri": { "prefix": "/delay" } }],
              "fault": { "delay": { "fixedDelay": "0.02s", "percentage": { "value": 50 } } },
              "route": [{ "destination": { "host": "cart" } }] },
            { "match": [{ "uri": { "prefix": "/slow" } }],
              "fault": { "delay": { "fixedDelay": "300ms" } },
              "route": [{ "destination": { "host": "cart" } }] },
            { "match": [{ "uri": { "prefix": "/grpc" } }],
              "fault": { "abort": { "grpcStatus": "UNAVAILABLE" } },
              "route": [{ "destination": { "host": "cart" } }] }
        ]),
    );
    let (harness, v1, _v2) = two_versions(vec![vs], vec![]).await;
    let mut client = harness.client("10.96.0.10:80", false).await;

    // 25 % of 400: binomial sd = 8.7; 5 sd of slack.
    let mut aborted = 0;
    for _ in 0..400 {
        let answer = client.get("/abort").await;
        match answer.status.as_u16() {
            418 => {
                aborted += 1;
                assert_eq!(answer.backend(), "-", "an abort never reaches the upstream");
            }
            200 => assert_eq!(answer.backend(), "v1"),
            other => panic!("unexpected {other}"),
        }
    }
    assert!((57..=143).contains(&aborted), "{aborted} of 400 aborted");
    assert_eq!(v1.count(), 400 - aborted);

    // 50 % of 200 delayed, counted by the `DI` flag in the request metrics (sd = 7).
    for _ in 0..200 {
        assert_eq!(client.get("/delay").await.status, 200);
    }
    let delayed = within(async {
        loop {
            let text = harness.registry.encode().unwrap();
            let (fi, di, plain) = (
                flagged(&text, "FI"),
                flagged(&text, "DI"),
                flagged(&text, "-"),
            );
            if fi + di + plain == 600 {
                assert_eq!(fi, aborted);
                return di;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!((65..=135).contains(&delayed), "{delayed} of 200 delayed");

    // A 100 % delay holds the request at least that long (a lower bound, not a speed claim).
    let started = Instant::now();
    assert_eq!(client.get("/slow").await.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));

    let mut grpc = harness.client("10.96.0.10:80", true).await;
    let answer = grpc
        .send(request(
            "POST",
            "/grpc.Svc/Call",
            &[("content-type", "application/grpc")],
        ))
        .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("grpc-status"), Some("14"));
}

/// The `istio_requests_total` count of requests with response flags `flag`.
fn flagged(text: &str, flag: &str) -> usize {
    let label = format!("response_flags=\"{flag}\"");
    text.lines()
        .filter(|line| line.starts_with("istio_requests_total{") && line.contains(&label))
        .map(|line| line.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as usize)
        .sum()
}

#[tokio::test]
async fn mirrors_get_copies_and_never_hold_up_the_main_request() {
    let (fast, mut copies) = mirror_upstream(Duration::ZERO).await;
    let (slow, mut slow_copies) = mirror_upstream(Duration::from_secs(30)).await;
    let main = Upstream::start("main", Behavior::Echo).await;
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let vs = virtual_service(
        "cart",
        "cart",
        json!([
            { "match": [{ "uri": { "prefix": "/slow" } }],
              "timeout": "5s",
              "mirror": { "host": "slow-mirror" },
              "route": [{ "destination": { "host": "cart" } }] },
            { "match": [{ "uri": { "prefix": "/broken" } }],
              "mirror": { "host": "broken-mirror" },
              "route": [{ "destination": { "host": "cart" } }] },
            { "mirror": { "host": "mirror" }, "mirrorPercentage": { "value": 100 },
              "route": [{ "destination": { "host": "cart" } }] }
        ]),
    );
    let harness = Harness::start(|zt| {
        let mut config = config(
            zt,
            vec![
                service(
                    "cart",
                    "10.96.0.10",
                    &[(Some("http"), 80, main.addr.port())],
                    &["main-1"],
                ),
                service(
                    "mirror",
                    "10.96.0.20",
                    &[(Some("http"), 80, fast.port())],
                    &["m-1"],
                ),
                service(
                    "slow-mirror",
                    "10.96.0.21",
                    &[(Some("http"), 80, slow.port())],
                    &["s-1"],
                ),
                service(
                    "broken-mirror",
                    "10.96.0.22",
                    &[(Some("http"), 80, closed_port)],
                    &["b-1"],
                ),
            ],
            vec![
                workload("main-1"),
                workload("m-1"),
                workload("s-1"),
                workload("b-1"),
            ],
            vec![],
            vec![],
        );
        config["virtualServices"] = json!([vs]);
        config
    })
    .await;

    for h2 in [false, true] {
        let mut client = harness.client("10.96.0.10:80", h2).await;
        for i in 0..10 {
            let mut request = request("POST", &format!("/items/{i}"), &[]);
            *request.body_mut() = Full::new(Bytes::from(format!("body {i}")));
            let answer = client.send(request).await;
            assert_eq!((answer.status.as_u16(), answer.backend()), (200, "main"));
            assert_eq!(answer.body, format!("body {i}"));
        }
    }
    let mut received = Vec::new();
    for _ in 0..20 {
        received.push(within(copies.recv()).await.unwrap());
    }
    for copy in &received {
        assert_eq!(copy.host, "cart.test-shadow", "{copy:?}");
        let i = copy.path.strip_prefix("/items/").unwrap();
        assert_eq!(copy.body, format!("body {i}"));
    }
    assert_eq!(main.count(), 20);

    // A mirror that answers after 30 s, and one that refuses connections: the main request
    // is answered regardless (its own timeout is 5 s, so waiting on the mirror would fail it).
    let mut client = harness.client("10.96.0.10:80", false).await;
    let answer = client.get("/slow/1").await;
    assert_eq!((answer.status.as_u16(), answer.backend()), (200, "main"));
    let copy = within(slow_copies.recv()).await.unwrap();
    assert_eq!(copy.path, "/slow/1");
    for _ in 0..3 {
        let answer = client.get("/broken").await;
        assert_eq!((answer.status.as_u16(), answer.backend()), (200, "main"));
    }
}

#[tokio::test]
async fn retries_follow_retry_on() {
    let flaky = Upstream::start("flaky", Behavior::FailEveryOther).await;
    let vs = |retry_on: &str| {
        virtual_service(
            "cart",
            "cart",
            json!([{ "retries": { "attempts": 3, "perTryTimeout": "5s", "retryOn": retry_on },
                     "route": [{ "destination": { "host": "cart" } }] }]),
        )
    };
    let start = |retry_on: &'static str| {
        let port = flaky.addr.port();
        let vs = vs(retry_on);
        Harness::start(move |zt| {
            let mut config = config(
                zt,
                vec![service(
                    "cart",
                    "10.96.0.10",
                    &[(Some("http"), 80, port)],
                    &["f-1"],
                )],
                vec![workload("f-1")],
                vec![],
                vec![],
            );
            config["virtualServices"] = json!([vs]);
            config
        })
    };
    for retry_on in ["5xx", "gateway-error", "retriable-status-codes,503"] {
        let harness = start(retry_on).await;
        let mut client = harness.client("10.96.0.10:80", false).await;
        for _ in 0..50 {
            assert_eq!(client.get("/").await.status, 200, "retryOn {retry_on}");
        }
    }
    // Connect failures only: the upstream's 503s come through.
    let harness = start("connect-failure").await;
    let mut client = harness.client("10.96.0.10:80", false).await;
    let mut failed = 0;
    for _ in 0..50 {
        failed += usize::from(client.get("/").await.status == 503);
    }
    assert_eq!(failed, 25);
}

#[tokio::test]
async fn grpc_route_matches_methods_of_h2_grpc_calls() {
    let add = Upstream::start("add", Behavior::Echo).await;
    let rest = Upstream::start("rest", Behavior::Echo).await;
    let web = Upstream::start("web", Behavior::Echo).await;
    let harness = Harness::start(|zt| {
        let mut config = config(
            zt,
            vec![
                service("cart", "10.96.0.10", &[(Some("grpc"), 9090, web.addr.port())], &["w-1"]),
                service("cart-add", "10.96.0.11", &[(Some("grpc"), 9090, add.addr.port())], &["a-1"]),
                service("cart-rest", "10.96.0.12", &[(Some("grpc"), 9090, rest.addr.port())], &["r-1"]),
            ],
            vec![workload("w-1"), workload("a-1"), workload("r-1")],
            vec![],
            vec![],
        );
        config["grpcRoutes"] = json!([{
            "name": "cart", "namespace": "test",
            "spec": {
                "parentRefs": [{ "group": "", "kind": "Service", "name": "cart" }],
                "rules": [
                    { "matches": [{ "method": { "service": "shop.Cart", "method": "Add" } }],
                      "filters": [{ "type": "RequestHeaderModifier",
                                    "requestHeaderModifier": { "set": [{ "name": "x-grpc-route", "value": "add" }] } }],
                      "backendRefs": [{ "name": "cart-add", "port": 9090 }] },
                    { "matches": [{ "method": { "type": "RegularExpression", "service": "shop\\..*" },
                                    "headers": [{ "name": "x-tenant", "value": "a" }] }],
                      "backendRefs": [{ "name": "cart-rest", "port": 9090 }] }
                ]
            }
        }]);
        config
    })
    .await;
    let mut client = harness.client("10.96.0.10:9090", true).await;
    let call = |path: &str, headers: &[(&str, &str)]| {
        let mut all = vec![("content-type", "application/grpc"), ("te", "trailers")];
        all.extend_from_slice(headers);
        let mut request = request("POST", path, &all);
        // One length-prefixed message: uncompressed, 3 bytes.
        *request.body_mut() = Full::new(Bytes::from_static(b"\x00\x00\x00\x00\x03abc"));
        request
    };
    let answer = client.send(call("/shop.Cart/Add", &[])).await;
    assert_eq!(answer.backend(), "add");
    assert_eq!(answer.header("x-version"), Some("HTTP/2.0"));
    assert_eq!(answer.header("x-echo-x-grpc-route"), Some("add"));
    assert_eq!(&answer.body[..], b"\x00\x00\x00\x00\x03abc");

    let answer = client
        .send(call("/shop.Cart/Remove", &[("x-tenant", "a")]))
        .await;
    assert_eq!(answer.backend(), "rest");
    // No rule matches: a gRPC answer with NOT_FOUND's mapping (UNIMPLEMENTED).
    let answer = client.send(call("/shop.Cart/Remove", &[])).await;
    assert_eq!(answer.status, 200);
    assert!(answer.header("grpc-status").is_some(), "{answer:?}");
    // Plain HTTP on the same service never matches a GRPCRoute rule.
    let answer = client.get("/shop.Cart/Add").await;
    assert_eq!(answer.status, 404);
}

#[tokio::test]
async fn httproute_request_mirror_filter() {
    let (mirror, mut copies) = mirror_upstream(Duration::ZERO).await;
    let main = Upstream::start("main", Behavior::Echo).await;
    let harness = Harness::start(|zt| {
        config(
            zt,
            vec![
                service(
                    "cart",
                    "10.96.0.10",
                    &[(Some("http"), 8080, main.addr.port())],
                    &["main-1"],
                ),
                service(
                    "mirror",
                    "10.96.0.20",
                    &[(Some("http"), 80, mirror.port())],
                    &["m-1"],
                ),
            ],
            vec![workload("main-1"), workload("m-1")],
            vec![],
            vec![route(
                "cart",
                "cart",
                json!([{ "filters": [{ "type": "RequestMirror", "requestMirror": {
                            "backendRef": { "name": "mirror", "port": 80 }, "percent": 100 } }],
                         "backendRefs": [{ "name": "cart", "port": 8080 }] }]),
            )],
        )
    })
    .await;
    let mut client = harness.client("10.96.0.10:8080", true).await;
    let mut request = request("PUT", "/items/7?x=1", &[]);
    *request.body_mut() = Full::new(Bytes::from_static(b"payload"));
    let answer = client.send(request).await;
    assert_eq!((answer.status.as_u16(), answer.backend()), (200, "main"));
    let copy = within(copies.recv()).await.unwrap();
    assert_eq!(copy.host, "cart.test-shadow");
    assert_eq!(copy.path, "/items/7");
    assert_eq!(copy.body, "payload");
}
