//! The client's validated copy of its scope, and how an update is applied to it (pure).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use ambit_model::{
    AuthorizationPolicy, DestinationRule, GrpcRoute, HttpRoute, LocalRateLimit, PeerAuthentication,
    RequestAuthentication, Service, VirtualService, Workload,
};

use crate::proto;
use crate::resource::{MeshResource, ResourceError, ResourceKey, ResourceKind};

/// An immutable, validated config as last accepted from the controller. Swapped whole on every
/// accepted update, so readers never see a half-applied one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigView {
    version: Option<u64>,
    resources: BTreeMap<ResourceKey, Arc<MeshResource>>,
}

/// Why an update was rejected (sent back as the NACK's `error_detail`).
#[derive(Debug, thiserror::Error)]
#[error("update {version} rejected: {reason}")]
pub(crate) struct ApplyError {
    version: u64,
    reason: String,
}

impl ConfigView {
    /// A view at `version` holding `resources`, as if a full resync had carried them: for
    /// consumers' tests, which need a config without a controller. Fails if two resources
    /// share a key (an update carrying them would be rejected too).
    pub fn from_resources(
        version: u64,
        resources: impl IntoIterator<Item = MeshResource>,
    ) -> Result<Self, ResourceError> {
        let mut by_key = BTreeMap::new();
        for resource in resources {
            let key = resource.key();
            if by_key.contains_key(&key) {
                return Err(ResourceError::new(key.to_string(), "appears twice"));
            }
            by_key.insert(key, Arc::new(resource));
        }
        Ok(ConfigView {
            version: Some(version),
            resources: by_key,
        })
    }

    /// The version of the last accepted update; `None` before the first one.
    pub fn version(&self) -> Option<u64> {
        self.version
    }

    /// Whether a config has been received at all (readiness).
    pub fn is_synced(&self) -> bool {
        self.version.is_some()
    }

    /// The number of resources.
    pub fn len(&self) -> usize {
        self.resources.len()
    }

    /// Whether there are no resources.
    pub fn is_empty(&self) -> bool {
        self.resources.is_empty()
    }

    /// The resource with `key`.
    pub fn get(&self, key: &ResourceKey) -> Option<&MeshResource> {
        self.resources.get(key).map(|r| &**r)
    }

    /// Every resource with its key, in key order.
    pub fn resources(&self) -> impl Iterator<Item = (&ResourceKey, &MeshResource)> {
        self.resources.iter().map(|(k, r)| (k, &**r))
    }

    /// The workloads.
    pub fn workloads(&self) -> impl Iterator<Item = &Workload> {
        self.of_kind(ResourceKind::Workload)
            .filter_map(MeshResource::as_workload)
    }

    /// The services.
    pub fn services(&self) -> impl Iterator<Item = &Service> {
        self.of_kind(ResourceKind::Service)
            .filter_map(MeshResource::as_service)
    }

    /// The authorization policies.
    pub fn authorization_policies(&self) -> impl Iterator<Item = &AuthorizationPolicy> {
        self.of_kind(ResourceKind::AuthorizationPolicy)
            .filter_map(MeshResource::as_authorization_policy)
    }

    /// The peer authentication policies.
    pub fn peer_authentications(&self) -> impl Iterator<Item = &PeerAuthentication> {
        self.of_kind(ResourceKind::PeerAuthentication)
            .filter_map(MeshResource::as_peer_authentication)
    }

    /// The HTTP routes (a waypoint's scope).
    pub fn http_routes(&self) -> impl Iterator<Item = &HttpRoute> {
        self.of_kind(ResourceKind::HttpRoute)
            .filter_map(MeshResource::as_http_route)
    }

    /// The destination rules (a waypoint's scope).
    pub fn destination_rules(&self) -> impl Iterator<Item = &DestinationRule> {
        self.of_kind(ResourceKind::DestinationRule)
            .filter_map(MeshResource::as_destination_rule)
    }

    /// The local rate limits (a waypoint's scope).
    pub fn local_rate_limits(&self) -> impl Iterator<Item = &LocalRateLimit> {
        self.of_kind(ResourceKind::LocalRateLimit)
            .filter_map(MeshResource::as_local_rate_limit)
    }

    /// The gRPC routes (a waypoint's scope).
    pub fn grpc_routes(&self) -> impl Iterator<Item = &GrpcRoute> {
        self.of_kind(ResourceKind::GrpcRoute)
            .filter_map(MeshResource::as_grpc_route)
    }

    /// The VirtualServices (a waypoint's scope).
    pub fn virtual_services(&self) -> impl Iterator<Item = &VirtualService> {
        self.of_kind(ResourceKind::VirtualService)
            .filter_map(MeshResource::as_virtual_service)
    }

    /// The request authentication policies (a waypoint's scope).
    pub fn request_authentications(&self) -> impl Iterator<Item = &RequestAuthentication> {
        self.of_kind(ResourceKind::RequestAuthentication)
            .filter_map(MeshResource::as_request_authentication)
    }

    fn of_kind(&self, kind: ResourceKind) -> impl Iterator<Item = &MeshResource> {
        let start = ResourceKey::new(kind, "", "");
        self.resources
            .range(start..)
            .take_while(move |(key, _)| key.kind == kind)
            .map(|(_, r)| &**r)
    }

    /// The config after `update`, or why `update` is rejected as a whole. `first` says this is
    /// the first update on a new stream, which must be a full resync.
    pub(crate) fn apply(
        &self,
        update: &proto::ConfigUpdate,
        first: bool,
    ) -> Result<ConfigView, ApplyError> {
        let reject = |reason: String| ApplyError {
            version: update.version,
            reason,
        };
        if first && !update.full {
            return Err(reject(
                "the first update of a stream must be a full resync".to_owned(),
            ));
        }
        if update.full && !update.removals.is_empty() {
            return Err(reject("a full resync carries no removals".to_owned()));
        }
        let mut resources = if update.full {
            BTreeMap::new()
        } else {
            self.resources.clone()
        };
        let mut touched = BTreeSet::new();
        for removal in &update.removals {
            let key = ResourceKey::from_proto(removal).map_err(|e| reject(e.to_string()))?;
            resources.remove(&key);
            if !touched.insert(key.clone()) {
                return Err(reject(format!("{key} is removed twice")));
            }
        }
        for upsert in &update.upserts {
            let resource = decode(upsert).map_err(|e| reject(e.to_string()))?;
            let key = resource.key();
            if !touched.insert(key.clone()) {
                return Err(reject(format!("{key} appears twice in the update")));
            }
            resources.insert(key, Arc::new(resource));
        }
        Ok(ConfigView {
            version: Some(update.version),
            resources,
        })
    }
}

impl ApplyError {
    pub(crate) fn detail(&self) -> String {
        self.reason.clone()
    }
}

fn decode(resource: &proto::Resource) -> Result<MeshResource, ResourceError> {
    let key = resource
        .key
        .as_ref()
        .ok_or_else(|| ResourceError::new("resource", "has no key"))?;
    let key = ResourceKey::from_proto(key)?;
    MeshResource::decode(&key, &resource.payload)
}

#[cfg(test)]
#[path = "view_tests.rs"]
mod tests;
