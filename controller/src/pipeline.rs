//! The pipeline: source snapshots → translation → one [`ambit_api::Snapshot`] per scope →
//! [`ConfigServer::publish`].
//!
//! [`run`] reads the source in its own task into a latest-value channel, so changes that come
//! in while a translation runs are batched into the next one; after a change it waits the
//! debounce window before translating. [`Pipeline::apply`] does one round: translate, log and
//! count problems (each object's problem skips only that object), build every scope, publish
//! (the server ignores a scope whose content did not change), and update what the CA's
//! authorizer, the config server's scope access and the waypoint tokens need to know.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use ambit_api::server::{HostedIdentities, ScopeAccess, StaticTokens};
use ambit_api::{ConfigServer, ScopeKey, Snapshot as ScopeSnapshot};
use ambit_identity::SpiffeId;
use ambit_runtime::{DrainWatch, ReadyToken};
use tokio::sync::watch;

use crate::metrics::ControllerMetrics;
use crate::scopes;
use crate::source::{Snapshot, Source};
use crate::tokens::NodeTokens;
use crate::translate::{self, MeshConfig, TranslateOptions};

/// Which identities the pods of each node run as (enrolled pods only): the CA's answer to
/// "may this node's ztunnel hold this identity?".
type HostedIndex = Arc<RwLock<HashMap<String, HashSet<SpiffeId>>>>;

/// The identity each translated waypoint (Gateway namespace, name) runs as: the config
/// server's answer to "may this waypoint subscribe to this waypoint scope?".
type WaypointIndex = Arc<RwLock<HashMap<(String, String), SpiffeId>>>;

/// Translates snapshots and publishes scopes into a [`ConfigServer`].
#[derive(Debug)]
pub struct Pipeline {
    server: ConfigServer,
    options: TranslateOptions,
    metrics: Option<ControllerMetrics>,
    tokens: Option<(NodeTokens, Arc<StaticTokens>)>,
    hosted: HostedIndex,
    waypoint_identities: WaypointIndex,
    /// Every node that ever had a workload, a token or a subscriber: each keeps receiving the
    /// shared part of the config.
    nodes: BTreeSet<String>,
    /// Waypoint scopes published last round (a waypoint that disappears gets an empty one).
    waypoints: BTreeSet<ScopeKey>,
    /// The last build's encodings: unchanged resources keep their bytes, which makes
    /// comparing scopes cheap.
    payloads: scopes::Payloads,
    /// Problems of the last round, to log and count only new ones.
    problems: HashSet<String>,
    config: Option<Arc<MeshConfig>>,
    /// Where each round's result goes for work beside the push (Kubernetes writes).
    translations: Option<watch::Sender<Option<Translation>>>,
}

/// One round's input and result, for whoever acts on the translation besides the config push
/// (the waypoint deployer and status writers of Kubernetes mode).
#[derive(Debug, Clone)]
pub struct Translation {
    /// The objects translated.
    pub snapshot: Arc<Snapshot>,
    /// What they translated to.
    pub config: Arc<MeshConfig>,
    /// What the translation left out.
    pub errors: Arc<[translate::TranslateError]>,
}

/// What one [`Pipeline::apply`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ApplyReport {
    /// Scopes built.
    pub scopes: usize,
    /// Scopes whose content changed and got a new version.
    pub changed: usize,
    /// Objects the source skipped.
    pub source_errors: usize,
    /// Objects or bindings the translation left out (kinds not translated yet included).
    pub translation_errors: usize,
    /// Time to translate and build the scopes.
    pub duration: Duration,
}

impl Pipeline {
    /// A pipeline publishing into `server`.
    pub fn new(server: ConfigServer, options: TranslateOptions) -> Self {
        Self {
            server,
            options,
            metrics: None,
            tokens: None,
            hosted: HostedIndex::default(),
            waypoint_identities: WaypointIndex::default(),
            nodes: BTreeSet::new(),
            waypoints: BTreeSet::new(),
            payloads: scopes::Payloads::default(),
            problems: HashSet::new(),
            config: None,
            translations: None,
        }
    }

    /// Sends every successful round of [`run`] to `translations`. A watch channel keeps only
    /// the latest, so a slow reader skips rounds instead of holding up the pipeline.
    pub fn with_translations(mut self, translations: watch::Sender<Option<Translation>>) -> Self {
        self.translations = Some(translations);
        self
    }

    /// Records into `metrics`.
    pub fn with_metrics(mut self, metrics: ControllerMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Keeps `static_tokens` in sync with `tokens` (waypoint identities follow the config), and
    /// serves every node named there even before it runs a pod.
    pub fn with_tokens(mut self, tokens: NodeTokens, static_tokens: Arc<StaticTokens>) -> Self {
        tokens.install(&static_tokens, &self.options.trust_domain, None);
        self.nodes.extend(tokens.nodes().map(str::to_owned));
        self.tokens = Some((tokens, static_tokens));
        self
    }

    /// The CA authorizer over this pipeline's view: a node's ztunnel may hold the identities of
    /// the enrolled pods scheduled on that node; a waypoint only its own.
    pub fn authorizer(&self) -> HostedIdentities {
        let hosted = self.hosted.clone();
        HostedIdentities::new(move |node, identity| {
            hosted
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(node)
                .is_some_and(|ids| ids.contains(identity))
        })
    }

    /// Who may subscribe to which scope, over this pipeline's view: a node's ztunnel to its
    /// node's scope; a waypoint to the scope of a translated waypoint whose identity (its
    /// Gateway's service account) is the waypoint's own. A waypoint not translated yet is
    /// nobody's: its proxy is refused and retries.
    pub fn scope_access(&self) -> ScopeAccess {
        let identities = self.waypoint_identities.clone();
        ScopeAccess::new(move |namespace, name| {
            identities
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(&(namespace.to_owned(), name.to_owned()))
                .cloned()
        })
    }

    /// The config of the last round.
    pub fn config(&self) -> Option<Arc<MeshConfig>> {
        self.config.clone()
    }

    /// One round: translate `snapshot` and publish every scope.
    pub fn apply(&mut self, snapshot: &Snapshot) -> ApplyReport {
        self.round(snapshot).0
    }

    /// [`apply`](Self::apply), then hands the result to the translation watchers (see
    /// [`with_translations`](Self::with_translations)).
    pub fn apply_shared(&mut self, snapshot: Arc<Snapshot>) -> ApplyReport {
        let (report, errors) = self.round(&snapshot);
        if let (Some(errors), Some(config), Some(translations)) =
            (errors, self.config.clone(), &self.translations)
        {
            translations.send_replace(Some(Translation {
                snapshot,
                config,
                errors: errors.into(),
            }));
        }
        report
    }

    /// One round; the translation errors too when the round published.
    fn round(
        &mut self,
        snapshot: &Snapshot,
    ) -> (ApplyReport, Option<Vec<translate::TranslateError>>) {
        let started = Instant::now();
        let (config, errors) = translate::translate(&snapshot.resources, &self.options);
        self.report_problems(snapshot, &errors);
        self.nodes.extend(scopes::nodes_of(&config));
        let built = match scopes::build_with(&config, &self.nodes, &mut self.payloads) {
            Ok(built) => built,
            Err(err) => {
                // Only an encoding bug gets here; proxies keep the previous config.
                tracing::error!(error = %err, "cannot encode the translated config; nothing published");
                return (ApplyReport::default(), None);
            }
        };
        let duration = started.elapsed();
        self.update_hosted(&config);
        if let Some((tokens, static_tokens)) = &self.tokens {
            tokens.install(static_tokens, &self.options.trust_domain, Some(&config));
        }
        let mut report = ApplyReport {
            scopes: built.len(),
            source_errors: snapshot.errors.len(),
            translation_errors: errors.len(),
            duration,
            ..ApplyReport::default()
        };
        let mut waypoints = BTreeSet::new();
        for (scope, content) in built {
            if matches!(scope, ScopeKey::Waypoint { .. }) {
                waypoints.insert(scope.clone());
            }
            report.changed += usize::from(self.publish(scope, content));
        }
        for gone in self.waypoints.difference(&waypoints) {
            tracing::info!(scope = %gone, "waypoint is gone; its scope is now empty");
            report.changed += usize::from(self.publish(gone.clone(), ScopeSnapshot::new()));
        }
        self.waypoints = waypoints;
        self.config = Some(Arc::new(config));
        if let Some(metrics) = &self.metrics {
            metrics.translations.inc();
            metrics.translation_duration.observe(duration.as_secs_f64());
            metrics.scope_publishes.inc_by(report.changed as u64);
        }
        tracing::info!(
            objects = snapshot.resources.len(),
            scopes = report.scopes,
            changed = report.changed,
            source_errors = report.source_errors,
            translation_errors = report.translation_errors,
            millis = duration.as_millis() as u64,
            "config translated and published"
        );
        (report, Some(errors))
    }

    /// Publishes the node scopes that clients subscribed to but that were never built (a node
    /// without pods and without a token). Returns how many were published.
    pub fn serve_new_subscribers(&mut self) -> usize {
        let Some(config) = self.config.clone() else {
            return 0;
        };
        let new: BTreeSet<String> = self
            .server
            .clients()
            .into_iter()
            .filter_map(|client| match client.scope {
                ScopeKey::Node(node) if !self.nodes.contains(&node) => Some(node),
                _ => None,
            })
            .collect();
        if new.is_empty() {
            return 0;
        }
        self.nodes.extend(new.iter().cloned());
        match scopes::build(&config, &new) {
            Ok(built) => {
                let mut published = 0;
                for (scope, content) in built {
                    if matches!(scope, ScopeKey::Node(_)) {
                        self.publish(scope, content);
                        published += 1;
                    }
                }
                published
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot encode the config for new nodes");
                0
            }
        }
    }

    /// Publishes one scope; whether its content changed.
    fn publish(&self, scope: ScopeKey, content: ScopeSnapshot) -> bool {
        let before = self.server.published_version(&scope);
        let version = self.server.publish(scope, content);
        let changed = before != Some(version);
        if changed && let Some(metrics) = &self.metrics {
            metrics.published(version, Instant::now());
        }
        changed
    }

    /// Updates the CA's and the config server's view: pods' identities per node, waypoints'
    /// identities.
    fn update_hosted(&self, config: &MeshConfig) {
        let mut hosted: HashMap<String, HashSet<SpiffeId>> = HashMap::new();
        for workload in config.workloads.iter().filter(|w| w.is_enrolled()) {
            hosted
                .entry(workload.node().to_owned())
                .or_default()
                .insert(workload.identity().clone());
        }
        *self
            .hosted
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = hosted;
        let waypoints = config
            .waypoints
            .iter()
            .map(|w| {
                (
                    (w.namespace.clone(), w.name.clone()),
                    w.reference.identity.clone(),
                )
            })
            .collect();
        *self
            .waypoint_identities
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = waypoints;
    }

    /// Logs each problem the first round it appears (with file, document, object and field),
    /// and sets the gauges.
    fn report_problems(&mut self, snapshot: &Snapshot, errors: &[translate::TranslateError]) {
        let mut current = HashSet::new();
        let mut new = 0u64;
        for error in &snapshot.errors {
            let text = error.to_string();
            if !self.problems.contains(&text) {
                tracing::warn!(
                    file = %error.file().display(),
                    document = error.document_index(),
                    kind = error.kind(),
                    namespace = error.namespace(),
                    name = error.name(),
                    field = error.field(),
                    "skipped object: {}",
                    error.message()
                );
                new += 1;
            }
            current.insert(text);
        }
        for error in errors {
            let text = error.to_string();
            if !self.problems.contains(&text) {
                if error.is_not_translated() {
                    tracing::info!(
                        kind = error.kind(),
                        namespace = error.namespace(),
                        name = error.name(),
                        "ignored object: {}",
                        error.message()
                    );
                } else {
                    tracing::warn!(
                        kind = error.kind(),
                        namespace = error.namespace(),
                        name = error.name(),
                        field = error.field(),
                        "translation error: {}",
                        error.message()
                    );
                }
                new += 1;
            }
            current.insert(text);
        }
        self.problems = current;
        if let Some(metrics) = &self.metrics {
            metrics.source_errors.set(snapshot.errors.len() as i64);
            metrics.translation_errors.set(errors.len() as i64);
            metrics.new_errors.inc_by(new);
        }
    }
}

/// Runs `pipeline` on `source` until the source ends or `stop` starts draining. `ready` is
/// satisfied once the first translation is published. Changes are batched: after one arrives,
/// the pipeline waits `debounce` and translates the latest snapshot.
pub async fn run<S>(
    mut source: S,
    mut pipeline: Pipeline,
    debounce: Duration,
    ready: Option<ReadyToken>,
    mut stop: DrainWatch,
) where
    S: Source + Send + 'static,
{
    let (latest, mut snapshots) = watch::channel::<Option<Arc<Snapshot>>>(None);
    let reader = tokio::spawn(async move {
        while let Some(snapshot) = source.next_snapshot().await {
            if latest.send(Some(Arc::new(snapshot))).is_err() {
                return;
            }
        }
        tracing::warn!("the config source ended; serving the last config");
    });
    let mut subscribers = pipeline.server.status_changes();
    let mut ready = ready;
    let mut source_open = true;
    loop {
        tokio::select! {
            changed = snapshots.changed(), if source_open => {
                if changed.is_err() {
                    // Keep serving the last config (and new subscribers) until shutdown.
                    source_open = false;
                    continue;
                }
                if ready.is_some() {
                    // The first snapshot is the whole source at once: no reason to wait.
                } else {
                    tokio::time::sleep(debounce).await;
                }
                let Some(snapshot) = snapshots.borrow_and_update().clone() else {
                    continue;
                };
                let joined = tokio::task::spawn_blocking(move || {
                    pipeline.apply_shared(snapshot);
                    pipeline
                })
                .await;
                pipeline = match joined {
                    Ok(pipeline) => pipeline,
                    Err(err) => {
                        tracing::error!(error = %err, "translation task failed; stopping");
                        break;
                    }
                };
                if let Some(token) = ready.take() {
                    token.done();
                }
            }
            changed = subscribers.changed() => {
                if changed.is_ok() {
                    pipeline.serve_new_subscribers();
                }
            }
            () = stop.draining() => break,
        }
    }
    reader.abort();
}
