//! Trace context, OTLP export and the access log through a real waypoint (HBONE in and out):
//! the upstream sees the caller's trace with the waypoint's span as parent, a span arrives at
//! an in-test OTLP/gRPC collector, and each request writes one JSON access-log line.
// Test helpers panic on a failed setup.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use ambit_waypoint::otlp::SpanExport;
use ambit_waypoint::tracing_ctx::Tracer;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use serde_json::Value;
use support::*;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

fn one_service(zt: u16, port: u16) -> Value {
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
}

#[tokio::test]
async fn trace_context_reaches_the_upstream_with_the_waypoint_as_parent() {
    let upstream = Upstream::start("echo", Behavior::Echo).await;
    let port = upstream.addr.port();
    let harness = Harness::start(|zt| one_service(zt, port)).await;
    for h2 in [false, true] {
        let mut client = harness.client("10.96.0.10:80", h2).await;
        let traceparent = format!("00-{TRACE}-{PARENT}-01");
        let answer = client
            .send(request(
                "GET",
                "/",
                &[("traceparent", &traceparent), ("tracestate", "v=1")],
            ))
            .await;
        let sent = answer.header("x-echo-traceparent").unwrap();
        let fields: Vec<&str> = sent.split('-').collect();
        assert_eq!(fields[1], TRACE, "same trace, h2={h2}");
        assert_ne!(fields[2], PARENT, "a new parent: the waypoint's span");
        assert_eq!(fields[3], "01");
        assert_eq!(answer.header("x-echo-tracestate"), Some("v=1"));
        assert_eq!(answer.header("x-echo-x-b3-traceid"), Some(TRACE));
        assert_eq!(answer.header("x-echo-x-b3-spanid"), Some(fields[2]));
        assert_eq!(answer.header("x-echo-x-b3-parentspanid"), Some(PARENT));
        let request_id = answer.header("x-echo-x-request-id").unwrap();
        assert_eq!(request_id.len(), 36, "generated: {request_id}");

        // B3 single header in, with the caller's request id kept.
        let b3 = format!("{TRACE}-{PARENT}-1");
        let answer = client
            .send(request(
                "GET",
                "/",
                &[("b3", &b3), ("x-request-id", "req-7")],
            ))
            .await;
        let single = answer.header("x-echo-b3").unwrap();
        assert!(single.starts_with(TRACE), "{single}");
        assert!(single.ends_with(&format!("-1-{PARENT}")), "{single}");
        assert_eq!(answer.header("x-echo-x-request-id"), Some("req-7"));
        let traceparent = answer.header("x-echo-traceparent").unwrap();
        assert!(traceparent.contains(TRACE), "{traceparent}");
    }
}

/// An OTLP/gRPC trace collector forwarding every received span.
struct Collector {
    spans: mpsc::UnboundedSender<Span>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        for resource in request.into_inner().resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .any(|kv| kv.key == "service.name");
            assert!(service, "spans carry service.name");
            for scope in resource.scope_spans {
                for span in scope.spans {
                    let _ = self.spans.send(span);
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn attribute<'s>(span: &'s Span, key: &str) -> Option<&'s AnyValue> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn sampled_spans_reach_an_otlp_collector() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector_addr = listener.local_addr().unwrap();
    let (spans_tx, mut spans) = mpsc::unbounded_channel();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Collector { spans: spans_tx }))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let (export, _task) =
        SpanExport::start(&format!("http://{collector_addr}"), "waypoint.test").unwrap();

    let upstream = Upstream::start("echo", Behavior::Echo).await;
    let port = upstream.addr.port();
    let harness = Harness::start_with(
        |zt| one_service(zt, port),
        // Ratio 0: only the callers' decisions sample.
        |options| options.observability.tracer = Tracer::new(0.0, Some(export.clone())),
    )
    .await;
    let mut client = harness.client("10.96.0.10:80", false).await;
    let unsampled = "11111111111111111111111111111111";
    let not_sampled = format!("00-{unsampled}-{PARENT}-00");
    let answer = client
        .send(request("GET", "/skip", &[("traceparent", &not_sampled)]))
        .await;
    assert_eq!(answer.status, 200);
    let sampled = format!("00-{TRACE}-{PARENT}-01");
    let answer = client
        .send(request("GET", "/items?x=1", &[("traceparent", &sampled)]))
        .await;
    let upstream_parent = answer.header("x-echo-traceparent").unwrap().to_owned();

    let span = within(spans.recv()).await.unwrap();
    assert_eq!(
        hex(&span.trace_id),
        TRACE,
        "the unsampled trace is never exported"
    );
    assert_eq!(hex(&span.parent_span_id), PARENT);
    assert_eq!(
        upstream_parent.split('-').nth(2),
        Some(hex(&span.span_id).as_str())
    );
    assert_eq!(span.kind, SpanKind::Server as i32);
    assert_eq!(span.name, "GET /items");
    assert!(span.end_time_unix_nano >= span.start_time_unix_nano);
    assert_eq!(
        attribute(&span, "http.response.status_code"),
        Some(&AnyValue::IntValue(200))
    );
    assert_eq!(
        attribute(&span, "source.principal"),
        Some(&AnyValue::StringValue(
            "spiffe://cluster.local/ns/test/sa/client".into()
        ))
    );
    assert!(spans.try_recv().is_err(), "exactly one span");
    assert_eq!(export.dropped(), 0);
}

/// Collects what a `tracing` subscriber writes, one entry per line.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self) -> Vec<Value> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        // Each line is the event's message, the JSON object.
        text.lines()
            .map(|line| serde_json::from_str(&line[line.find('{').unwrap()..]).unwrap())
            .collect()
    }
}

// One thread: the subscriber set below is that thread's default, and every task of the
// waypoint runs on it.
#[tokio::test(flavor = "current_thread")]
async fn one_json_access_log_line_per_request() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::INFO)
        .without_time()
        .with_level(false)
        .with_target(false)
        .with_ansi(false)
        .finish();
    let filter = tracing_subscriber::filter::Targets::new()
        .with_target(ambit_waypoint::access_log::TARGET, tracing::Level::INFO);
    let _guard = tracing::subscriber::set_default(tracing_subscriber::layer::SubscriberExt::with(
        subscriber, filter,
    ));

    let upstream = Upstream::start("echo", Behavior::Echo).await;
    let port = upstream.addr.port();
    let harness = Harness::start_with(
        |zt| {
            let mut config = one_service(zt, port);
            config["policies"] = serde_json::json!([{ "name": "deny-admin", "namespace": "test",
                "spec": { "action": "DENY", "targetRefs": [{ "group": "", "kind": "Service", "name": "cart" }],
                          "rules": [{ "to": [{ "operation": { "paths": ["/admin"] } }] }] } }]);
            config
        },
        |options| options.observability.access_log = true,
    )
    .await;
    let mut client = harness.client("10.96.0.10:80", true).await;
    let traceparent = format!("00-{TRACE}-{PARENT}-00");
    let body = request("POST", "/items?id=3", &[("traceparent", &traceparent)]);
    let (parts, _) = body.into_parts();
    let with_body = http::Request::from_parts(
        parts,
        http_body_util::Full::new(bytes::Bytes::from_static(b"12345")),
    );
    let answer = client.send(with_body).await;
    assert_eq!(answer.status, 200);
    let denied = client
        .send(request("GET", "/admin", &[("x-request-id", "r-2")]))
        .await;
    assert_eq!(denied.status, 403);
    drop(client);

    let lines = captured.lines();
    assert_eq!(lines.len(), 2, "{lines:?}");
    let ok = &lines[0];
    assert_eq!(ok["method"], "POST");
    assert_eq!(ok["authority"], "cart.test");
    assert_eq!(ok["path"], "/items?id=3");
    assert_eq!(ok["protocol"], "HTTP/2.0");
    assert_eq!(ok["response_code"], 200);
    assert_eq!(ok["response_flags"], "-");
    assert_eq!(ok["bytes_received"], 5);
    assert_eq!(ok["bytes_sent"], answer.body.len());
    assert_eq!(ok["upstream_host"], format!("127.0.0.1:{port}"));
    assert_eq!(
        ok["source_principal"],
        "spiffe://cluster.local/ns/test/sa/client"
    );
    assert_eq!(ok["destination_address"], "10.96.0.10:80");
    assert_eq!(
        ok["destination_principal"],
        "spiffe://cluster.local/ns/test/sa/backend"
    );
    assert_eq!(ok["trace_id"], TRACE);
    assert_eq!(ok["request_id"].as_str().unwrap().len(), 36);
    assert_eq!(
        answer.header("x-echo-x-request-id"),
        ok["request_id"].as_str()
    );
    assert!(ok["duration_ms"].is_u64());

    let denied_line = &lines[1];
    assert_eq!(denied_line["response_code"], 403);
    assert_eq!(denied_line["request_id"], "r-2");
    assert_eq!(denied_line["upstream_host"], Value::Null);
    assert_eq!(denied_line["bytes_sent"], denied.body.len());
    assert_eq!(denied_line["trace_id"].as_str().unwrap().len(), 32);
}
