//! L7 authorization: which AuthorizationPolicies the waypoint enforces for a destination, and
//! the request attributes it hands to [`ambit_policy::evaluate`].
//!
//! A policy applies when one of its `targetRefs` names
//! - the destination Service (`group: ""`, `kind: Service`), or
//! - this waypoint's Gateway (`group: gateway.networking.k8s.io`, `kind: Gateway`), or
//! - the `istio-waypoint` GatewayClass, from the root namespace (mesh-wide).
//!
//! Policies with a `selector` or no target are ztunnel's and are skipped here. The source
//! principal is the client identity of the inbound HBONE connection. `requestPrincipals` and
//! `request.auth.*` come from the JWT validated by [`crate::jwt`] under the
//! RequestAuthentications that target the same Service or waypoint ([`request_authentications`]).

use std::net::IpAddr;

use ambit_model::authz::PolicyTargetReference;
use ambit_model::request_authn::JwtRule;
use ambit_model::{
    AuthorizationPolicy, DEFAULT_ROOT_NAMESPACE, PolicyScope, RequestAuthentication, Service,
};
use ambit_policy::{Connection, Decision, RequestAttributes};
use http::request::Parts;

use crate::config::{GatewayName, Snapshot};
use crate::jwt::RequestAuth;
use crate::route::filters::{request_host, split_host_port};

const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";
const WAYPOINT_CLASS: &str = "istio-waypoint";

/// The attributes of one HTTP request, borrowed from its head.
#[derive(Debug)]
pub struct HttpAttributes<'a> {
    request: &'a Parts,
    host: &'a str,
    remote_ip: IpAddr,
    auth: Option<&'a RequestAuth>,
}

impl<'a> HttpAttributes<'a> {
    /// The attributes of `request`; `remote_ip` is the original client address.
    pub fn new(request: &'a Parts, remote_ip: IpAddr) -> Self {
        let host = request_host(request).map_or("", |h| split_host_port(h).0);
        Self {
            request,
            host,
            remote_ip,
            auth: None,
        }
    }

    /// With the request's validated JWT, for `requestPrincipals` and `request.auth.*`.
    pub fn with_auth(mut self, auth: Option<&'a RequestAuth>) -> Self {
        self.auth = auth;
        self
    }
}

impl RequestAttributes for HttpAttributes<'_> {
    fn method(&self) -> &str {
        self.request.method.as_str()
    }

    fn host(&self) -> &str {
        self.host
    }

    fn path(&self) -> &str {
        self.request.uri.path()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.request.headers.get(name)?.to_str().ok()
    }

    fn request_principal(&self) -> Option<&str> {
        self.auth.map(RequestAuth::principal)
    }

    fn remote_ip(&self) -> IpAddr {
        self.remote_ip
    }

    fn request_audiences(&self) -> Vec<&str> {
        self.auth
            .map(|auth| auth.audiences().iter().map(String::as_str).collect())
            .unwrap_or_default()
    }

    fn request_presenter(&self) -> Option<&str> {
        self.auth.and_then(RequestAuth::presenter)
    }

    fn request_claim(&self, path: &[String]) -> Vec<&str> {
        self.auth.map(|auth| auth.claim(path)).unwrap_or_default()
    }
}

/// The policies enforced for traffic to `service` (or, for pod-addressed traffic, `None`:
/// only policies on the waypoint itself).
pub fn applicable<'s>(
    snapshot: &'s Snapshot,
    service: Option<&'s Service>,
) -> impl Iterator<Item = &'s AuthorizationPolicy> + 's {
    snapshot.policies().iter().filter(move |policy| {
        let PolicyScope::TargetRefs(targets) = policy.scope() else {
            return false;
        };
        targets.iter().any(|target| {
            targets_service(policy, target, service)
                || targets_waypoint(policy, target, snapshot.waypoint.as_ref())
        })
    })
}

/// The JWT rules of the RequestAuthentications that target `service` or this waypoint (same
/// attachment rules as AuthorizationPolicy).
pub fn request_authentications<'s>(
    snapshot: &'s Snapshot,
    service: Option<&'s Service>,
) -> Vec<&'s JwtRule> {
    snapshot
        .request_authentications()
        .iter()
        .filter(|policy| {
            let PolicyScope::TargetRefs(targets) = policy.scope() else {
                return false;
            };
            targets.iter().any(|target| {
                targets_service_in(policy.namespace(), target, service)
                    || targets_waypoint_in(policy.namespace(), target, snapshot.waypoint.as_ref())
            })
        })
        .flat_map(RequestAuthentication::jwt_rules)
        .collect()
}

/// The decision for one HTTP request.
pub fn authorize_request(
    snapshot: &Snapshot,
    service: Option<&Service>,
    connection: &Connection,
    request: &HttpAttributes<'_>,
) -> Decision {
    ambit_policy::evaluate(
        applicable(snapshot, service),
        connection,
        Some(request as &dyn RequestAttributes),
    )
}

/// The decision for an opaque TCP connection: rules that need request attributes cannot be
/// checked and fail safe.
pub fn authorize_connection(
    snapshot: &Snapshot,
    service: Option<&Service>,
    connection: &Connection,
) -> Decision {
    ambit_policy::evaluate(applicable(snapshot, service), connection, None)
}

fn target_namespace<'p>(policy_namespace: &'p str, target: &'p PolicyTargetReference) -> &'p str {
    target.namespace.as_deref().unwrap_or(policy_namespace)
}

fn targets_service(
    policy: &AuthorizationPolicy,
    target: &PolicyTargetReference,
    service: Option<&Service>,
) -> bool {
    targets_service_in(policy.namespace(), target, service)
}

fn targets_service_in(
    policy_namespace: &str,
    target: &PolicyTargetReference,
    service: Option<&Service>,
) -> bool {
    let Some(service) = service else {
        return false;
    };
    target.group.is_empty()
        && target.kind == "Service"
        && target.name == service.name()
        && target_namespace(policy_namespace, target) == service.namespace()
}

fn targets_waypoint(
    policy: &AuthorizationPolicy,
    target: &PolicyTargetReference,
    waypoint: Option<&GatewayName>,
) -> bool {
    targets_waypoint_in(policy.namespace(), target, waypoint)
}

fn targets_waypoint_in(
    policy_namespace: &str,
    target: &PolicyTargetReference,
    waypoint: Option<&GatewayName>,
) -> bool {
    if target.group != GATEWAY_GROUP {
        return false;
    }
    match target.kind.as_str() {
        "Gateway" => waypoint.is_some_and(|gateway| {
            target.name == gateway.name
                && target_namespace(policy_namespace, target) == gateway.namespace
        }),
        "GatewayClass" => {
            target.name == WAYPOINT_CLASS && policy_namespace == DEFAULT_ROOT_NAMESPACE
        }
        _ => false,
    }
}
