//! Counters of the DNS proxy: plain atomics that a metrics exporter reads when scraped.

use std::sync::atomic::{AtomicU64, Ordering};

/// Why a query did not get a normal answer.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Failure {
    /// Not a DNS query that could be read: answered FORMERR, or dropped without a header.
    Malformed,
    /// A well-formed query the proxy does not serve (opcode other than QUERY, class other
    /// than IN): answered NOTIMP.
    Unsupported,
    /// No upstream resolver answered in time: SERVFAIL.
    UpstreamTimeout,
    /// No upstream resolver could be reached or gave a valid answer: SERVFAIL.
    UpstreamError,
    /// Dropped because the server was at its concurrency limit.
    Overloaded,
    /// The answer could not be encoded or sent back to the client.
    ReplyFailed,
}

/// Counters of one DNS proxy (or several sharing them).
#[derive(Debug, Default)]
pub struct DnsMetrics {
    requests: AtomicU64,
    mesh_answers: AtomicU64,
    forwarded: AtomicU64,
    failures: [AtomicU64; Failure::ALL.len()],
    /// Where failures are also counted as `ambit_dns_errors_total{reason}`, if anywhere.
    telemetry: Option<crate::observe::Telemetry>,
}

impl Failure {
    /// Every reason, e.g. to export one labelled counter each.
    pub const ALL: [Failure; 6] = [
        Failure::Malformed,
        Failure::Unsupported,
        Failure::UpstreamTimeout,
        Failure::UpstreamError,
        Failure::Overloaded,
        Failure::ReplyFailed,
    ];

    /// A short label for metrics and logs, e.g. `upstream_timeout`.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Malformed => "malformed",
            Failure::Unsupported => "unsupported",
            Failure::UpstreamTimeout => "upstream_timeout",
            Failure::UpstreamError => "upstream_error",
            Failure::Overloaded => "overloaded",
            Failure::ReplyFailed => "reply_failed",
        }
    }

    fn index(self) -> usize {
        match self {
            Failure::Malformed => 0,
            Failure::Unsupported => 1,
            Failure::UpstreamTimeout => 2,
            Failure::UpstreamError => 3,
            Failure::Overloaded => 4,
            Failure::ReplyFailed => 5,
        }
    }
}

impl DnsMetrics {
    /// Counters that also count malformed queries and upstream failures in the node's
    /// `ambit_dns_errors_total`.
    pub fn with_telemetry(telemetry: crate::observe::Telemetry) -> Self {
        Self {
            telemetry: Some(telemetry),
            ..Self::default()
        }
    }

    /// Messages received from clients, well-formed or not.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Queries answered from mesh names, without asking upstream.
    pub fn mesh_answers(&self) -> u64 {
        self.mesh_answers.load(Ordering::Relaxed)
    }

    /// Queries sent on to an upstream resolver (whether or not it answered).
    pub fn forwarded(&self) -> u64 {
        self.forwarded.load(Ordering::Relaxed)
    }

    /// Queries that failed for `reason`.
    pub fn failures(&self, reason: Failure) -> u64 {
        self.failures[reason.index()].load(Ordering::Relaxed)
    }

    pub(crate) fn count_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_mesh_answer(&self) {
        self.mesh_answers.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_forwarded(&self) {
        self.forwarded.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_failure(&self, reason: Failure) {
        self.failures[reason.index()].fetch_add(1, Ordering::Relaxed);
        let error = match reason {
            Failure::Malformed => Some(ambit_telemetry::ErrorReason::DnsMalformedQuery),
            Failure::UpstreamTimeout | Failure::UpstreamError => {
                Some(ambit_telemetry::ErrorReason::DnsUpstream)
            }
            // No `ambit_dns_errors_total` reason exists for these; the proxy's own counters
            // keep them.
            Failure::Unsupported | Failure::Overloaded | Failure::ReplyFailed => None,
        };
        if let (Some(telemetry), Some(error)) = (&self.telemetry, error) {
            telemetry.count_error(error);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{DnsMetrics, Failure};

    #[test]
    fn each_reason_has_its_own_counter() {
        let metrics = DnsMetrics::default();
        for (times, reason) in Failure::ALL.into_iter().enumerate() {
            for _ in 0..=times {
                metrics.count_failure(reason);
            }
        }
        for (times, reason) in Failure::ALL.into_iter().enumerate() {
            assert_eq!(metrics.failures(reason), times as u64 + 1, "{reason:?}");
        }
        let labels: std::collections::HashSet<_> =
            Failure::ALL.iter().map(|f| f.as_str()).collect();
        assert_eq!(labels.len(), Failure::ALL.len());
    }
}
