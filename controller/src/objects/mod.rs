//! The Kubernetes objects the controller consumes: core kinds from `k8s-openapi`, our own typed
//! structs for the Istio and Gateway API kinds, and [`Resource`], one value of any of them.

mod gateway;
mod istio;
mod resources;
mod route;

use std::fmt;

pub use gateway::{
    Gateway, GatewayAddress, GatewaySpec, GatewayStatus, Listener, WAYPOINT_GATEWAY_CLASS,
};
pub use istio::{AuthorizationPolicy, PeerAuthentication};
pub use k8s_openapi::api::core::v1::{Namespace, Pod, Service, ServiceAccount};
pub use k8s_openapi::api::discovery::v1::EndpointSlice;
pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
pub use resources::Resources;
pub use route::HttpRoute;
use serde::{Deserialize, Serialize};

/// Every kind the controller recognises, translated or not yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Kind {
    /// `v1` Namespace (cluster-scoped).
    Namespace,
    /// `v1` Pod.
    Pod,
    /// `v1` Service.
    Service,
    /// `discovery.k8s.io/v1` EndpointSlice.
    EndpointSlice,
    /// `v1` ServiceAccount.
    ServiceAccount,
    /// `security.istio.io/v1` AuthorizationPolicy.
    AuthorizationPolicy,
    /// `security.istio.io/v1` PeerAuthentication.
    PeerAuthentication,
    /// `gateway.networking.k8s.io/v1` Gateway.
    Gateway,
    /// `gateway.networking.k8s.io/v1` HTTPRoute.
    HttpRoute,
    /// `gateway.networking.k8s.io/v1` GRPCRoute (not yet translated).
    GrpcRoute,
    /// `networking.istio.io/v1` VirtualService (not yet translated).
    VirtualService,
    /// `networking.istio.io/v1` DestinationRule (not yet translated).
    DestinationRule,
    /// `networking.istio.io/v1` ServiceEntry (not yet translated).
    ServiceEntry,
    /// `security.istio.io/v1` RequestAuthentication (not yet translated).
    RequestAuthentication,
    /// `ambit.dev/v1alpha1` LocalRateLimit (Ambit's own kind, docs/ratelimit.md).
    LocalRateLimit,
}

/// Identifies one object: kind, namespace (empty for cluster-scoped kinds) and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceKey {
    /// The kind.
    pub kind: Kind,
    /// The namespace; empty for Namespaces.
    pub namespace: String,
    /// The name.
    pub name: String,
}

/// One object of a recognised kind whose translation is not written yet. It is kept (so it is
/// counted and reported, never silently dropped) but only its metadata is read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UntranslatedObject {
    /// The `apiVersion` as written.
    pub api_version: String,
    /// The `kind` as written.
    pub kind: String,
    /// The metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The spec, unparsed.
    #[serde(default)]
    pub spec: serde_json::Value,
}

/// One object of any recognised kind.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Resource {
    /// A Namespace.
    Namespace(Box<Namespace>),
    /// A Pod.
    Pod(Box<Pod>),
    /// A Service.
    Service(Box<Service>),
    /// An EndpointSlice.
    EndpointSlice(Box<EndpointSlice>),
    /// A ServiceAccount.
    ServiceAccount(Box<ServiceAccount>),
    /// An Istio AuthorizationPolicy.
    AuthorizationPolicy(Box<AuthorizationPolicy>),
    /// An Istio PeerAuthentication.
    PeerAuthentication(Box<PeerAuthentication>),
    /// A Gateway API Gateway.
    Gateway(Box<Gateway>),
    /// A Gateway API HTTPRoute.
    HttpRoute(Box<HttpRoute>),
    /// A recognised kind that is not translated yet.
    Untranslated(Kind, Box<UntranslatedObject>),
}

impl Kind {
    /// The kind for an object's `apiVersion` and `kind`, if recognised. The Istio and Gateway
    /// API `v1beta1` versions are accepted too: their schemas are the same for our purposes.
    pub fn from_type(api_version: &str, kind: &str) -> Option<Self> {
        let (group, _version) = match api_version.split_once('/') {
            Some((group, version)) => (group, version),
            None => ("", api_version),
        };
        let known = match (api_version, group, kind) {
            ("v1", _, "Namespace") => Self::Namespace,
            ("v1", _, "Pod") => Self::Pod,
            ("v1", _, "Service") => Self::Service,
            ("v1", _, "ServiceAccount") => Self::ServiceAccount,
            ("discovery.k8s.io/v1", _, "EndpointSlice") => Self::EndpointSlice,
            (_, "security.istio.io", "AuthorizationPolicy") => Self::AuthorizationPolicy,
            (_, "security.istio.io", "PeerAuthentication") => Self::PeerAuthentication,
            (_, "security.istio.io", "RequestAuthentication") => Self::RequestAuthentication,
            (_, "gateway.networking.k8s.io", "Gateway") => Self::Gateway,
            (_, "gateway.networking.k8s.io", "HTTPRoute") => Self::HttpRoute,
            (_, "gateway.networking.k8s.io", "GRPCRoute") => Self::GrpcRoute,
            (_, "networking.istio.io", "VirtualService") => Self::VirtualService,
            (_, "networking.istio.io", "DestinationRule") => Self::DestinationRule,
            (_, "networking.istio.io", "ServiceEntry") => Self::ServiceEntry,
            (_, "ambit.dev", "LocalRateLimit") => Self::LocalRateLimit,
            _ => return None,
        };
        let version_ok = match known {
            Self::Namespace
            | Self::Pod
            | Self::Service
            | Self::ServiceAccount
            | Self::EndpointSlice => true,
            Self::LocalRateLimit => api_version == "ambit.dev/v1alpha1",
            _ => matches!(
                api_version.rsplit_once('/').map(|(_, v)| v),
                Some("v1" | "v1beta1")
            ),
        };
        version_ok.then_some(known)
    }

    /// The Kubernetes `kind` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Namespace => "Namespace",
            Self::Pod => "Pod",
            Self::Service => "Service",
            Self::EndpointSlice => "EndpointSlice",
            Self::ServiceAccount => "ServiceAccount",
            Self::AuthorizationPolicy => "AuthorizationPolicy",
            Self::PeerAuthentication => "PeerAuthentication",
            Self::Gateway => "Gateway",
            Self::HttpRoute => "HTTPRoute",
            Self::GrpcRoute => "GRPCRoute",
            Self::VirtualService => "VirtualService",
            Self::DestinationRule => "DestinationRule",
            Self::ServiceEntry => "ServiceEntry",
            Self::RequestAuthentication => "RequestAuthentication",
            Self::LocalRateLimit => "LocalRateLimit",
        }
    }

    /// Whether objects of this kind live in a namespace.
    pub fn is_namespaced(self) -> bool {
        self != Self::Namespace
    }

    /// Whether the translation reads objects of this kind (the others are reported as not yet
    /// translated).
    pub fn is_translated(self) -> bool {
        !matches!(
            self,
            Self::GrpcRoute
                | Self::VirtualService
                | Self::DestinationRule
                | Self::ServiceEntry
                | Self::RequestAuthentication
                | Self::LocalRateLimit
        )
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

impl Resource {
    /// The object's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Self::Namespace(_) => Kind::Namespace,
            Self::Pod(_) => Kind::Pod,
            Self::Service(_) => Kind::Service,
            Self::EndpointSlice(_) => Kind::EndpointSlice,
            Self::ServiceAccount(_) => Kind::ServiceAccount,
            Self::AuthorizationPolicy(_) => Kind::AuthorizationPolicy,
            Self::PeerAuthentication(_) => Kind::PeerAuthentication,
            Self::Gateway(_) => Kind::Gateway,
            Self::HttpRoute(_) => Kind::HttpRoute,
            Self::Untranslated(kind, _) => *kind,
        }
    }

    /// The object's metadata.
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Self::Namespace(o) => &o.metadata,
            Self::Pod(o) => &o.metadata,
            Self::Service(o) => &o.metadata,
            Self::EndpointSlice(o) => &o.metadata,
            Self::ServiceAccount(o) => &o.metadata,
            Self::AuthorizationPolicy(o) => &o.metadata,
            Self::PeerAuthentication(o) => &o.metadata,
            Self::Gateway(o) => &o.metadata,
            Self::HttpRoute(o) => &o.metadata,
            Self::Untranslated(_, o) => &o.metadata,
        }
    }

    /// The key: kind, namespace (empty for cluster-scoped kinds) and name.
    pub fn key(&self) -> ResourceKey {
        let kind = self.kind();
        let meta = self.metadata();
        ResourceKey {
            kind,
            namespace: if kind.is_namespaced() {
                meta.namespace.clone().unwrap_or_default()
            } else {
                String::new()
            },
            name: meta.name.clone().unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_from_api_version_and_kind() {
        assert_eq!(Kind::from_type("v1", "Pod"), Some(Kind::Pod));
        assert_eq!(Kind::from_type("apps/v1", "Pod"), None);
        assert_eq!(
            Kind::from_type("discovery.k8s.io/v1", "EndpointSlice"),
            Some(Kind::EndpointSlice)
        );
        assert_eq!(
            Kind::from_type("security.istio.io/v1beta1", "AuthorizationPolicy"),
            Some(Kind::AuthorizationPolicy)
        );
        assert_eq!(
            Kind::from_type("security.istio.io/v2", "AuthorizationPolicy"),
            None
        );
        assert_eq!(
            Kind::from_type("gateway.networking.k8s.io/v1", "HTTPRoute"),
            Some(Kind::HttpRoute)
        );
        assert_eq!(Kind::from_type("v1", "ConfigMap"), None);
        assert!(Kind::HttpRoute.is_translated());
        assert!(!Kind::GrpcRoute.is_translated());
        assert!(Kind::Gateway.is_translated());
        assert!(!Kind::Namespace.is_namespaced());
    }
}
