//! Routing through the waypoint: matches and filters, weighted split, retries, timeouts.

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;

#[tokio::test]
async fn path_and_header_matches_choose_backends_and_filters_apply() {
    let v1 = Upstream::start("v1", Behavior::Echo).await;
    let v2 = Upstream::start("v2", Behavior::Echo).await;
    let (p1, p2) = (v1.addr.port(), v2.addr.port());
    let harness = Harness::start(|zt| {
        config(
            zt,
            vec![
                service("cart", "10.96.0.10", &[(Some("http"), 80, p1)], &["v1-1"]),
                service("cart-v2", "10.96.0.11", &[(Some("http"), 80, p2)], &["v2-1"]),
            ],
            vec![workload("v1-1"), workload("v2-1")],
            vec![],
            vec![route("cart", "cart", json!([
                { "backendRefs": [{ "name": "cart", "port": 80 }] },
                { "matches": [{ "path": { "type": "PathPrefix", "value": "/v2" } }],
                  "filters": [
                    { "type": "URLRewrite", "urlRewrite": { "path": { "type": "ReplacePrefixMatch", "replacePrefixMatch": "/" } } },
                    { "type": "RequestHeaderModifier", "requestHeaderModifier": { "set": [{ "name": "x-routed", "value": "v2" }], "remove": ["x-drop"] } },
                    { "type": "ResponseHeaderModifier", "responseHeaderModifier": { "add": [{ "name": "x-served-by", "value": "cart-v2" }] } }
                  ],
                  "backendRefs": [{ "name": "cart-v2", "port": 80 }] },
                { "matches": [{ "headers": [{ "name": "x-canary", "value": "true" }] }],
                  "backendRefs": [{ "name": "cart-v2", "port": 80 }] },
                { "matches": [{ "path": { "type": "Exact", "value": "/old" } }],
                  "filters": [{ "type": "RequestRedirect", "requestRedirect": { "path": { "type": "ReplaceFullPath", "replaceFullPath": "/new" }, "statusCode": 301 } }] }
            ]))],
        )
    })
    .await;
    let mut client = harness.client("10.96.0.10:80", false).await;

    let answer = client.get("/items").await;
    assert_eq!(answer.backend(), "v1");

    let answer = client
        .send(request("GET", "/v2/items?x=1", &[("x-drop", "1")]))
        .await;
    assert_eq!(answer.backend(), "v2");
    assert_eq!(
        answer.header("x-uri"),
        Some("/items?x=1"),
        "prefix rewritten"
    );
    assert_eq!(answer.header("x-echo-x-routed"), Some("v2"));
    assert_eq!(answer.header("x-echo-x-drop"), None);
    assert_eq!(answer.header("x-served-by"), Some("cart-v2"));

    let answer = client
        .send(request("GET", "/items", &[("x-canary", "true")]))
        .await;
    assert_eq!(answer.backend(), "v2");
    assert_eq!(answer.header("x-served-by"), None, "filters are per rule");

    let answer = client.get("/old?a=b").await;
    assert_eq!(answer.status, 301);
    assert_eq!(answer.header("location"), Some("http://cart.test/new?a=b"));
    assert_eq!(answer.backend(), "-");
}

#[tokio::test]
async fn weighted_split_90_10_over_1000_requests() {
    let v1 = Upstream::start("v1", Behavior::Echo).await;
    let v2 = Upstream::start("v2", Behavior::Echo).await;
    let (p1, p2) = (v1.addr.port(), v2.addr.port());
    let harness = Harness::start(|zt| {
        config(
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
            vec![workload("v1-1"), workload("v2-1")],
            vec![],
            vec![route(
                "split",
                "cart",
                json!([{ "backendRefs": [
                    { "name": "cart", "port": 80, "weight": 90 },
                    { "name": "cart-v2", "port": 80, "weight": 10 }
                ]}]),
            )],
        )
    })
    .await;
    let mut client = harness.client("10.96.0.10:80", true).await;
    let mut to_v2 = 0;
    for _ in 0..1000 {
        let answer = client.get("/").await;
        assert_eq!(answer.status, 200);
        if answer.backend() == "v2" {
            to_v2 += 1;
        }
    }
    // Binomial(1000, 0.1): mean 100, sd ≈ 9.5. [50, 150] is more than 5 sd either side: a
    // correct split fails this less than once in a million runs; 50/50 or 100/0 never pass.
    assert!((50..=150).contains(&to_v2), "{to_v2} of 1000 went to v2");
    assert_eq!(v1.count() + v2.count(), 1000);
}

#[tokio::test]
async fn retries_turn_a_half_failing_upstream_into_success() {
    let flaky = Upstream::start("flaky", Behavior::FailEveryOther).await;
    let control = Upstream::start("control", Behavior::FailEveryOther).await;
    let (pf, pc) = (flaky.addr.port(), control.addr.port());
    let harness = Harness::start(|zt| {
        config(
            zt,
            vec![
                service("flaky", "10.96.0.10", &[(Some("http"), 80, pf)], &["f-1"]),
                service("control", "10.96.0.11", &[(Some("http"), 80, pc)], &["c-1"]),
            ],
            vec![workload("f-1"), workload("c-1")],
            vec![],
            vec![route(
                "retry",
                "flaky",
                json!([{
                    "backendRefs": [{ "name": "flaky", "port": 80 }],
                    "retry": { "attempts": 3, "codes": [503], "backoff": "1ms" }
                }]),
            )],
        )
    })
    .await;
    let mut client = harness.client("10.96.0.10:80", false).await;
    let mut ok = 0;
    for i in 0..200 {
        // A body, so retries must resend it.
        let mut req = request("POST", "/", &[]);
        *req.body_mut() = http_body_util::Full::new(bytes::Bytes::from(format!("request {i}")));
        let answer = client.send(req).await;
        if answer.status == 200 {
            assert_eq!(&answer.body[..], format!("request {i}").as_bytes());
            ok += 1;
        }
    }
    assert!(ok >= 198, "{ok} of 200 succeeded");
    assert!(
        flaky.count() >= 390,
        "retries happened: {} upstream requests",
        flaky.count()
    );

    // Control: the same upstream behaviour without a retry policy fails half the time.
    let mut client = harness.client("10.96.0.11:80", false).await;
    let mut failed = 0;
    for _ in 0..200 {
        if client.get("/").await.status == 503 {
            failed += 1;
        }
    }
    assert_eq!(failed, 100);
}

#[tokio::test]
async fn request_timeout_is_504() {
    let slow = Upstream::start("slow", Behavior::Delay(Duration::from_secs(5))).await;
    let port = slow.addr.port();
    let harness = Harness::start(|zt| {
        config(
            zt,
            vec![service(
                "slow",
                "10.96.0.10",
                &[(Some("http"), 80, port)],
                &["s-1"],
            )],
            vec![workload("s-1")],
            vec![],
            vec![route(
                "slow",
                "slow",
                json!([{
                    "backendRefs": [{ "name": "slow", "port": 80 }],
                    "timeouts": { "request": "200ms" }
                }]),
            )],
        )
    })
    .await;
    let mut client = harness.client("10.96.0.10:80", true).await;
    let started = std::time::Instant::now();
    let answer = client.get("/").await;
    assert_eq!(answer.status, 504);
    assert_eq!(&answer.body[..], b"upstream request timeout");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn unmatched_request_on_routed_service_is_404_and_missing_backend_500() {
    let upstream = Upstream::start("echo", Behavior::Echo).await;
    let port = upstream.addr.port();
    let harness = Harness::start(|zt| {
        config(
            zt,
            vec![service(
                "cart",
                "10.96.0.10",
                &[(Some("http"), 80, port)],
                &["e-1"],
            )],
            vec![workload("e-1")],
            vec![],
            vec![route(
                "only-api",
                "cart",
                json!([
                    { "matches": [{ "path": { "type": "PathPrefix", "value": "/api" } }],
                      "backendRefs": [{ "name": "cart", "port": 80 }] },
                    { "matches": [{ "path": { "type": "PathPrefix", "value": "/ghost" } }],
                      "backendRefs": [{ "name": "does-not-exist", "port": 80 }] }
                ]),
            )],
        )
    })
    .await;
    let mut client = harness.client("10.96.0.10:80", false).await;
    assert_eq!(client.get("/api/x").await.status, 200);
    assert_eq!(client.get("/other").await.status, 404);
    assert_eq!(client.get("/ghost").await.status, 500);
}
