//! Pods → workloads: IPs, node, identity, labels, enrollment and waypoint.

use std::net::IpAddr;

use ambit_model::{TransportProtocol, Workload, WorkloadSpec};

use super::TranslateOptions;
use super::error::Errors;
use super::labels::{GATEWAY_NAME, NamespaceSettings, SIDECAR_STATUS, dataplane_mode, labels_of};
use super::waypoints::{Traffic, Waypoints, bind};
use crate::objects::{Pod, Resources};

/// Istio's workload UIDs: `<cluster>//Pod/<namespace>/<name>`; stable across pod restarts
/// with the same name, and available in local mode, where objects have no server UID.
const CLUSTER_ID: &str = "Kubernetes";
/// The service account Kubernetes gives a pod that names none.
const DEFAULT_SERVICE_ACCOUNT: &str = "default";

/// A workload and the pod it came from (services read its container ports).
#[derive(Debug)]
pub(crate) struct PodWorkload<'a> {
    pub(crate) workload: Workload,
    pub(crate) pod: &'a Pod,
}

/// The workload UID of pod `namespace/name`.
pub(crate) fn workload_uid(namespace: &str, name: &str) -> String {
    format!("{CLUSTER_ID}//Pod/{namespace}/{name}")
}

/// Every running pod with an IP becomes a workload; enrolled (HBONE) when its dataplane mode
/// says so. Pods not running or without IP are skipped silently: that is a normal state.
pub(crate) fn translate<'a>(
    resources: &'a Resources,
    options: &TranslateOptions,
    namespaces: &NamespaceSettings,
    waypoints: &Waypoints,
    errors: &mut Errors,
) -> Vec<PodWorkload<'a>> {
    let mut out = Vec::new();
    for pod in resources.pods() {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let mut report = |field: String, message: String| {
            errors.push("Pod", namespace, name, field, message);
        };
        match translate_pod(
            pod,
            namespace,
            name,
            options,
            namespaces,
            waypoints,
            &mut report,
        ) {
            Ok(Some(spec)) => match Workload::new(spec) {
                Ok(workload) => out.push(PodWorkload { workload, pod }),
                Err(err) => errors.model("Pod", namespace, name, &err),
            },
            Ok(None) => {}
            Err((field, message)) => errors.push("Pod", namespace, name, field, message),
        }
    }
    out
}

fn translate_pod(
    pod: &Pod,
    namespace: &str,
    name: &str,
    options: &TranslateOptions,
    namespaces: &NamespaceSettings,
    waypoints: &Waypoints,
    report: &mut dyn FnMut(String, String),
) -> Result<Option<WorkloadSpec>, (String, String)> {
    let Some(status) = &pod.status else {
        return Ok(None);
    };
    if status.phase.as_deref() != Some("Running") {
        return Ok(None);
    }
    let ips = pod_ips(pod)?;
    if ips.is_empty() {
        return Ok(None);
    }
    let spec = pod.spec.as_ref();
    let node = spec.and_then(|s| s.node_name.clone()).ok_or_else(|| {
        (
            "spec.nodeName".to_owned(),
            "a running pod must be on a node".to_owned(),
        )
    })?;
    let labels = labels_of(&pod.metadata);
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let has_sidecar = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(SIDECAR_STATUS));
    let pod_mode = dataplane_mode(labels).unwrap_or_else(|(field, message)| {
        report(field, message);
        None
    });
    // Host-network pods share the node's network namespace, which cannot be captured.
    let enrolled =
        !host_network && !has_sidecar && pod_mode.unwrap_or_else(|| namespaces.enrolled(namespace));
    let service_account = spec
        .and_then(|s| s.service_account_name.clone().or(s.service_account.clone()))
        .filter(|sa| !sa.is_empty())
        .unwrap_or_else(|| DEFAULT_SERVICE_ACCOUNT.to_owned());
    let is_waypoint_pod = labels
        .get(GATEWAY_NAME)
        .is_some_and(|gateway| waypoints.is_waypoint(namespace, gateway));
    let waypoint = if enrolled && !is_waypoint_pod {
        bind(
            labels,
            namespace,
            namespaces,
            waypoints,
            Traffic::Workload,
            report,
        )
    } else {
        None
    };
    Ok(Some(WorkloadSpec {
        uid: workload_uid(namespace, name),
        name: name.to_owned(),
        namespace: namespace.to_owned(),
        service_account,
        node,
        ips,
        labels: labels.clone(),
        trust_domain: options.trust_domain.clone(),
        protocol: if enrolled {
            TransportProtocol::Hbone
        } else {
            TransportProtocol::Tcp
        },
        waypoint,
        network: None,
    }))
}

/// `status.podIPs`, else `status.podIP`.
fn pod_ips(pod: &Pod) -> Result<Vec<IpAddr>, (String, String)> {
    let Some(status) = &pod.status else {
        return Ok(Vec::new());
    };
    let parse = |field: String, value: &str| {
        value
            .parse::<IpAddr>()
            .map_err(|_| (field, format!("{value:?} is not an IP address")))
    };
    match (&status.pod_ips, &status.pod_ip) {
        (Some(list), _) if !list.is_empty() => list
            .iter()
            .enumerate()
            .map(|(i, ip)| parse(format!("status.podIPs[{i}].ip"), &ip.ip))
            .collect(),
        (_, Some(ip)) if !ip.is_empty() => Ok(vec![parse("status.podIP".into(), ip)?]),
        _ => Ok(Vec::new()),
    }
}
