//! Exports finished request spans over OTLP/gRPC (`opentelemetry-otlp` with tonic, plaintext
//! `http://` endpoints; no TLS crypto beyond the workspace's).
//!
//! The data path only does a non-blocking `try_send` into a bounded queue; one task batches
//! (up to [`MAX_BATCH`] spans or every [`FLUSH_INTERVAL`]) and exports. When the collector is
//! slow or gone, the queue fills and new spans are dropped and counted, never waited for.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanExporter as _};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::tracing_ctx::SpanAttributes;

/// Most spans sent in one export call.
pub const MAX_BATCH: usize = 512;
/// Longest a finished span waits before its batch is exported.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(500);
/// Spans queued for export before new ones are dropped.
const QUEUE: usize = 4096;

/// The sending side, cloned into every stack.
#[derive(Debug, Clone)]
pub struct SpanExport {
    sender: mpsc::Sender<FinishedSpan>,
    dropped: Arc<AtomicU64>,
}

/// The export task; dropping it stops exporting (queued spans are lost).
#[derive(Debug)]
pub struct SpanExportTask {
    task: JoinHandle<()>,
}

/// Why the exporter could not be built.
#[derive(Debug, thiserror::Error)]
#[error("OTLP exporter for {endpoint}: {reason}")]
pub struct ExportError {
    endpoint: String,
    reason: String,
}

/// A span ready for export.
#[derive(Debug)]
pub struct FinishedSpan {
    pub(crate) trace_id: [u8; 16],
    pub(crate) span_id: [u8; 8],
    pub(crate) parent_span_id: Option<[u8; 8]>,
    pub(crate) name: String,
    pub(crate) started: SystemTime,
    pub(crate) ended: SystemTime,
    pub(crate) attributes: SpanAttributes,
}

impl SpanExport {
    /// Starts exporting to the OTLP/gRPC collector at `endpoint` (e.g.
    /// `http://collector:4317`), as service `service_name`. Must run inside a tokio runtime.
    pub fn start(
        endpoint: &str,
        service_name: &str,
    ) -> Result<(Self, SpanExportTask), ExportError> {
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(Duration::from_secs(5))
            .build()
            .map_err(|err| ExportError {
                endpoint: endpoint.to_owned(),
                reason: err.to_string(),
            })?;
        exporter.set_resource(
            &Resource::builder_empty()
                .with_service_name(service_name.to_owned())
                .build(),
        );
        let (sender, receiver) = mpsc::channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(run(exporter, receiver, dropped.clone()));
        Ok((Self { sender, dropped }, SpanExportTask { task }))
    }

    /// Queues `span`; drops it if the queue is full.
    pub(crate) fn submit(&self, span: FinishedSpan) {
        if self.sender.try_send(span).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Spans dropped because the queue was full or the exporter had stopped.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for SpanExportTask {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(
    exporter: opentelemetry_otlp::SpanExporter,
    mut receiver: mpsc::Receiver<FinishedSpan>,
    dropped: Arc<AtomicU64>,
) {
    let scope = InstrumentationScope::builder("ambit-waypoint").build();
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        // Wait for the first span, then gather more for at most FLUSH_INTERVAL.
        let Some(first) = receiver.recv().await else {
            return;
        };
        batch.push(to_span_data(first, &scope));
        let deadline = tokio::time::Instant::now() + FLUSH_INTERVAL;
        while batch.len() < MAX_BATCH {
            match tokio::time::timeout_at(deadline, receiver.recv()).await {
                Ok(Some(span)) => batch.push(to_span_data(span, &scope)),
                Ok(None) | Err(_) => break,
            }
        }
        let count = batch.len();
        match exporter.export(std::mem::take(&mut batch)).await {
            Ok(()) => debug!(count, "exported spans"),
            Err(err) => {
                dropped.fetch_add(count as u64, Ordering::Relaxed);
                warn!(%err, count, "span export failed");
            }
        }
    }
}

fn to_span_data(span: FinishedSpan, scope: &InstrumentationScope) -> SpanData {
    let attributes = &span.attributes;
    let mut values = vec![
        KeyValue::new("http.request.method", attributes.method.clone()),
        KeyValue::new("url.path", attributes.path.clone()),
        KeyValue::new("server.address", attributes.authority.clone()),
        KeyValue::new("http.response.status_code", i64::from(attributes.status)),
        KeyValue::new("guid:x-request-id", attributes.request_id.clone()),
        KeyValue::new("source.principal", attributes.source_principal.clone()),
        KeyValue::new("response_flags", attributes.response_flags.clone()),
        KeyValue::new("component", "proxy"),
    ];
    if let Some(upstream) = &attributes.upstream {
        values.push(KeyValue::new("upstream_cluster", upstream.clone()));
    }
    let status = if attributes.status >= 500 {
        Status::error("")
    } else {
        Status::Unset
    };
    SpanData {
        span_context: SpanContext::new(
            TraceId::from_bytes(span.trace_id),
            SpanId::from_bytes(span.span_id),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: span
            .parent_span_id
            .map_or(SpanId::INVALID, SpanId::from_bytes),
        parent_span_is_remote: span.parent_span_id.is_some(),
        span_kind: SpanKind::Server,
        name: span.name.into(),
        start_time: span.started,
        end_time: span.ended,
        attributes: values,
        dropped_attributes_count: 0,
        events: Default::default(),
        links: Default::default(),
        status,
        instrumentation_scope: scope.clone(),
    }
}
