//! `ambit waypoint apply|delete|list` against a cluster: the Gateway local mode builds
//! ([`crate::waypoint::gateway_yaml`]), server-side applied with field manager `ambit`.

use std::time::Duration;

use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, Preconditions,
};
use kube::runtime::wait::await_condition;
use serde_json::{Value, json};

use super::{ClusterError, is_not_found};
use crate::args::WaypointFor;
use crate::table::Table;
use crate::waypoint::{USE_WAYPOINT_LABEL, WAYPOINT_CLASS, WAYPOINT_FOR_LABEL, gateway_yaml};

/// The field manager of every write.
pub const FIELD_MANAGER: &str = "ambit";

/// What `ambit waypoint apply` does on a cluster.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Namespace of the Gateway.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// `istio.io/waypoint-for`.
    pub waypoint_for: WaypointFor,
    /// Also label the namespace `istio.io/use-waypoint=<name>`.
    pub enroll_namespace: bool,
    /// Wait (at most this long) for the Gateway's `Programmed` condition.
    pub wait: Option<Duration>,
}

/// The Gateway API resource (`gateway.networking.k8s.io/v1`, `gateways`).
pub fn gateway_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "Gateway"),
        "gateways",
    )
}

fn gateways(client: &kube::Client, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), namespace, &gateway_resource())
}

/// Applies the waypoint Gateway (and the namespace label, and waits, as asked); returns what
/// to print.
pub async fn apply(client: &kube::Client, options: &ApplyOptions) -> Result<String, ClusterError> {
    let ApplyOptions {
        namespace, name, ..
    } = options;
    let gateway: Value =
        serde_yaml_ng::from_str(&gateway_yaml(namespace, name, options.waypoint_for))
            .map_err(|error| ClusterError::Invalid(format!("building the Gateway: {error}")))?;
    let api = gateways(client, namespace);
    // Force: the waypoint is ambit's to define, as `istioctl waypoint apply` does.
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(name, &params, &Patch::Apply(&gateway))
        .await
        .map_err(ClusterError::api(format!(
            "applying Gateway {namespace}/{name}"
        )))?;
    let mut out = format!(
        "waypoint {namespace}/{name} applied (Gateway, class {WAYPOINT_CLASS}, for {})\n",
        gateway["metadata"]["labels"][WAYPOINT_FOR_LABEL]
            .as_str()
            .unwrap_or_default()
    );
    if options.enroll_namespace {
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
        let label = json!({"metadata": {"labels": {USE_WAYPOINT_LABEL: name}}});
        namespaces
            .patch(
                namespace,
                &PatchParams {
                    field_manager: Some(FIELD_MANAGER.to_owned()),
                    ..PatchParams::default()
                },
                &Patch::Merge(&label),
            )
            .await
            .map_err(ClusterError::api_or_not_found(
                format!("namespace {namespace}"),
                format!("labeling namespace {namespace}"),
            ))?;
        out.push_str(&format!(
            "namespace/{namespace} labeled {USE_WAYPOINT_LABEL}={name}\n"
        ));
    }
    if let Some(timeout) = options.wait {
        let programmed = wait_programmed(&api, namespace, name, timeout).await?;
        out.push_str(&format!(
            "waypoint {namespace}/{name} programmed (address {})\n",
            addresses(&programmed)
        ));
    }
    Ok(out)
}

async fn wait_programmed(
    api: &Api<DynamicObject>,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> Result<DynamicObject, ClusterError> {
    // The last condition seen, for the timeout message.
    let last = std::sync::Mutex::new(None::<String>);
    let condition = |gateway: Option<&DynamicObject>| {
        let Some(gateway) = gateway else {
            return false;
        };
        let (status, reason) = programmed(gateway);
        if let Ok(mut last) = last.lock() {
            *last = Some(reason);
        }
        status == "True"
    };
    let waited = tokio::time::timeout(timeout, await_condition(api.clone(), name, condition)).await;
    match waited {
        Ok(Ok(Some(gateway))) => Ok(gateway),
        Ok(Ok(None)) => Err(ClusterError::NotFound {
            what: format!("waypoint {namespace}/{name}"),
        }),
        Ok(Err(source)) => Err(ClusterError::Watch {
            action: format!("watching Gateway {namespace}/{name}"),
            source,
        }),
        Err(_) => Err(ClusterError::WaitTimeout {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            timeout,
            last: last
                .lock()
                .ok()
                .and_then(|last| last.clone())
                .unwrap_or_else(|| "no status yet".to_owned()),
        }),
    }
}

/// The `Programmed` condition's status (`True`, `False`, `Unknown`; `-` when absent or about
/// an older generation) and a short description.
fn programmed(gateway: &DynamicObject) -> (String, String) {
    let generation = gateway.metadata.generation;
    let condition = gateway.data["status"]["conditions"]
        .as_array()
        .and_then(|conditions| {
            conditions
                .iter()
                .find(|condition| condition["type"] == "Programmed")
        });
    let Some(condition) = condition else {
        return ("-".to_owned(), "no Programmed condition yet".to_owned());
    };
    let observed = condition["observedGeneration"].as_i64();
    if let (Some(observed), Some(generation)) = (observed, generation)
        && observed < generation
    {
        return (
            "-".to_owned(),
            format!("Programmed is about generation {observed}, not {generation}"),
        );
    }
    let status = condition["status"].as_str().unwrap_or("Unknown").to_owned();
    let reason = condition["reason"].as_str().unwrap_or_default();
    let message = condition["message"].as_str().unwrap_or_default();
    let description = format!("Programmed={status} {reason} {message}")
        .trim_end()
        .to_owned();
    (status, description)
}

fn addresses(gateway: &DynamicObject) -> String {
    let values: Vec<&str> = gateway.data["status"]["addresses"]
        .as_array()
        .map(|addresses| {
            addresses
                .iter()
                .filter_map(|address| address["value"].as_str())
                .collect()
        })
        .unwrap_or_default();
    if values.is_empty() {
        "-".to_owned()
    } else {
        values.join(",")
    }
}

fn class(gateway: &DynamicObject) -> &str {
    gateway.data["spec"]["gatewayClassName"]
        .as_str()
        .unwrap_or_default()
}

/// Deletes the waypoint Gateway. A missing one is an error unless `ignore_not_found`; a
/// Gateway of another class is never deleted.
pub async fn delete(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    ignore_not_found: bool,
) -> Result<String, ClusterError> {
    let api = gateways(client, namespace);
    let what = format!("waypoint {namespace}/{name}");
    let gateway = match api.get(name).await {
        Ok(gateway) => gateway,
        Err(error) if is_not_found(&error) => {
            return if ignore_not_found {
                Ok(format!("{what} not found; nothing to delete\n"))
            } else {
                Err(ClusterError::NotFound { what })
            };
        }
        Err(source) => {
            return Err(ClusterError::Api {
                action: format!("reading Gateway {namespace}/{name}"),
                source,
            });
        }
    };
    if class(&gateway) != WAYPOINT_CLASS {
        return Err(ClusterError::Refused(format!(
            "Gateway {namespace}/{name} has class {:?}, not {WAYPOINT_CLASS}: not a waypoint, \
             not deleted",
            class(&gateway)
        )));
    }
    // Only the object just checked: a Gateway recreated meanwhile under the same name stays.
    let params = DeleteParams {
        preconditions: gateway.metadata.uid.clone().map(|uid| Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(format!("{what} deleted\n")),
        Err(error) if is_not_found(&error) && ignore_not_found => {
            Ok(format!("{what} not found; nothing to delete\n"))
        }
        Err(error) if is_not_found(&error) => Err(ClusterError::NotFound { what }),
        Err(source) => Err(ClusterError::Api {
            action: format!("deleting Gateway {namespace}/{name}"),
            source,
        }),
    }
}

/// The waypoints (Gateways of class `istio-waypoint`) of `namespace`, or of every namespace.
pub async fn list(client: &kube::Client, namespace: Option<&str>) -> Result<String, ClusterError> {
    let api: Api<DynamicObject> = match namespace {
        Some(namespace) => gateways(client, namespace),
        None => Api::all_with(client.clone(), &gateway_resource()),
    };
    let listed = api
        .list(&ListParams::default())
        .await
        .map_err(ClusterError::api("listing Gateways"))?;
    let mut waypoints: Vec<&DynamicObject> = listed
        .items
        .iter()
        .filter(|gateway| class(gateway) == WAYPOINT_CLASS)
        .collect();
    waypoints.sort_by_key(|gateway| {
        (
            gateway.metadata.namespace.clone(),
            gateway.metadata.name.clone(),
        )
    });
    let mut table = Table::new(&["NAMESPACE", "NAME", "FOR", "ADDRESS", "PROGRAMMED"]);
    for gateway in waypoints {
        let waypoint_for = gateway
            .metadata
            .labels
            .as_ref()
            .and_then(|labels| labels.get(WAYPOINT_FOR_LABEL))
            // Istio's default when the label is absent.
            .map_or("service", String::as_str);
        table.row(vec![
            gateway.metadata.namespace.clone().unwrap_or_default(),
            gateway.metadata.name.clone().unwrap_or_default(),
            waypoint_for.to_owned(),
            addresses(gateway),
            programmed(gateway).0,
        ]);
    }
    Ok(table.render())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway(status: Value, generation: i64) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": "wp", "namespace": "shop", "generation": generation},
            "spec": {"gatewayClassName": "istio-waypoint"},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn programmed_reads_the_condition_of_the_current_generation_only() {
        let current = gateway(
            json!({"conditions": [{"type": "Programmed", "status": "True", "observedGeneration": 2}],
                   "addresses": [{"value": "10.0.0.7"}, {"value": "fd00::7"}]}),
            2,
        );
        assert_eq!(programmed(&current).0, "True");
        assert_eq!(addresses(&current), "10.0.0.7,fd00::7");
        let stale = gateway(
            json!({"conditions": [{"type": "Programmed", "status": "True", "observedGeneration": 1}]}),
            2,
        );
        assert_eq!(programmed(&stale).0, "-");
        let pending = gateway(
            json!({"conditions": [{"type": "Programmed", "status": "False", "reason": "Pending"}]}),
            1,
        );
        assert_eq!(
            programmed(&pending),
            ("False".to_owned(), "Programmed=False Pending".to_owned())
        );
        assert_eq!(programmed(&gateway(json!({}), 1)).0, "-");
        assert_eq!(addresses(&gateway(json!({}), 1)), "-");
    }
}
