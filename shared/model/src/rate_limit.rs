//! `ambit.dev/v1alpha1` LocalRateLimit: token buckets in the waypoint, because Istio ambient
//! has no API for local rate limiting (see docs/ratelimit.md).
//!
//! ```yaml
//! apiVersion: ambit.dev/v1alpha1
//! kind: LocalRateLimit
//! metadata: { name: cart-limits, namespace: shop }
//! spec:
//!   targetRefs: [{ kind: Service, group: "", name: cart }]   # or the waypoint Gateway
//!   rules:
//!   - match: { pathPrefix: /api, method: POST }             # optional; all requests if unset
//!     perSourceIdentity: true                               # one bucket per client identity
//!     tokensPerFill: 10
//!     fillInterval: 1s
//!     maxTokens: 20
//! ```
//!
//! The model validates the shape; the waypoint owns the buckets.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::authz::PolicyTargetReference;
use crate::error::{ErrorContext, ModelError};
use crate::route::parse_duration;

const KIND: &str = "LocalRateLimit";
/// Shorter fills make the bucket's timer precision matter more than its rate (Envoy's floor).
const MIN_FILL_INTERVAL: Duration = Duration::from_millis(50);
const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// The `spec` of a LocalRateLimit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalRateLimitSpec {
    /// Services (`group: ""`, `kind: Service`) or the waypoint (`kind: Gateway`) whose
    /// requests are limited; in the policy's namespace.
    pub target_refs: Vec<PolicyTargetReference>,
    /// Each matching rule must have a token for the request to pass.
    pub rules: Vec<RateLimitRuleSpec>,
}

/// A `rules` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitRuleSpec {
    /// Which requests the rule counts; all when unset.
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub matches: Option<RateLimitMatchSpec>,
    /// One bucket per client SPIFFE identity instead of one for all clients.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub per_source_identity: bool,
    /// Tokens added every `fillInterval`.
    pub tokens_per_fill: u32,
    /// How often tokens are added, e.g. `1s`.
    pub fill_interval: String,
    /// Bucket size (and initial content).
    pub max_tokens: u32,
}

/// `match` of a rule: every field set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitMatchSpec {
    /// Whole-segment path prefix: `/api` matches `/api` and `/api/x`, not `/apix`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// HTTP method, e.g. `POST`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

/// A validated LocalRateLimit; serializes as `{name, namespace, spec}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "LocalRateLimitRepr", into = "LocalRateLimitRepr")]
pub struct LocalRateLimit {
    name: String,
    namespace: String,
    spec: LocalRateLimitSpec,
    targets: Vec<RateLimitTarget>,
    rules: Vec<RateLimitRule>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LocalRateLimitRepr {
    name: String,
    namespace: String,
    spec: LocalRateLimitSpec,
}

/// What a policy limits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RateLimitTarget {
    /// Requests to the service of this name (in the policy's namespace).
    Service(String),
    /// Every request through the waypoint Gateway of this name (in the policy's namespace).
    Gateway(String),
}

/// A validated rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitRule {
    /// Path prefix the request must have, if any.
    pub path_prefix: Option<String>,
    /// Method the request must have, if any.
    pub method: Option<String>,
    /// One bucket per client identity.
    pub per_source_identity: bool,
    /// Tokens added per fill.
    pub tokens_per_fill: u32,
    /// Time between fills.
    pub fill_interval: Duration,
    /// Bucket size.
    pub max_tokens: u32,
}

impl LocalRateLimit {
    /// Validates the policy.
    pub fn new(
        name: impl Into<String>,
        namespace: impl Into<String>,
        spec: LocalRateLimitSpec,
    ) -> Result<Self, ModelError> {
        let (name, namespace) = (name.into(), namespace.into());
        let ctx = ErrorContext {
            kind: KIND,
            namespace: &namespace,
            name: &name,
        };
        ctx.check_metadata()?;
        if spec.target_refs.is_empty() {
            return Err(ctx.err("spec.targetRefs", "must name at least one target"));
        }
        let targets = spec
            .target_refs
            .iter()
            .enumerate()
            .map(|(i, target)| parse_target(&ctx, i, target, &namespace))
            .collect::<Result<Vec<_>, _>>()?;
        if spec.rules.is_empty() {
            return Err(ctx.err("spec.rules", "must have at least one rule"));
        }
        let rules = spec
            .rules
            .iter()
            .enumerate()
            .map(|(i, rule)| parse_rule(&ctx, &format!("spec.rules[{i}]"), rule))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            name,
            namespace,
            spec,
            targets,
            rules,
        })
    }

    /// The policy name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The policy namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The spec as given.
    pub fn spec(&self) -> &LocalRateLimitSpec {
        &self.spec
    }

    /// What the policy limits.
    pub fn targets(&self) -> &[RateLimitTarget] {
        &self.targets
    }

    /// The rules, in spec order.
    pub fn rules(&self) -> &[RateLimitRule] {
        &self.rules
    }
}

impl RateLimitRule {
    /// Whether a request with `method` and `path` is counted by this rule.
    pub fn matches(&self, method: &str, path: &str) -> bool {
        let method_ok = self.method.as_deref().is_none_or(|m| m == method);
        let path_ok = self.path_prefix.as_deref().is_none_or(|prefix| {
            let prefix = prefix.trim_end_matches('/');
            path.strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        });
        method_ok && path_ok
    }
}

impl TryFrom<LocalRateLimitRepr> for LocalRateLimit {
    type Error = ModelError;

    fn try_from(repr: LocalRateLimitRepr) -> Result<Self, Self::Error> {
        Self::new(repr.name, repr.namespace, repr.spec)
    }
}

impl From<LocalRateLimit> for LocalRateLimitRepr {
    fn from(policy: LocalRateLimit) -> Self {
        Self {
            name: policy.name,
            namespace: policy.namespace,
            spec: policy.spec,
        }
    }
}

fn parse_target(
    ctx: &ErrorContext<'_>,
    i: usize,
    target: &PolicyTargetReference,
    namespace: &str,
) -> Result<RateLimitTarget, ModelError> {
    let field = format!("spec.targetRefs[{i}]");
    if target.name.is_empty() {
        return Err(ctx.err(format!("{field}.name"), "must not be empty"));
    }
    if target
        .namespace
        .as_deref()
        .is_some_and(|ns| ns != namespace)
    {
        return Err(ctx.err(
            format!("{field}.namespace"),
            "targets must be in the policy's namespace",
        ));
    }
    match (target.group.as_str(), target.kind.as_str()) {
        ("", "Service") => Ok(RateLimitTarget::Service(target.name.clone())),
        (GATEWAY_GROUP, "Gateway") => Ok(RateLimitTarget::Gateway(target.name.clone())),
        (group, kind) => Err(ctx.err(
            format!("{field}.kind"),
            format!("{group:?}/{kind:?}: targets are Services (group \"\") or Gateways ({GATEWAY_GROUP})"),
        )),
    }
}

fn parse_rule(
    ctx: &ErrorContext<'_>,
    field: &str,
    spec: &RateLimitRuleSpec,
) -> Result<RateLimitRule, ModelError> {
    let matches = spec.matches.clone().unwrap_or_default();
    if let Some(prefix) = &matches.path_prefix
        && !prefix.starts_with('/')
    {
        return Err(ctx.err(
            format!("{field}.match.pathPrefix"),
            format!("{prefix:?} must start with '/'"),
        ));
    }
    if let Some(method) = &matches.method
        && (method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()))
    {
        return Err(ctx.err(
            format!("{field}.match.method"),
            format!("{method:?} is not an upper-case HTTP method"),
        ));
    }
    if spec.tokens_per_fill == 0 {
        return Err(ctx.err(format!("{field}.tokensPerFill"), "must be at least 1"));
    }
    if spec.max_tokens == 0 {
        return Err(ctx.err(format!("{field}.maxTokens"), "must be at least 1"));
    }
    let fill_interval = parse_duration(&spec.fill_interval)
        .map_err(|r| ctx.err(format!("{field}.fillInterval"), r))?;
    if fill_interval < MIN_FILL_INTERVAL {
        return Err(ctx.err(
            format!("{field}.fillInterval"),
            format!("must be at least {}ms", MIN_FILL_INTERVAL.as_millis()),
        ));
    }
    Ok(RateLimitRule {
        path_prefix: matches.path_prefix,
        method: matches.method,
        per_source_identity: spec.per_source_identity,
        tokens_per_fill: spec.tokens_per_fill,
        fill_interval,
        max_tokens: spec.max_tokens,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn policy(spec: serde_json::Value) -> Result<LocalRateLimit, ModelError> {
        LocalRateLimit::new("rl", "shop", serde_json::from_value(spec).unwrap())
    }

    #[test]
    fn valid_policy_and_matching() {
        let rl = policy(json!({
            "targetRefs": [{ "group": "", "kind": "Service", "name": "cart" },
                           { "group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "waypoint" }],
            "rules": [{ "match": { "pathPrefix": "/api/", "method": "POST" },
                        "perSourceIdentity": true, "tokensPerFill": 2, "fillInterval": "1s", "maxTokens": 5 }]
        }))
        .unwrap();
        assert_eq!(
            rl.targets(),
            [
                RateLimitTarget::Service("cart".into()),
                RateLimitTarget::Gateway("waypoint".into())
            ]
        );
        let rule = &rl.rules()[0];
        assert_eq!(rule.fill_interval, Duration::from_secs(1));
        assert!(rule.per_source_identity);
        assert!(rule.matches("POST", "/api"));
        assert!(rule.matches("POST", "/api/x"));
        assert!(!rule.matches("POST", "/apix"));
        assert!(!rule.matches("GET", "/api/x"));
        let json = serde_json::to_value(&rl).unwrap();
        let back: LocalRateLimit = serde_json::from_value(json).unwrap();
        assert_eq!(back, rl);
    }

    #[test]
    fn errors_name_the_field() {
        let rule = json!({ "tokensPerFill": 1, "fillInterval": "1s", "maxTokens": 1 });
        let svc = json!([{ "group": "", "kind": "Service", "name": "cart" }]);
        let cases = [
            (
                json!({ "targetRefs": [], "rules": [rule] }),
                "spec.targetRefs",
            ),
            (
                json!({ "targetRefs": [{ "group": "", "kind": "Pod", "name": "x" }], "rules": [rule] }),
                "spec.targetRefs[0].kind",
            ),
            (json!({ "targetRefs": svc, "rules": [] }), "spec.rules"),
            (
                json!({ "targetRefs": svc, "rules": [{ "tokensPerFill": 0, "fillInterval": "1s", "maxTokens": 1 }] }),
                "spec.rules[0].tokensPerFill",
            ),
            (
                json!({ "targetRefs": svc, "rules": [{ "tokensPerFill": 1, "fillInterval": "10ms", "maxTokens": 1 }] }),
                "spec.rules[0].fillInterval",
            ),
            (
                json!({ "targetRefs": svc, "rules": [{ "match": { "pathPrefix": "api" },
                    "tokensPerFill": 1, "fillInterval": "1s", "maxTokens": 1 }] }),
                "spec.rules[0].match.pathPrefix",
            ),
            (
                json!({ "targetRefs": svc, "rules": [{ "tokensPerFill": 1, "fillInterval": "1s", "maxTokens": 0 }] }),
                "spec.rules[0].maxTokens",
            ),
        ];
        for (spec, field) in cases {
            let err = policy(spec.clone()).unwrap_err();
            assert_eq!(err.field(), field, "{spec}: {err}");
        }
    }
}
