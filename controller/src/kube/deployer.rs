//! [`WaypointDeployer`]: for each Gateway of class `istio-waypoint`, a ServiceAccount,
//! Deployment and Service named after the Gateway (as Istio does), written with server-side
//! apply and owned by the Gateway; then the Gateway's status (Accepted, Programmed, addresses).
//!
//! The objects are built in code from [`WaypointSettings`], or filled in from a
//! [`WaypointTemplate`] (which may add a HorizontalPodAutoscaler and a PodDisruptionBudget).
//! Either way the deployer sets what it relies on itself: the namespace, the owner reference,
//! and the `gateway.networking.k8s.io/gateway-name` label (on every object and on the pods,
//! which is how the CA recognises a waypoint pod) with `istio.io/dataplane-mode: none` on the
//! pods.
//!
//! Deletion is left to Kubernetes' garbage collector: every object carries an ownerReference to
//! the Gateway (`controller: true`, `blockOwnerDeletion: true`), so deleting the Gateway deletes
//! them. The deployer never deletes anything itself, which keeps `delete` out of its RBAC.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

use ambit_identity::SpiffeId;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::{Map, Value, json};

use super::FIELD_MANAGER;
use super::convert::WATCHED_KINDS;
use super::template::{TemplateValues, WaypointTemplate};
use crate::objects::{Gateway, Kind, ResourceKey, Resources};

/// Label Istio puts on a waypoint's pods and Service; the Service selects on it.
const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";
/// Keeps ztunnel from capturing the waypoint's own traffic.
const DATAPLANE_MODE_LABEL: &str = "istio.io/dataplane-mode";
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
    objects: ObjectSource,
    /// Gateway → (uid, generation) last deployed successfully.
    deployed: Mutex<HashMap<ResourceKey, (String, i64)>>,
}

/// How the deployer makes a waypoint's objects.
#[derive(Debug, Clone)]
enum ObjectSource {
    /// Built in code.
    Settings(WaypointSettings),
    /// Filled in from template files.
    Template {
        template: WaypointTemplate,
        trust_domain: String,
    },
}

/// One object to apply for a waypoint.
#[derive(Debug, Clone)]
struct ObjectToApply {
    kind: &'static str,
    api: ApiResource,
    name: String,
    body: Value,
}

/// What every object of one waypoint shares.
struct WaypointNames<'a> {
    namespace: &'a str,
    name: &'a str,
    service_account: &'a str,
    identity: SpiffeId,
    owner: Value,
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
    /// A deployer writing through `client` the objects built from `settings`.
    pub fn new(client: Client, settings: WaypointSettings) -> Self {
        Self {
            client,
            objects: ObjectSource::Settings(settings),
            deployed: Mutex::new(HashMap::new()),
        }
    }

    /// A deployer writing through `client` the objects of `template`, with identities in
    /// `trust_domain`.
    pub fn with_template(client: Client, template: WaypointTemplate, trust_domain: &str) -> Self {
        Self {
            client,
            objects: ObjectSource::Template {
                template,
                trust_domain: trust_domain.to_owned(),
            },
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

    /// Applies the waypoint's objects (ServiceAccount, Deployment, Service, and from a template
    /// an HPA and a PDB), then the Gateway status.
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
        let mut service = None;
        for object in self.objects_for(gateway)? {
            let applied =
                Api::<DynamicObject>::namespaced_with(self.client.clone(), namespace, &object.api)
                    .patch(&object.name, &params, &Patch::Apply(&object.body))
                    .await
                    .map_err(api_error(object.kind))?;
            if object.kind == "Service" {
                service = Some(applied);
            }
        }
        let addresses = service.map(|s| cluster_ips(&s.data)).unwrap_or_default();
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

    /// The objects of `gateway`'s waypoint, in the order they are applied.
    // The error keeps the API error whole for the logs; it is returned once per bad Gateway.
    #[allow(clippy::result_large_err)]
    fn objects_for(&self, gateway: &Gateway) -> Result<Vec<ObjectToApply>, DeployError> {
        match &self.objects {
            ObjectSource::Settings(settings) => {
                let objects = waypoint_objects(gateway, settings)?;
                Ok(vec![
                    built(
                        "",
                        "v1",
                        "ServiceAccount",
                        "serviceaccounts",
                        objects.service_account,
                    ),
                    built(
                        "apps",
                        "v1",
                        "Deployment",
                        "deployments",
                        objects.deployment,
                    ),
                    built("", "v1", "Service", "services", objects.service),
                ])
            }
            ObjectSource::Template {
                template,
                trust_domain,
            } => template_objects(gateway, template, trust_domain),
        }
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
            .field("objects", &self.objects)
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
    let WaypointNames {
        namespace,
        name,
        service_account,
        identity,
        owner,
    } = waypoint_names(gateway, &settings.trust_domain)?;
    let labels = json!({
        GATEWAY_NAME_LABEL: name,
        // The waypoint's own traffic is not captured by ztunnel.
        DATAPLANE_MODE_LABEL: "none",
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

/// The names, identity and owner reference every object of `gateway`'s waypoint shares.
// The error keeps the API error whole for the logs; it is returned once per bad Gateway.
#[allow(clippy::result_large_err)]
fn waypoint_names<'a>(
    gateway: &'a Gateway,
    trust_domain: &str,
) -> Result<WaypointNames<'a>, DeployError> {
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
    let identity = SpiffeId::new(trust_domain, namespace, service_account).map_err(|err| {
        DeployError::invalid(
            gateway,
            &format!("metadata.annotations[{SERVICE_ACCOUNT_ANNOTATION:?}]"),
            format!("no valid identity: {err}"),
        )
    })?;
    let owner = json!([{
        "apiVersion": gateway.api_version,
        "kind": "Gateway",
        "name": name,
        "uid": uid,
        "controller": true,
        "blockOwnerDeletion": true,
    }]);
    Ok(WaypointNames {
        namespace,
        name,
        service_account,
        identity,
        owner,
    })
}

/// The template's objects for `gateway`, with what the deployer relies on set over the
/// template's own values.
// The error keeps the API error whole for the logs; it is returned once per bad Gateway.
#[allow(clippy::result_large_err)]
fn template_objects(
    gateway: &Gateway,
    template: &WaypointTemplate,
    trust_domain: &str,
) -> Result<Vec<ObjectToApply>, DeployError> {
    let names = waypoint_names(gateway, trust_domain)?;
    let identity = names.identity.to_string();
    let values = TemplateValues {
        name: names.name,
        namespace: names.namespace,
        service_account: names.service_account,
        identity: &identity,
    };
    // A template checked at load fills in for any DNS names; a failure here means the
    // Gateway's values are the odd ones.
    let rendered = template.render(&values).map_err(|(file, message)| {
        DeployError::invalid(
            gateway,
            "metadata",
            format!("waypoint template {file}: {message}"),
        )
    })?;
    rendered
        .into_iter()
        .map(|object| {
            let file = object.file;
            let mut body = object.body;
            let shape_error = |what: &str| {
                DeployError::invalid(
                    gateway,
                    "metadata",
                    format!("waypoint template {}: {what} is not a map", file.file),
                )
            };
            let metadata =
                map_at(&mut body, &["metadata"]).ok_or_else(|| shape_error("metadata"))?;
            metadata.insert("namespace".to_owned(), json!(names.namespace));
            metadata.insert("ownerReferences".to_owned(), names.owner.clone());
            map_at(&mut body, &["metadata", "labels"])
                .ok_or_else(|| shape_error("metadata.labels"))?
                .insert(GATEWAY_NAME_LABEL.to_owned(), json!(names.name));
            if file.kind == "Deployment" {
                let pod_labels = map_at(&mut body, &["spec", "template", "metadata", "labels"])
                    .ok_or_else(|| shape_error("spec.template.metadata.labels"))?;
                pod_labels.insert(GATEWAY_NAME_LABEL.to_owned(), json!(names.name));
                pod_labels.insert(DATAPLANE_MODE_LABEL.to_owned(), json!("none"));
            }
            Ok(ObjectToApply {
                kind: file.kind,
                api: api_resource(file.group, file.version, file.kind, file.plural),
                name: object.name,
                body,
            })
        })
        .collect()
}

/// The map at `path` in `value`, created where missing (or null); `None` if something else
/// is in the way.
fn map_at<'a>(value: &'a mut Value, path: &[&str]) -> Option<&'a mut Map<String, Value>> {
    let mut current = value;
    for key in path {
        if current.is_null() {
            *current = json!({});
        }
        current = current
            .as_object_mut()?
            .entry((*key).to_owned())
            .or_insert(Value::Null);
    }
    if current.is_null() {
        *current = json!({});
    }
    current.as_object_mut()
}

fn built(
    group: &str,
    version: &str,
    kind: &'static str,
    plural: &str,
    body: Value,
) -> ObjectToApply {
    ObjectToApply {
        kind,
        api: api_resource(group, version, kind, plural),
        name: body["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        body,
    }
}

fn api_resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
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

/// The cluster IPs of an applied Service (`spec.clusterIPs`, else `spec.clusterIP`).
fn cluster_ips(service: &Value) -> Vec<String> {
    let spec = &service["spec"];
    let listed: Vec<&str> = spec["clusterIPs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let ips = if listed.is_empty() {
        spec["clusterIP"].as_str().into_iter().collect()
    } else {
        listed
    };
    ips.into_iter()
        .filter(|ip| !ip.is_empty() && *ip != "None")
        .map(str::to_owned)
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
