//! Access-log records: one structured `tracing` event (target `access`) per connection.
//!
//! With JSON logging each record is one line whose fields are `src.addr`, `src.workload`,
//! `src.namespace`, `src.identity`, `dst.addr`, `dst.hbone_addr`, `dst.service`,
//! `dst.workload`, `dst.namespace`, `dst.identity`, `direction`, `bytes_sent`, `bytes_recv`,
//! `duration_ms`, `response_flags` and, on failure, `error`. Absent values are omitted.

use std::net::SocketAddr;
use std::time::Duration;

use crate::connection::ConnectionSummary;
use crate::labels::{Reporter, ResponseFlags, SecurityPolicy, TrafficLabels, WorkloadLabels};

/// The `tracing` target of access-log events, so filters can route or silence them.
pub const TARGET: &str = "access";

/// One access-log record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AccessLog {
    /// Who reports: a source proxy logs `outbound`, any other `inbound`.
    pub reporter: Reporter,
    /// Client address.
    pub src_addr: Option<SocketAddr>,
    /// Client workload name.
    pub src_workload: Option<String>,
    /// Client namespace.
    pub src_namespace: Option<String>,
    /// Client SPIFFE ID, only when authenticated by mutual TLS.
    pub src_identity: Option<String>,
    /// Server address as connected to (pod or waypoint).
    pub dst_addr: Option<SocketAddr>,
    /// HBONE `:authority`, when tunnelled.
    pub dst_hbone_addr: Option<String>,
    /// Service hostname the client addressed.
    pub dst_service: Option<String>,
    /// Server workload name.
    pub dst_workload: Option<String>,
    /// Server namespace.
    pub dst_namespace: Option<String>,
    /// Server SPIFFE ID, only when authenticated by mutual TLS.
    pub dst_identity: Option<String>,
    /// Bytes the local workload sent (for a source proxy the client, otherwise the server).
    pub bytes_sent: u64,
    /// Bytes the local workload received.
    pub bytes_recv: u64,
    /// How long the connection lasted.
    pub duration: Duration,
    /// Envoy-style response flags, `-` for none.
    pub response_flags: ResponseFlags,
    /// Why the connection failed, if it did.
    pub error: Option<String>,
}

impl AccessLog {
    /// A record for a finished connection, filled from its labels and byte counts.
    pub fn from_summary(
        summary: &ConnectionSummary,
        src_addr: SocketAddr,
        dst_addr: SocketAddr,
    ) -> Self {
        let labels = &summary.labels;
        let (bytes_sent, bytes_recv) = match labels.reporter {
            Reporter::Source => (
                summary.bytes.client_to_server,
                summary.bytes.server_to_client,
            ),
            Reporter::Destination | Reporter::Waypoint => (
                summary.bytes.server_to_client,
                summary.bytes.client_to_server,
            ),
        };
        Self {
            src_addr: Some(src_addr),
            dst_addr: Some(dst_addr),
            bytes_sent,
            bytes_recv,
            duration: summary.duration,
            ..Self::from_labels(labels)
        }
    }

    /// A record with the identities, workloads and service of `labels` and nothing else.
    pub fn from_labels(labels: &TrafficLabels) -> Self {
        let mtls = labels.connection_security_policy == SecurityPolicy::MutualTls;
        let identity = |w: &WorkloadLabels| {
            w.principal
                .as_deref()
                .filter(|_| mtls)
                .map(|p| format!("spiffe://{p}"))
        };
        Self {
            reporter: labels.reporter,
            src_workload: labels.source.workload.clone(),
            src_namespace: labels.source.namespace.clone(),
            src_identity: identity(&labels.source),
            dst_service: labels.destination_service.hostname.clone(),
            dst_workload: labels.destination.workload.clone(),
            dst_namespace: labels.destination.namespace.clone(),
            dst_identity: identity(&labels.destination),
            response_flags: labels.response_flags,
            ..Self::default()
        }
    }

    /// Sets the HBONE `:authority`.
    pub fn with_hbone_addr(mut self, authority: impl Into<String>) -> Self {
        self.dst_hbone_addr = Some(authority.into());
        self
    }

    /// Marks the connection as failed.
    pub fn with_error(mut self, error: &dyn std::error::Error) -> Self {
        self.error = Some(error.to_string());
        self
    }

    /// `outbound` for a source proxy, `inbound` otherwise.
    pub fn direction(&self) -> &'static str {
        match self.reporter {
            Reporter::Source => "outbound",
            Reporter::Destination | Reporter::Waypoint => "inbound",
        }
    }

    /// Emits the record: INFO when it succeeded, WARN with `error` when it failed.
    pub fn emit(&self) {
        let duration_ms = u64::try_from(self.duration.as_millis()).unwrap_or(u64::MAX);
        // `tracing` needs the level at compile time, hence one arm per level.
        macro_rules! access_event {
            ($level:expr) => {
                tracing::event!(
                    target: "access",
                    parent: None,
                    $level,
                    src.addr = self.src_addr.map(tracing::field::display),
                    src.workload = self.src_workload.as_deref(),
                    src.namespace = self.src_namespace.as_deref(),
                    src.identity = self.src_identity.as_deref(),
                    dst.addr = self.dst_addr.map(tracing::field::display),
                    dst.hbone_addr = self.dst_hbone_addr.as_deref(),
                    dst.service = self.dst_service.as_deref(),
                    dst.workload = self.dst_workload.as_deref(),
                    dst.namespace = self.dst_namespace.as_deref(),
                    dst.identity = self.dst_identity.as_deref(),
                    direction = self.direction(),
                    bytes_sent = self.bytes_sent,
                    bytes_recv = self.bytes_recv,
                    duration_ms,
                    response_flags = self.response_flags.as_str(),
                    error = self.error.as_deref(),
                    "connection complete"
                )
            };
        }
        if self.error.is_some() {
            access_event!(tracing::Level::WARN);
        } else {
            access_event!(tracing::Level::INFO);
        }
    }
}

#[cfg(test)]
#[path = "access_tests.rs"]
mod tests;
