//! Routing: which rule of which HTTPRoute handles a request, by Gateway API precedence.
//!
//! [`RouteTable::build`] compiles every route once per configuration snapshot: each match of
//! each rule becomes a [`CompiledMatch`] with its regular expressions compiled, and the
//! matches of a service are sorted by precedence, so selecting is a scan that stops at the
//! first hit. Precedence (Gateway API, with regular expressions — which the spec leaves to
//! implementations — after every prefix):
//! 1. Exact path, then the longest `PathPrefix`, then `RegularExpression`;
//! 2. a method match before none;
//! 3. more header matches first, then more query-parameter matches;
//! 4. ties: route `namespace/name` alphabetically (we have no creation timestamps), then rule
//!    and match order.
//!
//! Pure: no IO, no clock. Filters that change requests and responses are in [`filters`].

pub mod filters;

use std::collections::HashMap;
use std::sync::Arc;

use ambit_model::HttpRoute;
use ambit_model::route::{PathMatch, RouteMatch, RouteRule, ValueMatch};
use http::request::Parts;
use http::{HeaderName, Method};
use regex::Regex;

use crate::config::ServiceKey;

/// All routes of a snapshot, by the service they attach to.
#[derive(Debug, Default)]
pub struct RouteTable {
    by_service: HashMap<ServiceKey, Vec<CompiledMatch>>,
}

/// A rule with where it came from.
#[derive(Debug)]
pub struct CompiledRule {
    /// `namespace/name` of the HTTPRoute.
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
        /// The `PathPrefix` that matched, for `ReplacePrefixMatch`.
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
}

/// Sort key: smaller is more specific.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Rank {
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
    Regex(Regex),
}

#[derive(Debug)]
enum ValueMatcher {
    Exact(String),
    Regex(Regex),
}

impl RouteTable {
    /// Compiles `routes`; fails only if a regular expression the model accepted does not
    /// compile here (which would be a bug) or a header name is invalid.
    pub fn build(routes: &[HttpRoute]) -> Result<Self, String> {
        let mut by_service: HashMap<ServiceKey, Vec<CompiledMatch>> = HashMap::new();
        for route in routes {
            let route_key = format!("{}/{}", route.namespace(), route.name());
            for (rule_index, rule) in route.rules().iter().enumerate() {
                let compiled = Arc::new(CompiledRule {
                    route: route_key.clone(),
                    index: rule_index,
                    rule: rule.clone(),
                });
                for parent in route.service_parents() {
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
        let path = request.uri.path();
        let prefix = match &self.path {
            PathMatcher::Exact(exact) => (path == exact).then_some(None)?,
            PathMatcher::Prefix(prefix) => {
                prefix_matches(prefix, path).then_some(Some(prefix.as_str()))?
            }
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
    })
}

#[cfg(test)]
mod tests;
