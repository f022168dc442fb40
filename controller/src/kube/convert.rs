//! API objects → [`Resource`]s: which API serves each [`Kind`], what of an object is kept
//! (managedFields, last-applied annotations and pod fields translation never reads are
//! dropped before caching), and the validation an object gets before it is accepted.

use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::local::{ObjectContext, SourceError};
use crate::objects::{AuthorizationPolicy, Kind, PeerAuthentication, Resource, UntranslatedObject};

/// Where the API serves one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KindApi {
    pub(crate) kind: Kind,
    pub(crate) group: &'static str,
    pub(crate) version: &'static str,
    pub(crate) plural: &'static str,
}

/// Every kind the source watches, with its API. Istio and Gateway API kinds are read at `v1`.
pub(crate) const WATCHED_KINDS: &[KindApi] = &[
    api(Kind::Namespace, "", "v1", "namespaces"),
    api(Kind::Pod, "", "v1", "pods"),
    api(Kind::Service, "", "v1", "services"),
    api(
        Kind::EndpointSlice,
        "discovery.k8s.io",
        "v1",
        "endpointslices",
    ),
    api(Kind::ServiceAccount, "", "v1", "serviceaccounts"),
    api(
        Kind::AuthorizationPolicy,
        "security.istio.io",
        "v1",
        "authorizationpolicies",
    ),
    api(
        Kind::PeerAuthentication,
        "security.istio.io",
        "v1",
        "peerauthentications",
    ),
    api(
        Kind::RequestAuthentication,
        "security.istio.io",
        "v1",
        "requestauthentications",
    ),
    api(Kind::Gateway, "gateway.networking.k8s.io", "v1", "gateways"),
    api(
        Kind::HttpRoute,
        "gateway.networking.k8s.io",
        "v1",
        "httproutes",
    ),
    api(
        Kind::GrpcRoute,
        "gateway.networking.k8s.io",
        "v1",
        "grpcroutes",
    ),
    api(
        Kind::VirtualService,
        "networking.istio.io",
        "v1",
        "virtualservices",
    ),
    api(
        Kind::DestinationRule,
        "networking.istio.io",
        "v1",
        "destinationrules",
    ),
    api(
        Kind::ServiceEntry,
        "networking.istio.io",
        "v1",
        "serviceentries",
    ),
    api(
        Kind::LocalRateLimit,
        "ambit.dev",
        "v1alpha1",
        "localratelimits",
    ),
];

/// The annotation `kubectl apply` (client side) leaves: a full copy of the object.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

const fn api(
    kind: Kind,
    group: &'static str,
    version: &'static str,
    plural: &'static str,
) -> KindApi {
    KindApi {
        kind,
        group,
        version,
        plural,
    }
}

impl KindApi {
    /// The `apiVersion` string.
    pub(crate) fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The kube-rs description of the API.
    pub(crate) fn api_resource(&self) -> ApiResource {
        let gvk = GroupVersionKind::gvk(self.group, self.version, self.kind.as_str());
        ApiResource::from_gvk_with_plural(&gvk, self.plural)
    }
}

/// Converts one watched object. Errors name the kind, namespace, name and field, and are
/// logged by the caller; the object is then left out.
// Errors are rare (one invalid object) and carry the file/field detail whole.
#[allow(clippy::result_large_err)]
pub(crate) fn to_resource(api: &KindApi, object: DynamicObject) -> Result<Resource, SourceError> {
    let context = ObjectContext {
        kind: Some(api.kind.as_str().to_owned()),
        namespace: object.metadata.namespace.clone(),
        name: object.metadata.name.clone(),
    };
    let value = serde_json::to_value(object)
        .map_err(|err| SourceError::api_object(&context, None, err.to_string()))?;
    let Value::Object(mut fields) = value else {
        return Err(SourceError::api_object(&context, None, "not a JSON object"));
    };
    // List items carry no apiVersion/kind; the typed structs want them.
    fields.insert("apiVersion".into(), Value::String(api.api_version()));
    fields.insert("kind".into(), Value::String(api.kind.as_str().to_owned()));
    strip(api.kind, &mut fields);
    decode_resource(api.kind, Value::Object(fields))
        .map_err(|(field, message)| SourceError::api_object(&context, field, message))
}

/// Drops what translation never reads, so the cache holds only what it needs.
fn strip(kind: Kind, fields: &mut Map<String, Value>) {
    if let Some(Value::Object(metadata)) = fields.get_mut("metadata") {
        metadata.remove("managedFields");
        if let Some(Value::Object(annotations)) = metadata.get_mut("annotations") {
            annotations.remove(LAST_APPLIED);
        }
    }
    if kind == Kind::Pod {
        keep_only(
            fields.get_mut("spec"),
            &[
                "nodeName",
                "hostNetwork",
                "serviceAccountName",
                "containers",
            ],
        );
        if let Some(Value::Array(containers)) = fields
            .get_mut("spec")
            .and_then(|spec| spec.get_mut("containers"))
        {
            for container in containers {
                keep_only(Some(container), &["name", "ports"]);
            }
        }
        keep_only(fields.get_mut("status"), &["phase", "podIP", "podIPs"]);
    }
}

fn keep_only(value: Option<&mut Value>, keep: &[&str]) {
    if let Some(Value::Object(map)) = value {
        map.retain(|key, _| keep.contains(&key.as_str()));
    }
}

/// Decodes the typed object and runs the validation its kind has on its own (the same checks
/// the folder source makes).
fn decode_resource(kind: Kind, value: Value) -> Result<Resource, (Option<String>, String)> {
    let resource = match kind {
        Kind::Namespace => Resource::Namespace(decode(value)?),
        Kind::Pod => Resource::Pod(decode(value)?),
        Kind::Service => Resource::Service(decode(value)?),
        Kind::EndpointSlice => Resource::EndpointSlice(decode(value)?),
        Kind::ServiceAccount => Resource::ServiceAccount(decode(value)?),
        Kind::AuthorizationPolicy => {
            let policy: Box<AuthorizationPolicy> = decode(value)?;
            policy
                .to_model()
                .map_err(|err| (Some(err.field().to_owned()), err.reason().to_owned()))?;
            Resource::AuthorizationPolicy(policy)
        }
        Kind::PeerAuthentication => {
            let policy: Box<PeerAuthentication> = decode(value)?;
            policy
                .to_model()
                .map_err(|err| (Some(err.field().to_owned()), err.reason().to_owned()))?;
            Resource::PeerAuthentication(policy)
        }
        Kind::Gateway => Resource::Gateway(decode(value)?),
        // Routes, VirtualServices, DestinationRules, ServiceEntries and RequestAuthentications
        // are kept as raw JSON specs until their translation exists.
        other => Resource::Untranslated(other, decode::<UntranslatedObject>(value)?),
    };
    Ok(resource)
}

fn decode<T: DeserializeOwned>(value: Value) -> Result<Box<T>, (Option<String>, String)> {
    serde_path_to_error::deserialize(value)
        .map(Box::new)
        .map_err(|err| (Some(err.path().to_string()), err.inner().to_string()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn api_of(kind: Kind) -> KindApi {
        *WATCHED_KINDS.iter().find(|a| a.kind == kind).unwrap()
    }

    fn object(value: Value) -> DynamicObject {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn pods_lose_managed_fields_and_unread_fields() {
        let pod = object(json!({
            "metadata": {"name": "web", "namespace": "shop",
                "managedFields": [{"manager": "kubectl"}],
                "annotations": {LAST_APPLIED: "{}", "keep": "me"}},
            "spec": {"nodeName": "node-a", "volumes": [{"name": "v"}],
                "containers": [{"name": "app", "image": "x", "env": [{"name": "A"}],
                    "ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": {"phase": "Running", "podIP": "10.0.0.1", "conditions": []}
        }));
        let Resource::Pod(pod) = to_resource(&api_of(Kind::Pod), pod).unwrap() else {
            panic!("not a pod")
        };
        assert!(pod.metadata.managed_fields.is_none());
        let annotations = pod.metadata.annotations.unwrap();
        assert_eq!(annotations.len(), 1);
        let spec = pod.spec.unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("node-a"));
        assert!(spec.volumes.is_none());
        assert!(spec.containers[0].image.is_none() && spec.containers[0].env.is_none());
        assert_eq!(spec.containers[0].ports.as_ref().unwrap().len(), 1);
        let status = pod.status.unwrap();
        assert!(status.conditions.is_none());
        assert_eq!(status.pod_ip.as_deref(), Some("10.0.0.1"));
    }

    #[test]
    fn invalid_policy_names_kind_object_and_field() {
        let policy = object(json!({
            "metadata": {"name": "deny", "namespace": "shop"},
            "spec": {"action": "DENY", "rules": [{"from": [{"source": {"ipBlocks": ["10.0.0.0/99"]}}]}]}
        }));
        let err = to_resource(&api_of(Kind::AuthorizationPolicy), policy).unwrap_err();
        assert_eq!(err.kind(), Some("AuthorizationPolicy"));
        assert_eq!(err.namespace(), Some("shop"));
        assert_eq!(err.name(), Some("deny"));
        assert!(err.field().unwrap().contains("ipBlocks"), "{err}");
        assert!(err.is_invalid_object());
    }

    #[test]
    fn untyped_kinds_keep_their_spec() {
        let route = object(json!({
            "metadata": {"name": "r", "namespace": "shop"},
            "spec": {"parentRefs": [{"name": "web", "kind": "Service", "group": ""}]}
        }));
        let Resource::Untranslated(kind, route) =
            to_resource(&api_of(Kind::HttpRoute), route).unwrap()
        else {
            panic!("not untranslated")
        };
        assert_eq!(kind, Kind::HttpRoute);
        assert_eq!(route.api_version, "gateway.networking.k8s.io/v1");
        assert_eq!(route.spec["parentRefs"][0]["name"], "web");
    }
}
