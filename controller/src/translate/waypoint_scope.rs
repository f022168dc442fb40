//! [`for_waypoint`]: the part of a [`MeshConfig`] one waypoint needs.

use std::collections::BTreeSet;

use ambit_model::authz::PolicyTargetReference;
use ambit_model::{AuthorizationPolicy, HttpRoute, PolicyScope, Service};

use super::{MeshConfig, MeshWaypoint};
use crate::objects::WAYPOINT_GATEWAY_CLASS;

const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// What the waypoint Gateway `namespace/name` needs, or `None` if it is not a usable waypoint:
/// - the services bound to it, and the workloads behind them (their endpoints) plus the
///   workloads bound to it directly;
/// - the authorization policies whose `targetRefs` name it, one of its services, or the
///   `istio-waypoint` GatewayClass (from the root namespace);
/// - the HTTPRoutes and GRPCRoutes whose `parentRefs` name one of its services or the
///   waypoint itself, the VirtualServices whose hosts are its services, the DestinationRules
///   of its services, and the RequestAuthentications attached to it or its services;
/// - itself, in `waypoints`.
///
/// Peer authentications are left out: a waypoint only speaks HBONE, which is always mTLS.
pub fn for_waypoint(config: &MeshConfig, namespace: &str, name: &str) -> Option<MeshConfig> {
    let waypoint = config.waypoint(namespace, name)?;
    let services: Vec<&Service> = config
        .services
        .iter()
        .filter(|s| s.waypoint() == Some(&waypoint.reference))
        .collect();
    let bound: BTreeSet<(&str, &str)> =
        services.iter().map(|s| (s.namespace(), s.name())).collect();
    let endpoints: BTreeSet<&str> = services
        .iter()
        .flat_map(|s| s.endpoints().keys().map(String::as_str))
        .collect();
    let workloads = config
        .workloads
        .iter()
        .filter(|w| endpoints.contains(w.uid()) || w.waypoint() == Some(&waypoint.reference))
        .cloned()
        .collect();
    let authorization_policies = config
        .authorization_policies
        .iter()
        .filter(|p| targets(p, waypoint, &bound, &config.root_namespace))
        .cloned()
        .collect();
    let http_routes = config
        .http_routes
        .iter()
        .filter(|r| attaches(r, waypoint, &bound))
        .cloned()
        .collect();
    let is_bound = |namespace: &str, name: &str| bound.contains(&(namespace, name));
    let grpc_routes = config
        .grpc_routes
        .iter()
        .filter(|r| {
            r.service_parents()
                .iter()
                .any(|p| is_bound(&p.namespace, &p.name))
        })
        .cloned()
        .collect();
    let virtual_services = config
        .virtual_services
        .iter()
        .filter(|v| v.services().iter().any(|p| is_bound(&p.namespace, &p.name)))
        .cloned()
        .collect();
    let destination_rules = config
        .destination_rules
        .iter()
        .filter(|r| r.service().is_some_and(|(ns, name)| is_bound(ns, name)))
        .cloned()
        .collect();
    let request_authentications = config
        .request_authentications
        .iter()
        .filter(|r| match r.scope() {
            PolicyScope::TargetRefs(refs) => refs
                .iter()
                .any(|t| target_matches(t, r.namespace(), waypoint, &bound)),
            _ => false,
        })
        .cloned()
        .collect();
    Some(MeshConfig {
        trust_domain: config.trust_domain.clone(),
        root_namespace: config.root_namespace.clone(),
        workloads,
        services: services.into_iter().cloned().collect(),
        authorization_policies,
        peer_authentications: Vec::new(),
        http_routes,
        grpc_routes,
        virtual_services,
        destination_rules,
        request_authentications,
        waypoints: vec![waypoint.clone()],
    })
}

/// Whether `policy` is attached (by `targetRefs`) to the waypoint or a service bound to it.
fn targets(
    policy: &AuthorizationPolicy,
    waypoint: &MeshWaypoint,
    bound: &BTreeSet<(&str, &str)>,
    root_namespace: &str,
) -> bool {
    let PolicyScope::TargetRefs(refs) = policy.scope() else {
        return false;
    };
    refs.iter().any(|target| {
        let namespace = target.namespace.as_deref().unwrap_or(policy.namespace());
        match (target.group.as_str(), target.kind.as_str()) {
            (GATEWAY_GROUP, "Gateway") => {
                namespace == waypoint.namespace && target.name == waypoint.name
            }
            (GATEWAY_GROUP, "GatewayClass") => {
                policy.namespace() == root_namespace && target.name == WAYPOINT_GATEWAY_CLASS
            }
            ("", "Service") => bound.contains(&(namespace, target.name.as_str())),
            _ => false,
        }
    })
}

/// Whether a `targetRefs` entry of an object in `namespace` names the waypoint or one of its
/// services.
fn target_matches(
    target: &PolicyTargetReference,
    namespace: &str,
    waypoint: &MeshWaypoint,
    bound: &BTreeSet<(&str, &str)>,
) -> bool {
    let namespace = target.namespace.as_deref().unwrap_or(namespace);
    match (target.group.as_str(), target.kind.as_str()) {
        (GATEWAY_GROUP, "Gateway") => {
            namespace == waypoint.namespace && target.name == waypoint.name
        }
        ("", "Service") => bound.contains(&(namespace, target.name.as_str())),
        _ => false,
    }
}

/// Whether `route` has the waypoint or one of its services as a parent.
fn attaches(route: &HttpRoute, waypoint: &MeshWaypoint, bound: &BTreeSet<(&str, &str)>) -> bool {
    let to_service = route
        .service_parents()
        .iter()
        .any(|p| bound.contains(&(p.namespace.as_str(), p.name.as_str())));
    let to_waypoint = route.spec().parent_refs.iter().any(|parent| {
        let group = parent.group.as_deref().unwrap_or(GATEWAY_GROUP);
        let kind = parent.kind.as_deref().unwrap_or("Gateway");
        let namespace = parent.namespace.as_deref().unwrap_or(route.namespace());
        group == GATEWAY_GROUP
            && kind == "Gateway"
            && namespace == waypoint.namespace
            && parent.name == waypoint.name
    });
    to_service || to_waypoint
}
