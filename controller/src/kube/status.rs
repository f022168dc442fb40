//! Status the controller owns on user objects, computed purely from a snapshot and its
//! translation ([`service_statuses`], [`route_statuses`]) and written by [`StatusWriter`] with
//! server-side apply on the status subresource, only when it changed.
//!
//! - Services: the condition `istio.io/WaypointBound`, True when the Service is bound to a
//!   waypoint, False with the translation's reason when its `istio.io/use-waypoint` binding
//!   failed, absent when the Service asks for no waypoint.
//! - HTTPRoutes and GRPCRoutes: one parent status per parentRef that is ours (a Service, or a
//!   Gateway of class `istio-waypoint`), with Accepted and ResolvedRefs. Parents of other
//!   controllers are left alone. ReferenceGrants are not watched yet, so cross-namespace
//!   backends are not checked for permission.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};

use super::FIELD_MANAGER;
use super::convert::{KindApi, WATCHED_KINDS};
use crate::objects::{Kind, Resource, ResourceKey, Resources};
use crate::translate::{MeshConfig, TranslateError};

/// The Service condition type for waypoint binding (Istio's).
pub const WAYPOINT_BOUND: &str = "istio.io/WaypointBound";
/// The controller name written into route parent statuses by default: the one Istio's
/// `istio-waypoint` GatewayClass names.
pub const DEFAULT_CONTROLLER_NAME: &str = "istio.io/mesh-controller";

/// One status condition, without its timestamp (added when written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// The condition type.
    pub type_: String,
    /// True or False.
    pub status: bool,
    /// A CamelCase reason.
    pub reason: String,
    /// A human-readable message.
    pub message: String,
}

/// The waypoint condition one Service should carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceStatus {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
    /// The condition; `None` when the Service asks for no waypoint.
    pub condition: Option<Condition>,
}

/// The parent statuses one route should carry.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteStatus {
    /// HTTPRoute or GRPCRoute.
    pub kind: Kind,
    /// The route's namespace.
    pub namespace: String,
    /// The route's name.
    pub name: String,
    /// The route's `metadata.generation`.
    pub generation: i64,
    /// One per parentRef of ours.
    pub parents: Vec<RouteParentStatus>,
}

/// The status for one parentRef.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteParentStatus {
    /// The parentRef as written in the route.
    pub parent_ref: Value,
    /// Accepted and ResolvedRefs.
    pub conditions: Vec<Condition>,
}

/// A status could not be written.
#[derive(Debug, thiserror::Error)]
#[error("status of {kind} {namespace}/{name}: {source}")]
pub struct StatusError {
    kind: &'static str,
    namespace: String,
    name: String,
    source: kube::Error,
}

/// Writes statuses that changed since the last successful write.
pub struct StatusWriter {
    client: Client,
    controller_name: String,
    services: Mutex<HashMap<(String, String), Option<Condition>>>,
    routes: Mutex<HashMap<ResourceKey, (i64, Vec<RouteParentStatus>)>>,
}

impl Condition {
    fn new(type_: &str, status: bool, reason: &str, message: impl Into<String>) -> Self {
        Self {
            type_: type_.to_owned(),
            status,
            reason: reason.to_owned(),
            message: message.into(),
        }
    }

    fn to_json(&self, generation: Option<i64>, now: &Time) -> Value {
        let mut value = json!({
            "type": self.type_,
            "status": if self.status { "True" } else { "False" },
            "reason": self.reason,
            "message": self.message,
            "lastTransitionTime": now,
        });
        if let Some(generation) = generation {
            value["observedGeneration"] = json!(generation);
        }
        value
    }
}

impl StatusError {
    /// The API call failed because the object is gone (nothing to retry).
    pub fn is_not_found(&self) -> bool {
        matches!(&self.source, kube::Error::Api(status) if status.code == 404)
    }
}

impl StatusWriter {
    /// A writer through `client`; `controller_name` goes into route parent statuses
    /// ([`DEFAULT_CONTROLLER_NAME`] matches Istio's waypoint GatewayClass).
    pub fn new(client: Client, controller_name: impl Into<String>) -> Self {
        Self {
            client,
            controller_name: controller_name.into(),
            services: Mutex::new(HashMap::new()),
            routes: Mutex::new(HashMap::new()),
        }
    }

    /// Writes the statuses of `resources` (translated into `config` with `errors`) that differ
    /// from what this writer last wrote. Failures are returned and retried on the next call.
    pub async fn sync(
        &self,
        resources: &Resources,
        config: &MeshConfig,
        errors: &[TranslateError],
    ) -> Vec<StatusError> {
        let now = super::deployer::now();
        let mut failures = Vec::new();
        for desired in service_statuses(resources, config, errors) {
            let key = (desired.namespace.clone(), desired.name.clone());
            let previous = lock(&self.services).get(&key).cloned();
            // Never written and nothing to say: no request.
            if previous.as_ref() == Some(&desired.condition)
                || (previous.is_none() && desired.condition.is_none())
            {
                continue;
            }
            match self.write_service(&desired, &now).await {
                Ok(()) => {
                    lock(&self.services).insert(key, desired.condition);
                }
                Err(err) if err.is_not_found() => {}
                Err(err) => failures.push(err),
            }
        }
        for desired in route_statuses(resources, config) {
            let key = ResourceKey {
                kind: desired.kind,
                namespace: desired.namespace.clone(),
                name: desired.name.clone(),
            };
            let state = (desired.generation, desired.parents.clone());
            if lock(&self.routes).get(&key) == Some(&state) {
                continue;
            }
            if desired.parents.is_empty() && !lock(&self.routes).contains_key(&key) {
                continue;
            }
            match self.write_route(&desired, &now).await {
                Ok(()) => {
                    lock(&self.routes).insert(key, state);
                }
                Err(err) if err.is_not_found() => {}
                Err(err) => failures.push(err),
            }
        }
        failures
    }

    async fn write_service(&self, desired: &ServiceStatus, now: &Time) -> Result<(), StatusError> {
        let conditions: Vec<Value> = desired
            .condition
            .iter()
            .map(|c| c.to_json(None, now))
            .collect();
        let body = json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": desired.name, "namespace": desired.namespace},
            "status": {"conditions": conditions},
        });
        let api: Api<k8s_openapi::api::core::v1::Service> =
            Api::namespaced(self.client.clone(), &desired.namespace);
        api.patch_status(&desired.name, &apply_params(), &Patch::Apply(&body))
            .await
            .map(drop)
            .map_err(|source| StatusError {
                kind: "Service",
                namespace: desired.namespace.clone(),
                name: desired.name.clone(),
                source,
            })
    }

    async fn write_route(&self, desired: &RouteStatus, now: &Time) -> Result<(), StatusError> {
        let kind_api = kind_api(desired.kind);
        let parents: Vec<Value> = desired
            .parents
            .iter()
            .map(|parent| {
                json!({
                    "parentRef": parent.parent_ref,
                    "controllerName": self.controller_name,
                    "conditions": parent
                        .conditions
                        .iter()
                        .map(|c| c.to_json(Some(desired.generation), now))
                        .collect::<Vec<_>>(),
                })
            })
            .collect();
        let body = json!({
            "apiVersion": kind_api.api_version(),
            "kind": desired.kind.as_str(),
            "metadata": {"name": desired.name, "namespace": desired.namespace},
            "status": {"parents": parents},
        });
        let api: Api<DynamicObject> = Api::namespaced_with(
            self.client.clone(),
            &desired.namespace,
            &kind_api.api_resource(),
        );
        api.patch_status(&desired.name, &apply_params(), &Patch::Apply(&body))
            .await
            .map(drop)
            .map_err(|source| StatusError {
                kind: desired.kind.as_str(),
                namespace: desired.namespace.clone(),
                name: desired.name.clone(),
                source,
            })
    }
}

impl fmt::Debug for StatusWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatusWriter")
            .field("controller_name", &self.controller_name)
            .finish_non_exhaustive()
    }
}

/// The `istio.io/WaypointBound` condition of every Service.
pub fn service_statuses(
    resources: &Resources,
    config: &MeshConfig,
    errors: &[TranslateError],
) -> Vec<ServiceStatus> {
    let binding_field = format!("metadata.labels[{:?}]", "istio.io/use-waypoint");
    resources
        .services()
        .map(|service| {
            let namespace = service.metadata.namespace.clone().unwrap_or_default();
            let name = service.metadata.name.clone().unwrap_or_default();
            let bound = config.service(&namespace, &name).and_then(|s| s.waypoint());
            let failure = errors.iter().find(|e| {
                e.kind() == "Service"
                    && e.namespace() == namespace
                    && e.name() == name
                    && e.field() == binding_field
            });
            let condition = match (bound, failure) {
                (Some(waypoint), _) => Some(Condition::new(
                    WAYPOINT_BOUND,
                    true,
                    "WaypointAccepted",
                    format!("bound to waypoint {}", waypoint.identity),
                )),
                (None, Some(err)) => Some(Condition::new(
                    WAYPOINT_BOUND,
                    false,
                    "WaypointNotUsable",
                    err.message(),
                )),
                (None, None) => None,
            };
            ServiceStatus {
                namespace,
                name,
                condition,
            }
        })
        .collect()
}

/// The parent statuses of every HTTPRoute and GRPCRoute.
pub fn route_statuses(resources: &Resources, config: &MeshConfig) -> Vec<RouteStatus> {
    // HTTPRoutes are typed (the translation reads them); GRPCRoutes are still kept as
    // written. Both are judged on the same JSON shape of their spec.
    let typed = resources.iter().filter_map(|resource| match resource {
        // The typed spec serializes back to the fields it was read from (absent options are
        // skipped), so parentRefs are reported exactly as the user wrote them.
        Resource::HttpRoute(route) => serde_json::to_value(&route.spec)
            .ok()
            .map(|spec| (Kind::HttpRoute, &route.metadata, spec)),
        _ => None,
    });
    let untranslated = resources
        .untranslated()
        .filter(|(kind, _)| matches!(kind, Kind::HttpRoute | Kind::GrpcRoute))
        .map(|(kind, route)| (kind, &route.metadata, route.spec.clone()));
    typed
        .chain(untranslated)
        .map(|(kind, metadata, spec)| route_status(kind, metadata, &spec, resources, config))
        .collect()
}

fn route_status(
    kind: Kind,
    metadata: &ObjectMeta,
    spec: &Value,
    resources: &Resources,
    config: &MeshConfig,
) -> RouteStatus {
    let namespace = metadata.namespace.clone().unwrap_or_default();
    let name = metadata.name.clone().unwrap_or_default();
    let resolved = resolved_refs(spec, &namespace, resources);
    let parents = spec["parentRefs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|parent_ref| {
            let accepted = accepted(parent_ref, &namespace, resources, config)?;
            Some(RouteParentStatus {
                parent_ref: parent_ref.clone(),
                conditions: vec![accepted, resolved.clone()],
            })
        })
        .collect();
    RouteStatus {
        kind,
        namespace,
        name,
        generation: metadata.generation.unwrap_or_default(),
        parents,
    }
}

/// Accepted for one parentRef, or `None` when the parent is not ours to report on.
fn accepted(
    parent_ref: &Value,
    route_namespace: &str,
    resources: &Resources,
    config: &MeshConfig,
) -> Option<Condition> {
    let group = parent_ref["group"]
        .as_str()
        .unwrap_or("gateway.networking.k8s.io");
    let kind = parent_ref["kind"].as_str().unwrap_or("Gateway");
    let name = parent_ref["name"].as_str()?;
    let namespace = parent_ref["namespace"].as_str().unwrap_or(route_namespace);
    match (group, kind) {
        ("" | "core", "Service") => {
            let key = ResourceKey {
                kind: Kind::Service,
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            };
            if resources.get(&key).is_none() {
                return Some(Condition::new(
                    "Accepted",
                    false,
                    "NoMatchingParent",
                    format!("Service {namespace}/{name} does not exist"),
                ));
            }
            let bound = config
                .service(namespace, name)
                .is_some_and(|s| s.waypoint().is_some());
            Some(if bound {
                Condition::new("Accepted", true, "Accepted", "route accepted")
            } else {
                Condition::new(
                    "Accepted",
                    false,
                    "NoMatchingParent",
                    format!(
                        "Service {namespace}/{name} is not bound to a waypoint, so nothing \
                         enforces the route"
                    ),
                )
            })
        }
        ("gateway.networking.k8s.io", "Gateway") => {
            let key = ResourceKey {
                kind: Kind::Gateway,
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            };
            // Other classes (and Gateways we cannot see) belong to other controllers.
            match resources.get(&key) {
                Some(crate::objects::Resource::Gateway(gateway)) if gateway.is_waypoint() => Some(
                    Condition::new("Accepted", true, "Accepted", "route accepted"),
                ),
                _ => None,
            }
        }
        _ => None,
    }
}

/// ResolvedRefs over every backendRef of every rule.
fn resolved_refs(spec: &Value, route_namespace: &str, resources: &Resources) -> Condition {
    let rules = spec["rules"].as_array().into_iter().flatten();
    for (rule_index, rule) in rules.enumerate() {
        let backends = rule["backendRefs"].as_array().into_iter().flatten();
        for (backend_index, backend) in backends.enumerate() {
            let group = backend["group"].as_str().unwrap_or("");
            let kind = backend["kind"].as_str().unwrap_or("Service");
            let name = backend["name"].as_str().unwrap_or_default();
            let namespace = backend["namespace"].as_str().unwrap_or(route_namespace);
            let at = format!("spec.rules[{rule_index}].backendRefs[{backend_index}]");
            let target = match (group, kind) {
                ("" | "core", "Service") => Kind::Service,
                ("networking.istio.io", "ServiceEntry") => Kind::ServiceEntry,
                _ => {
                    return Condition::new(
                        "ResolvedRefs",
                        false,
                        "InvalidKind",
                        format!("{at}: backends of kind {group}/{kind} are not supported"),
                    );
                }
            };
            let key = ResourceKey {
                kind: target,
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            };
            if resources.get(&key).is_none() {
                return Condition::new(
                    "ResolvedRefs",
                    false,
                    "BackendNotFound",
                    format!("{at}: {kind} {namespace}/{name} does not exist"),
                );
            }
        }
    }
    Condition::new(
        "ResolvedRefs",
        true,
        "ResolvedRefs",
        "all references resolved",
    )
}

fn kind_api(kind: Kind) -> KindApi {
    WATCHED_KINDS
        .iter()
        .copied()
        .find(|api| api.kind == kind)
        .unwrap_or(KindApi {
            kind,
            group: "gateway.networking.k8s.io",
            version: "v1",
            plural: "httproutes",
        })
}

fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
