//! ztunnel's two config sources, both ending in the same validated, immutable [`Snapshot`]:
//! the controller's gRPC stream ([`follow_controller`], `--controller`), and a static file
//! (`--config FILE`) for tests and runs without a controller: workloads, services,
//! authorization policies and peer authentications in the model's serde shapes, as YAML.
//!
//! ```yaml
//! workloads: [{uid: u1, name: web-0, namespace: shop, serviceAccount: web, node: node-a,
//!              ips: [10.244.1.2], protocol: HBONE}]
//! services: []
//! authorizationPolicies: [{name: deny-all, namespace: shop, spec: {action: DENY, rules: [{}]}}]
//! peerAuthentications: []
//! ```
//!
//! Every object is validated by the model; an error names the list index, the object
//! (`Kind namespace/name`) and the field. The file is watched by polling: once a second it is
//! read and compared with the last content seen (a config is small, and unlike mtime this
//! cannot miss two writes within one second or a file replaced by rename). A change that
//! fails to parse or validate is logged and ignored; the last good snapshot stays in force.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ambit_api::ConfigView;
use ambit_model::{AuthorizationPolicy, PeerAuthentication, Service, Workload};
use ambit_state::{Snapshot, StateStore};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_yaml_ng::Value;
use tokio::sync::watch;
use tracing::{info, warn};

/// How often the watcher reads the file.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Why a config was refused: where (file, list index, object) and what.
#[derive(Debug, thiserror::Error)]
#[error("{location}: {message}")]
pub struct ConfigError {
    location: String,
    message: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    workloads: Vec<Value>,
    #[serde(default)]
    services: Vec<Value>,
    #[serde(default)]
    authorization_policies: Vec<Value>,
    #[serde(default)]
    peer_authentications: Vec<Value>,
}

impl ConfigError {
    fn new(location: impl Into<String>, message: impl ToString) -> Self {
        Self {
            location: location.into(),
            message: message.to_string(),
        }
    }

    /// Where the error is: the file, or `<list>[<index>] (<Kind> <namespace>/<name>)`.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// What is wrong, naming the field.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// Parses and validates a whole config into a snapshot.
pub fn parse(yaml: &str) -> Result<Snapshot, ConfigError> {
    let raw: RawConfig = if yaml.trim().is_empty() {
        RawConfig {
            workloads: Vec::new(),
            services: Vec::new(),
            authorization_policies: Vec::new(),
            peer_authentications: Vec::new(),
        }
    } else {
        serde_yaml_ng::from_str(yaml).map_err(|err| ConfigError::new("config", err))?
    };
    let workloads = objects::<Workload>("workloads", "Workload", raw.workloads)?;
    let services = objects::<Service>("services", "Service", raw.services)?;
    let policies = objects::<AuthorizationPolicy>(
        "authorizationPolicies",
        "AuthorizationPolicy",
        raw.authorization_policies,
    )?;
    let peer_authentications = objects::<PeerAuthentication>(
        "peerAuthentications",
        "PeerAuthentication",
        raw.peer_authentications,
    )?;
    Snapshot::new(workloads, services, policies, peer_authentications)
        .map_err(|err| ConfigError::new("config", err))
}

/// Reads and parses the file at `path`.
pub fn load(path: &Path) -> Result<Snapshot, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| ConfigError::new(path.display().to_string(), err))?;
    parse(&text).map_err(|err| {
        ConfigError::new(format!("{}: {}", path.display(), err.location), err.message)
    })
}

/// Watches `path` and publishes every valid change into `store`, until the future is dropped.
/// `last` is the content the current snapshot came from.
pub async fn watch(path: PathBuf, store: Arc<StateStore>, mut last: String) {
    let mut ticks = tokio::time::interval(POLL_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let text = match tokio::fs::read_to_string(&path).await {
            Ok(text) => text,
            Err(err) => {
                warn!(path = %path.display(), %err, "cannot read config; keeping the last good one");
                continue;
            }
        };
        if text == last {
            continue;
        }
        match parse(&text) {
            Ok(snapshot) => {
                let version = store.replace(snapshot);
                info!(path = %path.display(), version, "config reloaded");
            }
            Err(err) => {
                warn!(path = %path.display(), %err, "invalid config; keeping the last good one");
            }
        }
        last = text;
    }
}

/// The snapshot for a config received from the controller. The client has already decoded and
/// validated every object; this adds the checks across objects the snapshot makes.
pub fn from_view(view: &ConfigView) -> Result<Snapshot, ConfigError> {
    Snapshot::new(
        view.workloads().cloned().collect(),
        view.services().cloned().collect(),
        view.authorization_policies().cloned().collect(),
        view.peer_authentications().cloned().collect(),
    )
    .map_err(|err| {
        let version = view
            .version()
            .map_or_else(|| "none".to_owned(), |v| v.to_string());
        ConfigError::new(format!("controller config version {version}"), err)
    })
}

/// Publishes every config the controller sends into `store`, until `views` closes. Calls
/// `on_first` once the first synced config is in force. A config the snapshot refuses is
/// logged and skipped; the last good one stays.
pub async fn follow_controller(
    mut views: watch::Receiver<Arc<ConfigView>>,
    store: Arc<StateStore>,
    on_first: impl FnOnce() + Send,
) {
    let mut on_first = Some(on_first);
    loop {
        let view = views.borrow_and_update().clone();
        if view.is_synced() {
            match from_view(&view) {
                Ok(snapshot) => {
                    let version = store.replace(snapshot);
                    info!(
                        controller_version = view.version(),
                        version,
                        resources = view.len(),
                        "config from the controller in force"
                    );
                    if let Some(first) = on_first.take() {
                        first();
                    }
                }
                Err(err) => warn!(%err, "controller config refused; keeping the last good one"),
            }
        }
        if views.changed().await.is_err() {
            return;
        }
    }
}

fn objects<T: DeserializeOwned>(
    list: &str,
    kind: &str,
    values: Vec<Value>,
) -> Result<Vec<T>, ConfigError> {
    values
        .into_iter()
        .enumerate()
        .map(|(i, value)| {
            let object = describe(kind, &value);
            serde_yaml_ng::from_value(value)
                .map_err(|err| ConfigError::new(format!("{list}[{i}] ({object})"), err))
        })
        .collect()
}

/// `Kind namespace/name` as far as the raw value tells.
fn describe(kind: &str, value: &Value) -> String {
    let field = |name: &str| value.get(name).and_then(Value::as_str).unwrap_or("?");
    format!("{kind} {}/{}", field("namespace"), field("name"))
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
