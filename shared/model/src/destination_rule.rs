//! `networking.istio.io/v1` DestinationRule: how traffic to one service host is balanced,
//! limited and checked for outliers, and its subsets by labels.
//!
//! As for routes, the spec types keep Istio's YAML shape (camelCase) and
//! [`DestinationRule::new`] validates it once into [`TrafficPolicy`] values with defaults
//! applied and durations parsed, refusing the rule with a [`ModelError`] naming the field
//! (`spec.subsets[1].trafficPolicy.outlierDetection.interval`). Fields a waypoint does not
//! implement (`tls`, `portLevelSettings`, locality settings, …) are refused rather than
//! silently ignored.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::CLUSTER_DOMAIN;
use crate::error::{ErrorContext, ModelError, check_dns_label, check_dns_subdomain};
use crate::labels::Labels;
use crate::route::parse_duration;

const KIND: &str = "DestinationRule";
/// Istio's defaults for `outlierDetection` fields left unset.
const DEFAULT_CONSECUTIVE_5XX: u32 = 5;
const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
const DEFAULT_BASE_EJECTION: Duration = Duration::from_secs(30);
const DEFAULT_MAX_EJECTION_PERCENT: u32 = 10;

/// The `spec` of a DestinationRule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DestinationRuleSpec {
    /// The service: a short name (in the rule's namespace) or `name.namespace.svc.cluster.local`.
    pub host: String,
    /// The policy for every endpoint of the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_policy: Option<TrafficPolicySpec>,
    /// Named groups of endpoints, selected by labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subsets: Vec<SubsetSpec>,
    /// Namespaces the rule is visible to; kept for config dumps, a waypoint serves its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
}

/// `trafficPolicy`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficPolicySpec {
    /// Endpoint choice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerSpec>,
    /// Limits on connections and requests (circuit breaking).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSpec>,
    /// Ejection of failing endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetectionSpec>,
}

/// `loadBalancer`: exactly one of `simple` and `consistentHash`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancerSpec {
    /// A simple algorithm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simple: Option<SimpleLb>,
    /// Hash-based affinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistent_hash: Option<ConsistentHashSpec>,
}

/// `loadBalancer.simple`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SimpleLb {
    /// Istio's default, which is LEAST_REQUEST.
    #[default]
    Unspecified,
    /// Each endpoint in turn.
    RoundRobin,
    /// The less loaded of two random endpoints.
    LeastRequest,
    /// Deprecated alias of LEAST_REQUEST.
    LeastConn,
    /// A uniformly random endpoint.
    Random,
    /// Forward to the original destination; not supported by the waypoint (refused).
    Passthrough,
}

/// `consistentHash`: exactly one hash key source.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsistentHashSpec {
    /// Hash on this request header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_header_name: Option<String>,
    /// Hash on this cookie, optionally generating it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_cookie: Option<HttpCookieSpec>,
    /// Hash on the client's IP address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_source_ip: Option<bool>,
    /// Hash on this query parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_query_parameter_name: Option<String>,
}

/// `consistentHash.httpCookie`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpCookieSpec {
    /// The cookie name.
    pub name: String,
    /// The cookie's `Path` when generated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Lifetime of a generated cookie; without it no cookie is generated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
}

/// `connectionPool`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionPoolSpec {
    /// TCP-level limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpSettingsSpec>,
    /// HTTP-level limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpSettingsSpec>,
}

/// `connectionPool.tcp`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpSettingsSpec {
    /// Most HTTP/1.1 connections to all endpoints of the destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
}

/// `connectionPool.http`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpSettingsSpec {
    /// Most requests waiting for a connection.
    #[serde(
        default,
        rename = "http1MaxPendingRequests",
        skip_serializing_if = "Option::is_none"
    )]
    pub http1_max_pending_requests: Option<u32>,
    /// Most active requests (HTTP/1.1 and HTTP/2).
    #[serde(
        default,
        rename = "http2MaxRequests",
        skip_serializing_if = "Option::is_none"
    )]
    pub http2_max_requests: Option<u32>,
    /// Requests per upstream connection before it is replaced; 0 means unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests_per_connection: Option<u32>,
    /// Most retries outstanding to the destination at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
}

/// `outlierDetection`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetectionSpec {
    /// Consecutive 5xx responses (or connect failures) that eject an endpoint; 0 disables.
    #[serde(
        default,
        rename = "consecutive5xxErrors",
        skip_serializing_if = "Option::is_none"
    )]
    pub consecutive_5xx_errors: Option<u32>,
    /// Consecutive 502/503/504 (or connect failures) that eject an endpoint; 0 disables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_gateway_errors: Option<u32>,
    /// How often ejections are reviewed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Minimum ejection time, multiplied by the number of times the endpoint was ejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ejection_time: Option<String>,
    /// Most endpoints ejected at once, as a percentage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_percent: Option<u32>,
}

/// A `subsets` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubsetSpec {
    /// The name routes refer to.
    pub name: String,
    /// Endpoints whose workload has all these labels.
    #[serde(default)]
    pub labels: Labels,
    /// Overrides the rule's policy, field by field (`loadBalancer`, `connectionPool`,
    /// `outlierDetection`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_policy: Option<TrafficPolicySpec>,
}

/// A validated DestinationRule; serializes as `{name, namespace, spec}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "DestinationRuleRepr", into = "DestinationRuleRepr")]
pub struct DestinationRule {
    name: String,
    namespace: String,
    spec: DestinationRuleSpec,
    service: Option<(String, String)>,
    policy: TrafficPolicy,
    subsets: Vec<Subset>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DestinationRuleRepr {
    name: String,
    namespace: String,
    spec: DestinationRuleSpec,
}

/// The validated policy for a set of endpoints, with defaults applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrafficPolicy {
    /// Endpoint choice.
    pub load_balancer: LoadBalancer,
    /// Limits; `None` fields are unlimited.
    pub connection_pool: ConnectionPool,
    /// Outlier detection, if enabled.
    pub outlier_detection: Option<OutlierDetection>,
}

/// How an endpoint is chosen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum LoadBalancer {
    /// Each endpoint in turn (the waypoint's default when no rule says otherwise).
    #[default]
    RoundRobin,
    /// Power of two choices on in-flight requests.
    LeastRequest,
    /// Uniformly random.
    Random,
    /// A consistent-hash ring on a request key.
    ConsistentHash(HashKey),
}

/// Where a consistent hash takes its key from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// A request header (lowercased name).
    Header(String),
    /// A cookie; generated with `ttl` (and `path`) when absent, if `ttl` is set.
    Cookie {
        /// Cookie name.
        name: String,
        /// Path of a generated cookie.
        path: Option<String>,
        /// Lifetime of a generated cookie.
        ttl: Option<Duration>,
    },
    /// The client's IP address.
    SourceIp,
    /// A query parameter.
    QueryParameter(String),
}

/// Connection-pool limits; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionPool {
    /// `tcp.maxConnections`.
    pub max_connections: Option<u32>,
    /// `http.http1MaxPendingRequests`.
    pub max_pending_requests: Option<u32>,
    /// `http.http2MaxRequests`.
    pub max_requests: Option<u32>,
    /// `http.maxRequestsPerConnection` (0 in the spec means unlimited).
    pub max_requests_per_connection: Option<u32>,
    /// `http.maxRetries`.
    pub max_retries: Option<u32>,
}

/// Outlier detection with Istio's defaults applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierDetection {
    /// Consecutive 5xx that eject; `None` disabled.
    pub consecutive_5xx_errors: Option<u32>,
    /// Consecutive gateway errors that eject; `None` disabled.
    pub consecutive_gateway_errors: Option<u32>,
    /// Review interval.
    pub interval: Duration,
    /// Base ejection time.
    pub base_ejection_time: Duration,
    /// Most endpoints ejected at once, in percent (0–100).
    pub max_ejection_percent: u32,
}

/// A validated subset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subset {
    /// Its name.
    pub name: String,
    /// Labels its endpoints must carry.
    pub labels: Labels,
    /// The rule's policy with the subset's overrides applied.
    pub policy: TrafficPolicy,
}

impl DestinationRule {
    /// Validates the rule.
    pub fn new(
        name: impl Into<String>,
        namespace: impl Into<String>,
        spec: DestinationRuleSpec,
    ) -> Result<Self, ModelError> {
        let (name, namespace) = (name.into(), namespace.into());
        let ctx = ErrorContext {
            kind: KIND,
            namespace: &namespace,
            name: &name,
        };
        ctx.check_metadata()?;
        let service = parse_host(&spec.host, &namespace).map_err(|r| ctx.err("spec.host", r))?;
        let rule_policy = match &spec.traffic_policy {
            Some(policy) => parse_policy(&ctx, "spec.trafficPolicy", policy, None)?,
            None => TrafficPolicy::default(),
        };
        let mut subsets: Vec<Subset> = Vec::with_capacity(spec.subsets.len());
        for (i, subset) in spec.subsets.iter().enumerate() {
            let field = format!("spec.subsets[{i}]");
            check_dns_label(&subset.name).map_err(|r| ctx.err(format!("{field}.name"), r))?;
            if subsets.iter().any(|s| s.name == subset.name) {
                return Err(ctx.err(
                    format!("{field}.name"),
                    format!("subset {:?} is defined twice", subset.name),
                ));
            }
            let policy = match &subset.traffic_policy {
                Some(own) => parse_policy(
                    &ctx,
                    &format!("{field}.trafficPolicy"),
                    own,
                    Some(&rule_policy),
                )?,
                None => rule_policy.clone(),
            };
            subsets.push(Subset {
                name: subset.name.clone(),
                labels: subset.labels.clone(),
                policy,
            });
        }
        Ok(Self {
            name,
            namespace,
            spec,
            service,
            policy: rule_policy,
            subsets,
        })
    }

    /// The rule name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The rule namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The spec as given.
    pub fn spec(&self) -> &DestinationRuleSpec {
        &self.spec
    }

    /// `(namespace, name)` of the in-cluster service the host names; `None` for hosts
    /// outside the cluster domain (which a waypoint does not serve).
    pub fn service(&self) -> Option<(&str, &str)> {
        self.service
            .as_ref()
            .map(|(namespace, name)| (namespace.as_str(), name.as_str()))
    }

    /// The policy for the whole host.
    pub fn policy(&self) -> &TrafficPolicy {
        &self.policy
    }

    /// The subsets, in spec order.
    pub fn subsets(&self) -> &[Subset] {
        &self.subsets
    }

    /// The subset named `name`.
    pub fn subset(&self, name: &str) -> Option<&Subset> {
        self.subsets.iter().find(|s| s.name == name)
    }
}

impl TryFrom<DestinationRuleRepr> for DestinationRule {
    type Error = ModelError;

    fn try_from(repr: DestinationRuleRepr) -> Result<Self, Self::Error> {
        Self::new(repr.name, repr.namespace, repr.spec)
    }
}

impl From<DestinationRule> for DestinationRuleRepr {
    fn from(rule: DestinationRule) -> Self {
        Self {
            name: rule.name,
            namespace: rule.namespace,
            spec: rule.spec,
        }
    }
}

/// `reviews` → `(rule namespace, reviews)`; `reviews.shop` and
/// `reviews.shop.svc[.cluster.local]` → `(shop, reviews)`; other hosts → `None`.
fn parse_host(host: &str, namespace: &str) -> Result<Option<(String, String)>, String> {
    if host.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if host.contains('*') {
        return Err(format!(
            "{host:?}: wildcard hosts are not supported by the waypoint"
        ));
    }
    check_dns_subdomain(host)?;
    let suffix = format!(".svc.{CLUSTER_DOMAIN}");
    let trimmed = host
        .strip_suffix(&suffix)
        .or_else(|| host.strip_suffix(".svc"))
        .unwrap_or(host);
    let labels: Vec<&str> = trimmed.split('.').collect();
    Ok(match labels.as_slice() {
        [name] => Some((namespace.to_owned(), (*name).to_owned())),
        [name, ns] => Some(((*ns).to_owned(), (*name).to_owned())),
        _ => None,
    })
}

/// Validates one `trafficPolicy`. For a subset, `inherited` is the rule's policy: each of
/// the three sections the subset leaves out comes from it (Istio's field-level override).
fn parse_policy(
    ctx: &ErrorContext<'_>,
    field: &str,
    spec: &TrafficPolicySpec,
    inherited: Option<&TrafficPolicy>,
) -> Result<TrafficPolicy, ModelError> {
    let inherited = inherited.cloned().unwrap_or_default();
    let load_balancer = match &spec.load_balancer {
        Some(lb) => parse_load_balancer(ctx, &format!("{field}.loadBalancer"), lb)?,
        None => inherited.load_balancer,
    };
    let connection_pool = match &spec.connection_pool {
        Some(pool) => parse_pool(pool),
        None => inherited.connection_pool,
    };
    let outlier_detection = match &spec.outlier_detection {
        Some(outlier) => Some(parse_outlier(
            ctx,
            &format!("{field}.outlierDetection"),
            outlier,
        )?),
        None => inherited.outlier_detection,
    };
    Ok(TrafficPolicy {
        load_balancer,
        connection_pool,
        outlier_detection,
    })
}

fn parse_load_balancer(
    ctx: &ErrorContext<'_>,
    field: &str,
    spec: &LoadBalancerSpec,
) -> Result<LoadBalancer, ModelError> {
    match (spec.simple, &spec.consistent_hash) {
        (Some(_), Some(_)) => Err(ctx.err(field, "set one of simple and consistentHash, not both")),
        (None, None) => Err(ctx.err(field, "set one of simple and consistentHash")),
        (Some(simple), None) => match simple {
            SimpleLb::Unspecified | SimpleLb::LeastRequest | SimpleLb::LeastConn => {
                Ok(LoadBalancer::LeastRequest)
            }
            SimpleLb::RoundRobin => Ok(LoadBalancer::RoundRobin),
            SimpleLb::Random => Ok(LoadBalancer::Random),
            SimpleLb::Passthrough => Err(ctx.err(
                format!("{field}.simple"),
                "PASSTHROUGH is not supported by the waypoint",
            )),
        },
        (None, Some(hash)) => {
            let field = format!("{field}.consistentHash");
            let mut keys = Vec::new();
            if let Some(header) = &hash.http_header_name {
                let lower = header.to_ascii_lowercase();
                http_token(&lower).map_err(|r| ctx.err(format!("{field}.httpHeaderName"), r))?;
                keys.push(HashKey::Header(lower));
            }
            if let Some(cookie) = &hash.http_cookie {
                http_token(&cookie.name)
                    .map_err(|r| ctx.err(format!("{field}.httpCookie.name"), r))?;
                let ttl = match &cookie.ttl {
                    Some(ttl) => {
                        let ttl = parse_duration(ttl)
                            .map_err(|r| ctx.err(format!("{field}.httpCookie.ttl"), r))?;
                        // Envoy treats a zero TTL as a session cookie; a waypoint needs a
                        // lifetime to write `Max-Age`, so zero means "do not generate".
                        (!ttl.is_zero()).then_some(ttl)
                    }
                    None => None,
                };
                if let Some(path) = &cookie.path
                    && (!path.starts_with('/') || path.bytes().any(|b| b == b';' || b < 0x20))
                {
                    return Err(ctx.err(
                        format!("{field}.httpCookie.path"),
                        format!("{path:?} is not a cookie path"),
                    ));
                }
                keys.push(HashKey::Cookie {
                    name: cookie.name.clone(),
                    path: cookie.path.clone(),
                    ttl,
                });
            }
            if hash.use_source_ip == Some(true) {
                keys.push(HashKey::SourceIp);
            }
            if let Some(param) = &hash.http_query_parameter_name {
                if param.is_empty() {
                    return Err(ctx.err(
                        format!("{field}.httpQueryParameterName"),
                        "must not be empty",
                    ));
                }
                keys.push(HashKey::QueryParameter(param.clone()));
            }
            match keys.len() {
                1 => Ok(LoadBalancer::ConsistentHash(keys.remove(0))),
                0 => Err(ctx.err(
                    field,
                    "set one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName",
                )),
                _ => Err(ctx.err(field, "set only one hash key")),
            }
        }
    }
}

fn parse_pool(spec: &ConnectionPoolSpec) -> ConnectionPool {
    let tcp = spec.tcp.clone().unwrap_or_default();
    let http = spec.http.clone().unwrap_or_default();
    ConnectionPool {
        max_connections: tcp.max_connections,
        max_pending_requests: http.http1_max_pending_requests,
        max_requests: http.http2_max_requests,
        max_requests_per_connection: http.max_requests_per_connection.filter(|n| *n > 0),
        max_retries: http.max_retries,
    }
}

fn parse_outlier(
    ctx: &ErrorContext<'_>,
    field: &str,
    spec: &OutlierDetectionSpec,
) -> Result<OutlierDetection, ModelError> {
    let duration = |value: &Option<String>, name: &str, default: Duration| match value {
        Some(value) => {
            let parsed =
                parse_duration(value).map_err(|r| ctx.err(format!("{field}.{name}"), r))?;
            if parsed.is_zero() {
                return Err(ctx.err(format!("{field}.{name}"), "must be more than 0"));
            }
            Ok(parsed)
        }
        None => Ok(default),
    };
    let max_ejection_percent = spec
        .max_ejection_percent
        .unwrap_or(DEFAULT_MAX_EJECTION_PERCENT);
    if max_ejection_percent > 100 {
        return Err(ctx.err(
            format!("{field}.maxEjectionPercent"),
            format!("{max_ejection_percent} is more than 100"),
        ));
    }
    Ok(OutlierDetection {
        consecutive_5xx_errors: spec
            .consecutive_5xx_errors
            .or(Some(DEFAULT_CONSECUTIVE_5XX))
            .filter(|n| *n > 0),
        consecutive_gateway_errors: spec.consecutive_gateway_errors.filter(|n| *n > 0),
        interval: duration(&spec.interval, "interval", DEFAULT_INTERVAL)?,
        base_ejection_time: duration(
            &spec.base_ejection_time,
            "baseEjectionTime",
            DEFAULT_BASE_EJECTION,
        )?,
        max_ejection_percent,
    })
}

/// An HTTP token (RFC 9110 §5.6.2), as header and cookie names must be.
fn http_token(value: &str) -> Result<(), String> {
    let valid = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(format!("{value:?} is not a valid HTTP token"))
    }
}

#[cfg(test)]
mod tests;
