//! Per-connection metrics: a guard that counts a TCP connection open, its bytes, and its close.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;

use crate::labels::{ResponseFlags, TrafficLabels};
use crate::metrics::Metrics;

/// Reads a connection's byte totals at close, e.g. from the live counters of a copy loop.
pub type ByteSource = Box<dyn Fn() -> ByteCount + Send + Sync>;

/// Bytes moved on one connection, by direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ByteCount {
    /// From the client to the server (Istio's "received", the request direction).
    pub client_to_server: u64,
    /// From the server to the client (Istio's "sent", the response direction).
    pub server_to_client: u64,
}

/// Counts one TCP connection: `istio_tcp_connections_opened_total` on creation, bytes as
/// they are recorded, and `istio_tcp_connections_closed_total` when finished or dropped.
///
/// The label set is built once per connection and the byte counters for it are looked up
/// once, so recording bytes is two relaxed atomic adds and takes no lock. Bytes are counted
/// under the labels the connection was opened with; [`set_response_flags`] only changes the
/// labels of the close.
///
/// [`set_response_flags`]: ConnectionGuard::set_response_flags
pub struct ConnectionGuard {
    metrics: Metrics,
    labels: TrafficLabels,
    opened_at: Instant,
    received_metric: Counter,
    sent_metric: Counter,
    client_to_server: AtomicU64,
    server_to_client: AtomicU64,
    byte_source: Option<ByteSource>,
    closed: bool,
}

/// What a finished connection did, for its access-log record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionSummary {
    /// The labels the close was counted under (with the final response flags).
    pub labels: TrafficLabels,
    /// Bytes moved in each direction.
    pub bytes: ByteCount,
    /// Time from open to close.
    pub duration: Duration,
}

impl ConnectionGuard {
    pub(crate) fn open(metrics: Metrics, labels: TrafficLabels) -> Self {
        let tcp = &metrics.tcp;
        tcp.opened.get_or_create(&labels).inc();
        // Counters are handles to shared atomics: cloning them once avoids a family lookup
        // (a read lock and a hash) on every write.
        let received_metric = tcp.received_bytes.get_or_create_owned(&labels);
        let sent_metric = tcp.sent_bytes.get_or_create_owned(&labels);
        Self {
            metrics,
            labels,
            opened_at: Instant::now(),
            received_metric,
            sent_metric,
            client_to_server: AtomicU64::new(0),
            server_to_client: AtomicU64::new(0),
            byte_source: None,
            closed: false,
        }
    }

    /// Records `bytes` moved from the client to the server (live: visible at the next scrape).
    pub fn record_client_to_server(&self, bytes: u64) {
        self.client_to_server.fetch_add(bytes, Ordering::Relaxed);
        self.received_metric.inc_by(bytes);
    }

    /// Records `bytes` moved from the server to the client (live: visible at the next scrape).
    pub fn record_server_to_client(&self, bytes: u64) {
        self.server_to_client.fetch_add(bytes, Ordering::Relaxed);
        self.sent_metric.inc_by(bytes);
    }

    /// Reads the byte totals from `source` when the connection closes, instead of (or on top
    /// of) recording them as they happen. Suits a copy loop that keeps its own live counters.
    pub fn set_byte_source(&mut self, source: ByteSource) {
        self.byte_source = Some(source);
    }

    /// The response flags the close is counted under (e.g. [`ResponseFlags::DENIED`]).
    pub fn set_response_flags(&mut self, flags: ResponseFlags) {
        self.labels.response_flags = flags;
    }

    /// The connection's labels.
    pub fn labels(&self) -> &TrafficLabels {
        &self.labels
    }

    /// Bytes recorded so far (not including a byte source, which is read at close).
    pub fn bytes(&self) -> ByteCount {
        ByteCount {
            client_to_server: self.client_to_server.load(Ordering::Relaxed),
            server_to_client: self.server_to_client.load(Ordering::Relaxed),
        }
    }

    /// Time since the connection was opened.
    pub fn elapsed(&self) -> Duration {
        self.opened_at.elapsed()
    }

    /// Counts the connection closed and returns what it did. Dropping the guard does the same
    /// without the summary.
    pub fn finish(mut self) -> ConnectionSummary {
        self.close();
        ConnectionSummary {
            labels: std::mem::take(&mut self.labels),
            bytes: self.bytes(),
            duration: self.elapsed(),
        }
    }

    fn close(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        if let Some(source) = self.byte_source.take() {
            let read = source();
            self.record_client_to_server(read.client_to_server);
            self.record_server_to_client(read.server_to_client);
        }
        self.metrics.tcp.closed.get_or_create(&self.labels).inc();
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.close();
    }
}

impl std::fmt::Debug for ConnectionGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionGuard")
            .field("labels", &self.labels)
            .field("bytes", &self.bytes())
            .field("elapsed", &self.elapsed())
            .field("has_byte_source", &self.byte_source.is_some())
            .finish()
    }
}
