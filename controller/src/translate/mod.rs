//! Translation: Kubernetes objects → the mesh model. Pure: no IO, no clock, deterministic.
//!
//! One pass per output kind, each in its own file: [`waypoints`] first (workloads and services
//! refer to them), then workloads, services (endpoints refer to workloads), policies. Every
//! invalid input becomes a [`TranslateError`] naming the object and field, and only that
//! object (or that binding) is left out.

mod error;
mod l7;
mod labels;
mod node;
mod policies;
mod routes;
mod services;
mod waypoint_scope;
mod waypoints;
mod workloads;

use std::collections::BTreeMap;

use ambit_identity::DEFAULT_TRUST_DOMAIN;
use ambit_model::{
    AuthorizationPolicy, DestinationRule, GrpcRoute, HttpRoute, LocalRateLimit, PeerAuthentication,
    RequestAuthentication, Service, VirtualService, WaypointFor, WaypointRef, Workload,
};
use serde::{Deserialize, Serialize};

pub use error::TranslateError;
pub use node::{applies_to, for_node};
pub use waypoint_scope::for_waypoint;

use crate::objects::Resources;
use error::Errors;

/// Cluster-wide settings the objects themselves do not carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranslateOptions {
    /// The SPIFFE trust domain of workload identities.
    pub trust_domain: String,
    /// The namespace whose selector-less policies apply mesh-wide.
    pub root_namespace: String,
    /// The cluster DNS suffix. Service hostnames in the model currently always use
    /// `cluster.local` (`ambit_model::CLUSTER_DOMAIN`); another value is reported at translation.
    pub cluster_domain: String,
}

/// Everything the proxies need, in a deterministic order: workloads by UID, services and
/// policies by namespace and name. This is what a ztunnel receives (see [`for_node`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshConfig {
    /// The trust domain identities are in.
    pub trust_domain: String,
    /// The root namespace (mesh-wide policies).
    pub root_namespace: String,
    /// Pods with an IP, enrolled or not.
    pub workloads: Vec<Workload>,
    /// Services with their endpoints.
    pub services: Vec<Service>,
    /// Authorization policies, ztunnel's (selector/namespace) and waypoints' (targetRefs).
    pub authorization_policies: Vec<AuthorizationPolicy>,
    /// Peer authentication policies.
    pub peer_authentications: Vec<PeerAuthentication>,
    /// HTTPRoutes (for waypoints; ztunnel does not route).
    #[serde(default)]
    pub http_routes: Vec<HttpRoute>,
    /// GRPCRoutes (for waypoints).
    #[serde(default)]
    pub grpc_routes: Vec<GrpcRoute>,
    /// VirtualServices (for waypoints).
    #[serde(default)]
    pub virtual_services: Vec<VirtualService>,
    /// DestinationRules (for waypoints).
    #[serde(default)]
    pub destination_rules: Vec<DestinationRule>,
    /// RequestAuthentications with `targetRefs` (for waypoints).
    #[serde(default)]
    pub request_authentications: Vec<RequestAuthentication>,
    /// LocalRateLimits (for waypoints; docs/ratelimit.md).
    #[serde(default)]
    pub local_rate_limits: Vec<LocalRateLimit>,
    /// The usable waypoints (Gateways of class `istio-waypoint`), by namespace and name.
    #[serde(default)]
    pub waypoints: Vec<MeshWaypoint>,
}

/// A usable waypoint: the Gateway it comes from and how proxies reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshWaypoint {
    /// The Gateway's namespace.
    pub namespace: String,
    /// The Gateway's name.
    pub name: String,
    /// Its addresses and identity, as services and workloads bound to it carry them.
    pub reference: WaypointRef,
    /// Which traffic it takes.
    pub waypoint_for: WaypointFor,
}

impl Default for TranslateOptions {
    fn default() -> Self {
        Self {
            trust_domain: DEFAULT_TRUST_DOMAIN.to_owned(),
            root_namespace: ambit_model::DEFAULT_ROOT_NAMESPACE.to_owned(),
            cluster_domain: ambit_model::CLUSTER_DOMAIN.to_owned(),
        }
    }
}

impl MeshConfig {
    /// The workload with `uid`.
    pub fn workload(&self, uid: &str) -> Option<&Workload> {
        self.workloads.iter().find(|w| w.uid() == uid)
    }

    /// The workload named `namespace/name`.
    pub fn workload_by_name(&self, namespace: &str, name: &str) -> Option<&Workload> {
        self.workloads
            .iter()
            .find(|w| w.namespace() == namespace && w.name() == name)
    }

    /// The waypoint Gateway `namespace/name`, if it is usable.
    pub fn waypoint(&self, namespace: &str, name: &str) -> Option<&MeshWaypoint> {
        self.waypoints
            .iter()
            .find(|w| w.namespace == namespace && w.name == name)
    }

    /// The service named `namespace/name`.
    pub fn service(&self, namespace: &str, name: &str) -> Option<&Service> {
        self.services
            .iter()
            .find(|s| s.namespace() == namespace && s.name() == name)
    }
}

/// Translates `resources` into the mesh model. Returns the config and every problem found;
/// objects with problems are left out (or lose only the binding that failed), the rest is in.
/// Errors come sorted by kind, namespace, name and field.
pub fn translate(
    resources: &Resources,
    options: &TranslateOptions,
) -> (MeshConfig, Vec<TranslateError>) {
    let mut errors = Errors::default();
    if options.cluster_domain != ambit_model::CLUSTER_DOMAIN {
        errors.push(
            "TranslateOptions",
            "",
            "",
            "clusterDomain",
            format!(
                "{:?} is not supported yet: service hostnames use {:?}",
                options.cluster_domain,
                ambit_model::CLUSTER_DOMAIN
            ),
        );
    }
    let namespaces = labels::NamespaceSettings::build(resources, &mut errors);
    let waypoints = waypoints::Waypoints::build(resources, options, &mut errors);
    waypoints::report_namespace_bindings(resources, &namespaces, &waypoints, &mut errors);
    let workloads = workloads::translate(resources, options, &namespaces, &waypoints, &mut errors);
    let services = services::translate(resources, &workloads, &namespaces, &waypoints, &mut errors);
    let (authorization_policies, peer_authentications) =
        policies::translate(resources, &mut errors);
    let http_routes = routes::translate(resources, &mut errors);
    let l7 = l7::translate(resources, &mut errors);
    policies::report_untranslated(resources, &mut errors);

    let workloads: BTreeMap<String, Workload> = workloads
        .into_iter()
        .map(|w| (w.workload.uid().to_owned(), w.workload))
        .collect();
    let config = MeshConfig {
        trust_domain: options.trust_domain.clone(),
        root_namespace: options.root_namespace.clone(),
        workloads: workloads.into_values().collect(),
        services,
        authorization_policies,
        peer_authentications,
        http_routes,
        grpc_routes: l7.grpc_routes,
        virtual_services: l7.virtual_services,
        destination_rules: l7.destination_rules,
        request_authentications: l7.request_authentications,
        local_rate_limits: l7.local_rate_limits,
        waypoints: waypoints.listed(),
    };
    let errors = errors.into_sorted();
    let not_translated = errors.iter().filter(|e| e.is_not_translated()).count();
    if not_translated > 0 {
        tracing::warn!(
            count = not_translated,
            "objects of kinds that are not translated yet were ignored"
        );
    }
    (config, errors)
}
