//! [`Resources`]: a set of objects keyed by kind, namespace and name.

use std::collections::BTreeMap;

use super::{
    AuthorizationPolicy, EndpointSlice, Gateway, HttpRoute, Kind, Namespace, PeerAuthentication,
    Pod, Resource, ResourceKey, Service, ServiceAccount, UntranslatedObject,
};

/// A consistent set of objects, at most one per [`ResourceKey`], iterated in key order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resources {
    objects: BTreeMap<ResourceKey, Resource>,
}

impl Resources {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `resource`. If one with the same key is already present, nothing changes and the
    /// rejected resource is handed back.
    pub fn insert(&mut self, resource: Resource) -> Result<(), Box<Resource>> {
        let key = resource.key();
        if self.objects.contains_key(&key) {
            return Err(Box::new(resource));
        }
        self.objects.insert(key, resource);
        Ok(())
    }

    /// Adds or replaces `resource`, returning the one it replaced.
    pub fn upsert(&mut self, resource: Resource) -> Option<Resource> {
        self.objects.insert(resource.key(), resource)
    }

    /// Removes the object with `key`.
    pub fn remove(&mut self, key: &ResourceKey) -> Option<Resource> {
        self.objects.remove(key)
    }

    /// The object with `key`.
    pub fn get(&self, key: &ResourceKey) -> Option<&Resource> {
        self.objects.get(key)
    }

    /// The number of objects.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Whether there are no objects.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// All objects in key order.
    pub fn iter(&self) -> impl Iterator<Item = &Resource> {
        self.objects.values()
    }

    /// The Namespaces.
    pub fn namespaces(&self) -> impl Iterator<Item = &Namespace> {
        self.iter().filter_map(|r| match r {
            Resource::Namespace(o) => Some(o.as_ref()),
            _ => None,
        })
    }

    /// The Pods.
    pub fn pods(&self) -> impl Iterator<Item = &Pod> {
        self.iter().filter_map(|r| match r {
            Resource::Pod(o) => Some(o.as_ref()),
            _ => None,
        })
    }

    /// The Services.
    pub fn services(&self) -> impl Iterator<Item = &Service> {
        self.iter().filter_map(|r| match r {
            Resource::Service(o) => Some(o.as_ref()),
            _ => None,
        })
    }

    /// The EndpointSlices.
    pub fn endpoint_slices(&self) -> impl Iterator<Item = &EndpointSlice> {
        self.iter().filter_map(|r| match r {
            Resource::EndpointSlice(o) => Some(o.as_ref()),
            _ => None,
        })
    }

    /// The ServiceAccounts.
    pub fn service_accounts(&self) -> impl Iterator<Item = &ServiceAccount> {
        self.iter().filter_map(|r| match r {
            Resource::ServiceAccount(o) => Some(o.as_ref()),
            _ => None,
        })
    }

    /// The AuthorizationPolicies.
    pub fn authorization_policies(&self) -> impl Iterator<Item = &AuthorizationPolicy> {
        self.iter().filter_map(|r| match r {
            Resource::AuthorizationPolicy(o) => Some(o.as_ref()),
            _ => None,
        })
    }

    /// The PeerAuthentications.
    pub fn peer_authentications(&self) -> impl Iterator<Item = &PeerAuthentication> {
        self.iter().filter_map(|r| match r {
            Resource::PeerAuthentication(o) => Some(o.as_ref()),
            _ => None,
        })
    }

    /// The Gateways.
    pub fn gateways(&self) -> impl Iterator<Item = &Gateway> {
        self.iter().filter_map(|r| match r {
            Resource::Gateway(o) => Some(o.as_ref()),
            _ => None,
        })
    }

    /// The HTTPRoutes.
    pub fn http_routes(&self) -> impl Iterator<Item = &HttpRoute> {
        self.iter().filter_map(|r| match r {
            Resource::HttpRoute(o) => Some(o.as_ref()),
            _ => None,
        })
    }

    /// The objects of recognised kinds that are not translated yet.
    pub fn untranslated(&self) -> impl Iterator<Item = (Kind, &UntranslatedObject)> {
        self.iter().filter_map(|r| match r {
            Resource::Untranslated(kind, o) => Some((*kind, o.as_ref())),
            _ => None,
        })
    }
}
