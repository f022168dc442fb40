//! The Kubernetes edge: two kube-rs watchers (this node's pods, all namespaces) turned into
//! [`ClusterEvent`]s for the agent.
//!
//! Only the fields the decision needs are kept ([`ApiPod`], namespace labels), so the cache
//! costs a few hundred bytes per pod, far less than full objects even with `managedFields`
//! stripped. A watcher (re)list is buffered and handed over as one `*Listed` event when it
//! completes, so pods deleted while the watch was broken disappear atomically.

use std::sync::Arc;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};
use tracing::{debug, warn};

use crate::agent::Agent;
use crate::core::{ApiPod, ClusterEvent, Labels, SIDECAR_STATUS};

/// The service account of a pod that names none.
const DEFAULT_SERVICE_ACCOUNT: &str = "default";

/// Watches the pods scheduled to `node` until the future is dropped.
pub async fn watch_pods(client: Client, node: String, agent: Arc<Agent>) {
    let api: Api<Pod> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let mut relist: Option<Vec<ApiPod>> = None;
    let mut events = watcher::watcher(api, config).default_backoff().boxed();
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                // The backoff delays the next attempt; the watcher relists if it must.
                warn!(error = %e, "pod watch failed; retrying");
                continue;
            }
        };
        let event = match event {
            Event::Init => {
                relist = Some(Vec::new());
                continue;
            }
            Event::InitApply(pod) => {
                if let (Some(buffer), Some(pod)) = (relist.as_mut(), api_pod(&pod)) {
                    buffer.push(pod);
                }
                continue;
            }
            Event::InitDone => ClusterEvent::PodsListed(relist.take().unwrap_or_default()),
            Event::Apply(pod) => match api_pod(&pod) {
                Some(pod) => ClusterEvent::PodApplied(pod),
                None => continue,
            },
            Event::Delete(pod) => match pod.uid() {
                Some(uid) => ClusterEvent::PodDeleted(uid),
                None => continue,
            },
        };
        debug!(?event, "pod watch event");
        agent.apply(event).await;
    }
}

/// Watches every namespace's labels until the future is dropped.
pub async fn watch_namespaces(client: Client, agent: Arc<Agent>) {
    let api: Api<Namespace> = Api::all(client);
    let mut relist: Option<Vec<(String, Labels)>> = None;
    let mut events = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                warn!(error = %e, "namespace watch failed; retrying");
                continue;
            }
        };
        let event = match event {
            Event::Init => {
                relist = Some(Vec::new());
                continue;
            }
            Event::InitApply(namespace) => {
                if let Some(buffer) = relist.as_mut() {
                    buffer.push((namespace.name_any(), labels(&namespace)));
                }
                continue;
            }
            Event::InitDone => ClusterEvent::NamespacesListed(relist.take().unwrap_or_default()),
            Event::Apply(namespace) => ClusterEvent::NamespaceApplied {
                name: namespace.name_any(),
                labels: labels(&namespace),
            },
            Event::Delete(namespace) => ClusterEvent::NamespaceDeleted(namespace.name_any()),
        };
        debug!(?event, "namespace watch event");
        agent.apply(event).await;
    }
}

/// The fields the agent uses; `None` (logged) for a pod without the metadata every stored
/// pod has.
pub fn api_pod(pod: &Pod) -> Option<ApiPod> {
    let (Some(uid), Some(namespace)) = (pod.uid(), pod.namespace()) else {
        warn!(name = %pod.name_any(), "pod without uid or namespace ignored");
        return None;
    };
    let spec = pod.spec.as_ref();
    let service_account = spec
        .and_then(|s| s.service_account_name.clone().or(s.service_account.clone()))
        .filter(|sa| !sa.is_empty())
        .unwrap_or_else(|| DEFAULT_SERVICE_ACCOUNT.to_owned());
    Some(ApiPod {
        uid,
        namespace,
        name: pod.name_any(),
        service_account,
        labels: labels(pod),
        host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
        has_sidecar: pod.annotations().contains_key(SIDECAR_STATUS),
    })
}

fn labels(object: &impl ResourceExt) -> Labels {
    object.labels().clone()
}
