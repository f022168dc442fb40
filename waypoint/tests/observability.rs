//! Metrics, readiness and config dump over real sockets: requests through the waypoint show
//! up on `/metrics` with Istio's labels; `/healthz/ready` waits for config and certificate.
// Test helpers panic on a failed setup.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ambit_runtime::{Ready, Shutdown};
use ambit_telemetry::MetricsRegistry;
use ambit_waypoint::{ControlAddrs, ControlInputs, ControlServers};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use support::*;
use tokio::net::TcpStream;

const CART: &str = "cart.test.svc.cluster.local";

fn local_addrs() -> ControlAddrs {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    ControlAddrs {
        admin: any,
        metrics: any,
        readiness: any,
    }
}

fn start_control(registry: Arc<MetricsRegistry>, ready: Ready) -> (ControlServers, Shutdown) {
    let shutdown = Shutdown::without_signals(Duration::from_secs(1));
    let inputs = ControlInputs {
        registry,
        ready,
        logging: None,
    };
    let control = ControlServers::start(local_addrs(), inputs, &shutdown).unwrap();
    (control, shutdown)
}

/// A plain HTTP/1.1 GET; returns the status and body.
async fn get(addr: SocketAddr, path: &str) -> (StatusCode, String) {
    within(async {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        let request = Request::get(path)
            .header("host", "localhost")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = send.send_request(request).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    })
    .await
}

/// The sample lines of `family` (e.g. `istio_requests_total`) whose labels contain every
/// one of `labels` (`name="value"`).
fn samples<'t>(text: &'t str, family: &str, labels: &[&str]) -> Vec<&'t str> {
    text.lines()
        .filter(|line| line.starts_with(&format!("{family}{{")))
        .filter(|line| labels.iter().all(|label| line.contains(label)))
        .collect()
}

fn value(line: &str) -> f64 {
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// Scrapes until `done` holds: the last response byte can reach the client an instant
/// before the waypoint records the request.
async fn scrape_until(addr: SocketAddr, done: impl Fn(&str) -> bool) -> String {
    within(async {
        loop {
            let (status, text) = get(addr, "/metrics").await;
            assert_eq!(status, StatusCode::OK);
            if done(&text) {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

#[tokio::test]
async fn request_metrics_have_istio_labels() {
    let upstream = Upstream::start("echo", Behavior::Echo).await;
    let port = upstream.addr.port();
    let harness = Harness::start(|zt| {
        let mut client = workload("client-1");
        client["serviceAccount"] = json!("client");
        client["labels"] = json!({ "app": "shop", "version": "v1" });
        config(
            zt,
            vec![service(
                "cart",
                "10.96.0.10",
                &[(Some("http"), 80, port)],
                &["cart-1"],
            )],
            // The client is listed first: it owns 127.0.0.1 in the IP index.
            vec![client, workload("cart-1")],
            vec![json!({ "name": "deny-admin", "namespace": "test", "spec": {
                "targetRefs": [{ "group": "", "kind": "Service", "name": "cart" }],
                "action": "DENY",
                "rules": [{ "to": [{ "operation": { "paths": ["/admin*"] } }] }]
            }})],
            vec![],
        )
    })
    .await;
    let (control, _shutdown) = start_control(harness.registry.clone(), Ready::new());
    let metrics_addr = control.addrs().metrics;

    for h2 in [false, true, false] {
        let mut client = harness.client("10.96.0.10:80", h2).await;
        let mut request = request("POST", "/items", &[]);
        *request.body_mut() = Full::new(Bytes::from_static(b"hello"));
        let answer = client.send(request).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(&answer.body[..], b"hello");
    }
    let mut client = harness.client("10.96.0.10:80", false).await;
    assert_eq!(client.get("/admin/x").await.status, 403);
    let mut grpc = harness.client("10.96.0.10:80", true).await;
    let answer = grpc
        .send(request(
            "POST",
            "/admin.Svc/Call",
            &[("content-type", "application/grpc")],
        ))
        .await;
    assert_eq!(answer.header("grpc-status"), Some("7"));

    let ok = [
        "reporter=\"waypoint\"",
        "response_code=\"200\"",
        "request_protocol=\"http\"",
    ];
    let text = scrape_until(metrics_addr, |text| {
        samples(text, "istio_requests_total", &ok)
            .first()
            .is_some_and(|line| value(line) == 3.0)
            && samples(
                text,
                "istio_requests_total",
                &["grpc_response_status=\"7\""],
            )
            .len()
                == 1
            && samples(text, "istio_requests_total", &["response_code=\"403\""]).len() == 1
    })
    .await;

    let expected_peers = [
        "source_workload=\"client-1\"",
        "source_workload_namespace=\"test\"",
        "source_principal=\"cluster.local/ns/test/sa/client\"",
        "source_app=\"shop\"",
        "source_version=\"v1\"",
        "destination_workload=\"cart-1\"",
        "destination_workload_namespace=\"test\"",
        "destination_principal=\"cluster.local/ns/test/sa/backend\"",
        "response_flags=\"-\"",
        "connection_security_policy=\"mutual_tls\"",
    ];
    let service = format!("destination_service=\"{CART}\"");
    let all_ok: Vec<&str> = ok
        .iter()
        .copied()
        .chain(expected_peers)
        .chain([service.as_str(), "destination_service_name=\"cart\""])
        .collect();
    let total = samples(&text, "istio_requests_total", &all_ok);
    assert_eq!(total.len(), 1, "{text}");
    assert_eq!(value(total[0]), 3.0, "{text}");
    let count = samples(&text, "istio_request_duration_milliseconds_count", &all_ok);
    assert_eq!(count.len(), 1, "{text}");
    assert_eq!(value(count[0]), 3.0);
    let request_bytes = samples(&text, "istio_request_bytes_sum", &all_ok);
    assert_eq!(request_bytes.len(), 1, "{text}");
    assert_eq!(value(request_bytes[0]), 15.0, "3 × b\"hello\"");
    let response_bytes = samples(&text, "istio_response_bytes_sum", &all_ok);
    assert_eq!(response_bytes.len(), 1, "{text}");
    assert_eq!(value(response_bytes[0]), 15.0, "the echo of 3 × b\"hello\"");

    // The denied request: 403, RBAC flag, no endpoint, the addressed service.
    let denied = samples(
        &text,
        "istio_requests_total",
        &[
            "reporter=\"waypoint\"",
            "response_code=\"403\"",
            "response_flags=\"RBAC\"",
            "destination_workload=\"unknown\"",
            "source_principal=\"cluster.local/ns/test/sa/client\"",
            &service,
        ],
    );
    assert_eq!(denied.len(), 1, "{text}");
    assert_eq!(value(denied[0]), 1.0);
    let denied_bytes = samples(
        &text,
        "istio_response_bytes_sum",
        &["response_code=\"403\""],
    );
    assert_eq!(value(denied_bytes[0]), b"RBAC: access denied".len() as f64);

    // The denied gRPC call: HTTP 200 with grpc-status 7.
    let grpc = samples(
        &text,
        "istio_requests_total",
        &[
            "request_protocol=\"grpc\"",
            "response_code=\"200\"",
            "grpc_response_status=\"7\"",
            "response_flags=\"RBAC\"",
            &service,
        ],
    );
    assert_eq!(grpc.len(), 1, "{text}");
}

#[tokio::test]
async fn readiness_waits_for_config_and_certificate_then_config_dump_shows_snapshot() {
    let upstream = Upstream::start("echo", Behavior::Echo).await;
    let port = upstream.addr.port();
    let harness = Harness::start(|zt| {
        config(
            zt,
            vec![service(
                "cart",
                "10.96.0.10",
                &[(Some("http"), 80, port)],
                &["cart-1"],
            )],
            vec![workload("cart-1")],
            vec![],
            vec![],
        )
    })
    .await;
    let ready = Ready::new();
    let config_ready = ready.register("config");
    let certificate_ready = ready.register("certificates");
    let (control, shutdown) = start_control(harness.registry.clone(), ready);
    let addrs = control.addrs();

    let (status, body) = get(addrs.readiness, "/healthz/ready").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body.contains("config") && body.contains("certificates"),
        "{body}"
    );
    let (status, body) = get(addrs.admin, "/config_dump").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({ "loaded": false })
    );

    certificate_ready.done();
    let (status, body) = get(addrs.readiness, "/healthz/ready").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body.contains("config") && !body.contains("certificates"),
        "{body}"
    );

    control.set_config(harness.config.clone());
    config_ready.done();
    let (status, _) = get(addrs.readiness, "/healthz/ready").await;
    assert_eq!(status, StatusCode::OK);

    let (status, body) = get(addrs.admin, "/config_dump").await;
    assert_eq!(status, StatusCode::OK);
    let dump: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(dump["generation"], 1);
    assert_eq!(dump["waypoint"], "test/waypoint");
    assert_eq!(dump["services"][0]["name"], "cart", "{dump}");
    assert_eq!(dump["workloads"][0]["uid"], "cart-1", "{dump}");

    // Draining turns readiness off so load balancers stop sending new work.
    shutdown.trigger().start();
    let (status, body) = get(addrs.readiness, "/healthz/ready").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body.trim(), "draining");
}

#[tokio::test]
async fn a_client_outside_the_waypoint_scope_is_labelled_from_its_baggage() {
    let upstream = Upstream::start("echo", Behavior::Echo).await;
    let port = upstream.addr.port();
    let harness = Harness::start(|zt| {
        config(
            zt,
            vec![service(
                "cart",
                "10.96.0.10",
                &[(Some("http"), 80, port)],
                &["cart-1"],
            )],
            vec![workload("cart-1")],
            vec![],
            vec![],
        )
    })
    .await;
    let (control, _shutdown) = start_control(harness.registry.clone(), Ready::new());

    // 10.9.9.9 is in no snapshot; one client claims its own namespace, one another's.
    let honest = harness
        .tunnel_with(
            "client",
            "10.96.0.10:80",
            Some("for=\"10.9.9.9:40000\""),
            Some("k8s.namespace.name=test,k8s.deployment.name=shop,service.name=shop,service.version=v3"),
        )
        .await;
    let mut client = Client::handshake(honest, false).await;
    assert_eq!(client.get("/").await.status, 200);
    let lying = harness
        .tunnel_with(
            "client",
            "10.96.0.10:80",
            Some("for=\"10.9.9.9:40001\""),
            Some("k8s.namespace.name=kube-system,k8s.deployment.name=coredns"),
        )
        .await;
    let mut client = Client::handshake(lying, false).await;
    assert_eq!(client.get("/").await.status, 200);

    let from_baggage = [
        "source_workload=\"shop\"",
        "source_workload_namespace=\"test\"",
        "source_canonical_revision=\"v3\"",
        "source_principal=\"cluster.local/ns/test/sa/client\"",
    ];
    let unknown = [
        "source_workload=\"unknown\"",
        "source_principal=\"cluster.local/ns/test/sa/client\"",
    ];
    let text = scrape_until(control.addrs().metrics, |text| {
        samples(text, "istio_requests_total", &from_baggage).len() == 1
            && samples(text, "istio_requests_total", &unknown).len() == 1
    })
    .await;
    assert!(!text.contains("coredns"), "{text}");
}
