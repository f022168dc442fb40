//! [`for_waypoint`]: the part of a [`MeshConfig`] one waypoint needs.

use std::collections::BTreeSet;

use ambit_model::authz::PolicyTargetReference;
use ambit_model::rate_limit::RateLimitTarget;
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
///   of its services, and the RequestAuthentications and LocalRateLimits attached to it or
///   its services;
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
    let local_rate_limits = config
        .local_rate_limits
        .iter()
        .filter(|limit| {
            limit.targets().iter().any(|target| match target {
                RateLimitTarget::Service(service) => bound.contains(&(limit.namespace(), service)),
                RateLimitTarget::Gateway(gateway) => {
                    limit.namespace() == waypoint.namespace && *gateway == waypoint.name
                }
            })
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
        local_rate_limits,
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::local::{collect, parse_file};
    use crate::translate::{TranslateOptions, translate};

    #[test]
    fn a_waypoint_gets_the_rate_limits_on_it_and_its_services_only() {
        let yaml = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: shop}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
  addresses: [{value: 10.96.0.100}]
---
apiVersion: v1
kind: Service
metadata: {name: cart, namespace: shop, labels: {istio.io/use-waypoint: waypoint}}
spec: {clusterIP: 10.96.0.20, selector: {app: cart}, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: plain, namespace: shop}
spec: {clusterIP: 10.96.0.21, selector: {app: plain}, ports: [{name: http, port: 80}]}
---
apiVersion: ambit.dev/v1alpha1
kind: LocalRateLimit
metadata: {name: on-cart, namespace: shop}
spec:
  targetRefs: [{group: "", kind: Service, name: cart}]
  rules: [{tokensPerFill: 1, fillInterval: 1s, maxTokens: 1}]
---
apiVersion: ambit.dev/v1alpha1
kind: LocalRateLimit
metadata: {name: on-waypoint, namespace: shop}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: waypoint}]
  rules: [{tokensPerFill: 1, fillInterval: 1s, maxTokens: 1}]
---
apiVersion: ambit.dev/v1alpha1
kind: LocalRateLimit
metadata: {name: on-plain, namespace: shop}
spec:
  targetRefs: [{group: "", kind: Service, name: plain}]
  rules: [{tokensPerFill: 1, fillInterval: 1s, maxTokens: 1}]
"#;
        let (located, errors) = parse_file(Path::new("limits.yaml"), yaml);
        assert!(errors.is_empty(), "{errors:?}");
        let (resources, errors) = collect(located);
        assert!(errors.is_empty(), "{errors:?}");
        let (config, errors) = translate(&resources, &TranslateOptions::default());
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(config.local_rate_limits.len(), 3);
        let scope = for_waypoint(&config, "shop", "waypoint").expect("a usable waypoint");
        let names: Vec<&str> = scope.local_rate_limits.iter().map(|l| l.name()).collect();
        assert_eq!(names, ["on-cart", "on-waypoint"]);
    }
}
