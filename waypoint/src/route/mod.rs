//! Routing: which rule of which HTTPRoute, GRPCRoute or VirtualService handles a request.
//!
//! [`RouteTable::build_all`] compiles every route once per configuration snapshot: each match
//! of each rule becomes a [`CompiledMatch`] with its regular expressions compiled, so
//! selecting is a scan that stops at the first hit.
//!
//! **Which kind wins.** A service with at least one HTTPRoute or GRPCRoute attached is routed
//! by those only; its VirtualServices are ignored, as Istio does for a waypoint (Gateway API
//! routes take precedence over VirtualService for the same service). A service with only
//! VirtualServices is routed by them: `http` entries in spec order, first match wins, and
//! several VirtualServices for one service are taken in `namespace/name` order (Istio merges
//! by creation time, which we do not have).
//!
//! GRPCRoute rules are HTTPRoute-shaped rules whose every match requires a gRPC
//! `content-type` (see [`ambit_model::grpc_route`]) and HTTP/2, so they only ever select gRPC
//! requests.
//! When both kinds attach to one service, a gRPC request tries every GRPCRoute match before
//! any HTTPRoute match (the Gateway API leaves this mix undefined; a gRPC-specific rule is the
//! more specific intent), and within each kind the precedence below applies.
//!
//! Gateway API precedence (with regular expressions — which the spec leaves to
//! implementations — after every prefix):
//! 1. Exact path, then the longest `PathPrefix`, then `RegularExpression`;
//! 2. a method match before none;
//! 3. more header matches first, then more query-parameter matches;
//! 4. ties: route `namespace/name` alphabetically (we have no creation timestamps), then rule
//!    and match order.
//!
//! Pure: no IO, no clock. Filters that change requests and responses are in [`filters`].

pub mod fault;
pub mod filters;
pub mod mirror;

use std::collections::HashMap;
use std::sync::Arc;

use ambit_model::route::{PathMatch, RouteMatch, RouteRule, ValueMatch};
use ambit_model::{GrpcRoute, HttpRoute, VirtualService};
use http::request::Parts;
use http::{HeaderName, Method, Version};
use regex::Regex;

use crate::config::ServiceKey;

/// All routes of a snapshot, by the service they attach to.
#[derive(Debug, Default)]
pub struct RouteTable {
    by_service: HashMap<ServiceKey, Vec<CompiledMatch>>,
}

/// The kind of object a rule came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteKind {
    /// Gateway API HTTPRoute.
    HttpRoute,
    /// Gateway API GRPCRoute.
    GrpcRoute,
    /// Istio VirtualService.
    VirtualService,
}

/// A rule with where it came from.
#[derive(Debug)]
pub struct CompiledRule {
    /// The kind of the route object.
    pub kind: RouteKind,
    /// `namespace/name` of the route object.
    pub route: String,
    /// Index of the rule in the route.
    pub index: usize,
    /// The validated rule.
    pub rule: RouteRule,
}

/// The outcome of [`RouteTable::select`].
#[derive(Debug)]
pub enum Selection<'a> {
    /// No route attaches to the service (port): the service itself is the backend.
    Unrouted,
    /// Routes attach, but none matches: `404`.
    NoMatch,
    /// This rule handles the request.
    Matched {
        /// The rule.
        rule: &'a Arc<CompiledRule>,
        /// The `PathPrefix` (or VirtualService `prefix`) that matched, for prefix rewrites.
        prefix: Option<&'a str>,
    },
}

/// One match of one rule, compiled.
#[derive(Debug)]
struct CompiledMatch {
    rank: Rank,
    /// Only this service port, when the parent ref names one.
    port: Option<u16>,
    rule: Arc<CompiledRule>,
    path: PathMatcher,
    headers: Vec<(HeaderName, ValueMatcher)>,
    query: Vec<(String, ValueMatcher)>,
    method: Option<Method>,
    /// GRPCRoute matches: gRPC runs over HTTP/2 only.
    h2_only: bool,
}

/// Sort key: smaller is more specific.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Rank {
    grpc_route_first: u8,
    path_kind: u8,
    longer_prefix_first: usize,
    method_first: u8,
    more_headers_first: usize,
    more_query_first: usize,
    route: String,
    rule: usize,
    index: usize,
}

#[derive(Debug)]
enum PathMatcher {
    Exact(String),
    Prefix(String),
    /// Istio's plain string prefix.
    StringPrefix(String),
    Regex(Regex),
}

#[derive(Debug)]
enum ValueMatcher {
    Exact(String),
    Regex(Regex),
}

impl RouteTable {
    /// Compiles HTTPRoutes only (see [`Self::build_all`]).
    pub fn build(routes: &[HttpRoute]) -> Result<Self, String> {
        Self::build_all(routes, &[], &[])
    }

    /// Compiles every route; fails only if a regular expression the model accepted does not
    /// compile here (which would be a bug) or a header name is invalid.
    pub fn build_all(
        http_routes: &[HttpRoute],
        grpc_routes: &[GrpcRoute],
        virtual_services: &[VirtualService],
    ) -> Result<Self, String> {
        let mut by_service: HashMap<ServiceKey, Vec<CompiledMatch>> = HashMap::new();
        let gateway_routes = http_routes
            .iter()
            .map(|r| {
                (
                    RouteKind::HttpRoute,
                    r.namespace(),
                    r.name(),
                    r.rules(),
                    r.service_parents(),
                )
            })
            .chain(grpc_routes.iter().map(|r| {
                (
                    RouteKind::GrpcRoute,
                    r.namespace(),
                    r.name(),
                    r.rules(),
                    r.service_parents(),
                )
            }));
        for (kind, namespace, name, rules, parents) in gateway_routes {
            let route_key = format!("{namespace}/{name}");
            for (rule_index, rule) in rules.iter().enumerate() {
                let compiled = Arc::new(CompiledRule {
                    kind,
                    route: route_key.clone(),
                    index: rule_index,
                    rule: rule.clone(),
                });
                for parent in parents {
                    let key = ServiceKey {
                        namespace: parent.namespace.clone(),
                        name: parent.name.clone(),
                    };
                    for (match_index, m) in rule.matches.iter().enumerate() {
                        let compiled_match = compile_match(
                            m,
                            &compiled,
                            parent.port,
                            &route_key,
                            rule_index,
                            match_index,
                        )
                        .map_err(|err| format!("route {route_key} rule {rule_index}: {err}"))?;
                        by_service
                            .entry(key.clone())
                            .or_default()
                            .push(compiled_match);
                    }
                }
            }
        }
        for matches in by_service.values_mut() {
            matches.sort_by(|a, b| a.rank.cmp(&b.rank));
        }
        // VirtualServices only for services no Gateway API route attaches to; spec order.
        let mut virtual_services: Vec<&VirtualService> = virtual_services.iter().collect();
        virtual_services.sort_by(|a, b| (a.namespace(), a.name()).cmp(&(b.namespace(), b.name())));
        let mut vs_matches: HashMap<ServiceKey, Vec<CompiledMatch>> = HashMap::new();
        for vs in virtual_services {
            let route_key = format!("{}/{}", vs.namespace(), vs.name());
            for (rule_index, route) in vs.routes().iter().enumerate() {
                let compiled = Arc::new(CompiledRule {
                    kind: RouteKind::VirtualService,
                    route: route_key.clone(),
                    index: rule_index,
                    rule: route.rule.clone(),
                });
                for service in vs.services() {
                    let key = ServiceKey {
                        namespace: service.namespace.clone(),
                        name: service.name.clone(),
                    };
                    if by_service.contains_key(&key) {
                        continue;
                    }
                    for (match_index, m) in route.rule.matches.iter().enumerate() {
                        let port = route.match_ports.get(match_index).copied().flatten();
                        let compiled_match =
                            compile_match(m, &compiled, port, &route_key, rule_index, match_index)
                                .map_err(|err| {
                                    format!("VirtualService {route_key} http[{rule_index}]: {err}")
                                })?;
                        vs_matches
                            .entry(key.clone())
                            .or_default()
                            .push(compiled_match);
                    }
                }
            }
        }
        by_service.extend(vs_matches);
        Ok(Self { by_service })
    }

    /// Selects the rule for a request to `service` on service port `port`.
    pub fn select(&self, service: &ServiceKey, port: u16, request: &Parts) -> Selection<'_> {
        let Some(matches) = self.by_service.get(service) else {
            return Selection::Unrouted;
        };
        let mut attached = false;
        for candidate in matches {
            if candidate.port.is_some_and(|p| p != port) {
                continue;
            }
            attached = true;
            if let Some(prefix) = candidate.matches(request) {
                return Selection::Matched {
                    rule: &candidate.rule,
                    prefix,
                };
            }
        }
        if attached {
            Selection::NoMatch
        } else {
            Selection::Unrouted
        }
    }
}

impl CompiledMatch {
    /// `Some(prefix)` if the request matches (with the matched `PathPrefix`, if that was the
    /// path condition), `None` otherwise.
    fn matches(&self, request: &Parts) -> Option<Option<&str>> {
        if self.h2_only && request.version != Version::HTTP_2 {
            return None;
        }
        let path = request.uri.path();
        let prefix = match &self.path {
            PathMatcher::Exact(exact) => (path == exact).then_some(None)?,
            PathMatcher::Prefix(prefix) => {
                prefix_matches(prefix, path).then_some(Some(prefix.as_str()))?
            }
            PathMatcher::StringPrefix(prefix) => path
                .starts_with(prefix.as_str())
                .then_some(Some(prefix.as_str()))?,
            PathMatcher::Regex(regex) => regex.is_match(path).then_some(None)?,
        };
        if self.method.as_ref().is_some_and(|m| *m != request.method) {
            return None;
        }
        for (name, matcher) in &self.headers {
            let value = request.headers.get(name)?.to_str().ok()?;
            if !matcher.matches(value) {
                return None;
            }
        }
        for (name, matcher) in &self.query {
            let value = query_param(request.uri.query(), name)?;
            if !matcher.matches(value) {
                return None;
            }
        }
        Some(prefix)
    }
}

impl ValueMatcher {
    fn matches(&self, value: &str) -> bool {
        match self {
            Self::Exact(exact) => value == exact,
            Self::Regex(regex) => regex.is_match(value),
        }
    }
}

/// Whole-segment prefix: `/a` matches `/a`, `/a/` and `/a/b`, never `/ab`.
pub(crate) fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// The first value of query parameter `name` (not percent-decoded).
fn query_param<'q>(query: Option<&'q str>, name: &str) -> Option<&'q str> {
    query?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then_some(value)
    })
}

/// Anchors a Gateway API regular expression: it must match the whole value.
fn full_match(pattern: &str) -> Result<Regex, String> {
    Regex::new(&format!("^(?:{pattern})$")).map_err(|err| err.to_string())
}

fn compile_value(m: &ValueMatch) -> Result<ValueMatcher, String> {
    if m.regex {
        full_match(&m.value).map(ValueMatcher::Regex)
    } else {
        Ok(ValueMatcher::Exact(m.value.clone()))
    }
}

fn compile_match(
    m: &RouteMatch,
    rule: &Arc<CompiledRule>,
    port: Option<u16>,
    route: &str,
    rule_index: usize,
    match_index: usize,
) -> Result<CompiledMatch, String> {
    let (path, path_kind, prefix_len) = match &m.path {
        PathMatch::Exact(exact) => (PathMatcher::Exact(exact.clone()), 0, 0),
        PathMatch::Prefix(prefix) => (PathMatcher::Prefix(prefix.clone()), 1, prefix.len()),
        PathMatch::StringPrefix(prefix) => {
            (PathMatcher::StringPrefix(prefix.clone()), 1, prefix.len())
        }
        PathMatch::Regex(pattern) => (PathMatcher::Regex(full_match(pattern)?), 2, 0),
    };
    let headers = m
        .headers
        .iter()
        .map(|h| {
            let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|e| e.to_string())?;
            Ok((name, compile_value(h)?))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let query = m
        .query_params
        .iter()
        .map(|q| Ok((q.name.clone(), compile_value(q)?)))
        .collect::<Result<Vec<_>, String>>()?;
    let method = m
        .method
        .as_deref()
        .map(|method| Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string()))
        .transpose()?;
    Ok(CompiledMatch {
        rank: Rank {
            grpc_route_first: u8::from(rule.kind != RouteKind::GrpcRoute),
            path_kind,
            longer_prefix_first: usize::MAX - prefix_len,
            method_first: u8::from(method.is_none()),
            more_headers_first: usize::MAX - headers.len(),
            more_query_first: usize::MAX - query.len(),
            route: route.to_owned(),
            rule: rule_index,
            index: match_index,
        },
        port,
        rule: rule.clone(),
        path,
        headers,
        query,
        method,
        h2_only: rule.kind == RouteKind::GrpcRoute,
    })
}

#[cfg(test)]
mod tests;
