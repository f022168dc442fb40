//! `ambit ztunnel-config …` against a cluster: finds the ztunnel pod of a node (the
//! `ambit-ztunnel` chart's DaemonSet, label `app.kubernetes.io/name=ztunnel`) and reads the
//! same admin documents local mode reads, through the API server's pod proxy
//! (`/api/v1/namespaces/<ns>/pods/<pod>:15000/proxy/config_dump`).

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use serde_json::Value;

use super::ClusterError;
use crate::ztunnel_config::{Output, Resource, render};

/// The namespace the charts install into (`helm install … -n ambit-system`).
pub const DEFAULT_NAMESPACE: &str = "ambit-system";
/// The label of ztunnel pods (the chart's DaemonSet selector).
pub const ZTUNNEL_SELECTOR: &str = "app.kubernetes.io/name=ztunnel";
/// The port of ztunnel's admin server (the chart's `--admin-addr`).
pub const ADMIN_PORT: u16 = 15000;

/// Which ztunnel to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZtunnelOn {
    /// The one on this node.
    Node(String),
    /// The one on the node of this pod (namespace, name).
    PodsNode(String, String),
    /// The only one there is.
    Only,
}

/// The ztunnel pod chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZtunnelPod {
    /// The pod's name (in the ztunnel namespace).
    pub name: String,
    /// Its node.
    pub node: String,
}

/// Finds the ztunnel pod `on` designates in `namespace`.
pub async fn find(
    client: &kube::Client,
    namespace: &str,
    on: &ZtunnelOn,
) -> Result<ZtunnelPod, ClusterError> {
    let node = match on {
        ZtunnelOn::Node(node) => Some(node.clone()),
        ZtunnelOn::PodsNode(pod_namespace, pod) => {
            let pods: Api<Pod> = Api::namespaced(client.clone(), pod_namespace);
            let found = pods.get(pod).await.map_err(ClusterError::api_or_not_found(
                format!("pod {pod_namespace}/{pod}"),
                format!("reading pod {pod_namespace}/{pod}"),
            ))?;
            let node = found
                .spec
                .and_then(|spec| spec.node_name)
                .filter(|node| !node.is_empty());
            match node {
                Some(node) => Some(node),
                None => {
                    return Err(ClusterError::Ztunnel(format!(
                        "pod {pod_namespace}/{pod} is not scheduled on a node yet"
                    )));
                }
            }
        }
        ZtunnelOn::Only => None,
    };
    let mut params = ListParams::default().labels(ZTUNNEL_SELECTOR);
    if let Some(node) = &node {
        params = params.fields(&format!("spec.nodeName={node}"));
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let listed = pods.list(&params).await.map_err(ClusterError::api(format!(
        "listing ztunnel pods in {namespace}"
    )))?;
    // A pod being replaced (rolling update) is skipped for its successor.
    let mut candidates = Vec::new();
    let mut running = Vec::new();
    for pod in &listed.items {
        let (Some(name), None) = (&pod.metadata.name, &pod.metadata.deletion_timestamp) else {
            continue;
        };
        let ztunnel = ZtunnelPod {
            name: name.clone(),
            node: pod
                .spec
                .as_ref()
                .and_then(|spec| spec.node_name.clone())
                .unwrap_or_default(),
        };
        let phase = pod
            .status
            .as_ref()
            .and_then(|status| status.phase.as_deref());
        if phase == Some("Running") {
            running.push(ztunnel.clone());
        }
        candidates.push(ztunnel);
    }
    let place = match &node {
        Some(node) => format!("on node {node} in namespace {namespace}"),
        None => format!("in namespace {namespace}"),
    };
    match (running.as_slice(), candidates.as_slice()) {
        ([only], _) => Ok(only.clone()),
        ([], []) => Err(ClusterError::Ztunnel(format!(
            "no ztunnel pod ({ZTUNNEL_SELECTOR}) {place}; is the ambit-ztunnel chart installed \
             there (see --ztunnel-namespace)?"
        ))),
        ([], pending) => Err(ClusterError::Ztunnel(format!(
            "ztunnel pod {} {place} is not running",
            names(pending)
        ))),
        (several, _) if node.is_none() => Err(ClusterError::Ztunnel(format!(
            "{} ztunnel pods {place} (on {}); choose one with --node or --pod",
            several.len(),
            several
                .iter()
                .map(|pod| pod.node.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
        (several, _) => Err(ClusterError::Ztunnel(format!(
            "several running ztunnel pods {place}: {}",
            names(several)
        ))),
    }
}

fn names<'a>(pods: impl IntoIterator<Item = &'a ZtunnelPod>) -> String {
    pods.into_iter()
        .map(|pod| pod.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The path of a ztunnel admin endpoint (`/config_dump`) through the pod proxy.
pub fn proxy_path(namespace: &str, pod: &str, endpoint: &str) -> String {
    format!("/api/v1/namespaces/{namespace}/pods/{pod}:{ADMIN_PORT}/proxy{endpoint}")
}

/// GETs an admin document of `pod` through the API server and parses it as JSON.
pub async fn fetch(
    client: &kube::Client,
    namespace: &str,
    pod: &ZtunnelPod,
    endpoint: &str,
    timeout: Duration,
) -> Result<Value, ClusterError> {
    let path = proxy_path(namespace, &pod.name, endpoint);
    let action = format!("GET {path} (ztunnel on node {})", pod.node);
    let request = http::Request::get(&path)
        .body(Vec::new())
        .map_err(|error| ClusterError::Invalid(format!("{action}: {error}")))?;
    let text = tokio::time::timeout(timeout, client.request_text(request))
        .await
        .map_err(|_| ClusterError::Timeout {
            action: action.clone(),
            timeout,
        })?
        .map_err(|source| {
            // The API server answers 502/503 when it cannot open the pod's port.
            let unreachable =
                matches!(&source, kube::Error::Api(status) if matches!(status.code, 502 | 503));
            ClusterError::Api {
                action: if unreachable {
                    format!(
                        "{action} (is ztunnel's admin server listening on the pod's address, \
                         port {ADMIN_PORT}?)"
                    )
                } else {
                    action.clone()
                },
                source,
            }
        })?;
    serde_json::from_str(&text).map_err(|error| {
        ClusterError::Invalid(format!("{action}: the answer is not JSON: {error}"))
    })
}

/// Finds the ztunnel, fetches `resource`'s document and renders it as local mode does.
pub async fn show(
    client: &kube::Client,
    namespace: &str,
    on: &ZtunnelOn,
    resource: Resource,
    output: Output,
    timeout: Duration,
) -> Result<String, ClusterError> {
    let pod = tokio::time::timeout(timeout, find(client, namespace, on))
        .await
        .map_err(|_| ClusterError::Timeout {
            action: format!("finding the ztunnel pod in {namespace}"),
            timeout,
        })??;
    let document = fetch(client, namespace, &pod, resource.endpoint(), timeout).await?;
    Ok(render(resource, output, document)?)
}
