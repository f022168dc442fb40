//! The metrics server over real loopback HTTP, fed by a real connection guard.

mod support;

use std::sync::Arc;

use ambit_runtime::{ControlRuntime, DrainWatch, serve_metrics};
use ambit_telemetry::{
    ErrorReason, Metrics, MetricsRegistry, Reporter, SecurityPolicy, ServiceLabels, TrafficLabels,
    WorkloadLabels,
};
use support::{bind, request};

fn traffic() -> TrafficLabels {
    TrafficLabels {
        reporter: Reporter::Destination,
        source: WorkloadLabels {
            workload: Some("sleep".into()),
            namespace: Some("default".into()),
            ..WorkloadLabels::default()
        }
        .with_spiffe_principal("spiffe://cluster.local/ns/default/sa/sleep"),
        destination: WorkloadLabels {
            workload: Some("httpbin".into()),
            namespace: Some("web".into()),
            ..WorkloadLabels::default()
        },
        destination_service: ServiceLabels {
            hostname: Some("httpbin.web.svc.cluster.local".into()),
            name: Some("httpbin".into()),
            namespace: Some("web".into()),
        },
        connection_security_policy: SecurityPolicy::MutualTls,
        ..TrafficLabels::default()
    }
}

/// The sample line of `name` (exact metric name followed by `{`).
fn line<'t>(text: &'t str, name: &str) -> &'t str {
    let prefix = format!("{name}{{");
    let mut lines = text.lines().filter(|l| l.starts_with(&prefix));
    let found = lines
        .next()
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"));
    assert!(lines.next().is_none(), "one sample of {name} expected");
    found
}

#[tokio::test]
async fn metrics_show_a_closed_connection_with_istio_labels() {
    let mut registry = MetricsRegistry::new();
    let metrics = Metrics::register(&mut registry);
    let registry = Arc::new(registry);

    let guard = metrics.tcp_connection(traffic());
    guard.record_client_to_server(1234);
    guard.record_server_to_client(56);
    drop(guard);
    metrics.count_error(ErrorReason::HboneTlsHandshake);

    // Served from the dedicated control runtime, as a proxy would.
    let control = ControlRuntime::start("metrics-test").unwrap();
    let (listener, addr) = bind();
    control.spawn(serve_metrics(listener, registry, DrainWatch::never()));

    let reply = request(addr, "GET", "/metrics").await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let text = &reply.body;
    let opened = line(text, "istio_tcp_connections_opened_total");
    for label in [
        r#"reporter="destination""#,
        r#"source_workload="sleep""#,
        r#"source_workload_namespace="default""#,
        r#"source_principal="cluster.local/ns/default/sa/sleep""#,
        r#"source_canonical_service="unknown""#,
        r#"destination_workload="httpbin""#,
        r#"destination_workload_namespace="web""#,
        r#"destination_principal="unknown""#,
        r#"destination_service="httpbin.web.svc.cluster.local""#,
        r#"destination_service_name="httpbin""#,
        r#"destination_service_namespace="web""#,
        r#"request_protocol="tcp""#,
        r#"response_flags="-""#,
        r#"connection_security_policy="mutual_tls""#,
    ] {
        assert!(opened.contains(label), "{label} missing in {opened}");
    }
    assert!(opened.ends_with("} 1"), "{opened}");
    assert!(line(text, "istio_tcp_connections_closed_total").ends_with("} 1"));
    assert!(line(text, "istio_tcp_received_bytes_total").ends_with("} 1234"));
    assert!(line(text, "istio_tcp_sent_bytes_total").ends_with("} 56"));
    assert_eq!(
        line(text, "ambit_hbone_errors_total"),
        r#"ambit_hbone_errors_total{reason="tls_handshake"} 1"#
    );
    assert!(text.ends_with("# EOF\n"));

    // Istio's alias path serves the same text; anything else is 404.
    let alias = request(addr, "GET", "/stats/prometheus").await;
    assert_eq!(alias.status, 200);
    assert!(alias.body.contains("istio_tcp_connections_opened_total{"));
    assert_eq!(request(addr, "GET", "/metricsx").await.status, 404);
    assert_eq!(request(addr, "POST", "/metrics").await.status, 405);
}
