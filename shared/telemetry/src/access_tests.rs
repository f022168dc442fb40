use std::time::Duration;

use super::*;
use crate::labels::ServiceLabels;
use crate::logging;
use crate::test_support::Captured;
use crate::{ByteCount, Metrics, MetricsRegistry};

fn mtls_labels(reporter: Reporter) -> TrafficLabels {
    TrafficLabels {
        reporter,
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
        }
        .with_spiffe_principal("spiffe://cluster.local/ns/web/sa/httpbin"),
        destination_service: ServiceLabels {
            hostname: Some("httpbin.web.svc.cluster.local".into()),
            ..ServiceLabels::default()
        },
        connection_security_policy: SecurityPolicy::MutualTls,
        ..TrafficLabels::default()
    }
}

/// Emits `record` through a JSON subscriber and returns the one line it wrote.
fn emitted(record: &AccessLog) -> serde_json::Value {
    let captured = Captured::default();
    let (subscriber, _handle) = logging::subscriber("info", true, captured.clone()).unwrap();
    tracing::subscriber::with_default(subscriber, || record.emit());
    let text = captured.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "one line per record: {text}");
    serde_json::from_str(lines[0]).unwrap()
}

#[test]
fn summary_fills_identities_bytes_and_direction() {
    let mut registry = MetricsRegistry::new();
    let metrics = Metrics::register(&mut registry);
    let guard = metrics.tcp_connection(mtls_labels(Reporter::Source));
    guard.record_client_to_server(11);
    guard.record_server_to_client(22);
    let summary = guard.finish();
    let record = AccessLog::from_summary(
        &summary,
        "10.0.0.1:40000".parse().unwrap(),
        "10.0.0.2:15008".parse().unwrap(),
    )
    .with_hbone_addr("10.0.0.2:8080");
    let line = emitted(&record);
    assert_eq!(line["target"], "access");
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["message"], "connection complete");
    assert_eq!(line["src.addr"], "10.0.0.1:40000");
    assert_eq!(line["src.workload"], "sleep");
    assert_eq!(line["src.namespace"], "default");
    assert_eq!(
        line["src.identity"],
        "spiffe://cluster.local/ns/default/sa/sleep"
    );
    assert_eq!(line["dst.addr"], "10.0.0.2:15008");
    assert_eq!(line["dst.hbone_addr"], "10.0.0.2:8080");
    assert_eq!(line["dst.service"], "httpbin.web.svc.cluster.local");
    assert_eq!(line["dst.workload"], "httpbin");
    assert_eq!(
        line["dst.identity"],
        "spiffe://cluster.local/ns/web/sa/httpbin"
    );
    assert_eq!(line["direction"], "outbound");
    // Outbound: the local workload is the client, so it sent the request bytes.
    assert_eq!(line["bytes_sent"], 11);
    assert_eq!(line["bytes_recv"], 22);
    assert_eq!(line["response_flags"], "-");
    assert!(line.get("error").is_none());
}

#[test]
fn inbound_flips_bytes_and_failure_is_a_warning() {
    let summary = ConnectionSummary {
        labels: TrafficLabels {
            response_flags: ResponseFlags::DENIED,
            ..mtls_labels(Reporter::Destination)
        },
        bytes: ByteCount {
            client_to_server: 5,
            server_to_client: 9,
        },
        duration: Duration::from_millis(1500),
    };
    let error = std::io::Error::other("denied by policy");
    let record = AccessLog::from_summary(
        &summary,
        "10.0.0.1:1".parse().unwrap(),
        "10.0.0.2:2".parse().unwrap(),
    )
    .with_error(&error);
    let line = emitted(&record);
    assert_eq!(line["level"], "WARN");
    assert_eq!(line["direction"], "inbound");
    assert_eq!(line["bytes_sent"], 9);
    assert_eq!(line["bytes_recv"], 5);
    assert_eq!(line["duration_ms"], 1500);
    assert_eq!(line["response_flags"], "DENY");
    assert_eq!(line["error"], "denied by policy");
}

#[test]
fn identities_only_with_mutual_tls() {
    let labels = TrafficLabels {
        connection_security_policy: SecurityPolicy::Unknown,
        ..mtls_labels(Reporter::Destination)
    };
    let record = AccessLog::from_labels(&labels);
    assert_eq!(record.src_identity, None);
    assert_eq!(record.dst_identity, None);
    assert_eq!(record.src_workload.as_deref(), Some("sleep"));
    let line = emitted(&record);
    assert!(line.get("src.identity").is_none());
    assert!(line.get("src.addr").is_none(), "absent values are omitted");
}

#[test]
fn access_target_can_be_silenced() {
    let captured = Captured::default();
    let (subscriber, _handle) =
        logging::subscriber("info,access=off", true, captured.clone()).unwrap();
    tracing::subscriber::with_default(subscriber, || {
        AccessLog::default().emit();
        tracing::info!("kept");
    });
    let text = captured.text();
    assert!(!text.contains("connection complete"), "{text}");
    assert!(text.contains("kept"), "{text}");
}
