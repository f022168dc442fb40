//! Istio's request metrics (`istio_requests_total`, `istio_request_duration_milliseconds`,
//! `istio_request_bytes`, `istio_response_bytes`) with `reporter="waypoint"`.
//!
//! Bodies are never buffered for counting: the request body is wrapped in a
//! [`CountingBody`], the response body in a [`MeteredBody`] that records the request once
//! its last frame is sent (or it is dropped early), so the duration runs to the last
//! response byte and `grpc_response_status` can come from the trailers.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use ambit_identity::SpiffeId;
use ambit_model::{Service, Workload};
use ambit_telemetry::{
    Metrics, Reporter, RequestLabels, RequestOutcome, RequestProtocol, ResponseFlags,
    SecurityPolicy, ServiceLabels, TrafficLabels, WorkloadLabels,
};
use bytes::Bytes;
use http::HeaderMap;
use hyper::body::{Body, Frame, SizeHint};

use crate::baggage::PeerMetadata;
use crate::errors::{BoxError, ResponseBody};

/// A body that adds the length of every data frame it yields to a shared counter.
#[derive(Debug)]
pub struct CountingBody<B> {
    inner: B,
    count: Arc<AtomicU64>,
}

/// The response body sent downstream, recording the request's metrics when it ends.
#[derive(Debug)]
pub struct MeteredBody {
    inner: ResponseBody,
    pending: Option<PendingRecord>,
}

/// What a request's metrics need once its response has been sent.
#[derive(Debug)]
pub struct PendingRecord {
    metrics: Metrics,
    labels: RequestLabels,
    started: Instant,
    request_bytes: Arc<AtomicU64>,
    response_bytes: u64,
}

/// The peers and outcome of one request, as the stack knows them when the response head
/// is ready.
#[derive(Debug)]
pub struct RequestFacts<'a> {
    /// The client identity of the inbound HBONE connection.
    pub source_identity: &'a SpiffeId,
    /// The client's workload, found by its IP in the snapshot.
    pub source_workload: Option<&'a Workload>,
    /// The client as its ztunnel describes it, for a client not in the snapshot.
    pub source_metadata: Option<&'a PeerMetadata>,
    /// The service the request went to (the routed backend, else the addressed service).
    pub destination_service: Option<&'a Service>,
    /// The endpoint's workload, once one was chosen.
    pub destination_workload: Option<&'a Workload>,
    /// `content-type: application/grpc…`.
    pub grpc: bool,
    /// The status sent downstream.
    pub response_code: u16,
    /// Envoy's response flags.
    pub response_flags: ResponseFlags,
}

impl<B> CountingBody<B> {
    /// Wraps `inner`, adding its data bytes to `count`.
    pub fn new(inner: B, count: Arc<AtomicU64>) -> Self {
        Self { inner, count }
    }
}

impl<B> Body for CountingBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.count.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl MeteredBody {
    /// Wraps `inner`; `pending` is recorded when the body ends or is dropped.
    pub fn new(inner: ResponseBody, pending: PendingRecord) -> Self {
        let mut body = Self {
            inner,
            pending: Some(pending),
        };
        // An empty body may never be polled: record it now.
        if body.inner.is_end_stream() {
            body.finish();
        }
        body
    }

    fn finish(&mut self) {
        if let Some(pending) = self.pending.take() {
            pending.record();
        }
    }
}

impl Body for MeteredBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(pending) = &mut self.pending {
                    if let Some(data) = frame.data_ref() {
                        pending.response_bytes += data.len() as u64;
                    }
                    if let Some(trailers) = frame.trailers_ref() {
                        pending.grpc_status_from(trailers);
                    }
                }
                if self.inner.is_end_stream() {
                    self.finish();
                }
            }
            Poll::Ready(None | Some(Err(_))) => self.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for MeteredBody {
    fn drop(&mut self) {
        // The client went away or hyper stopped reading: the request still counts.
        self.finish();
    }
}

impl PendingRecord {
    /// A record for a request that started at `started`, whose request body adds to
    /// `request_bytes`; `headers` are the response headers (a trailers-only gRPC response
    /// carries `grpc-status` there).
    pub fn new(
        metrics: Metrics,
        facts: &RequestFacts<'_>,
        headers: &HeaderMap,
        started: Instant,
        request_bytes: Arc<AtomicU64>,
    ) -> Self {
        let mut record = Self {
            metrics,
            labels: request_labels(facts),
            started,
            request_bytes,
            response_bytes: 0,
        };
        record.grpc_status_from(headers);
        record
    }

    fn grpc_status_from(&mut self, headers: &HeaderMap) {
        if self.labels.traffic.request_protocol != RequestProtocol::Grpc {
            return;
        }
        if let Some(status) = headers
            .get("grpc-status")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse().ok())
        {
            self.labels.grpc_response_status = Some(status);
        }
    }

    fn record(self) {
        let outcome = RequestOutcome {
            duration: self.started.elapsed(),
            request_bytes: self.request_bytes.load(Ordering::Relaxed),
            response_bytes: self.response_bytes,
        };
        self.metrics.record_request(&self.labels, outcome);
    }
}

/// Istio's labels for one request seen by the waypoint.
pub fn request_labels(facts: &RequestFacts<'_>) -> RequestLabels {
    let source = facts
        .source_workload
        .map(workload_labels)
        .or_else(|| facts.source_metadata.map(metadata_labels))
        .unwrap_or_default()
        .with_spiffe_principal(&facts.source_identity.to_string());
    let destination = facts
        .destination_workload
        .map(|workload| {
            workload_labels(workload).with_spiffe_principal(&workload.identity().to_string())
        })
        .unwrap_or_default();
    let destination_service = facts
        .destination_service
        .map(|service| ServiceLabels {
            hostname: Some(service.hostname().to_owned()),
            name: Some(service.name().to_owned()),
            namespace: Some(service.namespace().to_owned()),
        })
        .unwrap_or_default();
    let traffic = TrafficLabels {
        source,
        destination,
        destination_service,
        request_protocol: if facts.grpc {
            RequestProtocol::Grpc
        } else {
            RequestProtocol::Http
        },
        response_flags: facts.response_flags,
        // Everything reaches the waypoint over HBONE, i.e. mutual TLS.
        connection_security_policy: SecurityPolicy::MutualTls,
        ..TrafficLabels::new(Reporter::Waypoint)
    };
    let mut labels = RequestLabels::new(traffic);
    labels.response_code = Some(facts.response_code);
    labels
}

fn metadata_labels(metadata: &PeerMetadata) -> WorkloadLabels {
    WorkloadLabels {
        workload: metadata.workload.clone(),
        canonical_service: metadata.canonical_service.clone(),
        canonical_revision: metadata.canonical_revision.clone(),
        namespace: metadata.namespace.clone(),
        app: metadata.canonical_service.clone(),
        version: metadata.canonical_revision.clone(),
        cluster: metadata.cluster.clone(),
        ..WorkloadLabels::default()
    }
}

fn workload_labels(workload: &Workload) -> WorkloadLabels {
    let labels = workload.labels();
    WorkloadLabels {
        workload: Some(workload.name().to_owned()),
        canonical_service: Some(workload.canonical_name().to_owned()),
        canonical_revision: Some(workload.canonical_revision().to_owned()),
        namespace: Some(workload.namespace().to_owned()),
        app: labels.get("app").cloned(),
        version: labels.get("version").cloned(),
        ..WorkloadLabels::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ambit_telemetry::MetricsRegistry;
    use http_body_util::{BodyExt, Full};

    fn facts(identity: &SpiffeId, grpc: bool) -> RequestFacts<'_> {
        RequestFacts {
            source_identity: identity,
            source_workload: None,
            source_metadata: None,
            destination_service: None,
            destination_workload: None,
            grpc,
            response_code: 200,
            response_flags: ResponseFlags::NONE,
        }
    }

    #[tokio::test]
    async fn metered_body_counts_bytes_and_grpc_trailers() {
        let mut registry = MetricsRegistry::new();
        let metrics = Metrics::register(&mut registry);
        let identity = SpiffeId::new("cluster.local", "ns", "client").unwrap();
        let request_bytes = Arc::new(AtomicU64::new(0));
        let mut request = CountingBody::new(
            Full::new(Bytes::from_static(b"12345")),
            request_bytes.clone(),
        );
        while request.frame().await.is_some() {}
        assert_eq!(request_bytes.load(Ordering::Relaxed), 5);

        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "7".parse().unwrap());
        let inner = http_body_util::StreamBody::new(futures_util::stream::iter(vec![
            Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"abc"))),
            Ok(Frame::trailers(trailers)),
        ]))
        .boxed_unsync();
        let pending = PendingRecord::new(
            metrics,
            &facts(&identity, true),
            &HeaderMap::new(),
            Instant::now(),
            request_bytes,
        );
        let body = MeteredBody::new(inner, pending);
        body.collect().await.unwrap();
        let text = registry.encode().unwrap();
        assert!(text.contains("grpc_response_status=\"7\""), "{text}");
        assert!(text.contains("request_protocol=\"grpc\""), "{text}");
        assert!(text.contains("reporter=\"waypoint\""), "{text}");
        assert!(
            text.contains("source_principal=\"cluster.local/ns/ns/sa/client\""),
            "{text}"
        );
        let sum = |family: &str| {
            text.lines()
                .find(|line| line.starts_with(&format!("{family}_sum")))
                .and_then(|line| line.rsplit(' ').next())
                .map(str::to_owned)
        };
        assert_eq!(sum("istio_request_bytes").as_deref(), Some("5.0"), "{text}");
        assert_eq!(
            sum("istio_response_bytes").as_deref(),
            Some("3.0"),
            "{text}"
        );
    }

    #[test]
    fn a_dropped_body_is_still_recorded_once() {
        let mut registry = MetricsRegistry::new();
        let metrics = Metrics::register(&mut registry);
        let identity = SpiffeId::new("cluster.local", "ns", "client").unwrap();
        let pending = PendingRecord::new(
            metrics,
            &facts(&identity, false),
            &HeaderMap::new(),
            Instant::now(),
            Arc::new(AtomicU64::new(0)),
        );
        let inner = Full::new(Bytes::from_static(b"unsent"))
            .map_err(|never| match never {})
            .boxed_unsync();
        drop(MeteredBody::new(inner, pending));
        let text = registry.encode().unwrap();
        let total = text
            .lines()
            .find(|line| line.starts_with("istio_requests_total{"))
            .unwrap();
        assert!(total.ends_with(" 1"), "{text}");
        assert!(total.contains("grpc_response_status=\"\""), "{text}");
    }

    #[test]
    fn a_client_outside_the_snapshot_is_labelled_from_its_baggage() {
        let identity = SpiffeId::new("cluster.local", "shop", "cart").unwrap();
        let metadata = PeerMetadata {
            namespace: Some("shop".into()),
            workload: Some("cart".into()),
            canonical_service: Some("cart".into()),
            canonical_revision: Some("v2".into()),
            cluster: None,
        };
        let mut with_baggage = facts(&identity, false);
        with_baggage.source_metadata = Some(&metadata);
        let source = request_labels(&with_baggage).traffic.source;
        assert_eq!(source.workload.as_deref(), Some("cart"));
        assert_eq!(source.namespace.as_deref(), Some("shop"));
        assert_eq!(source.canonical_revision.as_deref(), Some("v2"));
        assert_eq!(
            source.principal.as_deref(),
            Some("cluster.local/ns/shop/sa/cart")
        );
        let without = request_labels(&facts(&identity, false)).traffic.source;
        assert_eq!(without.workload, None);
    }
}
