//! Resources on the wire: the model objects a scope is made of, their keys and their encoding.
//!
//! A resource travels as its key (`kind`, `namespace`, `name`) plus a payload: the model type's
//! canonical serde JSON. Decoding goes through the model's validating deserializers, so a
//! decoded [`MeshResource`] is always valid.

use std::fmt;
use std::sync::Arc;

use ambit_model::{
    AuthorizationPolicy, DestinationRule, GrpcRoute, HttpRoute, LocalRateLimit, PeerAuthentication,
    RequestAuthentication, Service, VirtualService, Workload,
};
use bytes::Bytes;

use crate::proto;

/// The model types that can be distributed. The wire name is [`ResourceKind::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum ResourceKind {
    /// [`Workload`].
    Workload,
    /// [`Service`].
    Service,
    /// [`AuthorizationPolicy`].
    AuthorizationPolicy,
    /// [`PeerAuthentication`].
    PeerAuthentication,
    /// [`HttpRoute`] (Gateway API HTTPRoute, for waypoints).
    HttpRoute,
    /// [`DestinationRule`] (Istio DestinationRule, for waypoints).
    DestinationRule,
    /// [`LocalRateLimit`] (Ambit's local rate limit, for waypoints).
    LocalRateLimit,
    /// [`GrpcRoute`] (Gateway API GRPCRoute, for waypoints).
    GrpcRoute,
    /// [`VirtualService`] (Istio VirtualService, HTTP routes, for waypoints).
    VirtualService,
    /// [`RequestAuthentication`] (JWT rules, for waypoints).
    RequestAuthentication,
}

/// Identifies one resource within a scope.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceKey {
    /// The model type.
    pub kind: ResourceKind,
    /// The object's namespace. Shared, not owned: every node scope holds a key per
    /// resource, and cloning those keys dominated building the scopes of a big cluster.
    pub namespace: Arc<str>,
    /// The object's name.
    pub name: Arc<str>,
}

/// One validated model object.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MeshResource {
    /// A workload (pod).
    Workload(Workload),
    /// A service.
    Service(Service),
    /// An authorization policy.
    AuthorizationPolicy(AuthorizationPolicy),
    /// A peer authentication policy.
    PeerAuthentication(PeerAuthentication),
    /// An HTTP route (waypoints only).
    HttpRoute(HttpRoute),
    /// A destination rule (waypoints only); boxed, being much larger than the others.
    DestinationRule(Box<DestinationRule>),
    /// A local rate limit (waypoints only).
    LocalRateLimit(LocalRateLimit),
    /// A gRPC route (waypoints only).
    GrpcRoute(GrpcRoute),
    /// A VirtualService (waypoints only).
    VirtualService(VirtualService),
    /// A request (JWT) authentication policy (waypoints only).
    RequestAuthentication(RequestAuthentication),
}

/// A resource that could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {reason}")]
pub struct ResourceError {
    what: String,
    reason: String,
}

impl ResourceKind {
    /// Every kind, in wire-name order.
    pub const ALL: [ResourceKind; 10] = [
        ResourceKind::AuthorizationPolicy,
        ResourceKind::DestinationRule,
        ResourceKind::GrpcRoute,
        ResourceKind::HttpRoute,
        ResourceKind::LocalRateLimit,
        ResourceKind::PeerAuthentication,
        ResourceKind::RequestAuthentication,
        ResourceKind::Service,
        ResourceKind::VirtualService,
        ResourceKind::Workload,
    ];

    /// The name used on the wire (`ResourceKey.kind`), the model type's name.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Workload => "Workload",
            ResourceKind::Service => "Service",
            ResourceKind::AuthorizationPolicy => "AuthorizationPolicy",
            ResourceKind::PeerAuthentication => "PeerAuthentication",
            ResourceKind::HttpRoute => "HttpRoute",
            ResourceKind::DestinationRule => "DestinationRule",
            ResourceKind::LocalRateLimit => "LocalRateLimit",
            ResourceKind::GrpcRoute => "GrpcRoute",
            ResourceKind::VirtualService => "VirtualService",
            ResourceKind::RequestAuthentication => "RequestAuthentication",
        }
    }

    /// The kind with this wire name.
    pub fn from_wire(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ResourceKey {
    /// A key for `kind` `namespace/name`.
    pub fn new(
        kind: ResourceKind,
        namespace: impl Into<Arc<str>>,
        name: impl Into<Arc<str>>,
    ) -> Self {
        Self {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    pub(crate) fn to_proto(&self) -> proto::ResourceKey {
        proto::ResourceKey {
            kind: self.kind.as_str().to_owned(),
            namespace: self.namespace.to_string(),
            name: self.name.to_string(),
        }
    }

    pub(crate) fn from_proto(key: &proto::ResourceKey) -> Result<Self, ResourceError> {
        let kind = ResourceKind::from_wire(&key.kind).ok_or_else(|| ResourceError {
            what: format!("{} {}/{}", key.kind, key.namespace, key.name),
            reason: format!("unknown resource kind {:?}", key.kind),
        })?;
        Ok(Self::new(kind, key.namespace.as_str(), key.name.as_str()))
    }
}

impl fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

impl MeshResource {
    /// The key this resource is stored under.
    pub fn key(&self) -> ResourceKey {
        let (namespace, name) = match self {
            MeshResource::Workload(w) => (w.namespace(), w.name()),
            MeshResource::Service(s) => (s.namespace(), s.name()),
            MeshResource::AuthorizationPolicy(p) => (p.namespace(), p.name()),
            MeshResource::PeerAuthentication(p) => (p.namespace(), p.name()),
            MeshResource::HttpRoute(r) => (r.namespace(), r.name()),
            MeshResource::DestinationRule(r) => (r.namespace(), r.name()),
            MeshResource::LocalRateLimit(r) => (r.namespace(), r.name()),
            MeshResource::GrpcRoute(r) => (r.namespace(), r.name()),
            MeshResource::VirtualService(v) => (v.namespace(), v.name()),
            MeshResource::RequestAuthentication(r) => (r.namespace(), r.name()),
        };
        ResourceKey::new(self.kind(), namespace, name)
    }

    /// The model type of this resource.
    pub fn kind(&self) -> ResourceKind {
        match self {
            MeshResource::Workload(_) => ResourceKind::Workload,
            MeshResource::Service(_) => ResourceKind::Service,
            MeshResource::AuthorizationPolicy(_) => ResourceKind::AuthorizationPolicy,
            MeshResource::PeerAuthentication(_) => ResourceKind::PeerAuthentication,
            MeshResource::HttpRoute(_) => ResourceKind::HttpRoute,
            MeshResource::DestinationRule(_) => ResourceKind::DestinationRule,
            MeshResource::LocalRateLimit(_) => ResourceKind::LocalRateLimit,
            MeshResource::GrpcRoute(_) => ResourceKind::GrpcRoute,
            MeshResource::VirtualService(_) => ResourceKind::VirtualService,
            MeshResource::RequestAuthentication(_) => ResourceKind::RequestAuthentication,
        }
    }

    /// The wire payload: the model's canonical serde JSON.
    pub fn encode(&self) -> Result<Bytes, ResourceError> {
        let json = match self {
            MeshResource::Workload(w) => serde_json::to_vec(w),
            MeshResource::Service(s) => serde_json::to_vec(s),
            MeshResource::AuthorizationPolicy(p) => serde_json::to_vec(p),
            MeshResource::PeerAuthentication(p) => serde_json::to_vec(p),
            MeshResource::HttpRoute(r) => serde_json::to_vec(r),
            MeshResource::DestinationRule(r) => serde_json::to_vec(r),
            MeshResource::LocalRateLimit(r) => serde_json::to_vec(r),
            MeshResource::GrpcRoute(r) => serde_json::to_vec(r),
            MeshResource::VirtualService(v) => serde_json::to_vec(v),
            MeshResource::RequestAuthentication(r) => serde_json::to_vec(r),
        };
        json.map(Bytes::from).map_err(|err| ResourceError {
            what: self.key().to_string(),
            reason: format!("cannot encode: {err}"),
        })
    }

    /// Decodes and validates a payload of `key.kind`, and checks that it is the object `key` names.
    pub fn decode(key: &ResourceKey, payload: &[u8]) -> Result<Self, ResourceError> {
        let decoded = match key.kind {
            ResourceKind::Workload => serde_json::from_slice(payload).map(MeshResource::Workload),
            ResourceKind::Service => serde_json::from_slice(payload).map(MeshResource::Service),
            ResourceKind::AuthorizationPolicy => {
                serde_json::from_slice(payload).map(MeshResource::AuthorizationPolicy)
            }
            ResourceKind::PeerAuthentication => {
                serde_json::from_slice(payload).map(MeshResource::PeerAuthentication)
            }
            ResourceKind::HttpRoute => serde_json::from_slice(payload).map(MeshResource::HttpRoute),
            ResourceKind::DestinationRule => {
                serde_json::from_slice(payload).map(|r| MeshResource::DestinationRule(Box::new(r)))
            }
            ResourceKind::LocalRateLimit => {
                serde_json::from_slice(payload).map(MeshResource::LocalRateLimit)
            }
            ResourceKind::GrpcRoute => serde_json::from_slice(payload).map(MeshResource::GrpcRoute),
            ResourceKind::VirtualService => {
                serde_json::from_slice(payload).map(MeshResource::VirtualService)
            }
            ResourceKind::RequestAuthentication => {
                serde_json::from_slice(payload).map(MeshResource::RequestAuthentication)
            }
        };
        let resource = decoded.map_err(|err| ResourceError {
            what: key.to_string(),
            reason: format!("invalid payload: {err}"),
        })?;
        let actual = resource.key();
        if actual != *key {
            return Err(ResourceError {
                what: key.to_string(),
                reason: format!("payload is {actual}"),
            });
        }
        Ok(resource)
    }

    /// The workload, if this is one.
    pub fn as_workload(&self) -> Option<&Workload> {
        match self {
            MeshResource::Workload(w) => Some(w),
            _ => None,
        }
    }

    /// The service, if this is one.
    pub fn as_service(&self) -> Option<&Service> {
        match self {
            MeshResource::Service(s) => Some(s),
            _ => None,
        }
    }

    /// The authorization policy, if this is one.
    pub fn as_authorization_policy(&self) -> Option<&AuthorizationPolicy> {
        match self {
            MeshResource::AuthorizationPolicy(p) => Some(p),
            _ => None,
        }
    }

    /// The peer authentication, if this is one.
    pub fn as_peer_authentication(&self) -> Option<&PeerAuthentication> {
        match self {
            MeshResource::PeerAuthentication(p) => Some(p),
            _ => None,
        }
    }

    /// The HTTP route, if this is one.
    pub fn as_http_route(&self) -> Option<&HttpRoute> {
        match self {
            MeshResource::HttpRoute(r) => Some(r),
            _ => None,
        }
    }

    /// The destination rule, if this is one.
    pub fn as_destination_rule(&self) -> Option<&DestinationRule> {
        match self {
            MeshResource::DestinationRule(r) => Some(&**r),
            _ => None,
        }
    }

    /// The gRPC route, if this is one.
    pub fn as_grpc_route(&self) -> Option<&GrpcRoute> {
        match self {
            MeshResource::GrpcRoute(r) => Some(r),
            _ => None,
        }
    }

    /// The local rate limit, if this is one.
    pub fn as_local_rate_limit(&self) -> Option<&LocalRateLimit> {
        match self {
            MeshResource::LocalRateLimit(r) => Some(r),
            _ => None,
        }
    }

    /// The VirtualService, if this is one.
    pub fn as_virtual_service(&self) -> Option<&VirtualService> {
        match self {
            MeshResource::VirtualService(v) => Some(v),
            _ => None,
        }
    }
    /// The request authentication, if this is one.
    pub fn as_request_authentication(&self) -> Option<&RequestAuthentication> {
        match self {
            MeshResource::RequestAuthentication(r) => Some(r),
            _ => None,
        }
    }
}

impl From<DestinationRule> for MeshResource {
    fn from(value: DestinationRule) -> Self {
        MeshResource::DestinationRule(Box::new(value))
    }
}

impl From<LocalRateLimit> for MeshResource {
    fn from(value: LocalRateLimit) -> Self {
        MeshResource::LocalRateLimit(value)
    }
}

impl From<GrpcRoute> for MeshResource {
    fn from(value: GrpcRoute) -> Self {
        MeshResource::GrpcRoute(value)
    }
}

impl From<VirtualService> for MeshResource {
    fn from(value: VirtualService) -> Self {
        MeshResource::VirtualService(value)
    }
}

impl From<RequestAuthentication> for MeshResource {
    fn from(value: RequestAuthentication) -> Self {
        MeshResource::RequestAuthentication(value)
    }
}

impl From<HttpRoute> for MeshResource {
    fn from(value: HttpRoute) -> Self {
        MeshResource::HttpRoute(value)
    }
}

impl From<Workload> for MeshResource {
    fn from(value: Workload) -> Self {
        MeshResource::Workload(value)
    }
}

impl From<Service> for MeshResource {
    fn from(value: Service) -> Self {
        MeshResource::Service(value)
    }
}

impl From<AuthorizationPolicy> for MeshResource {
    fn from(value: AuthorizationPolicy) -> Self {
        MeshResource::AuthorizationPolicy(value)
    }
}

impl From<PeerAuthentication> for MeshResource {
    fn from(value: PeerAuthentication) -> Self {
        MeshResource::PeerAuthentication(value)
    }
}

impl ResourceError {
    pub(crate) fn new(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use ambit_model::RequestAuthenticationSpec;
    use ambit_model::request_authn::JwtRule;
    use serde_json::json;

    use super::*;

    #[test]
    fn waypoint_kinds_round_trip_through_the_wire_form() {
        let rule: DestinationRule = serde_json::from_value(serde_json::json!({
            "name": "cart", "namespace": "shop",
            "spec": { "host": "cart", "subsets": [{ "name": "v1", "labels": { "version": "v1" } }] }
        }))
        .unwrap();
        let limit: LocalRateLimit = serde_json::from_value(serde_json::json!({
            "name": "rl", "namespace": "shop",
            "spec": { "targetRefs": [{ "group": "", "kind": "Service", "name": "cart" }],
                      "rules": [{ "tokensPerFill": 1, "fillInterval": "1s", "maxTokens": 2 }] }
        }))
        .unwrap();
        for resource in [MeshResource::from(rule), MeshResource::from(limit)] {
            let key = resource.key();
            assert_eq!(ResourceKind::from_wire(key.kind.as_str()), Some(key.kind));
            let payload = resource.encode().unwrap();
            assert_eq!(MeshResource::decode(&key, &payload).unwrap(), resource);
        }
        // A payload under the wrong kind is refused by the model's validation.
        let wrong = ResourceKey::new(ResourceKind::DestinationRule, "shop", "rl");
        assert!(
            MeshResource::decode(&wrong, br#"{"name":"rl","namespace":"shop","spec":{}}"#).is_err()
        );
    }

    #[test]
    fn route_kinds_round_trip_on_the_wire() {
        let vs: VirtualService = serde_json::from_value(json!({
            "name": "cart", "namespace": "shop",
            "spec": { "hosts": ["cart"], "http": [{ "route": [{ "destination": { "host": "cart" } }] }] }
        }))
        .unwrap();
        let grpc: GrpcRoute = serde_json::from_value(json!({
            "name": "cart", "namespace": "shop",
            "spec": { "parentRefs": [{ "group": "", "kind": "Service", "name": "cart" }] }
        }))
        .unwrap();
        for resource in [MeshResource::from(vs), MeshResource::from(grpc)] {
            let key = resource.key();
            assert_eq!(ResourceKind::from_wire(key.kind.as_str()), Some(key.kind));
            let decoded = MeshResource::decode(&key, &resource.encode().unwrap()).unwrap();
            assert_eq!(decoded, resource);
        }
        let invalid = ResourceKey::new(ResourceKind::VirtualService, "shop", "cart");
        let err =
            MeshResource::decode(&invalid, br#"{"name":"cart","namespace":"shop","spec":{}}"#)
                .unwrap_err();
        assert!(err.to_string().contains("spec.hosts"), "{err}");
    }

    #[test]
    fn request_authentication_round_trips_and_is_validated_on_decode() {
        let spec = RequestAuthenticationSpec {
            jwt_rules: vec![JwtRule {
                issuer: "https://issuer.test".into(),
                jwks_uri: Some("http://keys.test/jwks".into()),
                ..JwtRule::default()
            }],
            ..RequestAuthenticationSpec::default()
        };
        let resource = MeshResource::from(RequestAuthentication::new("jwt", "shop", spec).unwrap());
        let key = resource.key();
        assert_eq!(key.kind.as_str(), "RequestAuthentication");
        let payload = resource.encode().unwrap();
        assert_eq!(MeshResource::decode(&key, &payload).unwrap(), resource);

        // A rule without keys is refused when decoded, as the model refuses it.
        let keyless = br#"{"name":"jwt","namespace":"shop","spec":{"jwtRules":[{"issuer":"i"}]}}"#;
        let err = MeshResource::decode(&key, keyless).unwrap_err();
        assert!(err.to_string().contains("jwksUri"), "{err}");
    }
}
