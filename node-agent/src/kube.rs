//! The Kubernetes edge: two kube-rs watchers (this node's pods, all namespaces) turned into
//! [`ClusterEvent`]s for the agent.
//!
//! Only the fields the decision needs are kept ([`ApiPod`], namespace labels), so the cache
//! costs a few hundred bytes per pod, far less than full objects even with `managedFields`
//! stripped. A watcher (re)list is buffered and handed over as one `*Listed` event when it
//! completes, so pods deleted while the watch was broken disappear atomically.

use std::fmt::Debug;
use std::net::IpAddr;
use std::sync::Arc;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tracing::{debug, warn};

use crate::agent::Agent;
use crate::core::{ApiPod, ClusterEvent, Labels, SIDECAR_STATUS};

/// The service account of a pod that names none.
const DEFAULT_SERVICE_ACCOUNT: &str = "default";

/// Watches the pods scheduled to `node` until the future is dropped.
pub async fn watch_pods(client: Client, node: String, agent: Arc<Agent>) {
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    follow(Api::<Pod>::all(client), config, &agent).await;
}

/// Watches every namespace's labels until the future is dropped.
pub async fn watch_namespaces(client: Client, agent: Arc<Agent>) {
    follow(
        Api::<Namespace>::all(client),
        watcher::Config::default(),
        &agent,
    )
    .await;
}

/// A watched kind: what the agent keeps of an object and the events it makes.
trait Watched: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static {
    /// What the agent keeps of one object.
    type Kept: Send;
    /// For logs.
    const KIND: &'static str;
    fn keep(&self) -> Option<Self::Kept>;
    fn applied(kept: Self::Kept) -> ClusterEvent;
    fn deleted(&self) -> Option<ClusterEvent>;
    fn listed(all: Vec<Self::Kept>) -> ClusterEvent;
}

impl Watched for Pod {
    type Kept = ApiPod;
    const KIND: &'static str = "pod";

    fn keep(&self) -> Option<ApiPod> {
        api_pod(self)
    }

    fn applied(kept: ApiPod) -> ClusterEvent {
        ClusterEvent::PodApplied(kept)
    }

    fn deleted(&self) -> Option<ClusterEvent> {
        self.uid().map(ClusterEvent::PodDeleted)
    }

    fn listed(all: Vec<ApiPod>) -> ClusterEvent {
        ClusterEvent::PodsListed(all)
    }
}

impl Watched for Namespace {
    type Kept = (String, Labels);
    const KIND: &'static str = "namespace";

    fn keep(&self) -> Option<(String, Labels)> {
        Some((self.name_any(), self.labels().clone()))
    }

    fn applied((name, labels): (String, Labels)) -> ClusterEvent {
        ClusterEvent::NamespaceApplied { name, labels }
    }

    fn deleted(&self) -> Option<ClusterEvent> {
        Some(ClusterEvent::NamespaceDeleted(self.name_any()))
    }

    fn listed(all: Vec<(String, Labels)>) -> ClusterEvent {
        ClusterEvent::NamespacesListed(all)
    }
}

/// Runs one watcher, buffering (re)lists until they complete.
async fn follow<K: Watched>(api: Api<K>, config: watcher::Config, agent: &Agent) {
    let mut relist: Option<Vec<K::Kept>> = None;
    let mut events = watcher::watcher(api, config).default_backoff().boxed();
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                // The backoff delays the next attempt; the watcher relists if it must.
                warn!(kind = K::KIND, error = %e, "watch failed; retrying");
                continue;
            }
        };
        let event = match event {
            Event::Init => {
                relist = Some(Vec::new());
                continue;
            }
            Event::InitApply(object) => {
                if let (Some(buffer), Some(kept)) = (relist.as_mut(), object.keep()) {
                    buffer.push(kept);
                }
                continue;
            }
            Event::InitDone => K::listed(relist.take().unwrap_or_default()),
            Event::Apply(object) => match object.keep() {
                Some(kept) => K::applied(kept),
                None => continue,
            },
            Event::Delete(object) => match object.deleted() {
                Some(event) => event,
                None => continue,
            },
        };
        debug!(kind = K::KIND, ?event, "watch event");
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
    let status = pod.status.as_ref();
    let finished = status
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|phase| phase == "Succeeded" || phase == "Failed");
    Some(ApiPod {
        uid,
        namespace,
        name: pod.name_any(),
        service_account,
        labels: pod.labels().clone(),
        host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
        has_sidecar: pod.annotations().contains_key(SIDECAR_STATUS),
        ips: pod_ips(pod),
        finished,
    })
}

/// `status.podIPs`, or `status.podIP` from an API server that fills only that; an address
/// that does not parse is left out (logged).
fn pod_ips(pod: &Pod) -> Vec<IpAddr> {
    let Some(status) = pod.status.as_ref() else {
        return Vec::new();
    };
    let listed: Vec<&str> = match status.pod_ips.as_deref() {
        Some(ips) if !ips.is_empty() => ips.iter().map(|ip| ip.ip.as_str()).collect(),
        _ => status.pod_ip.as_deref().into_iter().collect(),
    };
    let mut ips = Vec::with_capacity(listed.len());
    for text in listed {
        match text.parse() {
            Ok(ip) => ips.push(ip),
            Err(_) => {
                warn!(name = %pod.name_any(), ip = text, "pod IP that is not an address ignored")
            }
        }
    }
    ips
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use serde_json::json;

    use super::*;

    fn pod(spec: serde_json::Value, annotations: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {
                "name": "web-0", "namespace": "shop", "uid": "u-1",
                "labels": {"app": "web"}, "annotations": annotations,
            },
            "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn pods_keep_what_the_decision_needs() {
        let kept = api_pod(&pod(
            json!({"containers": [], "serviceAccountName": "web", "hostNetwork": true}),
            json!({}),
        ))
        .unwrap();
        assert_eq!(kept.uid, "u-1");
        assert_eq!(
            (kept.namespace.as_str(), kept.name.as_str()),
            ("shop", "web-0")
        );
        assert_eq!(kept.service_account, "web");
        assert_eq!(kept.labels["app"], "web");
        assert!(kept.host_network);
        assert!(!kept.has_sidecar);

        // No service account named: the pod runs as `default`; the old field still counts.
        let unnamed = api_pod(&pod(json!({"containers": []}), json!({}))).unwrap();
        assert_eq!(unnamed.service_account, "default");
        assert!(!unnamed.host_network);
        let legacy = api_pod(&pod(
            json!({"containers": [], "serviceAccount": "old"}),
            json!({SIDECAR_STATUS: "{}"}),
        ))
        .unwrap();
        assert_eq!(legacy.service_account, "old");
        assert!(legacy.has_sidecar);
    }

    #[test]
    fn pods_keep_their_ips_and_whether_they_finished() {
        let mut running = pod(json!({"containers": []}), json!({}));
        assert!(api_pod(&running).unwrap().ips.is_empty(), "no status yet");
        running.status = serde_json::from_value(json!({
            "phase": "Running",
            "podIP": "10.244.1.2",
            "podIPs": [{"ip": "10.244.1.2"}, {"ip": "fd00::2"}, {"ip": "bogus"}],
        }))
        .unwrap();
        let kept = api_pod(&running).unwrap();
        let ips: Vec<IpAddr> = vec!["10.244.1.2".parse().unwrap(), "fd00::2".parse().unwrap()];
        assert_eq!(kept.ips, ips);
        assert!(!kept.finished);

        // An API server that fills only podIP; a completed pod keeps its old address.
        let mut done = pod(json!({"containers": []}), json!({}));
        done.status =
            serde_json::from_value(json!({"phase": "Succeeded", "podIP": "10.244.1.3"})).unwrap();
        let kept = api_pod(&done).unwrap();
        assert_eq!(kept.ips, ["10.244.1.3".parse::<IpAddr>().unwrap()]);
        assert!(kept.finished);
    }

    #[test]
    fn a_pod_without_uid_is_skipped() {
        let mut without = pod(json!({"containers": []}), json!({}));
        without.metadata.uid = None;
        assert!(api_pod(&without).is_none());
    }
}
