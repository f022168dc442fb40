//! `ambit ztunnel-config …` against a cluster: finds the ztunnel pod of a node (the
//! `ambit-ztunnel` chart's DaemonSet, label `app.kubernetes.io/name=ztunnel`) and reads the
//! same admin documents local mode reads, with one HTTP/1.1 GET through a port-forward to the
//! pod's port 15000 (`/api/v1/namespaces/<ns>/pods/<pod>/portforward`, as `kubectl
//! port-forward` does). The API server's pod proxy cannot be used: it dials the pod's IP, and
//! ztunnel's admin server listens on 127.0.0.1 only (it also serves `/logging` and
//! `/quitquitquit`); the kubelet's port-forward connects from inside the pod's network
//! namespace. The CLI's credentials need `create` on `pods/portforward` in the ztunnel
//! namespace, besides `get`/`list` on pods.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::client::UpgradeConnectionError;
use serde_json::Value;

use super::ClusterError;
use crate::admin::MAX_DOCUMENT;
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

/// Aborts the port-forward's background task when the fetch ends, however it ends (a timeout
/// drops the fetch mid-way; the WebSocket must not outlive it).
struct AbortOnDrop(kube::api::Portforwarder);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// GETs an admin document of `pod` through a port-forward to its admin port and parses it as
/// JSON, all within `timeout`.
pub async fn fetch(
    client: &kube::Client,
    namespace: &str,
    pod: &ZtunnelPod,
    endpoint: &str,
    timeout: Duration,
) -> Result<Value, ClusterError> {
    let action = format!(
        "GET {endpoint} from ztunnel pod {namespace}/{} (node {}) through a port-forward to port \
         {ADMIN_PORT}",
        pod.name, pod.node
    );
    tokio::time::timeout(
        timeout,
        fetch_unbounded(client, namespace, pod, endpoint, &action),
    )
    .await
    .map_err(|_| ClusterError::Timeout {
        action: action.clone(),
        timeout,
    })?
}

async fn fetch_unbounded(
    client: &kube::Client,
    namespace: &str,
    pod: &ZtunnelPod,
    endpoint: &str,
    action: &str,
) -> Result<Value, ClusterError> {
    let admin_error = |message: String| ClusterError::Admin {
        action: action.to_owned(),
        message,
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let mut forwarder = AbortOnDrop(
        pods.portforward(&pod.name, &[ADMIN_PORT])
            .await
            .map_err(|source| refused(namespace, &pod.name, action, source))?,
    );
    let (Some(stream), Some(kubelet_error)) = (
        forwarder.0.take_stream(ADMIN_PORT),
        forwarder.0.take_error(ADMIN_PORT),
    ) else {
        // kube-rs hands out one stream and one error future per requested port.
        return Err(admin_error(format!(
            "the port-forward has no stream for port {ADMIN_PORT}"
        )));
    };
    let exchange = get(stream, endpoint);
    tokio::pin!(exchange, kubelet_error);
    // The kubelet reports on the port's error channel when it cannot connect to the port (then
    // closes the stream, failing the exchange): its message says why, so it wins. It is sent
    // before the stream closes, so checking it first is enough to never miss it.
    let answer = tokio::select! {
        biased;
        Some(message) = &mut kubelet_error => Err(admin_error(format!(
            "the kubelet could not forward to port {ADMIN_PORT}: {message} (is ztunnel's admin \
             server listening on 127.0.0.1:{ADMIN_PORT} in the pod?)",
            message = message.trim()
        ))),
        answer = &mut exchange => answer.map_err(admin_error),
    }?;
    let (status, body) = answer;
    if status != http::StatusCode::OK {
        let text = String::from_utf8_lossy(&body);
        let first_line = text.trim().lines().next().unwrap_or_default();
        return Err(admin_error(format!(
            "ztunnel's admin server answered {status}: {first_line}"
        )));
    }
    serde_json::from_slice(&body)
        .map_err(|error| admin_error(format!("the answer is not JSON: {error}")))
}

/// Why the API server did not open the port-forward; a 403 names the permission it takes.
fn refused(namespace: &str, pod: &str, action: &str, source: kube::Error) -> ClusterError {
    let status = match &source {
        kube::Error::UpgradeConnection(UpgradeConnectionError::ProtocolSwitch(status)) => *status,
        _ => {
            return ClusterError::Api {
                action: action.to_owned(),
                source,
            };
        }
    };
    let message = match status {
        http::StatusCode::FORBIDDEN => format!(
            "the API server refused the port-forward ({status}): the CLI's credentials need \
             `create` on `pods/portforward` in namespace {namespace}"
        ),
        http::StatusCode::NOT_FOUND => {
            format!(
                "the API server refused the port-forward ({status}): pod {namespace}/{pod} is gone"
            )
        }
        _ => format!("the API server refused the port-forward ({status})"),
    };
    ClusterError::Admin {
        action: action.to_owned(),
        message,
    }
}

/// One HTTP/1.1 GET of `endpoint` over the forwarded `stream`: the status and the body.
async fn get<S>(stream: S, endpoint: &str) -> Result<(http::StatusCode, Bytes), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|error| format!("HTTP handshake over the port-forward: {error}"))?;
    let connection = tokio::spawn(connection);
    // The admin server sees a loopback connection; it is told the address it listens on.
    let request = http::Request::get(endpoint)
        .header(http::header::HOST, format!("127.0.0.1:{ADMIN_PORT}"))
        .body(Empty::<Bytes>::new())
        .map_err(|error| format!("building the request: {error}"))?;
    let response = sender.send_request(request).await.map_err(|error| {
        format!("no HTTP answer through the port-forward (is the admin port open?): {error}")
    })?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_DOCUMENT)
        .collect()
        .await
        .map_err(|error| format!("reading the answer: {error}"))?
        .to_bytes();
    drop(sender);
    connection.abort();
    Ok((status, body))
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
