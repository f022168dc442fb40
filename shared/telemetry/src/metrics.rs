//! The Prometheus registry and the metric families every Ambit proxy exports.
//!
//! | metric (as scraped) | type | labels |
//! |---|---|---|
//! | `istio_tcp_connections_opened_total` | counter | [`TrafficLabels`] |
//! | `istio_tcp_connections_closed_total` | counter | [`TrafficLabels`] |
//! | `istio_tcp_received_bytes_total` | counter | [`TrafficLabels`]; client → server bytes |
//! | `istio_tcp_sent_bytes_total` | counter | [`TrafficLabels`]; server → client bytes |
//! | `istio_requests_total` | counter | [`RequestLabels`] |
//! | `istio_request_duration_milliseconds` | histogram | [`RequestLabels`] |
//! | `istio_request_bytes` | histogram | [`RequestLabels`] |
//! | `istio_response_bytes` | histogram | [`RequestLabels`] |
//! | `ambit_*_errors_total` | counter | `reason`, see [`ErrorReason`] |
//!
//! prometheus-client appends `_total` to counters itself, so counters are registered without
//! it. The histograms use Envoy's default buckets, which is what Istio's proxies export.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::connection::ConnectionGuard;
use crate::labels::{RequestLabels, TrafficLabels};

/// The HTTP `Content-Type` of [`MetricsRegistry::encode`]'s output (OpenMetrics text).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Envoy's default histogram buckets, used by Istio for request durations (milliseconds)
/// and request/response sizes (bytes).
pub const ISTIO_BUCKETS: [f64; 19] = [
    0.5,
    1.0,
    5.0,
    10.0,
    25.0,
    50.0,
    100.0,
    250.0,
    500.0,
    1_000.0,
    2_500.0,
    5_000.0,
    10_000.0,
    30_000.0,
    60_000.0,
    300_000.0,
    600_000.0,
    1_800_000.0,
    3_600_000.0,
];

/// Owns the Prometheus registry; register every family before serving `/metrics`.
#[derive(Debug, Default)]
pub struct MetricsRegistry {
    registry: Registry,
}

/// Encoding the registry failed (only a broken custom label encoder can cause this).
#[derive(Debug, thiserror::Error)]
#[error("encoding metrics failed")]
pub struct EncodeError(#[from] fmt::Error);

/// The metric families of the data path. Cheap to clone: every family is shared.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub(crate) tcp: Arc<TcpFamilies>,
    http: Arc<HttpFamilies>,
    errors: Arc<ErrorFamilies>,
}

/// The `istio_tcp_*` families.
#[derive(Debug, Default)]
pub(crate) struct TcpFamilies {
    pub(crate) opened: Family<TrafficLabels, Counter>,
    pub(crate) closed: Family<TrafficLabels, Counter>,
    pub(crate) received_bytes: Family<TrafficLabels, Counter>,
    pub(crate) sent_bytes: Family<TrafficLabels, Counter>,
}

type HistogramFamily = Family<RequestLabels, Histogram, fn() -> Histogram>;

/// The `istio_request*` families.
#[derive(Debug)]
struct HttpFamilies {
    requests: Family<RequestLabels, Counter>,
    duration_ms: HistogramFamily,
    request_bytes: HistogramFamily,
    response_bytes: HistogramFamily,
}

/// The `ambit_*_errors_total` families.
#[derive(Debug, Default)]
struct ErrorFamilies {
    hbone: Family<ReasonLabel, Counter>,
    http: Family<ReasonLabel, Counter>,
    dns: Family<ReasonLabel, Counter>,
    config: Family<ReasonLabel, Counter>,
    certificate: Family<ReasonLabel, Counter>,
}

/// The outcome of one HTTP request, for [`Metrics::record_request`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RequestOutcome {
    /// From the first request byte to the last response byte.
    pub duration: Duration,
    /// Request body bytes.
    pub request_bytes: u64,
    /// Response body bytes.
    pub response_bytes: u64,
}

/// Why something failed, counted in `ambit_<area>_errors_total{reason="…"}`.
///
/// A small, fixed set: each reason is a label value, so adding reasons must stay rare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorReason {
    /// `ambit_hbone_errors_total{reason="tls_handshake"}`: TLS handshake failed or the peer's
    /// certificate was rejected.
    HboneTlsHandshake,
    /// `ambit_hbone_errors_total{reason="h2_protocol"}`: HTTP/2 protocol error on a tunnel.
    HboneH2Protocol,
    /// `ambit_hbone_errors_total{reason="bad_request"}`: a CONNECT with a bad method or
    /// `:authority`.
    HboneBadRequest,
    /// `ambit_hbone_errors_total{reason="upstream_connect"}`: the upstream could not be reached.
    HboneUpstreamConnect,
    /// `ambit_http_errors_total{reason="malformed_request"}`.
    HttpMalformedRequest,
    /// `ambit_http_errors_total{reason="headers_too_large"}`.
    HttpHeadersTooLarge,
    /// `ambit_http_errors_total{reason="header_timeout"}`: headers not received in time.
    HttpHeaderTimeout,
    /// `ambit_dns_errors_total{reason="malformed_query"}`.
    DnsMalformedQuery,
    /// `ambit_dns_errors_total{reason="upstream"}`: the upstream resolver failed.
    DnsUpstream,
    /// `ambit_config_errors_total{reason="rejected"}`: a config update was refused.
    ConfigRejected,
    /// `ambit_config_errors_total{reason="disconnected"}`: the config stream broke.
    ConfigDisconnected,
    /// `ambit_certificate_errors_total{reason="request_failed"}`: a CSR was refused or failed.
    CertificateRequestFailed,
}

/// Label set `{reason="…"}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ReasonLabel(&'static str);

impl MetricsRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The underlying registry, to register component-specific metrics.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// The whole registry in the OpenMetrics text format (see [`CONTENT_TYPE`]).
    pub fn encode(&self) -> Result<String, EncodeError> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

impl Metrics {
    /// Registers every family in `registry` and returns handles to them.
    pub fn register(registry: &mut MetricsRegistry) -> Self {
        let registry = &mut registry.registry;
        let tcp = TcpFamilies::default();
        registry.register(
            "istio_tcp_connections_opened",
            "The total number of TCP connections opened",
            tcp.opened.clone(),
        );
        registry.register(
            "istio_tcp_connections_closed",
            "The total number of TCP connections closed",
            tcp.closed.clone(),
        );
        registry.register(
            "istio_tcp_received_bytes",
            "Bytes received from the client (request direction) on TCP connections",
            tcp.received_bytes.clone(),
        );
        registry.register(
            "istio_tcp_sent_bytes",
            "Bytes sent to the client (response direction) on TCP connections",
            tcp.sent_bytes.clone(),
        );

        let http = HttpFamilies {
            requests: Family::default(),
            duration_ms: Family::new_with_constructor(istio_histogram),
            request_bytes: Family::new_with_constructor(istio_histogram),
            response_bytes: Family::new_with_constructor(istio_histogram),
        };
        registry.register(
            "istio_requests",
            "The total number of HTTP requests handled",
            http.requests.clone(),
        );
        registry.register(
            "istio_request_duration_milliseconds",
            "Duration of HTTP requests in milliseconds",
            http.duration_ms.clone(),
        );
        registry.register(
            "istio_request_bytes",
            "Sizes of HTTP request bodies in bytes",
            http.request_bytes.clone(),
        );
        registry.register(
            "istio_response_bytes",
            "Sizes of HTTP response bodies in bytes",
            http.response_bytes.clone(),
        );

        let errors = ErrorFamilies::default();
        registry.register(
            "ambit_hbone_errors",
            "HBONE connections or streams that failed, by reason",
            errors.hbone.clone(),
        );
        registry.register(
            "ambit_http_errors",
            "HTTP requests refused as malformed or abusive, by reason",
            errors.http.clone(),
        );
        registry.register(
            "ambit_dns_errors",
            "DNS queries that failed, by reason",
            errors.dns.clone(),
        );
        registry.register(
            "ambit_config_errors",
            "Configuration updates that failed, by reason",
            errors.config.clone(),
        );
        registry.register(
            "ambit_certificate_errors",
            "Certificate requests that failed, by reason",
            errors.certificate.clone(),
        );

        Self {
            tcp: Arc::new(tcp),
            http: Arc::new(http),
            errors: Arc::new(errors),
        }
    }

    /// Counts a TCP connection as opened; the guard counts it closed when dropped or finished.
    pub fn tcp_connection(&self, labels: TrafficLabels) -> ConnectionGuard {
        ConnectionGuard::open(self.clone(), labels)
    }

    /// Records one finished HTTP request.
    pub fn record_request(&self, labels: &RequestLabels, outcome: RequestOutcome) {
        let http = &self.http;
        http.requests.get_or_create(labels).inc();
        http.duration_ms
            .get_or_create(labels)
            .observe(outcome.duration.as_secs_f64() * 1_000.0);
        // Histograms take f64; sizes above 2^53 bytes lose precision, which no bucket notices.
        http.request_bytes
            .get_or_create(labels)
            .observe(outcome.request_bytes as f64);
        http.response_bytes
            .get_or_create(labels)
            .observe(outcome.response_bytes as f64);
    }

    /// Counts one error.
    pub fn count_error(&self, reason: ErrorReason) {
        let errors = &self.errors;
        let family = match reason {
            ErrorReason::HboneTlsHandshake
            | ErrorReason::HboneH2Protocol
            | ErrorReason::HboneBadRequest
            | ErrorReason::HboneUpstreamConnect => &errors.hbone,
            ErrorReason::HttpMalformedRequest
            | ErrorReason::HttpHeadersTooLarge
            | ErrorReason::HttpHeaderTimeout => &errors.http,
            ErrorReason::DnsMalformedQuery | ErrorReason::DnsUpstream => &errors.dns,
            ErrorReason::ConfigRejected | ErrorReason::ConfigDisconnected => &errors.config,
            ErrorReason::CertificateRequestFailed => &errors.certificate,
        };
        family.get_or_create(&ReasonLabel(reason.as_str())).inc();
    }
}

impl ErrorReason {
    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HboneTlsHandshake => "tls_handshake",
            Self::HboneH2Protocol => "h2_protocol",
            Self::HboneBadRequest => "bad_request",
            Self::HboneUpstreamConnect => "upstream_connect",
            Self::HttpMalformedRequest => "malformed_request",
            Self::HttpHeadersTooLarge => "headers_too_large",
            Self::HttpHeaderTimeout => "header_timeout",
            Self::DnsMalformedQuery => "malformed_query",
            Self::DnsUpstream => "upstream",
            Self::ConfigRejected => "rejected",
            Self::ConfigDisconnected => "disconnected",
            Self::CertificateRequestFailed => "request_failed",
        }
    }
}

impl EncodeLabelSet for ReasonLabel {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), fmt::Error> {
        use prometheus_client::encoding::EncodeLabel as _;
        ("reason", self.0).encode(encoder.encode_label())
    }
}

fn istio_histogram() -> Histogram {
    Histogram::new(ISTIO_BUCKETS)
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
