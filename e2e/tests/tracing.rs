//! Distributed tracing through a waypoint (root, local mesh): the W3C `traceparent` a client
//! sends reaches the backend with the same trace id and the waypoint's span as parent, a trace
//! is started when the client sent none, and the waypoint's spans reach an in-test OTLP/gRPC
//! collector running in the cluster's underlay namespace.

use std::net::SocketAddr;

use ambit_e2e::{apply, bounded, echo_once, eventually, mesh_with, pod, within};
use ambit_localnet::UNDERLAY_GATEWAY;
use anyhow::{Context, Result, bail, ensure};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use tokio::sync::mpsc;

const URL: &str = "http://echo.traced.svc.cluster.local:8000/items";
/// Where the collector listens: the underlay is reachable from every pod, waypoints included.
const COLLECTOR_PORT: u16 = 4317;
/// The client's traces (one to wait for the waypoint, one to follow) and span.
const PROBE_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

const APP: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: traced, labels: {istio.io/dataplane-mode: ambient, istio.io/use-waypoint: waypoint}}
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: traced}
spec: {selector: {app: echo}, ports: [{name: http, port: 8000, targetPort: 8000}]}
---
apiVersion: v1
kind: Pod
metadata: {name: echo, namespace: traced, labels: {app: echo}}
spec:
  nodeName: node-2
  containers: [{name: echo, command: [echo-server], args: [--addr, "0.0.0.0:8000"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: traced}
spec: {nodeName: node-1, containers: [{name: client, command: [sleep, infinity]}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: traced}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
"#;

/// An OTLP/gRPC trace collector forwarding every span it receives.
struct Collector {
    spans: mpsc::UnboundedSender<Span>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans = request
            .into_inner()
            .resource_spans
            .into_iter()
            .flat_map(|resource| resource.scope_spans)
            .flat_map(|scope| scope.spans);
        for span in spans {
            let _ = self.spans.send(span);
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `traceparent` split into (trace id, span id, flags), checked for shape.
fn traceparent(value: &str) -> Result<(String, String, String)> {
    let fields: Vec<&str> = value.split('-').collect();
    match fields.as_slice() {
        ["00", trace, span, flags] if trace.len() == 32 && span.len() == 16 && flags.len() == 2 => {
            Ok((trace.to_string(), span.to_string(), flags.to_string()))
        }
        _ => bail!("malformed traceparent {value:?}"),
    }
}

/// The `traceparent` the backend received, from the echo server's answer.
fn received_traceparent(answer: &serde_json::Value) -> Result<(String, String, String)> {
    let value = answer["headers"]["traceparent"]
        .as_str()
        .with_context(|| format!("the backend received no traceparent: {answer}"))?;
    traceparent(value)
}

/// Waits for the collector to receive a span of `trace` (other traces' spans are skipped).
async fn span_of(spans: &mut mpsc::UnboundedReceiver<Span>, trace: &str) -> Result<Span> {
    within(
        &format!("a span of trace {trace} at the collector"),
        async {
            while let Some(span) = spans.recv().await {
                if hex(&span.trace_id) == trace {
                    return Ok(span);
                }
            }
            bail!("the collector stopped")
        },
    )
    .await?
}

#[tokio::test]
async fn trace_context_crosses_the_waypoint_and_spans_reach_an_otlp_collector() -> Result<()> {
    bounded(async {
        let collector = SocketAddr::from((UNDERLAY_GATEWAY, COLLECTOR_PORT));
        let mesh = mesh_with("tracing", 2, |options| {
            options.waypoint_otlp_endpoint = Some(format!("http://{collector}"));
            // Every trace started at the waypoint is sampled, so its span is exported too.
            options.waypoint_trace_sampling = Some(1.0);
        })
        .await?;
        // The underlay netns exists once the mesh is up; the collector listens there before
        // the Gateway starts the waypoint.
        let listener = mesh.cluster().underlay().bind_tcp(collector)?;
        let (spans_tx, mut spans) = mpsc::unbounded_channel();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(Collector { spans: spans_tx }))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        apply(&mesh, "app.yaml", APP).await?;
        let client = pod(&mesh, "traced", "client")?;

        // The waypoint is on the path once the backend sees a parent other than the client's
        // own span.
        let probe = format!("traceparent:00-{PROBE_TRACE}-{CLIENT_SPAN}-01");
        eventually("the waypoint joins the caller's trace", || async {
            let answer = echo_once(&client, URL, &[&probe]).await?;
            let (trace, span, _) = received_traceparent(&answer)?;
            ensure!(trace == PROBE_TRACE, "the trace id changed: {answer}");
            Ok(span != CLIENT_SPAN)
        })
        .await?;

        // The caller's trace: same trace id at the backend, the waypoint's span as its parent,
        // and that span exported with the client's span as parent.
        let header = format!("traceparent:00-{TRACE}-{CLIENT_SPAN}-01");
        let answer = echo_once(&client, URL, &[&header]).await?;
        let (trace, waypoint_span, flags) = received_traceparent(&answer)?;
        ensure!(trace == TRACE, "the trace id changed: {answer}");
        ensure!(
            waypoint_span != CLIENT_SPAN,
            "the waypoint added its span: {answer}"
        );
        ensure!(flags == "01", "the sampled flag was kept: {answer}");
        let span = span_of(&mut spans, TRACE).await?;
        ensure!(
            hex(&span.parent_span_id) == CLIENT_SPAN,
            "the exported span's parent is the client's span: {span:?}"
        );
        ensure!(
            hex(&span.span_id) == waypoint_span,
            "the exported span is the one the backend saw as parent ({waypoint_span}): {span:?}"
        );
        ensure!(
            span.name == "GET /items",
            "span named after the request: {span:?}"
        );

        // No trace from the caller: the waypoint starts one and exports its root span.
        let answer = echo_once(&client, URL, &[]).await?;
        let (trace, span_id, flags) = received_traceparent(&answer)?;
        ensure!(
            trace != "0".repeat(32) && trace != TRACE,
            "a new trace id: {answer}"
        );
        ensure!(flags == "01", "sampled at ratio 1: {answer}");
        let root = span_of(&mut spans, &trace).await?;
        ensure!(
            hex(&root.span_id) == span_id,
            "the exported root span is the backend's parent: {root:?}"
        );
        ensure!(
            root.parent_span_id.is_empty(),
            "a root span has no parent: {root:?}"
        );

        server.abort();
        mesh.down().await?;
        Ok(())
    })
    .await
}
