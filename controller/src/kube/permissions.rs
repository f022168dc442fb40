//! [`API_PERMISSIONS`]: every Kubernetes API call the controller makes, as RBAC rules, and
//! [`required_permissions`], which maps one HTTP request to the rules it needs. The Helm chart's
//! ClusterRole is checked against the list, and the mocked-API tests check every request the
//! controller sends against it, so the two cannot drift apart silently.

use std::fmt;

use http::{Method, Uri};

/// One RBAC rule: verbs on a resource (or subresource, `gateways/status`) of an API group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiPermission {
    /// The API group; empty for the core group.
    pub group: &'static str,
    /// The resource, with `/subresource` when the call is on a subresource.
    pub resource: &'static str,
    /// The verbs (`get`, `list`, `watch`, `create`, `patch`, …).
    pub verbs: &'static [&'static str],
}

/// What one request needs: a verb on a resource of a group.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RequiredPermission {
    /// The API group; empty for the core group.
    pub group: String,
    /// The resource, with `/subresource` if any.
    pub resource: String,
    /// The verb.
    pub verb: &'static str,
}

/// A request path is not a Kubernetes resource path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{method} {uri} is not a Kubernetes resource request")]
pub struct UnknownRequest {
    method: String,
    uri: String,
}

const WATCHED: &[&str] = &["list", "watch"];
/// Server-side apply creates the object when it is missing, and the API server authorizes
/// that case as `create`.
const APPLIED: &[&str] = &["create", "patch"];
const STATUS: &[&str] = &["patch"];

/// Exactly what the controller calls: the source's watches, the waypoint deployer's and the
/// roots publisher's applies, the status writers' patches and the CA's token reviews and pod lookups.
pub const API_PERMISSIONS: &[ApiPermission] = &[
    // Source (watchers).
    perm("", "namespaces", WATCHED),
    perm("", "pods", &["get", "list", "watch"]),
    perm("", "services", &["create", "list", "patch", "watch"]),
    perm("", "serviceaccounts", &["create", "list", "patch", "watch"]),
    perm("discovery.k8s.io", "endpointslices", WATCHED),
    perm("security.istio.io", "authorizationpolicies", WATCHED),
    perm("security.istio.io", "peerauthentications", WATCHED),
    perm("security.istio.io", "requestauthentications", WATCHED),
    perm("gateway.networking.k8s.io", "gateways", WATCHED),
    perm("gateway.networking.k8s.io", "httproutes", WATCHED),
    perm("gateway.networking.k8s.io", "grpcroutes", WATCHED),
    perm("networking.istio.io", "virtualservices", WATCHED),
    perm("networking.istio.io", "destinationrules", WATCHED),
    perm("networking.istio.io", "serviceentries", WATCHED),
    perm("ambit.dev", "localratelimits", WATCHED),
    // Waypoint deployer.
    perm("apps", "deployments", APPLIED),
    perm("gateway.networking.k8s.io", "gateways/status", STATUS),
    // Roots publisher (the roots ConfigMap, by server-side apply).
    perm("", "configmaps", APPLIED),
    // Status writers.
    perm("", "services/status", STATUS),
    perm("gateway.networking.k8s.io", "httproutes/status", STATUS),
    perm("gateway.networking.k8s.io", "grpcroutes/status", STATUS),
    // CA authentication.
    perm("authentication.k8s.io", "tokenreviews", &["create"]),
];

/// What the waypoint deployer also calls when its template (`--waypoint-template-dir`) holds
/// `hpa.yaml` or `pdb.yaml`. The chart grants each only when its option puts that file in the
/// template.
pub const OPTIONAL_WAYPOINT_PERMISSIONS: &[ApiPermission] = &[
    perm("autoscaling", "horizontalpodautoscalers", APPLIED),
    perm("policy", "poddisruptionbudgets", APPLIED),
];

const fn perm(
    group: &'static str,
    resource: &'static str,
    verbs: &'static [&'static str],
) -> ApiPermission {
    ApiPermission {
        group,
        resource,
        verbs,
    }
}

impl ApiPermission {
    /// Whether this rule allows `required`.
    pub fn allows(&self, required: &RequiredPermission) -> bool {
        self.group == required.group
            && self.resource == required.resource
            && self.verbs.contains(&required.verb)
    }
}

impl fmt::Display for RequiredPermission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        write!(f, "{} {group}/{}", self.verb, self.resource)
    }
}

/// Whether [`API_PERMISSIONS`] allows `required`.
pub fn is_permitted(required: &RequiredPermission) -> bool {
    API_PERMISSIONS.iter().any(|rule| rule.allows(required))
}

/// The RBAC permissions one API request needs. A server-side apply (a PATCH with content type
/// `application/apply-patch+yaml`) of a whole object needs `create` as well as `patch`, since
/// it creates a missing object.
pub fn required_permissions(
    method: &Method,
    uri: &Uri,
    content_type: Option<&str>,
) -> Result<Vec<RequiredPermission>, UnknownRequest> {
    let unknown = || UnknownRequest {
        method: method.to_string(),
        uri: uri.to_string(),
    };
    let segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    let (group, rest) = match segments.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return Err(unknown()),
    };
    let (resource, name, subresource) = match rest {
        ["namespaces", _ns, resource, tail @ ..] => match tail {
            [] => (*resource, None, None),
            [name] => (*resource, Some(*name), None),
            [name, sub] => (*resource, Some(*name), Some(*sub)),
            _ => return Err(unknown()),
        },
        [resource] => (*resource, None, None),
        [resource, name] => (*resource, Some(*name), None),
        [resource, name, sub] => (*resource, Some(*name), Some(*sub)),
        _ => return Err(unknown()),
    };
    let watch = uri
        .query()
        .is_some_and(|q| q.split('&').any(|pair| pair == "watch=true"));
    let verbs: Vec<&'static str> = match (method.as_str(), name) {
        ("GET", None) if watch => vec!["watch"],
        ("GET", None) => vec!["list"],
        ("GET", Some(_)) => vec!["get"],
        ("POST", None) => vec!["create"],
        ("PUT", Some(_)) => vec!["update"],
        ("DELETE", Some(_)) => vec!["delete"],
        ("DELETE", None) => vec!["deletecollection"],
        ("PATCH", Some(_)) => {
            let apply = content_type.is_some_and(|ct| ct.starts_with("application/apply-patch"));
            if apply && subresource.is_none() {
                vec!["create", "patch"]
            } else {
                vec!["patch"]
            }
        }
        _ => return Err(unknown()),
    };
    let resource = match subresource {
        Some(sub) => format!("{resource}/{sub}"),
        None => resource.to_owned(),
    };
    Ok(verbs
        .into_iter()
        .map(|verb| RequiredPermission {
            group: group.to_owned(),
            resource: resource.clone(),
            verb,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn required(method: Method, uri: &str, ct: Option<&str>) -> Vec<String> {
        required_permissions(&method, &uri.parse().unwrap(), ct)
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn requests_map_to_verbs_and_resources() {
        assert_eq!(
            required(Method::GET, "/api/v1/pods?limit=500", None),
            ["list core/pods"]
        );
        assert_eq!(
            required(
                Method::GET,
                "/api/v1/namespaces?watch=true&resourceVersion=3",
                None
            ),
            ["watch core/namespaces"]
        );
        assert_eq!(
            required(Method::GET, "/api/v1/namespaces/default/pods/web", None),
            ["get core/pods"]
        );
        assert_eq!(
            required(
                Method::PATCH,
                "/apis/apps/v1/namespaces/ns/deployments/wp?fieldManager=x&force=true",
                Some("application/apply-patch+yaml")
            ),
            ["create apps/deployments", "patch apps/deployments"]
        );
        assert_eq!(
            required(
                Method::PATCH,
                "/apis/gateway.networking.k8s.io/v1/namespaces/ns/gateways/wp/status",
                Some("application/apply-patch+yaml")
            ),
            ["patch gateway.networking.k8s.io/gateways/status"]
        );
        assert_eq!(
            required(
                Method::POST,
                "/apis/authentication.k8s.io/v1/tokenreviews",
                None
            ),
            ["create authentication.k8s.io/tokenreviews"]
        );
        assert!(required_permissions(&Method::GET, &"/healthz".parse().unwrap(), None).is_err());
    }

    #[test]
    fn the_list_covers_watching_but_not_deleting() {
        let list = required_permissions(&Method::GET, &"/api/v1/pods".parse().unwrap(), None);
        assert!(list.unwrap().iter().all(is_permitted));
        let delete = required_permissions(
            &Method::DELETE,
            &"/apis/apps/v1/namespaces/a/deployments/b".parse().unwrap(),
            None,
        );
        assert!(!delete.unwrap().iter().all(is_permitted));
    }
}
