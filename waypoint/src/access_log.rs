//! One JSON access-log line per request, emitted through `tracing` at INFO with the target
//! [`TARGET`] once the response's last byte is sent (so `bytes_sent` and `duration_ms` are
//! final). With the waypoint's `--access-log` flag the lines go to stdout with the other
//! logs; `RUST_LOG=ambit_waypoint::access_log=info` selects them alone.
//!
//! The line is a JSON object with Envoy-like field names:
//! `start_time` (ms since the epoch), `method`, `authority`, `path`, `protocol`,
//! `response_code`, `response_flags`, `bytes_received`, `bytes_sent`, `duration_ms`,
//! `upstream_host`, `upstream_cluster`, `route_name`, `source_principal`, `source_address`,
//! `destination_address`, `destination_principal`, `trace_id`, `request_id`, `attempts`,
//! `error`.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use serde::Serialize;

use crate::errors::{BoxError, ResponseBody};

/// The `tracing` target of access-log lines.
pub const TARGET: &str = "ambit_waypoint::access_log";

/// Everything a line says, collected while the request moves through the stack.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AccessRecord {
    /// Request start, milliseconds since the Unix epoch.
    pub start_time: u64,
    /// HTTP method.
    pub method: String,
    /// `:authority` / `Host`.
    pub authority: String,
    /// Path and query as received.
    pub path: String,
    /// `HTTP/1.1` or `HTTP/2`.
    pub protocol: String,
    /// Status sent downstream.
    pub response_code: u16,
    /// Envoy response flags, `-` when none.
    pub response_flags: String,
    /// Request body bytes read from the client.
    pub bytes_received: u64,
    /// Response body bytes sent to the client.
    pub bytes_sent: u64,
    /// Start to last response byte.
    pub duration_ms: u64,
    /// The endpoint of the last try.
    pub upstream_host: Option<String>,
    /// The backend service (`name.namespace:port`).
    pub upstream_cluster: Option<String>,
    /// `route#rule` that matched.
    pub route_name: Option<String>,
    /// The client's SPIFFE ID (from the HBONE connection).
    pub source_principal: String,
    /// The original client address.
    pub source_address: String,
    /// The tunnel's destination (service VIP:port or pod IP:port).
    pub destination_address: String,
    /// The identity of the endpoint's workload, if one was chosen.
    pub destination_principal: Option<String>,
    /// The W3C trace id of the waypoint's span.
    pub trace_id: String,
    /// `x-request-id`.
    pub request_id: String,
    /// Tries made upstream.
    pub attempts: u32,
    /// Why the waypoint answered itself, if it did.
    pub error: Option<String>,
}

/// A response body that calls `on_end(bytes_sent)` once, when its last frame is sent or it is
/// dropped early.
pub struct ObservedBody {
    inner: ResponseBody,
    sent: u64,
    on_end: Option<Box<dyn FnOnce(u64) + Send>>,
}

impl AccessRecord {
    /// A record started now.
    pub fn started_at(now: SystemTime) -> Self {
        let start_time = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Self {
            start_time,
            ..Self::default()
        }
    }

    /// Completes the record and writes the line.
    pub fn emit(mut self, started: Instant, request_bytes: &Arc<AtomicU64>, bytes_sent: u64) {
        self.bytes_received = request_bytes.load(Ordering::Relaxed);
        self.bytes_sent = bytes_sent;
        self.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        match serde_json::to_string(&self) {
            Ok(line) => tracing::info!(target: TARGET, "{line}"),
            Err(err) => tracing::warn!(%err, "access log line not written"),
        }
    }
}

impl ObservedBody {
    /// Wraps `inner`.
    pub fn new(inner: ResponseBody, on_end: impl FnOnce(u64) + Send + 'static) -> Self {
        let mut body = Self {
            inner,
            sent: 0,
            on_end: Some(Box::new(on_end)),
        };
        // An empty body may never be polled.
        if body.inner.is_end_stream() {
            body.finish();
        }
        body
    }

    fn finish(&mut self) {
        if let Some(on_end) = self.on_end.take() {
            on_end(self.sent);
        }
    }
}

impl Body for ObservedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.sent += data.len() as u64;
                }
                if self.inner.is_end_stream() {
                    self.finish();
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => self.finish(),
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

impl Drop for ObservedBody {
    fn drop(&mut self) {
        self.finish();
    }
}

impl std::fmt::Debug for ObservedBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObservedBody")
            .field("sent", &self.sent)
            .finish_non_exhaustive()
    }
}
