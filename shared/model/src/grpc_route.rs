//! `gateway.networking.k8s.io/v1` GRPCRoute: the spec as users write it and the validated
//! rules a waypoint routes gRPC requests with.
//!
//! A gRPC call is an HTTP/2 `POST /<service>/<method>` with `content-type: application/grpc…`,
//! so [`GrpcRoute::new`] turns each method match into a path condition and adds a
//! `content-type` condition: the result is the same [`RouteRule`] an HTTPRoute produces and
//! the waypoint selects it with the same engine, by Gateway API precedence (an exact
//! service and method is an `Exact` path; a service alone is a path prefix; a method alone
//! or a regular expression is a path regular expression). Plain HTTP requests never match a
//! GRPCRoute rule.

use serde::{Deserialize, Serialize};

use crate::error::{ErrorContext, ModelError};
use crate::route::{
    HeaderModifierSpec, HttpBackendRefSpec, ParentReference, PathMatch, RequestMirrorSpec,
    RouteFilter, RouteMatch, RouteRule, ServiceParent, ValueMatch, ValueMatchSpec, check_regex,
    parse_backend, parse_header_modifier, parse_mirror, parse_parent, parse_value_matches,
};

const KIND: &str = "GRPCRoute";
/// The `content-type` values of gRPC (`application/grpc`, `application/grpc+proto`, …).
pub const GRPC_CONTENT_TYPE_PATTERN: &str = r"application/grpc(\+[^;]*)?(;.*)?";

/// The `spec` of a GRPCRoute.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcRouteSpec {
    /// What the route attaches to: a Service (GAMMA) or a Gateway.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parent_refs: Vec<ParentReference>,
    /// Host names (Gateway parents only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    /// The rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<GrpcRouteRuleSpec>,
}

/// One rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcRouteRuleSpec {
    /// Optional rule name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Any may match; none means every gRPC request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<GrpcRouteMatchSpec>,
    /// Applied to matching requests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<GrpcRouteFilterSpec>,
    /// Weighted backends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backend_refs: Vec<HttpBackendRefSpec>,
}

/// A `matches` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcRouteMatchSpec {
    /// Service and method condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<GrpcMethodMatchSpec>,
    /// Header (metadata) conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<ValueMatchSpec>,
}

/// `method`: at least one of `service` and `method`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcMethodMatchSpec {
    /// `Exact` (the default) or `RegularExpression`.
    #[serde(default, rename = "type")]
    pub kind: GrpcMethodMatchKind,
    /// Fully qualified service, e.g. `shop.Cart`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Method, e.g. `AddItem`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

/// How service and method are matched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum GrpcMethodMatchKind {
    /// Equal.
    #[default]
    Exact,
    /// Regular expressions matching the whole name.
    RegularExpression,
}

/// A `filters` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcRouteFilterSpec {
    /// The filter type.
    #[serde(rename = "type")]
    pub kind: GrpcFilterKind,
    /// For `RequestHeaderModifier`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_header_modifier: Option<HeaderModifierSpec>,
    /// For `ResponseHeaderModifier`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_header_modifier: Option<HeaderModifierSpec>,
    /// For `RequestMirror`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_mirror: Option<RequestMirrorSpec>,
}

/// The GRPCRoute filter types a waypoint implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum GrpcFilterKind {
    /// Change request metadata.
    RequestHeaderModifier,
    /// Change response metadata.
    ResponseHeaderModifier,
    /// Copy the call to another backend.
    RequestMirror,
}

/// A validated GRPCRoute. Serializes as `{name, namespace, spec}` with the spec as given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "GrpcRouteRepr", into = "GrpcRouteRepr")]
pub struct GrpcRoute {
    name: String,
    namespace: String,
    spec: GrpcRouteSpec,
    service_parents: Vec<ServiceParent>,
    rules: Vec<RouteRule>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct GrpcRouteRepr {
    name: String,
    namespace: String,
    #[serde(default)]
    spec: GrpcRouteSpec,
}

impl GrpcRoute {
    /// Validates the route and parses its rules.
    pub fn new(
        name: impl Into<String>,
        namespace: impl Into<String>,
        spec: GrpcRouteSpec,
    ) -> Result<Self, ModelError> {
        let (name, namespace) = (name.into(), namespace.into());
        let ctx = ErrorContext {
            kind: KIND,
            namespace: &namespace,
            name: &name,
        };
        ctx.check_metadata()?;
        let mut service_parents = Vec::new();
        for (i, parent) in spec.parent_refs.iter().enumerate() {
            if let Some(service) =
                parse_parent(&ctx, &format!("spec.parentRefs[{i}]"), parent, &namespace)?
            {
                service_parents.push(service);
            }
        }
        let rules = spec
            .rules
            .iter()
            .enumerate()
            .map(|(i, rule)| parse_rule(&ctx, &format!("spec.rules[{i}]"), rule, &namespace))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            name,
            namespace,
            spec,
            service_parents,
            rules,
        })
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The spec as given.
    pub fn spec(&self) -> &GrpcRouteSpec {
        &self.spec
    }

    /// The Services this route attaches to.
    pub fn service_parents(&self) -> &[ServiceParent] {
        &self.service_parents
    }

    /// The validated rules, in spec order; every match carries the gRPC `content-type`
    /// condition.
    pub fn rules(&self) -> &[RouteRule] {
        &self.rules
    }
}

impl TryFrom<GrpcRouteRepr> for GrpcRoute {
    type Error = ModelError;

    fn try_from(repr: GrpcRouteRepr) -> Result<Self, Self::Error> {
        Self::new(repr.name, repr.namespace, repr.spec)
    }
}

impl From<GrpcRoute> for GrpcRouteRepr {
    fn from(route: GrpcRoute) -> Self {
        Self {
            name: route.name,
            namespace: route.namespace,
            spec: route.spec,
        }
    }
}

fn parse_rule(
    ctx: &ErrorContext<'_>,
    field: &str,
    spec: &GrpcRouteRuleSpec,
    namespace: &str,
) -> Result<RouteRule, ModelError> {
    let mut matches = spec
        .matches
        .iter()
        .enumerate()
        .map(|(i, m)| parse_match(ctx, &format!("{field}.matches[{i}]"), m))
        .collect::<Result<Vec<_>, _>>()?;
    if matches.is_empty() {
        matches.push(RouteMatch {
            path: PathMatch::Prefix("/".to_owned()),
            headers: vec![grpc_content_type()],
            query_params: Vec::new(),
            method: None,
        });
    }
    let mut filters = Vec::with_capacity(spec.filters.len());
    let mut seen = Vec::new();
    for (i, filter) in spec.filters.iter().enumerate() {
        let field = format!("{field}.filters[{i}]");
        let set = [
            filter.request_header_modifier.is_some(),
            filter.response_header_modifier.is_some(),
            filter.request_mirror.is_some(),
        ];
        if set.iter().filter(|s| **s).count() != 1 {
            return Err(ctx.err(
                field,
                "exactly one filter field, the one named by `type`, must be set",
            ));
        }
        if filter.kind != GrpcFilterKind::RequestMirror {
            if seen.contains(&filter.kind) {
                return Err(ctx.err(
                    format!("{field}.type"),
                    "appears more than once in the rule",
                ));
            }
            seen.push(filter.kind);
        }
        let missing = |name: &str| ctx.err(format!("{field}.{name}"), "must be set for this type");
        let parsed = match filter.kind {
            GrpcFilterKind::RequestHeaderModifier => {
                let spec = filter
                    .request_header_modifier
                    .as_ref()
                    .ok_or_else(|| missing("requestHeaderModifier"))?;
                RouteFilter::RequestHeaders(parse_header_modifier(
                    ctx,
                    &format!("{field}.requestHeaderModifier"),
                    spec,
                )?)
            }
            GrpcFilterKind::ResponseHeaderModifier => {
                let spec = filter
                    .response_header_modifier
                    .as_ref()
                    .ok_or_else(|| missing("responseHeaderModifier"))?;
                RouteFilter::ResponseHeaders(parse_header_modifier(
                    ctx,
                    &format!("{field}.responseHeaderModifier"),
                    spec,
                )?)
            }
            GrpcFilterKind::RequestMirror => {
                let spec = filter
                    .request_mirror
                    .as_ref()
                    .ok_or_else(|| missing("requestMirror"))?;
                RouteFilter::Mirror(parse_mirror(
                    ctx,
                    &format!("{field}.requestMirror"),
                    spec,
                    namespace,
                )?)
            }
        };
        filters.push(parsed);
    }
    let backends = spec
        .backend_refs
        .iter()
        .enumerate()
        .map(|(i, b)| parse_backend(ctx, &format!("{field}.backendRefs[{i}]"), b, namespace))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RouteRule {
        matches,
        filters,
        backends,
        request_timeout: None,
        backend_request_timeout: None,
        retry: None,
        fault: None,
    })
}

fn parse_match(
    ctx: &ErrorContext<'_>,
    field: &str,
    spec: &GrpcRouteMatchSpec,
) -> Result<RouteMatch, ModelError> {
    let path = match &spec.method {
        None => PathMatch::Prefix("/".to_owned()),
        Some(method) => parse_method(ctx, &format!("{field}.method"), method)?,
    };
    let mut headers = parse_value_matches(ctx, &format!("{field}.headers"), &spec.headers, true)?;
    if let Some(i) = headers.iter().position(|h| h.name == "content-type") {
        return Err(ctx.err(
            format!("{field}.headers[{i}].name"),
            "content-type is always application/grpc for a GRPCRoute",
        ));
    }
    headers.push(grpc_content_type());
    Ok(RouteMatch {
        path,
        headers,
        query_params: Vec::new(),
        method: None,
    })
}

fn parse_method(
    ctx: &ErrorContext<'_>,
    field: &str,
    spec: &GrpcMethodMatchSpec,
) -> Result<PathMatch, ModelError> {
    let (service, method) = (spec.service.as_deref(), spec.method.as_deref());
    if service.is_none() && method.is_none() {
        return Err(ctx.err(field.to_owned(), "needs service, method or both"));
    }
    match spec.kind {
        GrpcMethodMatchKind::Exact => {
            let valid_service = |s: &str| {
                !s.is_empty()
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_')
            };
            let valid_method = |m: &str| {
                !m.is_empty() && m.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            };
            if let Some(service) = service
                && !valid_service(service)
            {
                return Err(ctx.err(
                    format!("{field}.service"),
                    format!("{service:?} is not a gRPC service name (letters, digits, '.', '_')"),
                ));
            }
            if let Some(method) = method
                && !valid_method(method)
            {
                return Err(ctx.err(
                    format!("{field}.method"),
                    format!("{method:?} is not a gRPC method name (letters, digits, '_')"),
                ));
            }
            Ok(match (service, method) {
                (Some(service), Some(method)) => PathMatch::Exact(format!("/{service}/{method}")),
                (Some(service), None) => PathMatch::Prefix(format!("/{service}")),
                (None, Some(method)) => {
                    PathMatch::Regex(format!("/[^/]+/{}", regex::escape(method)))
                }
                (None, None) => PathMatch::Prefix("/".to_owned()),
            })
        }
        GrpcMethodMatchKind::RegularExpression => {
            for (name, value) in [("service", service), ("method", method)] {
                if let Some(value) = value {
                    check_regex(value).map_err(|r| ctx.err(format!("{field}.{name}"), r))?;
                }
            }
            Ok(PathMatch::Regex(format!(
                "/(?:{})/(?:{})",
                service.unwrap_or("[^/]+"),
                method.unwrap_or("[^/]+")
            )))
        }
    }
}

fn grpc_content_type() -> ValueMatch {
    ValueMatch {
        name: "content-type".to_owned(),
        value: GRPC_CONTENT_TYPE_PATTERN.to_owned(),
        regex: true,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn route(spec: serde_json::Value) -> Result<GrpcRoute, ModelError> {
        GrpcRoute::new("g", "shop", serde_json::from_value(spec).unwrap())
    }

    #[test]
    fn method_matches_become_paths() {
        let route = route(json!({
            "parentRefs": [{ "group": "", "kind": "Service", "name": "cart" }],
            "rules": [
                { "matches": [
                    { "method": { "service": "shop.Cart", "method": "Add" } },
                    { "method": { "service": "shop.Cart" } },
                    { "method": { "method": "Get" } },
                    { "method": { "type": "RegularExpression", "service": "shop\\..*" } }
                  ],
                  "backendRefs": [{ "name": "cart", "port": 9090 }] },
                { "backendRefs": [{ "name": "cart", "port": 9090 }] }
            ]
        }))
        .unwrap();
        let paths: Vec<_> = route.rules()[0]
            .matches
            .iter()
            .map(|m| m.path.clone())
            .collect();
        assert_eq!(
            paths,
            [
                PathMatch::Exact("/shop.Cart/Add".into()),
                PathMatch::Prefix("/shop.Cart".into()),
                PathMatch::Regex("/[^/]+/Get".into()),
                PathMatch::Regex("/(?:shop\\..*)/(?:[^/]+)".into()),
            ]
        );
        for rule in route.rules() {
            for m in &rule.matches {
                assert_eq!(m.headers.last(), Some(&grpc_content_type()));
            }
        }
        assert_eq!(route.service_parents()[0].name, "cart");
    }

    #[test]
    fn bad_input_names_the_field() {
        let cases = [
            (
                json!({ "rules": [{ "matches": [{ "method": {} }] }] }),
                "spec.rules[0].matches[0].method",
            ),
            (
                json!({ "rules": [{ "matches": [{ "method": { "service": "a/b" } }] }] }),
                "spec.rules[0].matches[0].method.service",
            ),
            (
                json!({ "rules": [{ "matches": [{ "method": { "type": "RegularExpression", "method": "(" } }] }] }),
                "spec.rules[0].matches[0].method.method",
            ),
            (
                json!({ "rules": [{ "matches": [{ "headers": [{ "name": "Content-Type", "value": "x" }] }] }] }),
                "spec.rules[0].matches[0].headers[0].name",
            ),
            (
                json!({ "rules": [{ "backendRefs": [{ "name": "cart" }] }] }),
                "spec.rules[0].backendRefs[0].port",
            ),
            (
                json!({ "rules": [{ "filters": [{ "type": "RequestMirror", "requestMirror": { "backendRef": { "name": "m", "port": 1 }, "percent": 101 } }] }] }),
                "spec.rules[0].filters[0].requestMirror.percent",
            ),
        ];
        for (spec, field) in cases {
            let err = route(spec).unwrap_err();
            assert_eq!(err.field(), field, "{err}");
        }
    }

    #[test]
    fn serde_round_trip() {
        let json = json!({ "name": "g", "namespace": "shop", "spec": {
            "parentRefs": [{ "group": "", "kind": "Service", "name": "cart" }],
            "rules": [{ "matches": [{ "method": { "type": "Exact", "service": "shop.Cart" } }],
                        "backendRefs": [{ "name": "cart", "port": 9090 }] }] } });
        let route: GrpcRoute = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(serde_json::to_value(&route).unwrap(), json);
    }
}
