//! `networking.istio.io/v1` VirtualService, the HTTP part: the spec as users write it (Istio
//! field names, camelCase) and the validated routes a waypoint serves them with.
//!
//! [`VirtualService::new`] turns every `http` entry into a [`RouteRule`], the same validated
//! rule an HTTPRoute produces, so the waypoint routes both with one engine:
//! - `match[].uri` `exact`/`prefix`/`regex` become [`PathMatch::Exact`],
//!   [`PathMatch::StringPrefix`] (Istio's prefix is a plain string prefix) and
//!   [`PathMatch::Regex`]; header and query `prefix` matches become anchored regular
//!   expressions; `method` must be an `exact` match.
//! - `route[]` destinations become [`Backend`]s with their `subset` and per-destination header
//!   operations; `mirror`/`mirrorPercentage` and `mirrors[]` become [`RouteFilter::Mirror`].
//! - `rewrite.uri` becomes [`PathModifier::MatchedPrefixOrFull`] (Envoy's `prefix_rewrite`).
//! - `retries.retryOn` becomes a [`RetryOn`] read as Envoy reads it.
//!
//! Hosts that name a cluster Service (a short `name`, resolved in the VirtualService's
//! namespace, or the full `name.ns.svc.cluster.local`; as in Istio, any other dotted name is
//! an external host) bind
//! the VirtualService to that Service; other hosts (external names, wildcards) are kept in the
//! spec but bind nothing at a waypoint. A VirtualService whose `gateways` list is set and lacks
//! `mesh` does not apply to mesh traffic and binds nothing either. Not supported (refused
//! as unknown fields): `tcp`, `tls`, `delegate`, `directResponse`, `corsPolicy`,
//! `match[].sourceLabels`, `match[].withoutHeaders`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::CLUSTER_DOMAIN;
use crate::error::{ErrorContext, ModelError, check_dns_label};
use crate::route::{
    Backend, DEFAULT_RETRY_BACKOFF, FaultAbort, FaultInjection, Fraction, HeaderModifier, Mirror,
    PathMatch, PathModifier, Redirect, RetryOn, RetryPolicy, RouteFilter, RouteMatch, RouteRule,
    ServiceParent, ValueMatch, check_header_name, check_header_value, check_regex, parse_duration,
};

const KIND: &str = "VirtualService";
/// Istio refuses more retries than this in one policy; so do we.
const MAX_ATTEMPTS: i32 = 1000;

/// The `spec` of a VirtualService.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualServiceSpec {
    /// Destination hosts the routes apply to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Gateways the routes apply to; empty or containing `mesh` means mesh traffic.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    /// Namespaces the VirtualService is visible in (kept, not enforced by the waypoint).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
    /// HTTP routes, tried in order: the first that matches wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<VsHttpRouteSpec>,
}

/// One `http` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VsHttpRouteSpec {
    /// Optional name, for logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Any may match; none means every request.
    #[serde(default, rename = "match", skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<HttpMatchRequestSpec>,
    /// Weighted destinations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<HttpRouteDestinationSpec>,
    /// Answer with a redirect instead (excludes `route` and `rewrite`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<HttpRedirectSpec>,
    /// Rewrite path and/or authority before forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<HttpRewriteSpec>,
    /// Overall timeout, retries included (`10s`, `0.5s`, `1m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Retry policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<HttpRetrySpec>,
    /// Fault injection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<HttpFaultInjectionSpec>,
    /// One mirror destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<DestinationSpec>,
    /// Share of requests mirrored to `mirror`; all when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_percentage: Option<PercentSpec>,
    /// Several mirror destinations (excludes `mirror`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<HttpMirrorPolicySpec>,
    /// Header operations on every request and response of the route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<HeadersSpec>,
}

/// A `match` entry: every field present must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpMatchRequestSpec {
    /// Optional name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Path condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<StringMatchSpec>,
    /// Header conditions by (case-insensitive) name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, StringMatchSpec>,
    /// Query parameter conditions by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query_params: BTreeMap<String, StringMatchSpec>,
    /// Method condition (`exact` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<StringMatchSpec>,
    /// Only requests to this service port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Match `uri` without regard to ASCII case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_uri_case: Option<bool>,
}

/// Istio's `StringMatch`: exactly one of the three.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StringMatchSpec {
    /// Equal, byte for byte.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    /// Starts with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// RE2-style regular expression matching the whole value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// A `route` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteDestinationSpec {
    /// Where the traffic goes.
    pub destination: DestinationSpec,
    /// Relative weight; all traffic when it is the only destination and this is omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i64>,
    /// Header operations when this destination is chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<HeadersSpec>,
}

/// A `destination`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DestinationSpec {
    /// A cluster Service host (short `name`, or `name.ns.svc.cluster.local`).
    pub host: String,
    /// A DestinationRule subset name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
    /// The service port; the request's (or the service's only) port when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortSelectorSpec>,
}

/// `port: {number: N}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortSelectorSpec {
    /// The port number.
    pub number: u32,
}

/// `headers: {request, response}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeadersSpec {
    /// Changes to the request before it goes upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<HeaderOperationsSpec>,
    /// Changes to the response before it goes downstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<HeaderOperationsSpec>,
}

/// `set`, `add` and `remove`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderOperationsSpec {
    /// Replace (or add).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
    /// Append.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub add: BTreeMap<String, String>,
    /// Remove.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// `redirect`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRedirectSpec {
    /// Replaces the whole path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Replaces the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    /// Replaces the port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// `http` or `https`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// 301 (the default), 302, 303, 307 or 308.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_code: Option<u32>,
}

/// `rewrite`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRewriteSpec {
    /// Replaces the matched prefix (a `prefix` match) or the whole path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Replaces the `Host`/`:authority`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
}

/// `retries`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRetrySpec {
    /// Retries after the first try; 0 disables retries.
    #[serde(default)]
    pub attempts: i32,
    /// Timeout of each try.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<String>,
    /// Comma-separated Envoy retry conditions and status codes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<String>,
}

/// `fault`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpFaultInjectionSpec {
    /// Delay before forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<FaultDelaySpec>,
    /// Answer instead of forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<FaultAbortSpec>,
}

/// `fault.delay`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultDelaySpec {
    /// How long.
    pub fixed_delay: String,
    /// Share of requests delayed; all when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<PercentSpec>,
}

/// `fault.abort`: exactly one of `httpStatus` and `grpcStatus`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultAbortSpec {
    /// The HTTP status answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u32>,
    /// The gRPC status answered, by name (`UNAVAILABLE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<String>,
    /// Share of requests aborted; all when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<PercentSpec>,
}

/// A `mirrors` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpMirrorPolicySpec {
    /// Where copies go.
    pub destination: DestinationSpec,
    /// Share of requests copied; all when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<PercentSpec>,
}

/// Istio's `Percent`: `{value: 0.0 to 100.0}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PercentSpec {
    /// The percentage.
    #[serde(default)]
    pub value: f64,
}

/// One validated `http` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualServiceRoute {
    /// The entry's `name`, if any.
    pub name: Option<String>,
    /// The rule; `rule.matches` is never empty (no `match` means one that matches everything).
    pub rule: RouteRule,
    /// `match_ports[i]` is the service-port condition of `rule.matches[i]`.
    pub match_ports: Vec<Option<u16>>,
}

/// A validated VirtualService. Serializes as `{name, namespace, spec}` with the spec as given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "VirtualServiceRepr", into = "VirtualServiceRepr")]
pub struct VirtualService {
    name: String,
    namespace: String,
    spec: VirtualServiceSpec,
    services: Vec<ServiceParent>,
    routes: Vec<VirtualServiceRoute>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct VirtualServiceRepr {
    name: String,
    namespace: String,
    #[serde(default)]
    spec: VirtualServiceSpec,
}

// A constructed VirtualService has only finite percentages (validation refuses NaN), so
// equality is reflexive for every value that can exist.
impl Eq for PercentSpec {}

impl VirtualService {
    /// Validates the VirtualService and parses its HTTP routes.
    pub fn new(
        name: impl Into<String>,
        namespace: impl Into<String>,
        spec: VirtualServiceSpec,
    ) -> Result<Self, ModelError> {
        let (name, namespace) = (name.into(), namespace.into());
        let ctx = ErrorContext {
            kind: KIND,
            namespace: &namespace,
            name: &name,
        };
        ctx.check_metadata()?;
        if spec.hosts.is_empty() {
            return Err(ctx.err("spec.hosts", "must name at least one host"));
        }
        let mut services = Vec::new();
        for (i, host) in spec.hosts.iter().enumerate() {
            check_host(host).map_err(|r| ctx.err(format!("spec.hosts[{i}]"), r))?;
            if let Some(service) = service_of_host(host, &namespace)
                && !services.contains(&service)
            {
                services.push(service);
            }
        }
        let for_mesh = spec.gateways.is_empty() || spec.gateways.iter().any(|g| g == "mesh");
        if !for_mesh {
            services.clear();
        }
        let routes = spec
            .http
            .iter()
            .enumerate()
            .map(|(i, route)| parse_http(&ctx, &format!("spec.http[{i}]"), route, &namespace))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            name,
            namespace,
            spec,
            services,
            routes,
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
    pub fn spec(&self) -> &VirtualServiceSpec {
        &self.spec
    }

    /// The cluster Services whose traffic these routes handle (empty when no host names a
    /// Service or the VirtualService is not for mesh traffic).
    pub fn services(&self) -> &[ServiceParent] {
        &self.services
    }

    /// The validated HTTP routes, in spec order (which is match order).
    pub fn routes(&self) -> &[VirtualServiceRoute] {
        &self.routes
    }
}

impl TryFrom<VirtualServiceRepr> for VirtualService {
    type Error = ModelError;

    fn try_from(repr: VirtualServiceRepr) -> Result<Self, Self::Error> {
        Self::new(repr.name, repr.namespace, repr.spec)
    }
}

impl From<VirtualService> for VirtualServiceRepr {
    fn from(vs: VirtualService) -> Self {
        Self {
            name: vs.name,
            namespace: vs.namespace,
            spec: vs.spec,
        }
    }
}

/// The Service a host names, if it names one: a short `name` (in `namespace`) or
/// `name.ns.svc.cluster.local`. Istio takes every other dotted name as a fully qualified
/// external host, so `name.ns` names no Service here either.
pub fn service_of_host(host: &str, namespace: &str) -> Option<ServiceParent> {
    let host = host.to_ascii_lowercase();
    let short = match host
        .strip_suffix(CLUSTER_DOMAIN)
        .and_then(|h| h.strip_suffix(".svc."))
    {
        Some(qualified) if qualified.contains('.') => qualified,
        Some(_) => return None,
        None if host.contains('.') => return None,
        None => host.as_str(),
    };
    let mut parts = short.split('.');
    let (name, ns) = match (parts.next(), parts.next(), parts.next()) {
        (Some(name), None, None) => (name, namespace),
        (Some(name), Some(ns), None) => (name, ns),
        _ => return None,
    };
    if check_dns_label(name).is_err() || check_dns_label(ns).is_err() {
        return None;
    }
    Some(ServiceParent {
        namespace: ns.to_owned(),
        name: name.to_owned(),
        port: None,
    })
}

/// A host is a DNS name, optionally with a leading `*.` wildcard, or `*`.
fn check_host(host: &str) -> Result<(), String> {
    let name = host.strip_prefix("*.").unwrap_or(host);
    if host == "*" {
        return Ok(());
    }
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if valid {
        Ok(())
    } else {
        Err(format!("{host:?} is not a host name"))
    }
}

/// Istio durations: protobuf's decimal seconds (`0.5s`) or Go-style units (`1m30s`, `500ms`).
pub fn parse_istio_duration(value: &str) -> Result<Duration, String> {
    if let Some(seconds) = value.strip_suffix('s')
        && !seconds.ends_with('m')
        && seconds.contains('.')
    {
        let parsed: f64 = seconds
            .parse()
            .map_err(|_| format!("{value:?} is not a duration (e.g. \"10s\", \"0.5s\")"))?;
        if !(0.0..=315_576_000_000.0).contains(&parsed) {
            return Err(format!("{value:?} is out of range"));
        }
        return Ok(Duration::from_secs_f64(parsed));
    }
    parse_duration(value)
}

fn parse_http(
    ctx: &ErrorContext<'_>,
    field: &str,
    spec: &VsHttpRouteSpec,
    namespace: &str,
) -> Result<VirtualServiceRoute, ModelError> {
    let mut matches = Vec::new();
    let mut match_ports = Vec::new();
    for (i, m) in spec.matches.iter().enumerate() {
        let field = format!("{field}.match[{i}]");
        matches.push(parse_match(ctx, &field, m)?);
        if m.port == Some(0) {
            return Err(ctx.err(format!("{field}.port"), "must be 1 to 65535"));
        }
        match_ports.push(m.port);
    }
    if matches.is_empty() {
        matches.push(RouteMatch {
            path: PathMatch::StringPrefix("/".to_owned()),
            headers: Vec::new(),
            query_params: Vec::new(),
            method: None,
        });
        match_ports.push(None);
    }

    let mut filters = Vec::new();
    if let Some(headers) = &spec.headers {
        push_header_filters(ctx, &format!("{field}.headers"), headers, &mut filters)?;
    }
    if spec.redirect.is_some() && !spec.route.is_empty() {
        return Err(ctx.err(
            format!("{field}.redirect"),
            "a route with redirect must not have route destinations",
        ));
    }
    if spec.redirect.is_none() && spec.route.is_empty() {
        return Err(ctx.err(
            format!("{field}.route"),
            "needs at least one destination (or a redirect)",
        ));
    }
    if let Some(redirect) = &spec.redirect {
        if spec.rewrite.is_some() {
            return Err(ctx.err(
                format!("{field}.rewrite"),
                "cannot be used together with redirect",
            ));
        }
        filters.push(RouteFilter::Redirect(parse_redirect(
            ctx,
            &format!("{field}.redirect"),
            redirect,
        )?));
    }
    if let Some(rewrite) = &spec.rewrite {
        let field = format!("{field}.rewrite");
        if rewrite.uri.is_none() && rewrite.authority.is_none() {
            return Err(ctx.err(field, "needs uri or authority"));
        }
        let path = rewrite
            .uri
            .as_ref()
            .map(|uri| {
                if uri.starts_with('/') {
                    Ok(PathModifier::MatchedPrefixOrFull(uri.clone()))
                } else {
                    Err(ctx.err(format!("{field}.uri"), "must start with '/'"))
                }
            })
            .transpose()?;
        if let Some(authority) = &rewrite.authority {
            check_authority(authority).map_err(|r| ctx.err(format!("{field}.authority"), r))?;
        }
        filters.push(RouteFilter::UrlRewrite {
            hostname: rewrite.authority.clone(),
            path,
        });
    }
    if spec.mirror.is_some() && !spec.mirrors.is_empty() {
        return Err(ctx.err(
            format!("{field}.mirrors"),
            "cannot be used together with mirror",
        ));
    }
    if spec.mirror_percentage.is_some() && spec.mirror.is_none() {
        return Err(ctx.err(
            format!("{field}.mirrorPercentage"),
            "needs mirror to be set",
        ));
    }
    if let Some(mirror) = &spec.mirror {
        let fraction = parse_percent(
            ctx,
            &format!("{field}.mirrorPercentage"),
            spec.mirror_percentage,
        )?;
        let backend = parse_destination(ctx, &format!("{field}.mirror"), mirror, namespace, 1)?;
        filters.push(RouteFilter::Mirror(Mirror { backend, fraction }));
    }
    for (i, mirror) in spec.mirrors.iter().enumerate() {
        let field = format!("{field}.mirrors[{i}]");
        let fraction = parse_percent(ctx, &format!("{field}.percentage"), mirror.percentage)?;
        let backend = parse_destination(
            ctx,
            &format!("{field}.destination"),
            &mirror.destination,
            namespace,
            1,
        )?;
        filters.push(RouteFilter::Mirror(Mirror { backend, fraction }));
    }

    let single = spec.route.len() == 1;
    let mut backends = Vec::with_capacity(spec.route.len());
    for (i, destination) in spec.route.iter().enumerate() {
        let field = format!("{field}.route[{i}]");
        let weight = match destination.weight {
            None if single => 100,
            None => 0,
            Some(weight) => u32::try_from(weight)
                .ok()
                .filter(|w| *w <= 1_000_000)
                .ok_or_else(|| ctx.err(format!("{field}.weight"), "must be 0 to 1000000"))?,
        };
        let mut backend = parse_destination(
            ctx,
            &format!("{field}.destination"),
            &destination.destination,
            namespace,
            weight,
        )?;
        if let Some(headers) = &destination.headers {
            push_header_filters(
                ctx,
                &format!("{field}.headers"),
                headers,
                &mut backend.filters,
            )?;
        }
        backends.push(backend);
    }
    if !backends.is_empty() && backends.iter().all(|b| b.weight == 0) {
        return Err(ctx.err(
            format!("{field}.route"),
            "the total weight of the destinations must be above 0",
        ));
    }

    let request_timeout = spec
        .timeout
        .as_deref()
        .map(parse_istio_duration)
        .transpose()
        .map_err(|r| ctx.err(format!("{field}.timeout"), r))?
        .filter(|d| !d.is_zero());
    let (retry, backend_request_timeout) = match &spec.retries {
        Some(retries) => parse_retries(ctx, &format!("{field}.retries"), retries)?,
        None => (None, None),
    };
    let fault = spec
        .fault
        .as_ref()
        .map(|fault| parse_fault(ctx, &format!("{field}.fault"), fault))
        .transpose()?;
    Ok(VirtualServiceRoute {
        name: spec.name.clone(),
        rule: RouteRule {
            matches,
            filters,
            backends,
            request_timeout,
            backend_request_timeout,
            retry,
            fault,
        },
        match_ports,
    })
}

fn parse_match(
    ctx: &ErrorContext<'_>,
    field: &str,
    spec: &HttpMatchRequestSpec,
) -> Result<RouteMatch, ModelError> {
    let ignore_case = spec.ignore_uri_case.unwrap_or(false);
    let path = match &spec.uri {
        None => PathMatch::StringPrefix("/".to_owned()),
        Some(uri) => {
            let field = format!("{field}.uri");
            let (kind, value) = one_of(ctx, &field, uri)?;
            match (kind, ignore_case) {
                (StringKind::Exact, false) => PathMatch::Exact(value.to_owned()),
                (StringKind::Prefix, false) => PathMatch::StringPrefix(value.to_owned()),
                (StringKind::Exact, true) => {
                    PathMatch::Regex(format!("(?i:{})", regex::escape(value)))
                }
                (StringKind::Prefix, true) => {
                    PathMatch::Regex(format!("(?i:{}).*", regex::escape(value)))
                }
                (StringKind::Regex, _) => {
                    check_regex(value).map_err(|r| ctx.err(format!("{field}.regex"), r))?;
                    if ignore_case {
                        PathMatch::Regex(format!("(?i:{value})"))
                    } else {
                        PathMatch::Regex(value.to_owned())
                    }
                }
            }
        }
    };
    let mut headers = Vec::with_capacity(spec.headers.len());
    for (name, value) in &spec.headers {
        let field = format!("{field}.headers.{name}");
        check_header_name(name).map_err(|r| ctx.err(field.clone(), r))?;
        let lower = name.to_ascii_lowercase();
        if headers.iter().any(|h: &ValueMatch| h.name == lower) {
            return Err(ctx.err(field, "is matched twice (header names ignore case)"));
        }
        headers.push(value_match(ctx, &field, lower, value)?);
    }
    let query_params = spec
        .query_params
        .iter()
        .map(|(name, value)| {
            let field = format!("{field}.queryParams.{name}");
            if name.is_empty() {
                return Err(ctx.err(field, "name must not be empty"));
            }
            value_match(ctx, &field, name.clone(), value)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let method = spec
        .method
        .as_ref()
        .map(|method| {
            let field = format!("{field}.method");
            match one_of(ctx, &field, method)? {
                (StringKind::Exact, value)
                    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_uppercase()) =>
                {
                    Ok(value.to_owned())
                }
                (StringKind::Exact, value) => Err(ctx.err(
                    format!("{field}.exact"),
                    format!("{value:?} is not an HTTP method (uppercase letters, e.g. GET)"),
                )),
                _ => Err(ctx.err(field, "only exact method matches are supported")),
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StringKind {
    Exact,
    Prefix,
    Regex,
}

fn one_of<'s>(
    ctx: &ErrorContext<'_>,
    field: &str,
    spec: &'s StringMatchSpec,
) -> Result<(StringKind, &'s str), ModelError> {
    match (&spec.exact, &spec.prefix, &spec.regex) {
        (Some(v), None, None) => Ok((StringKind::Exact, v)),
        (None, Some(v), None) => Ok((StringKind::Prefix, v)),
        (None, None, Some(v)) => Ok((StringKind::Regex, v)),
        _ => Err(ctx.err(
            field.to_owned(),
            "exactly one of exact, prefix and regex must be set",
        )),
    }
}

/// Header and query matches: a prefix becomes an anchored regular expression.
fn value_match(
    ctx: &ErrorContext<'_>,
    field: &str,
    name: String,
    spec: &StringMatchSpec,
) -> Result<ValueMatch, ModelError> {
    let (kind, value) = one_of(ctx, field, spec)?;
    let (value, regex) = match kind {
        StringKind::Exact => (value.to_owned(), false),
        StringKind::Prefix => (format!("{}.*", regex::escape(value)), true),
        StringKind::Regex => {
            check_regex(value).map_err(|r| ctx.err(format!("{field}.regex"), r))?;
            (value.to_owned(), true)
        }
    };
    Ok(ValueMatch { name, value, regex })
}

fn parse_destination(
    ctx: &ErrorContext<'_>,
    field: &str,
    spec: &DestinationSpec,
    namespace: &str,
    weight: u32,
) -> Result<Backend, ModelError> {
    let service = service_of_host(&spec.host, namespace).ok_or_else(|| {
        ctx.err(
            format!("{field}.host"),
            format!(
                "{:?} does not name a cluster Service (name or name.namespace.svc.{CLUSTER_DOMAIN})",
                spec.host
            ),
        )
    })?;
    if let Some(subset) = &spec.subset {
        check_dns_label(subset).map_err(|r| ctx.err(format!("{field}.subset"), r))?;
    }
    // Port 0 stands for "not given": the waypoint uses the service's only port, else the
    // port the request was addressed to.
    let port = match &spec.port {
        None => 0,
        Some(port) => u16::try_from(port.number)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| ctx.err(format!("{field}.port.number"), "must be 1 to 65535"))?,
    };
    Ok(Backend {
        namespace: service.namespace,
        name: service.name,
        port,
        weight,
        subset: spec.subset.clone(),
        filters: Vec::new(),
    })
}

fn push_header_filters(
    ctx: &ErrorContext<'_>,
    field: &str,
    spec: &HeadersSpec,
    filters: &mut Vec<RouteFilter>,
) -> Result<(), ModelError> {
    if let Some(request) = &spec.request {
        let modifier = header_operations(ctx, &format!("{field}.request"), request)?;
        filters.push(RouteFilter::RequestHeaders(modifier));
    }
    if let Some(response) = &spec.response {
        let modifier = header_operations(ctx, &format!("{field}.response"), response)?;
        filters.push(RouteFilter::ResponseHeaders(modifier));
    }
    Ok(())
}

fn header_operations(
    ctx: &ErrorContext<'_>,
    field: &str,
    spec: &HeaderOperationsSpec,
) -> Result<HeaderModifier, ModelError> {
    let pairs = |map: &BTreeMap<String, String>, op: &str| {
        map.iter()
            .map(|(name, value)| {
                let field = format!("{field}.{op}.{name}");
                check_header_name(name).map_err(|r| ctx.err(field.clone(), r))?;
                check_header_value(value).map_err(|r| ctx.err(field, r))?;
                Ok((name.to_ascii_lowercase(), value.clone()))
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

fn parse_redirect(
    ctx: &ErrorContext<'_>,
    field: &str,
    spec: &HttpRedirectSpec,
) -> Result<Redirect, ModelError> {
    if let Some(scheme) = &spec.scheme
        && scheme != "http"
        && scheme != "https"
    {
        return Err(ctx.err(format!("{field}.scheme"), "must be http or https"));
    }
    if let Some(authority) = &spec.authority {
        check_authority(authority).map_err(|r| ctx.err(format!("{field}.authority"), r))?;
    }
    let port = spec
        .port
        .map(|port| {
            u16::try_from(port)
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| ctx.err(format!("{field}.port"), "must be 1 to 65535"))
        })
        .transpose()?;
    let status_code = spec.redirect_code.unwrap_or(301);
    let status_code = u16::try_from(status_code)
        .ok()
        .filter(|code| [301, 302, 303, 307, 308].contains(code))
        .ok_or_else(|| {
            ctx.err(
                format!("{field}.redirectCode"),
                "must be 301, 302, 303, 307 or 308",
            )
        })?;
    let path = spec
        .uri
        .as_ref()
        .map(|uri| {
            if uri.starts_with('/') {
                Ok(PathModifier::Full(uri.clone()))
            } else {
                Err(ctx.err(format!("{field}.uri"), "must start with '/'"))
            }
        })
        .transpose()?;
    Ok(Redirect {
        scheme: spec.scheme.clone(),
        hostname: spec.authority.clone(),
        path,
        port,
        status_code,
    })
}

/// A host name for `Host`: DNS characters only, so it cannot smuggle a port or a path.
fn check_authority(value: &str) -> Result<(), String> {
    let valid = !value.is_empty()
        && value.len() <= 253
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if valid {
        Ok(())
    } else {
        Err(format!("{value:?} is not a host name"))
    }
}

fn parse_percent(
    ctx: &ErrorContext<'_>,
    field: &str,
    spec: Option<PercentSpec>,
) -> Result<Fraction, ModelError> {
    match spec {
        None => Ok(Fraction::ALL),
        Some(percent) => Fraction::from_percent(percent.value)
            .ok_or_else(|| ctx.err(format!("{field}.value"), "must be 0 to 100")),
    }
}

fn parse_retries(
    ctx: &ErrorContext<'_>,
    field: &str,
    spec: &HttpRetrySpec,
) -> Result<(Option<RetryPolicy>, Option<Duration>), ModelError> {
    if !(0..=MAX_ATTEMPTS).contains(&spec.attempts) {
        return Err(ctx.err(
            format!("{field}.attempts"),
            format!("must be 0 to {MAX_ATTEMPTS}"),
        ));
    }
    let per_try = spec
        .per_try_timeout
        .as_deref()
        .map(parse_istio_duration)
        .transpose()
        .map_err(|r| ctx.err(format!("{field}.perTryTimeout"), r))?
        .filter(|d| !d.is_zero());
    let (on, codes) = match spec.retry_on.as_deref() {
        Some(list) => parse_retry_on(list).map_err(|r| ctx.err(format!("{field}.retryOn"), r))?,
        // Istio's default: connect failures and refused streams (nothing reached the upstream).
        None => (
            RetryOn {
                connect_failure: true,
                ..RetryOn::default()
            },
            BTreeSet::new(),
        ),
    };
    if spec.attempts == 0 {
        return Ok((None, per_try));
    }
    let attempts = u32::try_from(spec.attempts).unwrap_or(0);
    Ok((
        Some(RetryPolicy {
            attempts,
            codes,
            backoff: DEFAULT_RETRY_BACKOFF,
            on,
        }),
        per_try,
    ))
}

/// Envoy's `retry_on` list, plus bare status codes as Istio allows.
fn parse_retry_on(list: &str) -> Result<(RetryOn, BTreeSet<u16>), String> {
    let mut on = RetryOn::default();
    let mut codes = BTreeSet::new();
    for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        match item {
            "5xx" => on.server_errors = true,
            "gateway-error" => on.gateway_errors = true,
            "retriable-4xx" => on.retriable_4xx = true,
            "connect-failure" | "refused-stream" => on.connect_failure = true,
            "reset" => on.reset = true,
            "retriable-status-codes" => {}
            "cancelled" => drop(on.grpc_codes.insert(1)),
            "deadline-exceeded" => drop(on.grpc_codes.insert(4)),
            "resource-exhausted" => drop(on.grpc_codes.insert(8)),
            "internal" => drop(on.grpc_codes.insert(13)),
            "unavailable" => drop(on.grpc_codes.insert(14)),
            code if code.bytes().all(|b| b.is_ascii_digit()) => {
                let code: u16 = code
                    .parse()
                    .ok()
                    .filter(|c| (100..=599).contains(c))
                    .ok_or_else(|| format!("{code:?} is not an HTTP status code"))?;
                codes.insert(code);
            }
            other => {
                return Err(format!(
                    "{other:?} is not a retry condition (5xx, gateway-error, connect-failure, \
                     retriable-4xx, reset, refused-stream, retriable-status-codes, a status code, \
                     or a gRPC status such as unavailable)"
                ));
            }
        }
    }
    // Envoy: 5xx, gateway-error and reset also retry resets, refused connections and per-try
    // timeouts.
    if on.server_errors || on.gateway_errors || on.reset {
        on.connect_failure = true;
        on.reset = true;
        on.per_try_timeout = true;
    }
    Ok((on, codes))
}

fn parse_fault(
    ctx: &ErrorContext<'_>,
    field: &str,
    spec: &HttpFaultInjectionSpec,
) -> Result<FaultInjection, ModelError> {
    if spec.delay.is_none() && spec.abort.is_none() {
        return Err(ctx.err(field.to_owned(), "needs delay or abort"));
    }
    let delay = spec
        .delay
        .as_ref()
        .map(|delay| {
            let field = format!("{field}.delay");
            let duration = parse_istio_duration(&delay.fixed_delay)
                .map_err(|r| ctx.err(format!("{field}.fixedDelay"), r))?;
            let fraction = parse_percent(ctx, &format!("{field}.percentage"), delay.percentage)?;
            Ok((duration, fraction))
        })
        .transpose()?;
    let abort = spec
        .abort
        .as_ref()
        .map(|abort| {
            let field = format!("{field}.abort");
            let answer = match (&abort.http_status, &abort.grpc_status) {
                (Some(status), None) => u16::try_from(*status)
                    .ok()
                    .filter(|s| (200..=599).contains(s))
                    .map(FaultAbort::Http)
                    .ok_or_else(|| ctx.err(format!("{field}.httpStatus"), "must be 200 to 599"))?,
                (None, Some(name)) => grpc_code(name).map(FaultAbort::Grpc).ok_or_else(|| {
                    ctx.err(
                        format!("{field}.grpcStatus"),
                        format!("{name:?} is not a gRPC status name (e.g. UNAVAILABLE)"),
                    )
                })?,
                _ => {
                    return Err(ctx.err(
                        field,
                        "exactly one of httpStatus and grpcStatus must be set",
                    ));
                }
            };
            let fraction = parse_percent(ctx, &format!("{field}.percentage"), abort.percentage)?;
            Ok((answer, fraction))
        })
        .transpose()?;
    Ok(FaultInjection { delay, abort })
}

/// gRPC status names (as Istio's `grpcStatus` takes them) to codes; `OK` is not an abort.
fn grpc_code(name: &str) -> Option<u16> {
    const NAMES: [&str; 16] = [
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    let index = NAMES.iter().position(|n| *n == name)?;
    u16::try_from(index + 1).ok()
}

#[cfg(test)]
mod tests;
