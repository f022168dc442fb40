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
    build_with(config, nodes, &mut Payloads::default())
}

/// The encodings of the last build, so that an unchanged resource keeps the very same bytes
/// from one build to the next. Comparing two snapshots (has a scope changed? what does a
/// client need?) then finds unchanged resources by pointer instead of comparing every
/// payload of every node scope: with every workload in every node scope, that comparison
/// grows with pods × nodes.
#[derive(Debug, Default)]
pub struct Payloads {
    by_key: HashMap<ResourceKey, Bytes>,
}

impl Payloads {
    /// The encoding of `resource`: the previous build's bytes if they are equal.
    fn encode(
        &mut self,
        next: &mut HashMap<ResourceKey, Bytes>,
        resource: MeshResource,
    ) -> Result<(ResourceKey, Bytes), ResourceError> {
        let key = resource.key();
        let fresh = resource.encode()?;
        let payload = match self.by_key.remove(&key) {
            Some(previous) if previous == fresh => previous,
            _ => fresh,
        };
        next.insert(key.clone(), payload.clone());
        Ok((key, payload))
    }
}

/// Like [`build`], reusing the bytes of unchanged resources from the previous call with the
/// same `payloads` (and remembering this build's for the next one).
pub fn build_with(
    config: &MeshConfig,
    nodes: &BTreeSet<String>,
    payloads: &mut Payloads,
) -> Result<Scopes, ResourceError> {
    let mut next = HashMap::new();
    let mut shared = Snapshot::new();
    let common = config
        .workloads
        .iter()
        .cloned()
        .map(MeshResource::from)
        .chain(config.services.iter().cloned().map(MeshResource::from))
        .chain(
            config
                .peer_authentications
                .iter()
                .cloned()
                .map(MeshResource::from),
        );
    for resource in common {
        let (key, payload) = payloads.encode(&mut next, resource)?;
        shared.insert_encoded(key, payload)?;
    }
    let encoded = config
        .authorization_policies
        .iter()
        .map(|p| payloads.encode(&mut next, MeshResource::from(p.clone())))
        .collect::<Result<Vec<(ResourceKey, Bytes)>, ResourceError>>()?;
    payloads.by_key = next;
    let mut policies_by_node: HashMap<&str, Vec<usize>> = HashMap::new();
    for (policy, node) in policy_nodes(config) {
        policies_by_node.entry(node).or_default().push(policy);
    }
    // Every node scope holds the common part: one shared copy, not one per node.
    let shared = shared.into_shared();
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
        .chain(
            scope
                .local_rate_limits
                .iter()
                .cloned()
                .map(MeshResource::from),
        )
        .collect::<Vec<_>>();
    Snapshot::from_resources(&resources)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::local::{collect, parse_file};
    use crate::translate::{TranslateOptions, translate};

    fn config(version: &str) -> MeshConfig {
        let yaml = format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: shop, labels: {{istio.io/dataplane-mode: ambient}}}}\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata: {{name: a, namespace: shop, labels: {{app: a, version: {version}}}}}\n\
             spec: {{nodeName: n1, containers: []}}\nstatus: {{phase: Running, podIP: 10.0.0.1}}\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata: {{name: b, namespace: shop, labels: {{app: b}}}}\n\
             spec: {{nodeName: n2, containers: []}}\nstatus: {{phase: Running, podIP: 10.0.0.2}}\n"
        );
        let (located, errors) = parse_file(Path::new("t.yaml"), &yaml);
        assert!(errors.is_empty(), "{errors:?}");
        let (resources, errors) = collect(located);
        assert!(errors.is_empty(), "{errors:?}");
        let (config, errors) = translate(&resources, &TranslateOptions::default());
        assert!(errors.is_empty(), "{errors:?}");
        config
    }

    fn pointers(payloads: &Payloads) -> BTreeMap<String, usize> {
        payloads
            .by_key
            .iter()
            .map(|(key, bytes)| (key.to_string(), bytes.as_ptr() as usize))
            .collect()
    }

    #[test]
    fn an_unchanged_resource_keeps_its_bytes_from_one_build_to_the_next() {
        let nodes = BTreeSet::from(["n1".to_owned(), "n2".to_owned()]);
        let mut payloads = Payloads::default();
        let first = build_with(&config("v1"), &nodes, &mut payloads).unwrap();
        let before = pointers(&payloads);
        assert_eq!(before.len(), 2, "{before:?}");

        let same = build_with(&config("v1"), &nodes, &mut payloads).unwrap();
        assert_eq!(pointers(&payloads), before);
        assert_eq!(same, first);

        let changed = build_with(&config("v2"), &nodes, &mut payloads).unwrap();
        let after = pointers(&payloads);
        let moved: Vec<&String> = after
            .iter()
            .filter(|(key, pointer)| before.get(*key) != Some(pointer))
            .map(|(key, _)| key)
            .collect();
        assert_eq!(moved.len(), 1, "only pod a was re-encoded: {moved:?}");
        assert!(moved[0].ends_with("shop/a"), "{moved:?}");
        assert_ne!(changed, first);
        // A fresh build (no reuse) is equal in content to the reusing one.
        assert_eq!(build(&config("v2"), &nodes).unwrap(), changed);
    }
}
