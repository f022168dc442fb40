//! [`WaypointDeployer`]: for each Gateway of class `istio-waypoint`, a ServiceAccount,
//! Deployment and Service named after the Gateway (as Istio does), written with server-side
//! apply and owned by the Gateway; then the Gateway's status (Accepted, Programmed, addresses).
//!
//! Deletion is left to Kubernetes' garbage collector: every object carries an ownerReference to
//! the Gateway (`controller: true`, `blockOwnerDeletion: true`), so deleting the Gateway deletes
//! them. The deployer never deletes anything itself, which keeps `delete` out of its RBAC.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};

use super::FIELD_MANAGER;
use super::convert::WATCHED_KINDS;
use crate::objects::{Gateway, Kind, ResourceKey, Resources};

/// Label Istio puts on a waypoint's pods and Service; the Service selects on it.
const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";
/// Annotation naming another ServiceAccount for the waypoint (Istio's).
const SERVICE_ACCOUNT_ANNOTATION: &str = "gateway.istio.io/service-account";
const HBONE_PORT: u16 = 15008;
const METRICS_PORT: u16 = 15020;
const READINESS_PORT: u16 = 15021;

/// How waypoints are deployed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaypointSettings {
    /// The container image.
    pub image: String,
    /// The image pull policy (`IfNotPresent`, `Always`, `Never`); the cluster default if `None`.
    pub image_pull_policy: Option<String>,
    /// The container arguments. `{name}`, `{namespace}`, `{service_account}` and `{identity}`
    /// are replaced by the Gateway's values.
    pub args: Vec<String>,
    /// The SPIFFE trust domain (for `{identity}`).
    pub trust_domain: String,
    /// Replicas of each waypoint Deployment.
    pub replicas: i32,
}

/// The three objects of one waypoint, as server-side apply bodies.
#[derive(Debug, Clone, PartialEq)]
pub struct WaypointObjects {
    /// The ServiceAccount.
    pub service_account: Value,
    /// The Deployment.
    pub deployment: Value,
    /// The Service.
    pub service: Value,
}

/// A waypoint could not be deployed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeployError {
    /// The Gateway lacks what the objects need (a uid, a name).
    #[error("Gateway {namespace}/{name}: {field}: {message}")]
    InvalidGateway {
        /// The Gateway's namespace.
        namespace: String,
        /// The Gateway's name.
        name: String,
        /// The field at fault.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// An API call failed.
    #[error("Gateway {namespace}/{name}: applying {object}: {source}")]
    Api {
        /// The Gateway's namespace.
        namespace: String,
        /// The Gateway's name.
        name: String,
        /// What was being written.
        object: &'static str,
        /// The API error.
        source: kube::Error,
    },
}

/// Deploys waypoints for `istio-waypoint` Gateways; remembers what it applied so an unchanged
/// Gateway is not reapplied on every snapshot.
pub struct WaypointDeployer {
    client: Client,
    settings: WaypointSettings,
    /// Gateway → (uid, generation) last deployed successfully.
    deployed: Mutex<HashMap<ResourceKey, (String, i64)>>,
}

impl Default for WaypointSettings {
    fn default() -> Self {
        Self {
            image: "ghcr.io/ambit-mesh/waypoint:latest".to_owned(),
            image_pull_policy: None,
            args: vec!["--identity".to_owned(), "{identity}".to_owned()],
            trust_domain: ambit_identity::DEFAULT_TRUST_DOMAIN.to_owned(),
            replicas: 1,
        }
    }
}

impl DeployError {
    fn invalid(gateway: &Gateway, field: &str, message: impl Into<String>) -> Self {
        let (namespace, name) = names(gateway);
        Self::InvalidGateway {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            field: field.to_owned(),
            message: message.into(),
        }
    }

    /// The Gateway itself is at fault (retrying will not help until it changes).
    pub fn is_invalid_gateway(&self) -> bool {
        matches!(self, Self::InvalidGateway { .. })
    }
}

impl WaypointDeployer {
    /// A deployer writing through `client`.
    pub fn new(client: Client, settings: WaypointSettings) -> Self {
        Self {
            client,
            settings,
            deployed: Mutex::new(HashMap::new()),
        }
    }

    /// Deploys every waypoint Gateway of `resources` that is new or changed since it was last
    /// deployed; returns the failures (each is retried on the next call).
    pub async fn sync(&self, resources: &Resources) -> Vec<DeployError> {
        let mut errors = Vec::new();
        let mut present = Vec::new();
        for gateway in resources.gateways().filter(|g| g.is_waypoint()) {
            let (namespace, name) = names(gateway);
            let key = ResourceKey {
                kind: Kind::Gateway,
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            };
            let version = (
                gateway.metadata.uid.clone().unwrap_or_default(),
                gateway.metadata.generation.unwrap_or_default(),
            );
            present.push(key.clone());
            if self.lock().get(&key) == Some(&version) {
                continue;
            }
            match self.deploy(gateway).await {
                Ok(()) => {
                    self.lock().insert(key, version);
                }
                Err(err) => {
                    tracing::warn!(error = %err, "waypoint not deployed");
                    errors.push(err);
                }
            }
        }
        // Deleted Gateways: their objects go with them (owner references); forget them.
        self.lock().retain(|key, _| present.contains(key));
        errors
    }

    /// Applies the waypoint's ServiceAccount, Deployment and Service, then the Gateway status.
    pub async fn deploy(&self, gateway: &Gateway) -> Result<(), DeployError> {
        let (namespace, name) = names(gateway);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let api_error = |object: &'static str| {
            move |source| DeployError::Api {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                object,
                source,
            }
        };
        if let Err(message) = check_listeners(gateway) {
            let status = gateway_status(gateway, Err(("ListenersNotValid", message)), &now());
            return self.apply_gateway_status(gateway, status).await;
        }
        let objects = waypoint_objects(gateway, &self.settings)?;
        let service_account_name = objects.service_account["metadata"]["name"]
            .as_str()
            .unwrap_or(name)
            .to_owned();
        Api::<ServiceAccount>::namespaced(self.client.clone(), namespace)
            .patch(
                &service_account_name,
                &params,
                &Patch::Apply(&objects.service_account),
            )
            .await
            .map_err(api_error("ServiceAccount"))?;
        Api::<Deployment>::namespaced(self.client.clone(), namespace)
            .patch(name, &params, &Patch::Apply(&objects.deployment))
            .await
            .map_err(api_error("Deployment"))?;
        let service = Api::<Service>::namespaced(self.client.clone(), namespace)
            .patch(name, &params, &Patch::Apply(&objects.service))
            .await
            .map_err(api_error("Service"))?;
        let addresses = cluster_ips(&service);
        let programmed = if addresses.is_empty() {
            Err((
                "AddressNotAssigned",
                format!("Service {namespace}/{name} has no cluster IP yet"),
            ))
        } else {
            Ok(addresses)
        };
        let status = gateway_status(gateway, programmed, &now());
        self.apply_gateway_status(gateway, status).await
    }

    async fn apply_gateway_status(
        &self,
        gateway: &Gateway,
        status: Value,
    ) -> Result<(), DeployError> {
        let (namespace, name) = names(gateway);
        let resource = gateway_api().api_resource();
        Api::<DynamicObject>::namespaced_with(self.client.clone(), namespace, &resource)
            .patch_status(
                name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&status),
            )
            .await
            .map_err(|source| DeployError::Api {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                object: "Gateway status",
                source,
            })?;
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ResourceKey, (String, i64)>> {
        self.deployed.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl fmt::Debug for WaypointDeployer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaypointDeployer")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The objects of `gateway`'s waypoint. Pure: the same Gateway and settings give the same
/// bodies.
// The error keeps the API error whole for the logs; it is returned once per bad Gateway.
#[allow(clippy::result_large_err)]
pub fn waypoint_objects(
    gateway: &Gateway,
    settings: &WaypointSettings,
) -> Result<WaypointObjects, DeployError> {
    let (namespace, name) = names(gateway);
    if name.is_empty() {
        return Err(DeployError::invalid(
            gateway,
            "metadata.name",
            "is required",
        ));
    }
    let uid = gateway
        .metadata
        .uid
        .as_deref()
        .filter(|uid| !uid.is_empty())
        .ok_or_else(|| {
            DeployError::invalid(gateway, "metadata.uid", "is required for owner references")
        })?;
    let service_account = gateway
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SERVICE_ACCOUNT_ANNOTATION))
        .map_or(name, String::as_str);
    let identity =
        ambit_identity::SpiffeId::new(&settings.trust_domain, namespace, service_account).map_err(
            |err| {
                DeployError::invalid(
                    gateway,
                    &format!("metadata.annotations[{SERVICE_ACCOUNT_ANNOTATION:?}]"),
                    format!("no valid identity: {err}"),
                )
            },
        )?;
    let owner = json!([{
        "apiVersion": gateway.api_version,
        "kind": "Gateway",
        "name": name,
        "uid": uid,
        "controller": true,
        "blockOwnerDeletion": true,
    }]);
    let labels = json!({
        GATEWAY_NAME_LABEL: name,
        // The waypoint's own traffic is not captured by ztunnel.
        "istio.io/dataplane-mode": "none",
    });
    let metadata = |object_name: &str| {
        json!({
            "name": object_name,
            "namespace": namespace,
            "labels": labels,
            "ownerReferences": owner,
        })
    };
    let args: Vec<String> = settings
        .args
        .iter()
        .map(|arg| {
            arg.replace("{name}", name)
                .replace("{namespace}", namespace)
                .replace("{service_account}", service_account)
                .replace("{identity}", &identity.to_string())
        })
        .collect();
    let mut container = json!({
        "name": "waypoint",
        "image": settings.image,
        "args": args,
        "ports": [
            {"name": "hbone", "containerPort": HBONE_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
            {"name": "status", "containerPort": READINESS_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": {
            "httpGet": {"path": "/healthz/ready", "port": READINESS_PORT},
            "periodSeconds": 5,
        },
        "env": [
            env_from_field("POD_NAME", "metadata.name"),
            env_from_field("POD_NAMESPACE", "metadata.namespace"),
            env_from_field("NODE_NAME", "spec.nodeName"),
            env_from_field("INSTANCE_IP", "status.podIP"),
        ],
    });
    if let Some(policy) = &settings.image_pull_policy {
        container["imagePullPolicy"] = json!(policy);
    }
    let service_account_object = json!({
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata(service_account),
    });
    let deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(name),
        "spec": {
            "replicas": settings.replicas,
            "selector": {"matchLabels": {GATEWAY_NAME_LABEL: name}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": service_account,
                    "containers": [container],
                },
            },
        },
    });
    let service = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(name),
        "spec": {
            "type": "ClusterIP",
            "selector": {GATEWAY_NAME_LABEL: name},
            "ports": [
                {"name": "mesh", "port": HBONE_PORT, "targetPort": HBONE_PORT,
                 "protocol": "TCP", "appProtocol": "all"},
                {"name": "metrics", "port": METRICS_PORT, "targetPort": METRICS_PORT,
                 "protocol": "TCP"},
            ],
        },
    });
    Ok(WaypointObjects {
        service_account: service_account_object,
        deployment,
        service,
    })
}

/// The Gateway status body: Accepted, and Programmed with the addresses, or why not.
fn gateway_status(
    gateway: &Gateway,
    programmed: Result<Vec<String>, (&str, String)>,
    now: &Time,
) -> Value {
    let (namespace, name) = names(gateway);
    let generation = gateway.metadata.generation.unwrap_or_default();
    let condition = |type_: &str, ok: bool, reason: &str, message: &str| {
        json!({
            "type": type_,
            "status": if ok { "True" } else { "False" },
            "reason": reason,
            "message": message,
            "observedGeneration": generation,
            "lastTransitionTime": now,
        })
    };
    let (conditions, addresses) = match programmed {
        Ok(addresses) => (
            vec![
                condition("Accepted", true, "Accepted", "waypoint deployed by ambit"),
                condition(
                    "Programmed",
                    true,
                    "Programmed",
                    "waypoint Service has an address",
                ),
            ],
            addresses,
        ),
        Err((reason @ "ListenersNotValid", message)) => (
            vec![
                condition("Accepted", false, reason, &message),
                condition(
                    "Programmed",
                    false,
                    "Invalid",
                    "the Gateway was not accepted",
                ),
            ],
            Vec::new(),
        ),
        Err((reason, message)) => (
            vec![
                condition("Accepted", true, "Accepted", "waypoint deployed by ambit"),
                condition("Programmed", false, reason, &message),
            ],
            Vec::new(),
        ),
    };
    let addresses: Vec<Value> = addresses
        .into_iter()
        .map(|ip| json!({"type": "IPAddress", "value": ip}))
        .collect();
    json!({
        "apiVersion": gateway.api_version,
        "kind": "Gateway",
        "metadata": {"name": name, "namespace": namespace},
        "status": {"addresses": addresses, "conditions": conditions},
    })
}

/// A waypoint needs its `mesh` listener: port 15008, protocol HBONE.
fn check_listeners(gateway: &Gateway) -> Result<(), String> {
    let ok = gateway
        .spec
        .listeners
        .iter()
        .any(|l| l.port == HBONE_PORT && l.protocol == "HBONE");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "a waypoint needs a listener on port {HBONE_PORT} with protocol HBONE"
        ))
    }
}

fn cluster_ips(service: &Service) -> Vec<String> {
    let Some(spec) = &service.spec else {
        return Vec::new();
    };
    let ips: Vec<String> = match (&spec.cluster_ips, &spec.cluster_ip) {
        (Some(ips), _) if !ips.is_empty() => ips.clone(),
        (_, Some(ip)) => vec![ip.clone()],
        _ => Vec::new(),
    };
    ips.into_iter()
        .filter(|ip| !ip.is_empty() && ip != "None")
        .collect()
}

fn env_from_field(name: &str, path: &str) -> Value {
    json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}})
}

fn names(gateway: &Gateway) -> (&str, &str) {
    (
        gateway.metadata.namespace.as_deref().unwrap_or_default(),
        gateway.metadata.name.as_deref().unwrap_or_default(),
    )
}

fn gateway_api() -> super::convert::KindApi {
    // The table always has Gateway; fall back to its known coordinates regardless.
    WATCHED_KINDS
        .iter()
        .copied()
        .find(|api| api.kind == Kind::Gateway)
        .unwrap_or(super::convert::KindApi {
            kind: Kind::Gateway,
            group: "gateway.networking.k8s.io",
            version: "v1",
            plural: "gateways",
        })
}

pub(crate) fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}
