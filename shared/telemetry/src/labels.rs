//! Metric label sets with Istio's exact label names, order and defaults.
//!
//! Istio dashboards and Kiali query these labels by name, so the names here are a public
//! contract: see "Istio Standard Metrics" in Istio's reference docs. Any value that is not
//! known is exported as the string `unknown`, as Istio does.

use std::fmt;

use prometheus_client::encoding::{EncodeLabelSet, LabelSetEncoder};

/// The value exported for any label whose value is not known.
pub const UNKNOWN: &str = "unknown";

/// Which proxy reports a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Reporter {
    /// The proxy on the client's side (ztunnel outbound).
    #[default]
    Source,
    /// The proxy on the server's side (ztunnel inbound).
    Destination,
    /// A waypoint, which Istio ambient reports as `waypoint`.
    Waypoint,
}

/// The protocol of a connection or request, label `request_protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RequestProtocol {
    /// Opaque TCP.
    #[default]
    Tcp,
    /// HTTP/1.1 or HTTP/2.
    Http,
    /// gRPC.
    Grpc,
}

/// Label `connection_security_policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SecurityPolicy {
    /// Not known, or plaintext: what Istio reports for anything but mutual TLS.
    #[default]
    Unknown,
    /// The connection was carried over mutual TLS (HBONE).
    MutualTls,
}

/// Label `response_flags`: Envoy-style short codes, `-` when there is nothing to report.
///
/// Several flags are joined with commas by the caller when needed (`UT,URX`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResponseFlags(&'static str);

/// What a workload at one end of a connection is, for the `source_*`/`destination_*` labels.
///
/// `None` fields are exported as `unknown`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct WorkloadLabels {
    /// Workload name (Deployment, StatefulSet… or the pod name when there is no owner).
    pub workload: Option<String>,
    /// Canonical service (`service.istio.io/canonical-name`, else the `app` label).
    pub canonical_service: Option<String>,
    /// Canonical revision (`service.istio.io/canonical-revision`, else the `version` label).
    pub canonical_revision: Option<String>,
    /// The workload's namespace.
    pub namespace: Option<String>,
    /// SPIFFE identity, without the `spiffe://` scheme as Istio exports it.
    pub principal: Option<String>,
    /// The `app` label.
    pub app: Option<String>,
    /// The `version` label.
    pub version: Option<String>,
    /// Cluster ID.
    pub cluster: Option<String>,
}

/// The service a connection or request was addressed to, for `destination_service*`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ServiceLabels {
    /// Fully qualified hostname, e.g. `details.default.svc.cluster.local`.
    pub hostname: Option<String>,
    /// Service name, e.g. `details`.
    pub name: Option<String>,
    /// Service namespace.
    pub namespace: Option<String>,
}

/// The labels of the TCP metrics (`istio_tcp_*`), and the peer part of the HTTP ones.
///
/// Built once per connection; cloned into the metric families only the first time a label
/// combination is seen.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct TrafficLabels {
    /// Label `reporter`.
    pub reporter: Reporter,
    /// The client end.
    pub source: WorkloadLabels,
    /// The server end.
    pub destination: WorkloadLabels,
    /// The service addressed, if the client addressed one.
    pub destination_service: ServiceLabels,
    /// Label `request_protocol`.
    pub request_protocol: RequestProtocol,
    /// Label `response_flags`.
    pub response_flags: ResponseFlags,
    /// Label `connection_security_policy`.
    pub connection_security_policy: SecurityPolicy,
}

/// Labels of the HTTP request metrics (`istio_requests_total` and the histograms).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct RequestLabels {
    /// Peers, protocol, response flags and security policy.
    pub traffic: TrafficLabels,
    /// HTTP status code sent to the client; `None` (exported as `0`, as Envoy does) when no
    /// response was sent.
    pub response_code: Option<u16>,
    /// gRPC status code, for gRPC requests.
    pub grpc_response_status: Option<u32>,
}

impl Reporter {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Source => "source",
            Self::Destination => "destination",
            Self::Waypoint => "waypoint",
        }
    }
}

impl RequestProtocol {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Http => "http",
            Self::Grpc => "grpc",
        }
    }
}

impl SecurityPolicy {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::MutualTls => "mutual_tls",
        }
    }
}

impl ResponseFlags {
    /// Nothing to report.
    pub const NONE: Self = Self("-");
    /// ztunnel: denied by authorization policy (Istio ztunnel's `DENY`).
    pub const DENIED: Self = Self("DENY");
    /// ztunnel: the upstream connection could not be established (Istio ztunnel's `CONNECT`).
    pub const CONNECT_FAILURE: Self = Self("CONNECT");
    /// Waypoint: no healthy upstream (`UH`).
    pub const NO_HEALTHY_UPSTREAM: Self = Self("UH");
    /// Waypoint: upstream connection failure (`UF`).
    pub const UPSTREAM_CONNECT_FAILURE: Self = Self("UF");
    /// Waypoint: circuit breaker overflow (`UO`).
    pub const UPSTREAM_OVERFLOW: Self = Self("UO");
    /// Waypoint: upstream request timeout (`UT`).
    pub const UPSTREAM_TIMEOUT: Self = Self("UT");
    /// Waypoint: retry limit exceeded (`URX`).
    pub const UPSTREAM_RETRY_LIMIT: Self = Self("URX");
    /// Waypoint: denied by RBAC policy (`RBAC`).
    pub const RBAC_DENIED: Self = Self("RBAC");
    /// Waypoint: no route matched (`NR`).
    pub const NO_ROUTE: Self = Self("NR");
    /// Waypoint: rate limited locally (`RL`).
    pub const RATE_LIMITED: Self = Self("RL");
    /// Waypoint: fault injection aborted the request (`FI`).
    pub const FAULT_INJECTED: Self = Self("FI");
    /// Waypoint: fault injection delayed the request (`DI`).
    pub const DELAY_INJECTED: Self = Self("DI");
    /// The downstream connection ended early (`DC`).
    pub const DOWNSTREAM_TERMINATED: Self = Self("DC");

    /// Another Envoy-style code or comma-joined combination, e.g. `"UT,URX"`.
    pub const fn from_static(code: &'static str) -> Self {
        Self(code)
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        self.0
    }
}

impl Default for ResponseFlags {
    fn default() -> Self {
        Self::NONE
    }
}

impl fmt::Display for ResponseFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl WorkloadLabels {
    /// Sets `principal` from a SPIFFE ID, dropping the `spiffe://` scheme as Istio does
    /// (`cluster.local/ns/default/sa/bookinfo`).
    pub fn with_spiffe_principal(mut self, spiffe_id: &str) -> Self {
        let principal = spiffe_id.strip_prefix("spiffe://").unwrap_or(spiffe_id);
        self.principal = Some(principal.to_owned());
        self
    }
}

impl TrafficLabels {
    /// Labels for a TCP connection reported by `reporter`, everything else unknown.
    pub fn new(reporter: Reporter) -> Self {
        Self {
            reporter,
            ..Self::default()
        }
    }

    /// Writes the labels in Istio's order. `response_code`/`grpc_response_status` go between
    /// the protocol and the flags, as in Istio's HTTP metrics.
    fn encode_with(
        &self,
        encoder: &mut LabelSetEncoder,
        http: Option<&RequestLabels>,
    ) -> Result<(), fmt::Error> {
        let source = &self.source;
        let destination = &self.destination;
        let service = &self.destination_service;
        label(encoder, "reporter", self.reporter.as_str())?;
        label(encoder, "source_workload", known(&source.workload))?;
        label(
            encoder,
            "source_canonical_service",
            known(&source.canonical_service),
        )?;
        label(
            encoder,
            "source_canonical_revision",
            known(&source.canonical_revision),
        )?;
        label(
            encoder,
            "source_workload_namespace",
            known(&source.namespace),
        )?;
        label(encoder, "source_principal", known(&source.principal))?;
        label(encoder, "source_app", known(&source.app))?;
        label(encoder, "source_version", known(&source.version))?;
        label(encoder, "source_cluster", known(&source.cluster))?;
        label(encoder, "destination_service", known(&service.hostname))?;
        label(
            encoder,
            "destination_service_namespace",
            known(&service.namespace),
        )?;
        label(encoder, "destination_service_name", known(&service.name))?;
        label(
            encoder,
            "destination_workload",
            known(&destination.workload),
        )?;
        label(
            encoder,
            "destination_canonical_service",
            known(&destination.canonical_service),
        )?;
        label(
            encoder,
            "destination_canonical_revision",
            known(&destination.canonical_revision),
        )?;
        label(
            encoder,
            "destination_workload_namespace",
            known(&destination.namespace),
        )?;
        label(
            encoder,
            "destination_principal",
            known(&destination.principal),
        )?;
        label(encoder, "destination_app", known(&destination.app))?;
        label(encoder, "destination_version", known(&destination.version))?;
        label(encoder, "destination_cluster", known(&destination.cluster))?;
        label(encoder, "request_protocol", self.request_protocol.as_str())?;
        if let Some(http) = http {
            label(encoder, "response_code", http.response_code.unwrap_or(0))?;
            match http.grpc_response_status {
                Some(status) => label(encoder, "grpc_response_status", status)?,
                None => label(encoder, "grpc_response_status", "")?,
            }
        }
        label(encoder, "response_flags", self.response_flags.as_str())?;
        label(
            encoder,
            "connection_security_policy",
            self.connection_security_policy.as_str(),
        )
    }
}

impl RequestLabels {
    /// Labels for an HTTP request with the given peers; the protocol defaults to `http`.
    pub fn new(traffic: TrafficLabels) -> Self {
        Self {
            traffic,
            response_code: None,
            grpc_response_status: None,
        }
    }
}

impl EncodeLabelSet for TrafficLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), fmt::Error> {
        self.encode_with(encoder, None)
    }
}

impl EncodeLabelSet for RequestLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), fmt::Error> {
        self.traffic.encode_with(encoder, Some(self))
    }
}

fn known(value: &Option<String>) -> &str {
    match value.as_deref() {
        Some(v) if !v.is_empty() => v,
        _ => UNKNOWN,
    }
}

fn label<V>(encoder: &mut LabelSetEncoder, key: &str, value: V) -> Result<(), fmt::Error>
where
    V: prometheus_client::encoding::EncodeLabelValue,
{
    use prometheus_client::encoding::EncodeLabel as _;
    (key, value).encode(encoder.encode_label())
}

#[cfg(test)]
#[path = "labels_tests.rs"]
mod tests;
