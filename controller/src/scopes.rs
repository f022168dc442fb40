//! Per-scope snapshots: what each ztunnel (node scope) and each waypoint (waypoint scope) is
//! sent, built from one [`MeshConfig`].
//!
//! The contents are those of [`translate::for_node`] and [`translate::for_waypoint`]; this
//! module only builds them fast enough for a large cluster. Every resource is encoded once and
//! its bytes are shared by all scopes holding it (`Bytes` is reference counted), and which
//! nodes an authorization policy applies to is computed per policy over the workloads of its
//! namespace, not per node over all policies.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use ambit_api::{MeshResource, ResourceError, ResourceKey, ScopeKey, Snapshot};
use ambit_model::{PolicyScope, Workload};
use bytes::Bytes;

use crate::translate::{self, MeshConfig};

/// The snapshot of every scope, in scope order.
pub type Scopes = BTreeMap<ScopeKey, Snapshot>;

/// Builds the node scope of every node in `nodes` and the waypoint scope of every usable
/// waypoint. Nodes without workloads still get the shared part (services, destinations).
pub fn build(config: &MeshConfig, nodes: &BTreeSet<String>) -> Result<Scopes, ResourceError> {
    let mut shared = Snapshot::new();
    for workload in &config.workloads {
        shared.insert(&MeshResource::from(workload.clone()))?;
    }
    for service in &config.services {
        shared.insert(&MeshResource::from(service.clone()))?;
    }
    for peer in &config.peer_authentications {
        shared.insert(&MeshResource::from(peer.clone()))?;
    }
    let encoded = config
        .authorization_policies
        .iter()
        .map(|p| {
            let resource = MeshResource::from(p.clone());
            Ok((resource.key(), resource.encode()?))
        })
        .collect::<Result<Vec<(ResourceKey, Bytes)>, ResourceError>>()?;
    let mut policies_by_node: HashMap<&str, Vec<usize>> = HashMap::new();
    for (policy, node) in policy_nodes(config) {
        policies_by_node.entry(node).or_default().push(policy);
    }
    let mut scopes = Scopes::new();
    for node in nodes {
        let mut snapshot = shared.clone();
        for &policy in policies_by_node.get(node.as_str()).into_iter().flatten() {
            let (key, payload) = &encoded[policy];
            snapshot.insert_encoded(key.clone(), payload.clone())?;
        }
        scopes.insert(ScopeKey::node(node), snapshot);
    }
    for waypoint in &config.waypoints {
        let Some(scope) = translate::for_waypoint(config, &waypoint.namespace, &waypoint.name)
        else {
            continue;
        };
        scopes.insert(
            ScopeKey::waypoint(&waypoint.namespace, &waypoint.name),
            waypoint_snapshot(&scope)?,
        );
    }
    Ok(scopes)
}

/// The nodes that run at least one workload.
pub fn nodes_of(config: &MeshConfig) -> BTreeSet<String> {
    config
        .workloads
        .iter()
        .filter(|w| !w.node().is_empty())
        .map(|w| w.node().to_owned())
        .collect()
}

/// Every (policy index, node) pair where the policy applies to a workload on the node, without
/// repeats. Policies attached by `targetRefs` are for waypoints and never appear.
fn policy_nodes(config: &MeshConfig) -> BTreeSet<(usize, &str)> {
    let mut by_namespace: HashMap<&str, Vec<&Workload>> = HashMap::new();
    for workload in &config.workloads {
        by_namespace
            .entry(workload.namespace())
            .or_default()
            .push(workload);
    }
    let mut pairs = BTreeSet::new();
    for (index, policy) in config.authorization_policies.iter().enumerate() {
        if matches!(policy.scope(), PolicyScope::TargetRefs(_)) {
            continue;
        }
        let candidates: Box<dyn Iterator<Item = &Workload>> =
            if policy.namespace() == config.root_namespace {
                Box::new(config.workloads.iter())
            } else {
                Box::new(
                    by_namespace
                        .get(policy.namespace())
                        .into_iter()
                        .flatten()
                        .copied(),
                )
            };
        for workload in candidates {
            if translate::applies_to(policy, workload, &config.root_namespace) {
                pairs.insert((index, workload.node()));
            }
        }
    }
    pairs
}

fn waypoint_snapshot(scope: &MeshConfig) -> Result<Snapshot, ResourceError> {
    let resources = scope
        .workloads
        .iter()
        .cloned()
        .map(MeshResource::from)
        .chain(scope.services.iter().cloned().map(MeshResource::from))
        .chain(
            scope
                .authorization_policies
                .iter()
                .cloned()
                .map(MeshResource::from),
        )
        .chain(scope.http_routes.iter().cloned().map(MeshResource::from))
        .chain(scope.grpc_routes.iter().cloned().map(MeshResource::from))
        .chain(
            scope
                .virtual_services
                .iter()
                .cloned()
                .map(MeshResource::from),
        )
        .chain(
            scope
                .destination_rules
                .iter()
                .cloned()
                .map(MeshResource::from),
        )
        .chain(
            scope
                .request_authentications
                .iter()
                .cloned()
                .map(MeshResource::from),
        )
        .collect::<Vec<_>>();
    Snapshot::from_resources(&resources)
}
