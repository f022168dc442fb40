//! Per-connection telemetry: Istio TCP metrics, one access-log line, and the live-connection
//! table behind the admin `/connections` endpoint.
//!
//! A proxy builds the labels once, opens a [`TrackedConnection`] and hands its
//! [`ByteCounters`] to the copy loop. Bytes stay in the copy loop's atomics while it runs; the
//! metrics read them at close and `/connections` reads them when asked. The table's lock is
//! taken only at open and close, never per byte.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use ambit_hbone::ByteCounters;
use ambit_model::{Service, Workload};
use ambit_runtime::{DrainWatch, TaskGuard};
use ambit_telemetry::{
    AccessLog, ByteCount, ConnectionGuard, ErrorReason, Metrics, MetricsRegistry, Reporter,
    ResponseFlags, ServiceLabels, TrafficLabels, WorkloadLabels,
};
use serde_json::{Value, json};

/// The node's telemetry sinks, shared by every proxy.
#[derive(Debug, Clone)]
pub struct Telemetry {
    metrics: Metrics,
    live: Arc<LiveConnections>,
    drain: Option<DrainWatch>,
}

/// Connections open right now, for `/connections`.
#[derive(Debug, Default)]
pub struct LiveConnections {
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, LiveEntry>>,
}

#[derive(Debug)]
struct LiveEntry {
    labels: TrafficLabels,
    src: SocketAddr,
    dst: SocketAddr,
    opened_at: Instant,
    counters: Arc<ByteCounters>,
}

/// One proxied connection being counted. Dropping it closes it: the close is counted with the
/// bytes from its counters, one access-log line is emitted and it leaves `/connections`.
#[derive(Debug)]
pub struct TrackedConnection {
    id: u64,
    live: Arc<LiveConnections>,
    guard: Option<ConnectionGuard>,
    src: SocketAddr,
    dst: SocketAddr,
    hbone_authority: Option<String>,
    error: Option<String>,
    counters: Arc<ByteCounters>,
    /// Held while the connection is open, so a drain waits for it.
    _drain_task: Option<TaskGuard>,
}

impl Telemetry {
    /// Registers the Istio families in `registry`.
    pub fn new(registry: &mut MetricsRegistry) -> Self {
        Self {
            metrics: Metrics::register(registry),
            live: Arc::new(LiveConnections::default()),
            drain: None,
        }
    }

    /// Makes every connection opened from now on a task `drain` waits for.
    pub fn with_drain(mut self, drain: DrainWatch) -> Self {
        self.drain = Some(drain);
        self
    }

    /// The drain watch, if any: listeners stop accepting once it drains.
    pub fn drain(&self) -> Option<&DrainWatch> {
        self.drain.as_ref()
    }

    /// Counts one failure in `ambit_<area>_errors_total{reason}`.
    pub fn count_error(&self, reason: ErrorReason) {
        self.metrics.count_error(reason);
    }

    /// Counts a connection from `src` to `dst` as opened under `labels`.
    pub fn open(
        &self,
        labels: TrafficLabels,
        src: SocketAddr,
        dst: SocketAddr,
    ) -> TrackedConnection {
        let counters = Arc::new(ByteCounters::default());
        let mut guard = self.metrics.tcp_connection(labels.clone());
        let source = counters.clone();
        guard.set_byte_source(Box::new(move || ByteCount {
            client_to_server: source.a_to_b(),
            server_to_client: source.b_to_a(),
        }));
        let id = self.live.next_id.fetch_add(1, Ordering::Relaxed);
        self.live.lock().insert(
            id,
            LiveEntry {
                labels,
                src,
                dst,
                opened_at: Instant::now(),
                counters: counters.clone(),
            },
        );
        TrackedConnection {
            id,
            live: self.live.clone(),
            guard: Some(guard),
            src,
            dst,
            hbone_authority: None,
            error: None,
            counters,
            _drain_task: self
                .drain
                .as_ref()
                .map(|drain| drain.track(format!("connection {src} -> {dst}"))),
        }
    }

    /// The live-connection table.
    pub fn live(&self) -> &Arc<LiveConnections> {
        &self.live
    }
}

impl LiveConnections {
    /// How many connections are open.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The open connections as JSON, oldest first: addresses, identities, bytes so far.
    pub fn dump(&self) -> Value {
        let open = self.lock();
        let mut entries: Vec<(&u64, &LiveEntry)> = open.iter().collect();
        entries.sort_by_key(|(id, _)| **id);
        let connections: Vec<Value> = entries
            .into_iter()
            .map(|(_, entry)| {
                let labels = &entry.labels;
                json!({
                    "direction": match labels.reporter {
                        Reporter::Source => "outbound",
                        Reporter::Destination | Reporter::Waypoint => "inbound",
                    },
                    "src": entry.src.to_string(),
                    "dst": entry.dst.to_string(),
                    "srcIdentity": labels.source.principal,
                    "dstIdentity": labels.destination.principal,
                    "srcWorkload": labels.source.workload,
                    "dstWorkload": labels.destination.workload,
                    "dstService": labels.destination_service.hostname,
                    "securityPolicy": labels.connection_security_policy.as_str(),
                    "bytesClientToServer": entry.counters.a_to_b(),
                    "bytesServerToClient": entry.counters.b_to_a(),
                    "durationMs": u64::try_from(entry.opened_at.elapsed().as_millis()).unwrap_or(u64::MAX),
                })
            })
            .collect();
        json!({ "connections": connections })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, LiveEntry>> {
        // The map holds no invariant a panicking holder could break halfway.
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl TrackedConnection {
    /// The counters the copy loop must update: `a` is the client side, `b` the server side.
    pub fn counters(&self) -> &ByteCounters {
        &self.counters
    }

    /// The response flags of the close (denied, connect failure…).
    pub fn fail(&mut self, flags: ResponseFlags, error: impl Into<String>) {
        if let Some(guard) = &mut self.guard {
            guard.set_response_flags(flags);
        }
        self.error = Some(error.into());
    }

    /// Records an error without changing the flags (e.g. a copy that ended with a reset).
    pub fn set_error(&mut self, error: impl Into<String>) {
        self.error = Some(error.into());
    }

    /// The HBONE `:authority`, for the access log.
    pub fn set_hbone_authority(&mut self, authority: impl Into<String>) {
        self.hbone_authority = Some(authority.into());
    }
}

impl Drop for TrackedConnection {
    fn drop(&mut self) {
        self.live.lock().remove(&self.id);
        let Some(guard) = self.guard.take() else {
            return;
        };
        let summary = guard.finish();
        let mut log = AccessLog::from_summary(&summary, self.src, self.dst);
        log.dst_hbone_addr = self.hbone_authority.take();
        log.error = self.error.take();
        log.emit();
    }
}

/// The `source_*`/`destination_*` labels of a workload from the state.
pub fn workload_labels(workload: &Workload) -> WorkloadLabels {
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
    .with_spiffe_principal(&workload.identity().to_string())
}

/// The `destination_service*` labels of a service.
pub fn service_labels(service: &Service) -> ServiceLabels {
    ServiceLabels {
        hostname: Some(service.hostname().to_owned()),
        name: Some(service.name().to_owned()),
        namespace: Some(service.namespace().to_owned()),
    }
}

#[cfg(test)]
#[path = "observe_tests.rs"]
mod tests;
