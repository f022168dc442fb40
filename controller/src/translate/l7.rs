//! The waypoint-only kinds → model objects: GRPCRoute, VirtualService, DestinationRule,
//! RequestAuthentication and LocalRateLimit. Their specs are kept as written by the sources; the model's
//! constructors (through serde) validate them and name the field at fault.

use ambit_model::{
    DestinationRule, GrpcRoute, LocalRateLimit, RequestAuthentication, VirtualService,
};
use serde::de::DeserializeOwned;
use serde_json::json;

use super::error::Errors;
use crate::objects::{Kind, Resources};

/// The translated waypoint-only objects.
#[derive(Debug, Default)]
pub(crate) struct L7Objects {
    pub(crate) grpc_routes: Vec<GrpcRoute>,
    pub(crate) virtual_services: Vec<VirtualService>,
    pub(crate) destination_rules: Vec<DestinationRule>,
    pub(crate) request_authentications: Vec<RequestAuthentication>,
    pub(crate) local_rate_limits: Vec<LocalRateLimit>,
}

/// Whether this module translates objects of `kind`.
pub(crate) fn translates(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::GrpcRoute
            | Kind::VirtualService
            | Kind::DestinationRule
            | Kind::RequestAuthentication
            | Kind::LocalRateLimit
    )
}

pub(crate) fn translate(resources: &Resources, errors: &mut Errors) -> L7Objects {
    let mut out = L7Objects::default();
    for (kind, object) in resources.untranslated() {
        let namespace = object.metadata.namespace.as_deref().unwrap_or_default();
        let name = object.metadata.name.as_deref().unwrap_or_default();
        let value = json!({ "name": name, "namespace": namespace, "spec": object.spec });
        let mut report = |err: serde_json::Error| {
            errors.push(kind.as_str(), namespace, name, "spec", err.to_string());
        };
        match kind {
            Kind::GrpcRoute => push(&mut out.grpc_routes, value, &mut report),
            Kind::VirtualService => push(&mut out.virtual_services, value, &mut report),
            Kind::DestinationRule => push(&mut out.destination_rules, value, &mut report),
            Kind::RequestAuthentication => {
                push(&mut out.request_authentications, value, &mut report);
            }
            Kind::LocalRateLimit => push(&mut out.local_rate_limits, value, &mut report),
            _ => {}
        }
    }
    out
}

fn push<T: DeserializeOwned>(
    into: &mut Vec<T>,
    value: serde_json::Value,
    report: &mut dyn FnMut(serde_json::Error),
) {
    match serde_json::from_value(value) {
        Ok(object) => into.push(object),
        Err(err) => report(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resources(yaml: &str) -> Resources {
        let (located, errors) = crate::local::parse_file(std::path::Path::new("l7.yaml"), yaml);
        assert!(errors.is_empty(), "{errors:?}");
        let mut resources = Resources::new();
        for object in located {
            resources.insert(object.resource).unwrap();
        }
        resources
    }

    #[test]
    fn each_kind_becomes_its_model_object_and_bad_specs_are_reported() {
        let resources = resources(
            r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec: {hosts: [reviews], http: [{route: [{destination: {host: reviews, subset: v1}}]}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec: {host: reviews, subsets: [{name: v1, labels: {version: v1}}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: grpc, namespace: shop}
spec: {parentRefs: [{group: "", kind: Service, name: reviews}]}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: shop}
spec:
  targetRefs: [{group: "", kind: Service, name: reviews}]
  jwtRules: [{issuer: "https://issuer.test", jwks: '{"keys":[]}'}]
---
apiVersion: ambit.dev/v1alpha1
kind: LocalRateLimit
metadata: {name: limits, namespace: shop}
spec:
  targetRefs: [{group: "", kind: Service, name: reviews}]
  rules: [{tokensPerFill: 5, fillInterval: 1s, maxTokens: 5}]
---
apiVersion: ambit.dev/v1alpha1
kind: LocalRateLimit
metadata: {name: zero, namespace: shop}
spec:
  targetRefs: [{group: "", kind: Service, name: reviews}]
  rules: [{tokensPerFill: 0, fillInterval: 1s, maxTokens: 5}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: broken, namespace: shop}
spec: {http: []}
"#,
        );
        let mut errors = Errors::default();
        let out = translate(&resources, &mut errors);
        assert_eq!(out.virtual_services.len(), 1);
        assert_eq!(out.destination_rules.len(), 1);
        assert_eq!(out.grpc_routes.len(), 1);
        assert_eq!(out.request_authentications.len(), 1);
        assert_eq!(out.local_rate_limits.len(), 1);
        assert_eq!(out.local_rate_limits[0].name(), "limits");
        let errors = errors.into_sorted();
        assert_eq!(errors.len(), 2, "{errors:?}");
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert!(text.iter().any(|e| e.contains("broken")), "{text:?}");
        assert!(
            text.iter().any(|e| e.contains("LocalRateLimit")
                && e.contains("zero")
                && e.contains("tokensPerFill")),
            "{text:?}"
        );
    }
}
