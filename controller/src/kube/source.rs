//! [`KubeSource`]: the [`Source`] over the Kubernetes API. One kube-rs watcher per kind feeds
//! one shared cache; a snapshot is that cache, handed out when every kind has been listed once
//! and then after each change (debounced).
//!
//! The watcher does the protocol work: paginated list, watch from the list's resourceVersion,
//! bookmarks, and a relist after `410 Gone`. A relist replaces the kind's cached objects
//! atomically when it completes, so objects deleted while the watch was broken disappear.
//! A kind whose API is missing (CRD not installed: `404` on list) counts as listed and empty,
//! and is retried in the background.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::convert::{KindApi, WATCHED_KINDS, to_resource};
use crate::local::SourceError;
use crate::objects::{Kind, ResourceKey, Resources};
use crate::source::{Snapshot, Source};

/// Tuning of [`KubeSource`].
#[derive(Debug, Clone)]
pub struct KubeSourceConfig {
    /// How long to let changes settle before a snapshot is handed out.
    pub debounce: Duration,
    /// The first delay before retrying a failed list or watch; doubles up to `retry_max`.
    pub retry_min: Duration,
    /// The longest delay between retries.
    pub retry_max: Duration,
    /// Objects per page of the initial lists.
    pub page_size: u32,
}

/// A [`Source`] watching the Kubernetes API. Dropping it stops the watches.
pub struct KubeSource {
    shared: Arc<Shared>,
    changes: watch::Receiver<u64>,
    debounce: Duration,
    started: bool,
    // Dropping the set aborts the watch tasks.
    _tasks: JoinSet<()>,
}

/// What the watch tasks share with the source.
struct Shared {
    cache: Mutex<Cache>,
    changes: watch::Sender<u64>,
}

#[derive(Default)]
struct Cache {
    resources: Resources,
    /// Objects refused, by key, so that a fix or a delete clears the error.
    errors: BTreeMap<ResourceKey, SourceError>,
    /// Kinds listed at least once (or found absent).
    listed: BTreeSet<Kind>,
    /// Objects of a relist in progress, per kind; swapped in on `InitDone`.
    relists: BTreeMap<Kind, Relist>,
}

#[derive(Default)]
struct Relist {
    resources: Vec<crate::objects::Resource>,
    errors: Vec<(ResourceKey, SourceError)>,
}

impl Default for KubeSourceConfig {
    fn default() -> Self {
        Self {
            debounce: Duration::from_millis(100),
            retry_min: Duration::from_millis(500),
            retry_max: Duration::from_secs(30),
            page_size: 500,
        }
    }
}

impl KubeSource {
    /// Starts one watch per kind. Must be called inside a Tokio runtime.
    pub fn start(client: Client, config: KubeSourceConfig) -> Self {
        let (sender, changes) = watch::channel(0);
        let shared = Arc::new(Shared {
            cache: Mutex::new(Cache::default()),
            changes: sender,
        });
        let mut tasks = JoinSet::new();
        for kind_api in WATCHED_KINDS {
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &kind_api.api_resource());
            tasks.spawn(watch_kind(
                api,
                *kind_api,
                Arc::clone(&shared),
                config.clone(),
            ));
        }
        Self {
            shared,
            changes,
            debounce: config.debounce,
            started: false,
            _tasks: tasks,
        }
    }

    fn all_listed(&self) -> bool {
        self.shared.lock().listed.len() == WATCHED_KINDS.len()
    }

    fn snapshot(&self) -> Snapshot {
        let cache = self.shared.lock();
        Snapshot {
            resources: cache.resources.clone(),
            errors: cache.errors.values().cloned().collect(),
        }
    }
}

impl Source for KubeSource {
    async fn next_snapshot(&mut self) -> Option<Snapshot> {
        if self.started {
            self.changes.changed().await.ok()?;
            tokio::time::sleep(self.debounce).await;
        } else {
            while !self.all_listed() {
                self.changes.changed().await.ok()?;
            }
            self.started = true;
        }
        // Changes up to here are in this snapshot.
        self.changes.borrow_and_update();
        let snapshot = self.snapshot();
        tracing::debug!(
            objects = snapshot.resources.len(),
            errors = snapshot.errors.len(),
            "kubernetes snapshot"
        );
        Some(snapshot)
    }
}

impl fmt::Debug for KubeSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeSource")
            .field("started", &self.started)
            .field("debounce", &self.debounce)
            .finish_non_exhaustive()
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn changed(&self) {
        self.changes.send_modify(|generation| *generation += 1);
    }

    fn apply(&self, api: &KindApi, event: Event<DynamicObject>) {
        let kind = api.kind;
        let notify = {
            let mut cache = self.lock();
            match event {
                Event::Init => {
                    cache.relists.insert(kind, Relist::default());
                    false
                }
                Event::InitApply(object) => {
                    let key = key_of(kind, &object);
                    let relist = cache.relists.entry(kind).or_default();
                    match to_resource(api, object) {
                        Ok(resource) => relist.resources.push(resource),
                        Err(err) => relist.errors.push((key, err)),
                    }
                    false
                }
                Event::InitDone => {
                    let relist = cache.relists.remove(&kind).unwrap_or_default();
                    cache.replace_kind(kind, relist);
                    cache.listed.insert(kind);
                    true
                }
                Event::Apply(object) => {
                    let key = key_of(kind, &object);
                    match to_resource(api, object) {
                        Ok(resource) => {
                            cache.errors.remove(&key);
                            cache.resources.upsert(resource);
                        }
                        Err(err) => {
                            log_refused(&err);
                            // An object that turned invalid is left out, as it would be if it
                            // had been invalid from the start.
                            cache.resources.remove(&key);
                            cache.errors.insert(key, err);
                        }
                    }
                    true
                }
                Event::Delete(object) => {
                    let key = key_of(kind, &object);
                    cache.errors.remove(&key);
                    cache.resources.remove(&key);
                    true
                }
            }
        };
        if notify {
            self.changed();
        }
    }

    /// The kind's API does not exist: nothing of it is cached and it counts as listed.
    fn mark_absent(&self, kind: Kind) {
        let newly = {
            let mut cache = self.lock();
            cache.replace_kind(kind, Relist::default());
            cache.listed.insert(kind)
        };
        if newly {
            self.changed();
        }
    }
}

impl Cache {
    fn replace_kind(&mut self, kind: Kind, relist: Relist) {
        let stale: Vec<ResourceKey> = self
            .resources
            .iter()
            .filter(|r| r.kind() == kind)
            .map(|r| r.key())
            .collect();
        for key in stale {
            self.resources.remove(&key);
        }
        self.errors.retain(|key, _| key.kind != kind);
        for resource in relist.resources {
            self.resources.upsert(resource);
        }
        for (key, err) in relist.errors {
            log_refused(&err);
            self.errors.insert(key, err);
        }
    }
}

/// Runs the watcher of one kind for as long as the source lives.
async fn watch_kind(
    api: Api<DynamicObject>,
    kind_api: KindApi,
    shared: Arc<Shared>,
    config: KubeSourceConfig,
) {
    let watcher_config = watcher::Config::default().page_size(config.page_size);
    let mut stream = watcher::watcher(api, watcher_config).boxed();
    let mut delay = config.retry_min;
    while let Some(item) = stream.next().await {
        match item {
            Ok(event) => {
                delay = config.retry_min;
                shared.apply(&kind_api, event);
            }
            Err(err) => {
                if is_not_found(&err) {
                    tracing::warn!(
                        kind = %kind_api.kind,
                        api = %kind_api.api_version(),
                        "API not served (CRD not installed?); treating the kind as empty"
                    );
                    shared.mark_absent(kind_api.kind);
                } else if is_gone(&err) {
                    // The watcher relists on its own; no need to wait.
                    tracing::info!(kind = %kind_api.kind, "watch expired (410 Gone); relisting");
                    continue;
                } else {
                    tracing::warn!(kind = %kind_api.kind, error = %err, "watch failed; retrying");
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(config.retry_max);
            }
        }
    }
}

fn is_not_found(err: &watcher::Error) -> bool {
    matches!(err, watcher::Error::InitialListFailed(kube::Error::Api(status)) if status.code == 404)
}

fn is_gone(err: &watcher::Error) -> bool {
    match err {
        watcher::Error::WatchError(status) => status.code == 410,
        watcher::Error::WatchStartFailed(kube::Error::Api(status)) => status.code == 410,
        _ => false,
    }
}

fn key_of(kind: Kind, object: &DynamicObject) -> ResourceKey {
    ResourceKey {
        kind,
        namespace: if kind.is_namespaced() {
            object.namespace().unwrap_or_default()
        } else {
            String::new()
        },
        name: object.name_any(),
    }
}

fn log_refused(err: &SourceError) {
    tracing::warn!(
        kind = err.kind().unwrap_or_default(),
        namespace = err.namespace().unwrap_or_default(),
        name = err.name().unwrap_or_default(),
        field = err.field().unwrap_or_default(),
        reason = err.message(),
        "invalid object skipped"
    );
}
