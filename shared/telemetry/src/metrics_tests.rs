use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::*;
use crate::labels::{Reporter, RequestProtocol, ResponseFlags, SecurityPolicy, WorkloadLabels};
use crate::test_support::sample;
use crate::{ByteCount, RequestLabels};

fn setup() -> (MetricsRegistry, Metrics) {
    let mut registry = MetricsRegistry::new();
    let metrics = Metrics::register(&mut registry);
    (registry, metrics)
}

fn labels(workload: &str) -> TrafficLabels {
    TrafficLabels {
        reporter: Reporter::Destination,
        source: WorkloadLabels {
            workload: Some(workload.into()),
            ..WorkloadLabels::default()
        },
        connection_security_policy: SecurityPolicy::MutualTls,
        ..TrafficLabels::default()
    }
}

#[test]
fn families_are_exported_with_istio_names() {
    let (registry, metrics) = setup();
    // Families without samples are not exported at all, so give each one a sample.
    drop(metrics.tcp_connection(TrafficLabels::default()));
    metrics.record_request(&RequestLabels::default(), RequestOutcome::default());
    for reason in [
        ErrorReason::HboneBadRequest,
        ErrorReason::HttpHeaderTimeout,
        ErrorReason::DnsUpstream,
        ErrorReason::ConfigRejected,
        ErrorReason::CertificateRequestFailed,
    ] {
        metrics.count_error(reason);
    }
    let text = registry.encode().unwrap();
    for (name, kind) in [
        ("istio_tcp_connections_opened", "counter"),
        ("istio_tcp_connections_closed", "counter"),
        ("istio_tcp_received_bytes", "counter"),
        ("istio_tcp_sent_bytes", "counter"),
        ("istio_requests", "counter"),
        ("istio_request_duration_milliseconds", "histogram"),
        ("istio_request_bytes", "histogram"),
        ("istio_response_bytes", "histogram"),
        ("ambit_hbone_errors", "counter"),
        ("ambit_http_errors", "counter"),
        ("ambit_dns_errors", "counter"),
        ("ambit_config_errors", "counter"),
        ("ambit_certificate_errors", "counter"),
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} {kind}\n")),
            "{name} missing in:\n{text}"
        );
    }
    assert!(text.ends_with("# EOF\n"));
}

#[test]
fn guard_counts_open_bytes_and_close() {
    let (registry, metrics) = setup();
    let a = labels("a");
    let open = |text: &str| {
        sample(
            text,
            "istio_tcp_connections_opened_total",
            &[("source_workload", "a")],
        )
    };
    let closed = |text: &str| {
        sample(
            text,
            "istio_tcp_connections_closed_total",
            &[("source_workload", "a")],
        )
    };
    let received = |text: &str| {
        sample(
            text,
            "istio_tcp_received_bytes_total",
            &[("source_workload", "a")],
        )
    };
    let sent = |text: &str| {
        sample(
            text,
            "istio_tcp_sent_bytes_total",
            &[("source_workload", "a")],
        )
    };

    let first = metrics.tcp_connection(a.clone());
    first.record_client_to_server(100);
    first.record_server_to_client(7);
    first.record_client_to_server(23);
    let text = registry.encode().unwrap();
    assert_eq!(open(&text), Some(1.0));
    assert_eq!(closed(&text), None, "nothing closed yet");
    // Bytes are live: visible before the connection closes.
    assert_eq!(received(&text), Some(123.0));
    assert_eq!(sent(&text), Some(7.0));
    assert_eq!(
        first.bytes(),
        ByteCount {
            client_to_server: 123,
            server_to_client: 7
        }
    );

    let second = metrics.tcp_connection(a);
    second.record_server_to_client(1000);
    drop(first);
    let text = registry.encode().unwrap();
    assert_eq!(open(&text), Some(2.0));
    assert_eq!(closed(&text), Some(1.0));

    let summary = second.finish();
    assert_eq!(summary.bytes.server_to_client, 1000);
    assert_eq!(summary.bytes.client_to_server, 0);
    let text = registry.encode().unwrap();
    assert_eq!(
        closed(&text),
        Some(2.0),
        "finish counts the close exactly once"
    );
    assert_eq!(received(&text), Some(123.0));
    assert_eq!(sent(&text), Some(1007.0));
}

#[test]
fn byte_source_is_read_at_close() {
    let (registry, metrics) = setup();
    let live = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let mut guard = metrics.tcp_connection(labels("b"));
    let reader = live.clone();
    guard.set_byte_source(Box::new(move || ByteCount {
        client_to_server: reader.0.load(Ordering::Relaxed),
        server_to_client: reader.1.load(Ordering::Relaxed),
    }));
    live.0.store(4096, Ordering::Relaxed);
    live.1.store(512, Ordering::Relaxed);
    // A direct record adds to what the source reports.
    guard.record_client_to_server(4);
    let summary = guard.finish();
    assert_eq!(summary.bytes.client_to_server, 4100);
    assert_eq!(summary.bytes.server_to_client, 512);
    let text = registry.encode().unwrap();
    let by_b = [("source_workload", "b")];
    assert_eq!(
        sample(&text, "istio_tcp_received_bytes_total", &by_b),
        Some(4100.0)
    );
    assert_eq!(
        sample(&text, "istio_tcp_sent_bytes_total", &by_b),
        Some(512.0)
    );
}

#[test]
fn response_flags_change_only_the_close() {
    let (registry, metrics) = setup();
    let mut guard = metrics.tcp_connection(labels("c"));
    guard.record_client_to_server(10);
    guard.set_response_flags(ResponseFlags::DENIED);
    let summary = guard.finish();
    assert_eq!(summary.labels.response_flags, ResponseFlags::DENIED);
    let text = registry.encode().unwrap();
    let flagged = |flags| [("source_workload", "c"), ("response_flags", flags)];
    assert_eq!(
        sample(&text, "istio_tcp_connections_opened_total", &flagged("-")),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "istio_tcp_connections_closed_total",
            &flagged("DENY")
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "istio_tcp_connections_closed_total", &flagged("-")),
        None
    );
    assert_eq!(
        sample(&text, "istio_tcp_received_bytes_total", &flagged("-")),
        Some(10.0)
    );
}

#[test]
fn requests_fill_counter_and_histograms() {
    let (registry, metrics) = setup();
    let mut labels = RequestLabels::new(labels("d"));
    labels.traffic.request_protocol = RequestProtocol::Http;
    labels.response_code = Some(503);
    labels.traffic.response_flags = ResponseFlags::UPSTREAM_OVERFLOW;
    for ms in [3, 30] {
        metrics.record_request(
            &labels,
            RequestOutcome {
                duration: Duration::from_millis(ms),
                request_bytes: 20,
                response_bytes: 2_000,
            },
        );
    }
    let text = registry.encode().unwrap();
    let by = [
        ("source_workload", "d"),
        ("response_code", "503"),
        ("response_flags", "UO"),
    ];
    assert_eq!(sample(&text, "istio_requests_total", &by), Some(2.0));
    assert_eq!(
        sample(&text, "istio_request_duration_milliseconds_count", &by),
        Some(2.0)
    );
    assert_eq!(
        sample(&text, "istio_request_duration_milliseconds_sum", &by),
        Some(33.0)
    );
    let bucket = |name: &str, le: &str| {
        let mut with_le = by.to_vec();
        with_le.push(("le", le));
        sample(&text, name, &with_le)
    };
    // Buckets are cumulative: 3 ms falls in le=5, 30 ms in le=50.
    assert_eq!(
        bucket("istio_request_duration_milliseconds_bucket", "1.0"),
        Some(0.0)
    );
    assert_eq!(
        bucket("istio_request_duration_milliseconds_bucket", "5.0"),
        Some(1.0)
    );
    assert_eq!(
        bucket("istio_request_duration_milliseconds_bucket", "25.0"),
        Some(1.0)
    );
    assert_eq!(
        bucket("istio_request_duration_milliseconds_bucket", "50.0"),
        Some(2.0)
    );
    assert_eq!(
        bucket("istio_request_duration_milliseconds_bucket", "3600000.0"),
        Some(2.0)
    );
    assert_eq!(
        bucket("istio_request_duration_milliseconds_bucket", "+Inf"),
        Some(2.0)
    );
    assert_eq!(bucket("istio_request_bytes_bucket", "10.0"), Some(0.0));
    assert_eq!(bucket("istio_request_bytes_bucket", "25.0"), Some(2.0));
    assert_eq!(bucket("istio_response_bytes_bucket", "1000.0"), Some(0.0));
    assert_eq!(bucket("istio_response_bytes_bucket", "2500.0"), Some(2.0));
    assert_eq!(sample(&text, "istio_response_bytes_sum", &by), Some(4000.0));
}

#[test]
fn errors_are_counted_by_reason() {
    let (registry, metrics) = setup();
    metrics.count_error(ErrorReason::HboneTlsHandshake);
    metrics.count_error(ErrorReason::HboneTlsHandshake);
    metrics.count_error(ErrorReason::DnsMalformedQuery);
    let text = registry.encode().unwrap();
    assert_eq!(
        sample(
            &text,
            "ambit_hbone_errors_total",
            &[("reason", "tls_handshake")]
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &text,
            "ambit_dns_errors_total",
            &[("reason", "malformed_query")]
        ),
        Some(1.0)
    );
    assert_eq!(sample(&text, "ambit_http_errors_total", &[]), None);
}
