//! [`for_node`]: the part of a [`MeshConfig`] one node's ztunnel needs (first cut).

use ambit_model::{AuthorizationPolicy, PolicyScope, Workload};

use super::MeshConfig;

/// What a ztunnel on `node` needs: every workload and service (a client may connect to any of
/// them; scoping destinations to what a node actually talks to comes later), the authorization
/// policies that apply to at least one workload on the node (waypoint policies, attached by
/// `targetRefs`, are left to the waypoints), and every peer authentication (mesh and namespace
/// levels apply everywhere; the rest is small).
pub fn for_node(config: &MeshConfig, node: &str) -> MeshConfig {
    let local: Vec<&Workload> = config
        .workloads
        .iter()
        .filter(|w| w.node() == node)
        .collect();
    let authorization_policies = config
        .authorization_policies
        .iter()
        .filter(|policy| {
            local
                .iter()
                .any(|w| applies_to(policy, w, &config.root_namespace))
        })
        .cloned()
        .collect();
    MeshConfig {
        trust_domain: config.trust_domain.clone(),
        root_namespace: config.root_namespace.clone(),
        workloads: config.workloads.clone(),
        services: config.services.clone(),
        authorization_policies,
        peer_authentications: config.peer_authentications.clone(),
        // Routes and waypoints are waypoint concerns (workloads and services already carry
        // their waypoint's address and identity).
        http_routes: Vec::new(),
        grpc_routes: Vec::new(),
        virtual_services: Vec::new(),
        destination_rules: Vec::new(),
        request_authentications: Vec::new(),
        local_rate_limits: Vec::new(),
        waypoints: Vec::new(),
    }
}

/// Whether ztunnel enforces `policy` for `workload`: same namespace or the root namespace, and
/// the selector (if any) matches.
pub fn applies_to(policy: &AuthorizationPolicy, workload: &Workload, root_namespace: &str) -> bool {
    let in_scope =
        policy.namespace() == root_namespace || policy.namespace() == workload.namespace();
    in_scope
        && match policy.scope() {
            PolicyScope::Namespace => true,
            PolicyScope::Selector(selector) => selector.matches(workload.labels()),
            PolicyScope::TargetRefs(_) => false,
        }
}
