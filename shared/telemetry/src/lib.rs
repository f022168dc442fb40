//! Ambit's telemetry: logging with a runtime-adjustable filter, Prometheus metrics with
//! Istio's names and labels (so Istio dashboards and Kiali work unchanged), and access-log
//! records.
//!
//! # Pieces
//! - [`init_logging`] installs the process logger and returns a [`LogHandle`] whose
//!   [`set_level`](LogHandle::set_level) backs the admin `/logging` endpoint.
//! - [`MetricsRegistry`] owns the Prometheus registry; [`Metrics::register`] adds the Istio
//!   TCP and HTTP families and Ambit's error counters. The data path calls
//!   [`Metrics::tcp_connection`] once per connection and records bytes on the returned
//!   [`ConnectionGuard`] without locks; [`Metrics::record_request`] once per HTTP request.
//! - [`AccessLog`] is one structured event (target `access`) per connection.
//!
//! # Not done yet
//! OpenTelemetry tracing (spans exported over OTLP) is not wired in. The extension point is
//! [`logging::subscriber`]'s layer stack: an OTLP layer would be added there next to the
//! output layer, configured by the component that knows the collector endpoint.
#![forbid(unsafe_code)]

pub mod access;
mod connection;
pub mod labels;
pub mod logging;
pub mod metrics;
#[cfg(test)]
mod test_support;

pub use access::AccessLog;
pub use connection::{ByteCount, ByteSource, ConnectionGuard, ConnectionSummary};
pub use labels::{
    Reporter, RequestLabels, RequestProtocol, ResponseFlags, SecurityPolicy, ServiceLabels,
    TrafficLabels, WorkloadLabels,
};
pub use logging::{LogHandle, LoggingError, init_logging};
pub use metrics::{ErrorReason, Metrics, MetricsRegistry, RequestOutcome};
