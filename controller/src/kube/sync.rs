//! Kubernetes mode's work beside the config push: after each translation, publish the mesh
//! roots where proxies need them, deploy waypoints and write statuses ([`KubeWriters`]), and
//! keep the CA's [`PodIdentities`] current ([`TrackIdentities`]).
//!
//! The writers run in their own task and read the pipeline's translations from a watch channel,
//! which holds only the latest: a slow API server never delays a config push, and rounds that
//! arrive while a sync runs are coalesced into one more sync with the latest state.

use std::time::Duration;

use ambit_runtime::DrainWatch;
use tokio::sync::watch;

use super::{PodIdentities, RootPublisher, StatusWriter, WaypointDeployer};
use crate::metrics::ControllerMetrics;
use crate::pipeline::Translation;
use crate::source::{Snapshot, Source};

/// The first delay before a failed sync is retried with no new translation; doubles up to
/// [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// The roots publisher, the waypoint deployer and the status writer, fed by the pipeline's
/// translations.
#[derive(Debug)]
pub struct KubeWriters {
    roots: Option<RootPublisher>,
    deployer: WaypointDeployer,
    status: StatusWriter,
    metrics: Option<ControllerMetrics>,
    retry_min: Duration,
    retry_max: Duration,
}

/// What one sync could not do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncFailures {
    /// Namespaces the roots ConfigMap was not written to.
    pub roots: usize,
    /// Waypoints not (fully) deployed.
    pub deploy: usize,
    /// Statuses not written.
    pub status: usize,
}

impl SyncFailures {
    fn any(&self) -> bool {
        self.roots + self.deploy + self.status > 0
    }
}

impl KubeWriters {
    /// Writers over `deployer` and `status`.
    pub fn new(deployer: WaypointDeployer, status: StatusWriter) -> Self {
        Self {
            roots: None,
            deployer,
            status,
            metrics: None,
            retry_min: RETRY_MIN,
            retry_max: RETRY_MAX,
        }
    }

    /// Also publishes the mesh roots (before deploying waypoints, so their pods find the
    /// ConfigMap they mount).
    pub fn with_roots(mut self, roots: RootPublisher) -> Self {
        self.roots = Some(roots);
        self
    }

    /// Counts syncs and failures into `metrics`.
    pub fn with_metrics(mut self, metrics: ControllerMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Retries failed syncs after `min`, doubling up to `max`, when nothing new comes.
    pub fn with_retry(mut self, min: Duration, max: Duration) -> Self {
        self.retry_min = min;
        self.retry_max = max.max(min);
        self
    }

    /// Deploys the waypoints of `translation` and writes its statuses. Failures are logged,
    /// counted and returned; the deployer and writer retry them on the next call.
    pub async fn sync(&self, translation: &Translation) -> SyncFailures {
        let resources = &translation.snapshot.resources;
        // Each writer logs its failures itself.
        let roots = match &self.roots {
            Some(roots) => roots.sync(resources).await.len(),
            None => 0,
        };
        let deploy = self.deployer.sync(resources).await.len();
        let status_errors = self
            .status
            .sync(resources, &translation.config, &translation.errors)
            .await;
        for err in &status_errors {
            tracing::warn!(error = %err, "status not written");
        }
        let failures = SyncFailures {
            roots,
            deploy,
            status: status_errors.len(),
        };
        if let Some(metrics) = &self.metrics {
            metrics.kube_syncs.inc();
            metrics.waypoint_deploy_errors.inc_by(deploy as u64);
            metrics.status_write_errors.inc_by(failures.status as u64);
        }
        failures
    }

    /// Syncs after every translation until `translations` closes or `stop` starts draining.
    /// Translations that arrive during a sync are coalesced: one more sync follows, with the
    /// latest. After a failure, the same translation is synced again after a backoff.
    pub async fn run(
        self,
        mut translations: watch::Receiver<Option<Translation>>,
        mut stop: DrainWatch,
    ) {
        let mut retry: Option<Duration> = None;
        loop {
            tokio::select! {
                changed = translations.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                () = sleep_or_never(retry) => {}
                () = stop.draining() => return,
            }
            let Some(translation) = translations.borrow_and_update().clone() else {
                continue;
            };
            let failures = tokio::select! {
                failures = self.sync(&translation) => failures,
                () = stop.draining() => return,
            };
            retry = if failures.any() {
                let delay = retry.map_or(self.retry_min, |d| (d * 2).min(self.retry_max));
                tracing::info!(
                    root_failures = failures.roots,
                    deploy_failures = failures.deploy,
                    status_failures = failures.status,
                    retry_in_ms = delay.as_millis() as u64,
                    "kubernetes writes incomplete; retrying"
                );
                Some(delay)
            } else {
                None
            };
        }
    }
}

async fn sleep_or_never(delay: Option<Duration>) {
    match delay {
        Some(delay) => tokio::time::sleep(delay).await,
        None => std::future::pending().await,
    }
}

/// A [`Source`] that refreshes [`PodIdentities`] from each snapshot before handing it on, so
/// the CA knows a pod as soon as the controller does (before the translation, not after).
#[derive(Debug)]
pub struct TrackIdentities<S> {
    inner: S,
    identities: PodIdentities,
}

impl<S> TrackIdentities<S> {
    /// `inner`'s snapshots, indexed into `identities` as they pass.
    pub fn new(inner: S, identities: PodIdentities) -> Self {
        Self { inner, identities }
    }
}

impl<S: Source + Send> Source for TrackIdentities<S> {
    async fn next_snapshot(&mut self) -> Option<Snapshot> {
        let snapshot = self.inner.next_snapshot().await?;
        self.identities.update(&snapshot.resources);
        Some(snapshot)
    }
}
