//! [`RootPublisher`]: the mesh's trusted roots as ConfigMap [`ROOT_CONFIGMAP`] (key
//! [`ROOT_CONFIGMAP_KEY`]) in the controller's own namespace (where ztunnel runs) and in every
//! namespace with a waypoint, so the proxies there can mount it and verify the controller's
//! gRPC serving certificate (`--controller-ca-file`), as Istio's `istio-ca-root-cert`.
//!
//! Written by server-side apply, once per namespace per process (a namespace whose write
//! failed is tried again on the next sync). A ConfigMap deleted by hand comes back at the
//! controller's next start.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Mutex, PoisonError};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use super::FIELD_MANAGER;
use crate::objects::Resources;

/// The ConfigMap the roots are published as.
pub const ROOT_CONFIGMAP: &str = "ambit-ca-root-cert";
/// Its key holding the PEM roots.
pub const ROOT_CONFIGMAP_KEY: &str = "root-cert.pem";

/// A ConfigMap write failed.
#[derive(Debug, thiserror::Error)]
#[error("ConfigMap {namespace}/{ROOT_CONFIGMAP}: {source}")]
pub struct RootPublishError {
    /// The namespace.
    pub namespace: String,
    /// The API error.
    #[source]
    pub source: kube::Error,
}

/// Writes the roots ConfigMap where proxies need it.
pub struct RootPublisher {
    client: Client,
    roots_pem: String,
    /// Always published: the controller's own namespace and ztunnel's.
    home: BTreeSet<String>,
    published: Mutex<BTreeSet<String>>,
}

impl RootPublisher {
    /// Publishes `roots_pem` (every trusted root) into `home` namespaces and into every
    /// namespace with a waypoint Gateway.
    pub fn new(client: Client, roots_pem: String, home: impl IntoIterator<Item = String>) -> Self {
        Self {
            client,
            roots_pem,
            home: home.into_iter().collect(),
            published: Mutex::new(BTreeSet::new()),
        }
    }

    /// The namespaces that need the ConfigMap for `resources`.
    pub fn namespaces(&self, resources: &Resources) -> BTreeSet<String> {
        let mut namespaces = self.home.clone();
        namespaces.extend(
            resources
                .gateways()
                .filter(|gateway| gateway.is_waypoint())
                .filter_map(|gateway| gateway.metadata.namespace.clone()),
        );
        namespaces
    }

    /// Writes the ConfigMap into every namespace of [`namespaces`](Self::namespaces) not
    /// written yet; returns the failures (retried on the next call).
    pub async fn sync(&self, resources: &Resources) -> Vec<RootPublishError> {
        let mut errors = Vec::new();
        for namespace in self.namespaces(resources) {
            if self.lock().contains(&namespace) {
                continue;
            }
            match self.publish(&namespace).await {
                Ok(()) => {
                    tracing::info!(%namespace, configmap = ROOT_CONFIGMAP, "published the mesh roots");
                    self.lock().insert(namespace);
                }
                Err(err) => {
                    tracing::warn!(error = %err, "mesh roots not published");
                    errors.push(err);
                }
            }
        }
        errors
    }

    async fn publish(&self, namespace: &str) -> Result<(), RootPublishError> {
        Api::<ConfigMap>::namespaced(self.client.clone(), namespace)
            .patch(
                ROOT_CONFIGMAP,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&root_configmap(namespace, &self.roots_pem)),
            )
            .await
            .map(drop)
            .map_err(|source| RootPublishError {
                namespace: namespace.to_owned(),
                source,
            })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.published
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for RootPublisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RootPublisher")
            .field("home", &self.home)
            .field("published", &*self.lock())
            .finish_non_exhaustive()
    }
}

/// The server-side apply body of the roots ConfigMap in `namespace`.
pub fn root_configmap(namespace: &str, roots_pem: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": ROOT_CONFIGMAP,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": FIELD_MANAGER},
        },
        "data": {ROOT_CONFIGMAP_KEY: roots_pem},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configmap_holds_the_roots_under_the_key_the_charts_mount() {
        let body = root_configmap("shop", "-----BEGIN CERTIFICATE-----\n");
        let parsed: ConfigMap = serde_json::from_value(body).unwrap();
        assert_eq!(parsed.metadata.name.as_deref(), Some("ambit-ca-root-cert"));
        assert_eq!(parsed.metadata.namespace.as_deref(), Some("shop"));
        assert_eq!(
            parsed.data.unwrap()["root-cert.pem"],
            "-----BEGIN CERTIFICATE-----\n"
        );
    }
}
