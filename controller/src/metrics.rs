//! The controller's metrics, on the same registry type the proxies use
//! ([`ambit_telemetry::MetricsRegistry`]), served by [`ambit_runtime::serve_metrics`].
//!
//! Counters the gRPC servers keep themselves (pushes, ACK/NACK, connected proxies, CSRs) are
//! read at scrape time by a collector, so there is one source of truth; what only the
//! controller sees (translation, publish-to-ACK latency, errors) is recorded here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ambit_api::{CaServer, ConfigServer, ScopeKey};
use ambit_telemetry::MetricsRegistry;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

/// How long a publish time is remembered for matching ACKs.
const PUBLISH_MEMORY: Duration = Duration::from_secs(300);

/// Handles to the controller's own metrics. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ControllerMetrics {
    /// Translations run.
    pub translations: Counter,
    /// Time to translate and build every scope, in seconds.
    pub translation_duration: Histogram,
    /// Objects a source could not read, in the latest snapshot.
    pub source_errors: Gauge,
    /// Objects (or bindings) the translation left out, in the latest snapshot.
    pub translation_errors: Gauge,
    /// Problems first seen in a snapshot (each distinct problem counts once while it lasts).
    pub new_errors: Counter,
    /// Scope snapshots published with changed content.
    pub scope_publishes: Counter,
    /// Time from publishing a scope's version to a proxy acknowledging it, in seconds.
    pub push_latency: Histogram,
    /// Kubernetes mode: rounds of waypoint deployment and status writing.
    pub kube_syncs: Counter,
    /// Kubernetes mode: waypoints whose objects or Gateway status could not be applied.
    pub waypoint_deploy_errors: Counter,
    /// Kubernetes mode: Service and route statuses that could not be written.
    pub status_write_errors: Counter,
    publish_times: Arc<Mutex<HashMap<u64, Instant>>>,
}

/// Reads the gRPC servers' counters at scrape time.
#[derive(Debug)]
struct ServerCollector {
    config: ConfigServer,
    ca: Option<CaServer>,
}

impl ControllerMetrics {
    /// Registers the controller's metrics (and a collector over `config` and `ca`).
    pub fn register(
        registry: &mut MetricsRegistry,
        config: &ConfigServer,
        ca: Option<&CaServer>,
    ) -> Self {
        let metrics = Self {
            translations: Counter::default(),
            translation_duration: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            source_errors: Gauge::default(),
            translation_errors: Gauge::default(),
            new_errors: Counter::default(),
            scope_publishes: Counter::default(),
            push_latency: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            kube_syncs: Counter::default(),
            waypoint_deploy_errors: Counter::default(),
            status_write_errors: Counter::default(),
            publish_times: Arc::default(),
        };
        let registry = registry.registry_mut();
        registry.register(
            "ambit_controller_translations",
            "Translations of a source snapshot into scopes",
            metrics.translations.clone(),
        );
        registry.register(
            "ambit_controller_translation_duration_seconds",
            "Time to translate a snapshot and build every scope",
            metrics.translation_duration.clone(),
        );
        registry.register(
            "ambit_controller_source_errors",
            "Objects the source could not read in the latest snapshot (skipped)",
            metrics.source_errors.clone(),
        );
        registry.register(
            "ambit_controller_translation_errors",
            "Objects or bindings left out by the latest translation",
            metrics.translation_errors.clone(),
        );
        registry.register(
            "ambit_controller_config_errors_new",
            "Source or translation problems, counted when first seen",
            metrics.new_errors.clone(),
        );
        registry.register(
            "ambit_controller_scope_publishes",
            "Scope snapshots published because their content changed",
            metrics.scope_publishes.clone(),
        );
        registry.register(
            "ambit_controller_push_latency_seconds",
            "Time from publishing a scope version to a proxy acknowledging it",
            metrics.push_latency.clone(),
        );
        registry.register(
            "ambit_controller_kube_syncs",
            "Rounds of waypoint deployment and status writing (Kubernetes mode)",
            metrics.kube_syncs.clone(),
        );
        registry.register(
            "ambit_controller_waypoint_deploy_errors",
            "Waypoints whose objects or Gateway status could not be applied (retried)",
            metrics.waypoint_deploy_errors.clone(),
        );
        registry.register(
            "ambit_controller_status_write_errors",
            "Service and route statuses that could not be written (retried)",
            metrics.status_write_errors.clone(),
        );
        registry.register_collector(Box::new(ServerCollector {
            config: config.clone(),
            ca: ca.cloned(),
        }));
        metrics
    }

    /// Remembers when `version` was published, for [`track_acks`](Self::track_acks).
    pub fn published(&self, version: u64, at: Instant) {
        let mut times = self
            .publish_times
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        times.retain(|_, published| at.duration_since(*published) < PUBLISH_MEMORY);
        times.insert(version, at);
    }

    /// Observes publish-to-ACK latency for every client of `server` until the server's status
    /// channel closes. Spawn it once.
    pub async fn track_acks(self, server: ConfigServer) {
        let mut changes = server.status_changes();
        let mut acked: HashMap<(String, ScopeKey), u64> = HashMap::new();
        loop {
            let now = Instant::now();
            let mut seen = HashMap::new();
            for client in server.clients() {
                let key = (client.id.clone(), client.scope.clone());
                if let Some(version) = client.acked_version {
                    if acked.get(&key) != Some(&version) {
                        let published = self
                            .publish_times
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .get(&version)
                            .copied();
                        if let Some(published) = published {
                            self.push_latency
                                .observe(now.duration_since(published).as_secs_f64());
                        }
                    }
                    seen.insert(key, version);
                }
            }
            acked = seen;
            if changes.changed().await.is_err() {
                return;
            }
        }
    }
}

impl Collector for ServerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let config = self.config.stats();
        let counters = [
            (
                "ambit_controller_config_pushes",
                "Config updates sent to proxies",
                config.pushes,
            ),
            (
                "ambit_controller_config_acks",
                "Config updates acknowledged",
                config.acks,
            ),
            (
                "ambit_controller_config_nacks",
                "Config updates rejected by a proxy",
                config.nacks,
            ),
            (
                "ambit_controller_config_ack_timeouts",
                "Config streams closed because an update stayed unacknowledged",
                config.ack_timeouts,
            ),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        let mut refused = encoder.encode_descriptor(
            "ambit_controller_config_subscriptions_refused",
            "Config subscriptions refused, by reason",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (reason, value) in [
            ("unauthenticated", config.unauthenticated),
            ("denied", config.denied),
            ("invalid", config.bad_subscriptions),
            ("unavailable", config.auth_unavailable),
        ] {
            let labels = [("reason", reason)];
            ConstCounter::new(value).encode(refused.encode_family(&labels)?)?;
        }
        let connected = ConstGauge::new(i64::try_from(config.connected).unwrap_or(i64::MAX));
        connected.encode(encoder.encode_descriptor(
            "ambit_controller_connected_proxies",
            "Config streams open now",
            None,
            connected.metric_type(),
        )?)?;
        if let Some(ca) = &self.ca {
            let stats = ca.stats();
            let signed = ConstCounter::new(stats.signed);
            signed.encode(encoder.encode_descriptor(
                "ambit_controller_csr_signed",
                "Certificate requests signed",
                None,
                signed.metric_type(),
            )?)?;
            let mut refused = encoder.encode_descriptor(
                "ambit_controller_csr_refused",
                "Certificate requests refused, by reason",
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for (reason, value) in [
                ("unauthenticated", stats.unauthenticated),
                ("denied", stats.denied),
                ("invalid", stats.invalid),
                ("unavailable", stats.unavailable),
            ] {
                let labels = [("reason", reason)];
                ConstCounter::new(value).encode(refused.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
