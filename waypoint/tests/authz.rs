//! L7 authorization matrix: method, path, header and principal, ALLOW and DENY, HTTP and gRPC.

mod support;

use serde_json::json;
use support::*;

#[tokio::test]
async fn allow_deny_matrix() {
    let upstream = Upstream::start("echo", Behavior::Echo).await;
    let port = upstream.addr.port();
    let harness = Harness::start(|zt| {
        config(
            zt,
            vec![service("cart", "10.96.0.10", &[(Some("http"), 80, port)], &["cart-1"])],
            vec![workload("cart-1")],
            vec![
                json!({ "name": "allow-public-get", "namespace": "test", "spec": {
                    "targetRefs": [{ "group": "", "kind": "Service", "name": "cart" }],
                    "rules": [{
                        "from": [{ "source": { "principals": ["cluster.local/ns/test/sa/client"] } }],
                        "to": [{ "operation": { "methods": ["GET"], "paths": ["/public/*"] } }]
                    }]
                }}),
                json!({ "name": "deny-blocked", "namespace": "test", "spec": {
                    "targetRefs": [{ "group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "waypoint" }],
                    "action": "DENY",
                    "rules": [{ "when": [{ "key": "request.headers[x-block]", "values": ["yes"] }] }]
                }}),
                // A selector policy belongs to ztunnel: it must not deny anything here.
                json!({ "name": "ztunnel-only", "namespace": "test", "spec": {
                    "selector": { "matchLabels": { "app": "cart" } },
                    "action": "DENY",
                    "rules": [{}]
                }}),
            ],
            vec![],
        )
    })
    .await;
    type Case<'a> = (&'a str, &'a str, &'a str, &'a [(&'a str, &'a str)], u16);
    let cases: &[Case<'_>] = &[
        ("client", "GET", "/public/a", &[], 200),
        ("client", "GET", "/public/a/b", &[], 200),
        ("client", "POST", "/public/a", &[], 403),
        ("client", "GET", "/private", &[], 403),
        ("client", "GET", "/public/a", &[("x-block", "yes")], 403),
        ("client", "GET", "/public/a", &[("x-block", "no")], 200),
        ("intruder", "GET", "/public/a", &[], 403),
    ];
    for (sa, method, path, headers, status) in cases {
        for h2 in [false, true] {
            let mut client = harness.client_as(sa, "10.96.0.10:80", h2).await;
            let answer = client.send(request(method, path, headers)).await;
            assert_eq!(
                answer.status.as_u16(),
                *status,
                "{sa} {method} {path} {headers:?} h2={h2}: {answer:?}"
            );
            if *status == 403 {
                assert_eq!(&answer.body[..], b"RBAC: access denied");
                assert_eq!(
                    answer.header("x-backend"),
                    None,
                    "denied requests never reach the upstream"
                );
            }
        }
    }
    // Only allowed requests reached the upstream.
    let allowed = cases.iter().filter(|c| c.4 == 200).count() * 2;
    assert_eq!(upstream.count(), allowed);

    // gRPC: denied as HTTP 200 with grpc-status PERMISSION_DENIED.
    let mut client = harness.client_as("intruder", "10.96.0.10:80", true).await;
    let answer = client
        .send(request(
            "POST",
            "/public/pkg.Svc/Method",
            &[("content-type", "application/grpc")],
        ))
        .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("grpc-status"), Some("7"));
}
