//! `gateway.networking.k8s.io/v1` HTTPRoute: the spec as users write it (Gateway API field
//! names, camelCase) and the validated rules a waypoint routes with.
//!
//! Like [`crate::authz`], the spec types keep the YAML shape and [`HttpRoute::new`] parses every
//! value once into [`RouteRule`]s (defaults applied, durations parsed, regular expressions
//! checked), refusing the route with a [`ModelError`] that names the field
//! (`spec.rules[0].matches[1].path.value`). Only the filters a waypoint implements are
//! accepted; an unknown filter type is a deserialization error rather than a silently ignored
//! rule.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{ErrorContext, ModelError, check_dns_label, check_dns_subdomain};

const KIND: &str = "HTTPRoute";
/// Gateway API: at most 16 backends, 8 matches, 16 filters per rule; we check the sums loosely.
const MAX_WEIGHT: u32 = 1_000_000;
/// The backoff between retries when a retry policy names none (Envoy's base interval).
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_millis(25);

/// The `spec` of an HTTPRoute.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteSpec {
    /// What the route attaches to: a Service (GAMMA, mesh traffic) or a Gateway.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parent_refs: Vec<ParentReference>,
    /// Host names the route answers for (Gateway parents only; ignored for Service parents).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    /// The rules, tried in Gateway API precedence order (not in list order).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<HttpRouteRuleSpec>,
}

/// A `parentRefs` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ParentReference {
    /// API group; empty for a core Service. Defaults to `gateway.networking.k8s.io`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// `Service` or `Gateway`; `Gateway` when omitted, as in the Gateway API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name of the parent.
    pub name: String,
    /// Namespace of the parent; the route's own when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Only this port of a Service parent, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// One rule of an HTTPRoute.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteRuleSpec {
    /// Optional rule name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Any may match; none means one match of `PathPrefix /`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<HttpRouteMatchSpec>,
    /// Applied in order to matching requests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<HttpRouteFilterSpec>,
    /// Where matching requests go, by weight. None (and no redirect) means `500`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backend_refs: Vec<HttpBackendRefSpec>,
    /// Request and per-try timeouts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<HttpRouteTimeoutsSpec>,
    /// Retries (Gateway API GEP-1731).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<HttpRouteRetrySpec>,
}

/// A `matches` entry: every field present must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteMatchSpec {
    /// Path match; `PathPrefix /` when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<HttpPathMatchSpec>,
    /// Header matches; all must match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<ValueMatchSpec>,
    /// Query parameter matches; all must match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<ValueMatchSpec>,
    /// HTTP method, e.g. `GET`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

/// `path` of a match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpPathMatchSpec {
    /// `Exact`, `PathPrefix` (the default) or `RegularExpression`.
    #[serde(default, rename = "type")]
    pub kind: PathMatchKind,
    /// The path or pattern; `/` when omitted.
    #[serde(default = "root_path")]
    pub value: String,
}

/// How a path is matched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PathMatchKind {
    /// The whole path, byte for byte.
    Exact,
    /// Whole `/`-separated segments: `/a` matches `/a` and `/a/b`, not `/ab`.
    #[default]
    PathPrefix,
    /// A regular expression that must match the whole path.
    RegularExpression,
}

/// A header or query parameter match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ValueMatchSpec {
    /// `Exact` (the default) or `RegularExpression`.
    #[serde(default, rename = "type")]
    pub kind: ValueMatchKind,
    /// Header name (case-insensitive) or query parameter name (case-sensitive).
    pub name: String,
    /// The value or pattern.
    pub value: String,
}

/// How a header or query value is matched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ValueMatchKind {
    /// Equal, byte for byte.
    #[default]
    Exact,
    /// A regular expression that must match the whole value.
    RegularExpression,
}

/// A `filters` entry: `type` names which of the other fields is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteFilterSpec {
    /// The filter type.
    #[serde(rename = "type")]
    pub kind: FilterKind,
    /// For `RequestHeaderModifier`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_header_modifier: Option<HeaderModifierSpec>,
    /// For `ResponseHeaderModifier`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_header_modifier: Option<HeaderModifierSpec>,
    /// For `URLRewrite`.
    #[serde(
        default,
        rename = "urlRewrite",
        skip_serializing_if = "Option::is_none"
    )]
    pub url_rewrite: Option<UrlRewriteSpec>,
    /// For `RequestRedirect`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_redirect: Option<RequestRedirectSpec>,
    /// For `RequestMirror`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_mirror: Option<RequestMirrorSpec>,
}

/// `requestMirror`: copies of matching requests go to another backend, answers discarded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestMirrorSpec {
    /// The Service port the copies go to (its `weight` is ignored).
    pub backend_ref: HttpBackendRefSpec,
    /// Percentage of requests mirrored, 0 to 100; all when neither this nor `fraction` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u32>,
    /// Fraction of requests mirrored, as `numerator / denominator`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraction: Option<FractionSpec>,
}

/// A Gateway API fraction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FractionSpec {
    /// Numerator, at most `denominator`.
    pub numerator: u32,
    /// Denominator, 100 when omitted; must not be 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denominator: Option<u32>,
}

/// The filter types a waypoint implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FilterKind {
    /// Change request headers before they go upstream.
    RequestHeaderModifier,
    /// Change response headers before they go downstream.
    ResponseHeaderModifier,
    /// Rewrite the host and/or path sent upstream.
    #[serde(rename = "URLRewrite")]
    UrlRewrite,
    /// Answer with a redirect instead of forwarding.
    RequestRedirect,
    /// Send a copy of the request to another backend, ignoring its answer.
    RequestMirror,
}

/// `set`, `add` and `remove` of a header modifier.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderModifierSpec {
    /// Replace (or add) these headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<HttpHeaderSpec>,
    /// Append these headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<HttpHeaderSpec>,
    /// Remove headers with these names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// A header name and value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpHeaderSpec {
    /// Header name.
    pub name: String,
    /// Header value.
    pub value: String,
}

/// `urlRewrite`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UrlRewriteSpec {
    /// New `Host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// New path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathModifierSpec>,
}

/// A path replacement of a rewrite or redirect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PathModifierSpec {
    /// `ReplaceFullPath` or `ReplacePrefixMatch`.
    #[serde(rename = "type")]
    pub kind: PathModifierKind,
    /// For `ReplaceFullPath`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_full_path: Option<String>,
    /// For `ReplacePrefixMatch` (needs a `PathPrefix` match).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_prefix_match: Option<String>,
}

/// How a path is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PathModifierKind {
    /// Replace the whole path.
    ReplaceFullPath,
    /// Replace the part matched by the rule's `PathPrefix`.
    ReplacePrefixMatch,
}

/// `requestRedirect`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestRedirectSpec {
    /// `http` or `https`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// New host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// New path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathModifierSpec>,
    /// New port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// 301, 302 (the default), 303, 307 or 308.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
}

/// A `backendRefs` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpBackendRefSpec {
    /// API group; empty (core) for a Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// `Service` when omitted; the only kind a waypoint routes to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Service name.
    pub name: String,
    /// Service namespace; the route's own when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Service port; required for a Service backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Relative weight; 1 when omitted, 0 means no traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

/// `timeouts` of a rule, as Gateway API durations (`10s`, `1m30s`, `500ms`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteTimeoutsSpec {
    /// From the request's arrival to the end of the response headers, retries included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// One try to a backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_request: Option<String>,
}

/// `retry` of a rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteRetrySpec {
    /// Response codes (400–599) that are retried; connection failures are always retried.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub codes: Vec<u16>,
    /// Retries after the first try; 1 when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// Base backoff between tries (a Gateway API duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<String>,
}

/// Which Service (and port) a route attaches to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServiceParent {
    /// Service namespace.
    pub namespace: String,
    /// Service name.
    pub name: String,
    /// Only this service port, when set.
    pub port: Option<u16>,
}

/// A validated rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRule {
    /// Any may match; never empty (a rule without matches gets `PathPrefix /`).
    pub matches: Vec<RouteMatch>,
    /// In order.
    pub filters: Vec<RouteFilter>,
    /// Weighted backends (empty only when a redirect answers every request).
    pub backends: Vec<Backend>,
    /// The whole request, retries included.
    pub request_timeout: Option<Duration>,
    /// One try.
    pub backend_request_timeout: Option<Duration>,
    /// Retry policy.
    pub retry: Option<RetryPolicy>,
    /// Delays and aborts injected before forwarding (VirtualService `fault` only).
    pub fault: Option<FaultInjection>,
}

/// Validated fault injection: each part applies to its fraction of requests, independently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultInjection {
    /// Wait this long before forwarding.
    pub delay: Option<(Duration, Fraction)>,
    /// Answer with this instead of forwarding.
    pub abort: Option<(FaultAbort, Fraction)>,
}

/// What an injected abort answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultAbort {
    /// This HTTP status (200 to 599).
    Http(u16),
    /// A trailers-only gRPC answer with this `grpc-status` code (1 to 16).
    Grpc(u16),
}

/// A share of requests, in millionths (1 000 000 = all), so percentages like `0.1` are exact
/// enough and the type stays `Eq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fraction {
    per_million: u32,
}

/// A validated mirror: where copies go and how many requests are copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    /// The Service port (and subset) that receives the copies; `weight` is unused.
    pub backend: Backend,
    /// The share of requests copied.
    pub fraction: Fraction,
}

/// A validated match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch {
    /// The path condition.
    pub path: PathMatch,
    /// Header conditions (names lowercased).
    pub headers: Vec<ValueMatch>,
    /// Query parameter conditions.
    pub query_params: Vec<ValueMatch>,
    /// Method condition, uppercase.
    pub method: Option<String>,
}

/// A validated path condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// The whole path.
    Exact(String),
    /// Whole segments; stored without a trailing `/` (except `/` itself).
    Prefix(String),
    /// A checked regular expression, matched against the whole path.
    Regex(String),
    /// Istio's `uri.prefix`: a plain string prefix, not segment-aware (`/api` matches `/apis`).
    StringPrefix(String),
}

/// A validated header or query condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueMatch {
    /// Name (lowercase for headers).
    pub name: String,
    /// The value, or a checked regular expression.
    pub value: String,
    /// Whether `value` is a regular expression (matched against the whole value).
    pub regex: bool,
}

/// A validated filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteFilter {
    /// Change request headers.
    RequestHeaders(HeaderModifier),
    /// Change response headers.
    ResponseHeaders(HeaderModifier),
    /// Rewrite host and/or path.
    UrlRewrite {
        /// New host.
        hostname: Option<String>,
        /// New path.
        path: Option<PathModifier>,
    },
    /// Answer with a redirect.
    Redirect(Redirect),
    /// Copy the request to another backend (fire and forget).
    Mirror(Mirror),
}

/// Validated header changes (names lowercased).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderModifier {
    /// Replace.
    pub set: Vec<(String, String)>,
    /// Append.
    pub add: Vec<(String, String)>,
    /// Remove.
    pub remove: Vec<String>,
}

/// A validated path replacement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathModifier {
    /// Replace the whole path.
    Full(String),
    /// Replace the matched prefix.
    Prefix(String),
    /// Istio's `rewrite.uri`: replace the matched string prefix when the match was an Istio
    /// `prefix`, else the whole path.
    MatchedPrefixOrFull(String),
}

/// A validated redirect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// New scheme.
    pub scheme: Option<String>,
    /// New host.
    pub hostname: Option<String>,
    /// New path.
    pub path: Option<PathModifier>,
    /// New port.
    pub port: Option<u16>,
    /// The status code.
    pub status_code: u16,
}

/// A validated backend: a Service port and its weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// Service namespace.
    pub namespace: String,
    /// Service name.
    pub name: String,
    /// Service port.
    pub port: u16,
    /// Relative weight (0: none).
    pub weight: u32,
    /// A DestinationRule subset of the service (VirtualService destinations only).
    pub subset: Option<String>,
    /// Header changes applied when this backend is chosen (VirtualService `route[].headers`).
    pub filters: Vec<RouteFilter>,
}

/// A validated retry policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first try.
    pub attempts: u32,
    /// Retried response codes.
    pub codes: BTreeSet<u16>,
    /// Base backoff.
    pub backoff: Duration,
    /// Which failures besides `codes` are retried.
    pub on: RetryOn,
}

/// The failures a retry policy covers, besides its listed status codes. An HTTPRoute retries
/// connect failures and per-try timeouts; a VirtualService says what with `retryOn`, mapped
/// the way Envoy reads it (`5xx` and `gateway-error` also cover resets and timeouts).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetryOn {
    /// Any 5xx response.
    pub server_errors: bool,
    /// 502, 503 and 504.
    pub gateway_errors: bool,
    /// 409 (Envoy's `retriable-4xx`).
    pub retriable_4xx: bool,
    /// The connection or the stream could not be opened (nothing reached the upstream).
    pub connect_failure: bool,
    /// The upstream reset or closed after the request was sent.
    pub reset: bool,
    /// One try ran out of its per-try timeout.
    pub per_try_timeout: bool,
    /// gRPC status codes (from a trailers-only answer's `grpc-status`) that are retried.
    pub grpc_codes: BTreeSet<u16>,
}

/// A validated HTTPRoute. Serializes as `{name, namespace, spec}` with the spec as given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "HttpRouteRepr", into = "HttpRouteRepr")]
pub struct HttpRoute {
    name: String,
    namespace: String,
    spec: HttpRouteSpec,
    service_parents: Vec<ServiceParent>,
    rules: Vec<RouteRule>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct HttpRouteRepr {
    name: String,
    namespace: String,
    #[serde(default)]
    spec: HttpRouteSpec,
}

impl HttpRoute {
    /// Validates the route and parses its rules.
    pub fn new(
        name: impl Into<String>,
        namespace: impl Into<String>,
        spec: HttpRouteSpec,
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
            let field = format!("spec.parentRefs[{i}]");
            if let Some(service) = parse_parent(&ctx, &field, parent, &namespace)? {
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

    /// The route name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The route namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The spec as given.
    pub fn spec(&self) -> &HttpRouteSpec {
        &self.spec
    }

    /// The Services this route attaches to (its Gateway parents are not listed).
    pub fn service_parents(&self) -> &[ServiceParent] {
        &self.service_parents
    }

    /// The validated rules, in spec order.
    pub fn rules(&self) -> &[RouteRule] {
        &self.rules
    }
}

impl TryFrom<HttpRouteRepr> for HttpRoute {
    type Error = ModelError;

    fn try_from(repr: HttpRouteRepr) -> Result<Self, Self::Error> {
        Self::new(repr.name, repr.namespace, repr.spec)
    }
}

impl From<HttpRoute> for HttpRouteRepr {
    fn from(route: HttpRoute) -> Self {
        Self {
            name: route.name,
            namespace: route.namespace,
            spec: route.spec,
        }
    }
}

impl Default for HttpPathMatchSpec {
    fn default() -> Self {
        Self {
            kind: PathMatchKind::PathPrefix,
            value: root_path(),
        }
    }
}

impl Fraction {
    /// Every request.
    pub const ALL: Fraction = Fraction {
        per_million: 1_000_000,
    };

    /// `percent` of requests (0 to 100, fractional allowed); `None` outside that range.
    pub fn from_percent(percent: f64) -> Option<Self> {
        if !(0.0..=100.0).contains(&percent) {
            return None;
        }
        // In range, so the product is at most 1e6 and fits a u32.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let per_million = (percent * 10_000.0).round() as u32;
        Some(Self { per_million })
    }

    /// `numerator / denominator`; `None` if the denominator is 0 or smaller than the numerator.
    pub fn from_ratio(numerator: u32, denominator: u32) -> Option<Self> {
        if denominator == 0 || numerator > denominator {
            return None;
        }
        let per_million = u64::from(numerator) * 1_000_000 / u64::from(denominator);
        u32::try_from(per_million)
            .ok()
            .map(|per_million| Self { per_million })
    }

    /// The share in millionths.
    pub fn per_million(self) -> u32 {
        self.per_million
    }

    /// Whether a uniformly random `roll` in `0..1_000_000` falls inside the share.
    pub fn hits(self, roll: u32) -> bool {
        roll < self.per_million
    }
}

impl HeaderModifier {
    /// Whether the modifier changes nothing.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

fn root_path() -> String {
    "/".to_owned()
}

/// Parses a Gateway API duration (GEP-2257): one to four `<1–5 digits><h|m|s|ms>` parts, e.g.
/// `1h30m`, `500ms`, `0s`.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    let invalid =
        || format!("{value:?} is not a Gateway API duration (e.g. \"10s\", \"1m30s\", \"500ms\")");
    let bytes = value.as_bytes();
    let (mut total, mut parts, mut i) = (Duration::ZERO, 0, 0);
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        let digits = &value[start..i];
        if digits.is_empty() || digits.len() > 5 {
            return Err(invalid());
        }
        let number: u64 = digits.parse().map_err(|_| invalid())?;
        let rest = &value[i..];
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(1), 2)
        } else if rest.starts_with('h') {
            (Duration::from_secs(3600), 1)
        } else if rest.starts_with('m') {
            (Duration::from_secs(60), 1)
        } else if rest.starts_with('s') {
            (Duration::from_secs(1), 1)
        } else {
            return Err(invalid());
        };
        i += len;
        parts += 1;
        // At most 99999 h: no overflow in u32 multiplication of a Duration.
        total += unit * u32::try_from(number).map_err(|_| invalid())?;
    }
    if parts == 0 || parts > 4 {
        return Err(invalid());
    }
    Ok(total)
}

pub(crate) fn parse_parent(
    ctx: &ErrorContext<'_>,
    field: &str,
    parent: &ParentReference,
    route_namespace: &str,
) -> Result<Option<ServiceParent>, ModelError> {
    check_dns_subdomain(&parent.name).map_err(|r| ctx.err(format!("{field}.name"), r))?;
    let namespace = parent.namespace.as_deref().unwrap_or(route_namespace);
    check_dns_label(namespace).map_err(|r| ctx.err(format!("{field}.namespace"), r))?;
    if parent.port == Some(0) {
        return Err(ctx.err(format!("{field}.port"), "must be 1 to 65535"));
    }
    let group = parent
        .group
        .as_deref()
        .unwrap_or("gateway.networking.k8s.io");
    let kind = parent.kind.as_deref().unwrap_or("Gateway");
    match (group, kind) {
        ("", "Service") => Ok(Some(ServiceParent {
            namespace: namespace.to_owned(),
            name: parent.name.clone(),
            port: parent.port,
        })),
        ("gateway.networking.k8s.io", "Gateway") => Ok(None),
        _ => Err(ctx.err(
            format!("{field}.kind"),
            format!("parent {group}/{kind} is not supported: use a core Service or a Gateway"),
        )),
    }
}

fn parse_rule(
    ctx: &ErrorContext<'_>,
    field: &str,
    rule: &HttpRouteRuleSpec,
    route_namespace: &str,
) -> Result<RouteRule, ModelError> {
    let mut matches = rule
        .matches
        .iter()
        .enumerate()
        .map(|(i, m)| parse_match(ctx, &format!("{field}.matches[{i}]"), m))
        .collect::<Result<Vec<_>, _>>()?;
    if matches.is_empty() {
        matches.push(RouteMatch {
            path: PathMatch::Prefix("/".to_owned()),
            headers: Vec::new(),
            query_params: Vec::new(),
            method: None,
        });
    }
    let mut filters = Vec::new();
    let mut seen_kinds = BTreeSet::new();
    for (i, filter) in rule.filters.iter().enumerate() {
        let field = format!("{field}.filters[{i}]");
        let parsed = parse_filter(ctx, &field, filter, &matches, route_namespace)?;
        // Gateway API: core filters may appear once per rule (mirrors excepted), and a
        // redirect excludes a rewrite.
        if filter.kind != FilterKind::RequestMirror && !seen_kinds.insert(filter.kind as u8) {
            return Err(ctx.err(
                format!("{field}.type"),
                "appears more than once in the rule",
            ));
        }
        filters.push(parsed);
    }
    let has_redirect = filters
        .iter()
        .any(|f| matches!(f, RouteFilter::Redirect(_)));
    if has_redirect
        && filters
            .iter()
            .any(|f| matches!(f, RouteFilter::UrlRewrite { .. }))
    {
        return Err(ctx.err(
            format!("{field}.filters"),
            "RequestRedirect and URLRewrite cannot be used together",
        ));
    }
    if has_redirect && !rule.backend_refs.is_empty() {
        return Err(ctx.err(
            format!("{field}.backendRefs"),
            "a rule with RequestRedirect must not have backendRefs",
        ));
    }
    let backends = rule
        .backend_refs
        .iter()
        .enumerate()
        .map(|(i, b)| {
            parse_backend(
                ctx,
                &format!("{field}.backendRefs[{i}]"),
                b,
                route_namespace,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (mut request_timeout, mut backend_request_timeout) = (None, None);
    if let Some(timeouts) = &rule.timeouts {
        let parse = |name: &str, value: &Option<String>| {
            value
                .as_deref()
                .map(parse_duration)
                .transpose()
                .map_err(|r| ctx.err(format!("{field}.timeouts.{name}"), r))
        };
        // Gateway API: a zero duration disables the timeout.
        request_timeout = parse("request", &timeouts.request)?.filter(|d| !d.is_zero());
        backend_request_timeout =
            parse("backendRequest", &timeouts.backend_request)?.filter(|d| !d.is_zero());
        if let (Some(request), Some(backend)) = (request_timeout, backend_request_timeout)
            && backend > request
        {
            return Err(ctx.err(
                format!("{field}.timeouts.backendRequest"),
                "must not be longer than timeouts.request",
            ));
        }
    }
    let retry = rule
        .retry
        .as_ref()
        .map(|retry| parse_retry(ctx, &format!("{field}.retry"), retry))
        .transpose()?;
    Ok(RouteRule {
        matches,
        filters,
        backends,
        request_timeout,
        backend_request_timeout,
        retry,
        fault: None,
    })
}

pub(crate) fn parse_match(
    ctx: &ErrorContext<'_>,
    field: &str,
    spec: &HttpRouteMatchSpec,
) -> Result<RouteMatch, ModelError> {
    let path_spec = spec.path.clone().unwrap_or_default();
    let path_field = format!("{field}.path.value");
    let path = match path_spec.kind {
        PathMatchKind::Exact | PathMatchKind::PathPrefix => {
            if !path_spec.value.starts_with('/') {
                return Err(ctx.err(path_field, "must start with '/'"));
            }
            if path_spec.value.contains(['?', '#']) {
                return Err(ctx.err(path_field, "must not contain '?' or '#'"));
            }
            if path_spec.kind == PathMatchKind::Exact {
                PathMatch::Exact(path_spec.value)
            } else {
                let trimmed = path_spec.value.trim_end_matches('/');
                PathMatch::Prefix(if trimmed.is_empty() { "/" } else { trimmed }.to_owned())
            }
        }
        PathMatchKind::RegularExpression => {
            check_regex(&path_spec.value).map_err(|r| ctx.err(path_field, r))?;
            PathMatch::Regex(path_spec.value)
        }
    };
    let headers = parse_value_matches(ctx, &format!("{field}.headers"), &spec.headers, true)?;
    let query_params = parse_value_matches(
        ctx,
        &format!("{field}.queryParams"),
        &spec.query_params,
        false,
    )?;
    let method = spec
        .method
        .as_deref()
        .map(|method| {
            if !method.is_empty() && method.bytes().all(|b| b.is_ascii_uppercase()) {
                Ok(method.to_owned())
            } else {
                Err(ctx.err(
                    format!("{field}.method"),
                    format!("{method:?} is not an HTTP method (uppercase letters, e.g. GET)"),
                ))
            }
        })
        .transpose()?;
    Ok(RouteMatch {
        path,
        headers,
        query_params,
        method,
    })
}

pub(crate) fn parse_value_matches(
    ctx: &ErrorContext<'_>,
    field: &str,
    specs: &[ValueMatchSpec],
    is_header: bool,
) -> Result<Vec<ValueMatch>, ModelError> {
    let mut names = BTreeSet::new();
    let mut out = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        let field = format!("{field}[{i}]");
        let name = if is_header {
            check_header_name(&spec.name).map_err(|r| ctx.err(format!("{field}.name"), r))?;
            spec.name.to_ascii_lowercase()
        } else {
            if spec.name.is_empty() {
                return Err(ctx.err(format!("{field}.name"), "must not be empty"));
            }
            spec.name.clone()
        };
        // Gateway API: a name listed twice uses the first entry; we refuse it to avoid surprise.
        if !names.insert(name.clone()) {
            return Err(ctx.err(
                format!("{field}.name"),
                format!("{name:?} is matched twice"),
            ));
        }
        let regex = spec.kind == ValueMatchKind::RegularExpression;
        if regex {
            check_regex(&spec.value).map_err(|r| ctx.err(format!("{field}.value"), r))?;
        }
        out.push(ValueMatch {
            name,
            value: spec.value.clone(),
            regex,
        });
    }
    Ok(out)
}

fn parse_filter(
    ctx: &ErrorContext<'_>,
    field: &str,
    filter: &HttpRouteFilterSpec,
    matches: &[RouteMatch],
    route_namespace: &str,
) -> Result<RouteFilter, ModelError> {
    let set_fields = [
        filter.request_header_modifier.is_some(),
        filter.response_header_modifier.is_some(),
        filter.url_rewrite.is_some(),
        filter.request_redirect.is_some(),
        filter.request_mirror.is_some(),
    ];
    if set_fields.iter().filter(|set| **set).count() != 1 {
        return Err(ctx.err(
            field.to_owned(),
            "exactly one filter field, the one named by `type`, must be set",
        ));
    }
    let missing = |name: &str| ctx.err(format!("{field}.{name}"), "must be set for this type");
    match filter.kind {
        FilterKind::RequestHeaderModifier => {
            let spec = filter
                .request_header_modifier
                .as_ref()
                .ok_or_else(|| missing("requestHeaderModifier"))?;
            parse_header_modifier(ctx, &format!("{field}.requestHeaderModifier"), spec)
                .map(RouteFilter::RequestHeaders)
        }
        FilterKind::ResponseHeaderModifier => {
            let spec = filter
                .response_header_modifier
                .as_ref()
                .ok_or_else(|| missing("responseHeaderModifier"))?;
            parse_header_modifier(ctx, &format!("{field}.responseHeaderModifier"), spec)
                .map(RouteFilter::ResponseHeaders)
        }
        FilterKind::UrlRewrite => {
            let spec = filter
                .url_rewrite
                .as_ref()
                .ok_or_else(|| missing("urlRewrite"))?;
            let field = format!("{field}.urlRewrite");
            if let Some(hostname) = &spec.hostname {
                check_dns_subdomain(hostname)
                    .map_err(|r| ctx.err(format!("{field}.hostname"), r))?;
            }
            let path = spec
                .path
                .as_ref()
                .map(|p| parse_path_modifier(ctx, &format!("{field}.path"), p, matches))
                .transpose()?;
            Ok(RouteFilter::UrlRewrite {
                hostname: spec.hostname.clone(),
                path,
            })
        }
        FilterKind::RequestRedirect => {
            let spec = filter
                .request_redirect
                .as_ref()
                .ok_or_else(|| missing("requestRedirect"))?;
            let field = format!("{field}.requestRedirect");
            if let Some(scheme) = &spec.scheme
                && scheme != "http"
                && scheme != "https"
            {
                return Err(ctx.err(format!("{field}.scheme"), "must be http or https"));
            }
            if let Some(hostname) = &spec.hostname {
                check_dns_subdomain(hostname)
                    .map_err(|r| ctx.err(format!("{field}.hostname"), r))?;
            }
            if spec.port == Some(0) {
                return Err(ctx.err(format!("{field}.port"), "must be 1 to 65535"));
            }
            let status_code = spec.status_code.unwrap_or(302);
            if ![301, 302, 303, 307, 308].contains(&status_code) {
                return Err(ctx.err(
                    format!("{field}.statusCode"),
                    "must be 301, 302, 303, 307 or 308",
                ));
            }
            let path = spec
                .path
                .as_ref()
                .map(|p| parse_path_modifier(ctx, &format!("{field}.path"), p, matches))
                .transpose()?;
            Ok(RouteFilter::Redirect(Redirect {
                scheme: spec.scheme.clone(),
                hostname: spec.hostname.clone(),
                path,
                port: spec.port,
                status_code,
            }))
        }
        FilterKind::RequestMirror => {
            let spec = filter
                .request_mirror
                .as_ref()
                .ok_or_else(|| missing("requestMirror"))?;
            parse_mirror(
                ctx,
                &format!("{field}.requestMirror"),
                spec,
                route_namespace,
            )
            .map(RouteFilter::Mirror)
        }
    }
}

/// A Gateway API `requestMirror` (HTTPRoute and GRPCRoute).
pub(crate) fn parse_mirror(
    ctx: &ErrorContext<'_>,
    field: &str,
    spec: &RequestMirrorSpec,
    route_namespace: &str,
) -> Result<Mirror, ModelError> {
    let mut backend = parse_backend(
        ctx,
        &format!("{field}.backendRef"),
        &spec.backend_ref,
        route_namespace,
    )?;
    backend.weight = 1;
    let fraction = match (spec.percent, &spec.fraction) {
        (Some(_), Some(_)) => {
            return Err(ctx.err(field.to_owned(), "set at most one of percent and fraction"));
        }
        (Some(percent), None) => Fraction::from_percent(f64::from(percent))
            .ok_or_else(|| ctx.err(format!("{field}.percent"), "must be 0 to 100"))?,
        (None, Some(fraction)) => {
            Fraction::from_ratio(fraction.numerator, fraction.denominator.unwrap_or(100))
                .ok_or_else(|| {
                    ctx.err(
                        format!("{field}.fraction"),
                        "needs a denominator above 0 and a numerator no larger than it",
                    )
                })?
        }
        (None, None) => Fraction::ALL,
    };
    Ok(Mirror { backend, fraction })
}

pub(crate) fn parse_header_modifier(
    ctx: &ErrorContext<'_>,
    field: &str,
    spec: &HeaderModifierSpec,
) -> Result<HeaderModifier, ModelError> {
    let pairs = |list: &[HttpHeaderSpec], name: &str| {
        list.iter()
            .enumerate()
            .map(|(i, header)| {
                let field = format!("{field}.{name}[{i}]");
                check_header_name(&header.name).map_err(|r| ctx.err(format!("{field}.name"), r))?;
                check_header_value(&header.value)
                    .map_err(|r| ctx.err(format!("{field}.value"), r))?;
                Ok((header.name.to_ascii_lowercase(), header.value.clone()))
            })
            .collect::<Result<Vec<_>, ModelError>>()
    };
    let set = pairs(&spec.set, "set")?;
    let add = pairs(&spec.add, "add")?;
    let remove = spec
        .remove
        .iter()
        .enumerate()
        .map(|(i, name)| {
            check_header_name(name)
                .map(|()| name.to_ascii_lowercase())
                .map_err(|r| ctx.err(format!("{field}.remove[{i}]"), r))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(HeaderModifier { set, add, remove })
}

fn parse_path_modifier(
    ctx: &ErrorContext<'_>,
    field: &str,
    spec: &PathModifierSpec,
    matches: &[RouteMatch],
) -> Result<PathModifier, ModelError> {
    let check = |value: &Option<String>, name: &str| {
        let value = value
            .as_deref()
            .ok_or_else(|| ctx.err(format!("{field}.{name}"), "must be set for this type"))?;
        if !value.starts_with('/') {
            return Err(ctx.err(format!("{field}.{name}"), "must start with '/'"));
        }
        Ok(value.to_owned())
    };
    match spec.kind {
        PathModifierKind::ReplaceFullPath => {
            check(&spec.replace_full_path, "replaceFullPath").map(PathModifier::Full)
        }
        PathModifierKind::ReplacePrefixMatch => {
            if matches
                .iter()
                .any(|m| !matches!(m.path, PathMatch::Prefix(_)))
            {
                return Err(ctx.err(
                    format!("{field}.type"),
                    "ReplacePrefixMatch needs every match of the rule to be a PathPrefix",
                ));
            }
            check(&spec.replace_prefix_match, "replacePrefixMatch").map(PathModifier::Prefix)
        }
    }
}

pub(crate) fn parse_backend(
    ctx: &ErrorContext<'_>,
    field: &str,
    spec: &HttpBackendRefSpec,
    route_namespace: &str,
) -> Result<Backend, ModelError> {
    let group = spec.group.as_deref().unwrap_or("");
    let kind = spec.kind.as_deref().unwrap_or("Service");
    if !group.is_empty() || kind != "Service" {
        return Err(ctx.err(
            format!("{field}.kind"),
            format!("backend {group}/{kind} is not supported: only core Services"),
        ));
    }
    check_dns_label(&spec.name).map_err(|r| ctx.err(format!("{field}.name"), r))?;
    let namespace = spec.namespace.as_deref().unwrap_or(route_namespace);
    check_dns_label(namespace).map_err(|r| ctx.err(format!("{field}.namespace"), r))?;
    let port = match spec.port {
        None => return Err(ctx.err(format!("{field}.port"), "is required for a Service")),
        Some(0) => return Err(ctx.err(format!("{field}.port"), "must be 1 to 65535")),
        Some(port) => port,
    };
    let weight = spec.weight.unwrap_or(1);
    if weight > MAX_WEIGHT {
        return Err(ctx.err(format!("{field}.weight"), "must be at most 1000000"));
    }
    Ok(Backend {
        namespace: namespace.to_owned(),
        name: spec.name.clone(),
        port,
        weight,
        subset: None,
        filters: Vec::new(),
    })
}

fn parse_retry(
    ctx: &ErrorContext<'_>,
    field: &str,
    spec: &HttpRouteRetrySpec,
) -> Result<RetryPolicy, ModelError> {
    let mut codes = BTreeSet::new();
    for (i, code) in spec.codes.iter().enumerate() {
        if !(400..=599).contains(code) {
            return Err(ctx.err(format!("{field}.codes[{i}]"), "must be 400 to 599"));
        }
        codes.insert(*code);
    }
    let backoff = spec
        .backoff
        .as_deref()
        .map(parse_duration)
        .transpose()
        .map_err(|r| ctx.err(format!("{field}.backoff"), r))?
        .unwrap_or(DEFAULT_RETRY_BACKOFF);
    Ok(RetryPolicy {
        attempts: spec.attempts.unwrap_or(1),
        codes,
        backoff,
        // GEP-1731: connection errors are always retried; a per-try timeout counts as one.
        on: RetryOn {
            connect_failure: true,
            per_try_timeout: true,
            ..RetryOn::default()
        },
    })
}

pub(crate) fn check_regex(pattern: &str) -> Result<(), String> {
    regex::Regex::new(pattern)
        .map(drop)
        .map_err(|err| format!("invalid regular expression: {err}"))
}

/// RFC 7230 token characters, as Gateway API requires for header names.
pub(crate) fn check_header_name(name: &str) -> Result<(), String> {
    let is_tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(is_tchar) {
        return Err(format!("{name:?} is not a valid header name"));
    }
    Ok(())
}

/// Visible ASCII, spaces and tabs; no control characters that could split a header.
pub(crate) fn check_header_value(value: &str) -> Result<(), String> {
    if value
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
    {
        Ok(())
    } else {
        Err(format!(
            "{value:?} contains characters not allowed in a header value"
        ))
    }
}

#[cfg(test)]
mod tests;
