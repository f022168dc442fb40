//! `security.istio.io/v1` AuthorizationPolicy: the spec exactly as users write it (Istio field
//! names, camelCase), and the validated, typed rules the evaluators run.
//!
//! The spec types keep raw strings so YAML maps 1:1 and serializes back unchanged; building an
//! [`AuthorizationPolicy`] parses every value once into [`Rule`]s, and refuses the policy with a
//! [`ModelError`] naming the field (`spec.rules[0].from[1].source.ipBlocks[2]`) if anything is
//! wrong. Evaluators never see an unparsed value.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::error::{ErrorContext, ModelError};
use crate::labels::WorkloadSelector;
use crate::pattern::{StringMatch, parse_ip_block, parse_port};

const KIND: &str = "AuthorizationPolicy";

/// What a policy does when one of its rules matches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Action {
    /// Allow matching traffic; once any ALLOW policy applies, unmatched traffic is denied.
    #[default]
    Allow,
    /// Deny matching traffic; evaluated before ALLOW.
    Deny,
    /// Record matching traffic; never changes the decision.
    Audit,
    /// Delegate to an external authorizer (not supported by Ambit proxies: fails closed).
    Custom,
}

/// The `spec` of an AuthorizationPolicy, field for field as in Istio.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationPolicySpec {
    /// Workloads the policy applies to (enforced by ztunnel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// Deprecated single form of `targetRefs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    /// Gateways or Services the policy applies to (enforced by the waypoint).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    /// The action; ALLOW when omitted.
    #[serde(default)]
    pub action: Action,
    /// The external authorizer of a CUSTOM policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<ExtensionProvider>,
    /// The rules; a policy matches when any rule matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleSpec>,
}

/// A `targetRefs` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyTargetReference {
    /// API group of the target (`gateway.networking.k8s.io`, or empty for core Services).
    #[serde(default)]
    pub group: String,
    /// Kind of the target (`Gateway`, `Service`, `ServiceEntry`, `GatewayClass`).
    pub kind: String,
    /// Name of the target.
    pub name: String,
    /// Namespace of the target; the policy's own when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// `provider` of a CUSTOM policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtensionProvider {
    /// The extension provider's name in the mesh config.
    pub name: String,
}

/// One rule: `from` AND `to` AND `when`; an empty rule matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleSpec {
    /// Sources; any may match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<FromSpec>,
    /// Operations; any may match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<ToSpec>,
    /// Conditions; all must match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<ConditionSpec>,
}

/// A `from` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FromSpec {
    /// Required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceSpec>,
}

/// A `to` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ToSpec {
    /// Required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<OperationSpec>,
}

/// `source`: every field present must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SourceSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub principals: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_principals: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_principals: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_request_principals: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_namespaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_blocks: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ip_blocks: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_ip_blocks: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_remote_ip_blocks: Vec<String>,
}

/// `operation`: every field present must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OperationSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ports: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_paths: Vec<String>,
}

/// A `when` condition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConditionSpec {
    /// The attribute, e.g. `source.ip` or `request.headers[x-user]`.
    pub key: String,
    /// Any may match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    /// None may match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_values: Vec<String>,
}

/// Where a policy applies, independent of the root namespace (see
/// [`AuthorizationPolicy::is_mesh_wide`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyScope {
    /// No selector and no targetRefs: every workload of the namespace (of every namespace when
    /// the policy lives in the root namespace).
    Namespace,
    /// Workloads whose labels match (in every namespace when the policy lives in the root
    /// namespace). Enforced by ztunnel.
    Selector(WorkloadSelector),
    /// Gateways/Services; enforced by waypoints, never by ztunnel.
    TargetRefs(Vec<PolicyTargetReference>),
}

/// A validated rule: `from` AND `to` AND `when`. Empty lists impose no condition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rule {
    /// Any source may match.
    pub from: Vec<Source>,
    /// Any operation may match.
    pub to: Vec<Operation>,
    /// All conditions must match.
    pub when: Vec<Condition>,
}

/// A validated `source`. Positive lists: any value may match; `not_*`: none may match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Source {
    pub principals: Vec<StringMatch>,
    pub not_principals: Vec<StringMatch>,
    pub request_principals: Vec<StringMatch>,
    pub not_request_principals: Vec<StringMatch>,
    pub namespaces: Vec<StringMatch>,
    pub not_namespaces: Vec<StringMatch>,
    pub ip_blocks: Vec<IpNet>,
    pub not_ip_blocks: Vec<IpNet>,
    pub remote_ip_blocks: Vec<IpNet>,
    pub not_remote_ip_blocks: Vec<IpNet>,
}

/// A validated `operation`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Operation {
    pub hosts: Vec<StringMatch>,
    pub not_hosts: Vec<StringMatch>,
    pub ports: Vec<u16>,
    pub not_ports: Vec<u16>,
    pub methods: Vec<StringMatch>,
    pub not_methods: Vec<StringMatch>,
    pub paths: Vec<StringMatch>,
    pub not_paths: Vec<StringMatch>,
}

/// A validated `when` condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// The attribute.
    pub key: ConditionKey,
    /// Any may match (empty: no positive condition).
    pub values: ConditionValues,
    /// None may match (empty: no negative condition).
    pub not_values: ConditionValues,
}

/// The attributes Istio allows in `when`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConditionKey {
    /// `source.ip`: the peer address of the connection.
    SourceIp,
    /// `source.namespace`: from the peer's identity.
    SourceNamespace,
    /// `source.principal`: the peer's identity without `spiffe://`.
    SourcePrincipal,
    /// `destination.ip`.
    DestinationIp,
    /// `destination.port`.
    DestinationPort,
    /// `connection.sni`: the TLS SNI of the application's own TLS.
    ConnectionSni,
    /// `remote.ip`: the original client address (from `X-Forwarded-For` or PROXY protocol).
    RemoteIp,
    /// `request.headers[<name>]`, name lowercased.
    RequestHeader(String),
    /// `request.auth.principal`: `iss/sub` of a validated JWT.
    RequestAuthPrincipal,
    /// `request.auth.audiences`.
    RequestAuthAudiences,
    /// `request.auth.presenter`.
    RequestAuthPresenter,
    /// `request.auth.claims[a][b]…`: the path into the JWT claims.
    RequestAuthClaims(Vec<String>),
}

/// Parsed `values`/`notValues` of a condition; the type follows from the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConditionValues {
    /// For `source.ip`, `destination.ip`, `remote.ip`.
    Ips(Vec<IpNet>),
    /// For `destination.port`.
    Ports(Vec<u16>),
    /// For every other key.
    Strings(Vec<StringMatch>),
}

/// A validated AuthorizationPolicy. Built with [`AuthorizationPolicy::new`]; serializes as
/// `{name, namespace, spec}` with the spec exactly as given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "AuthorizationPolicyRepr", into = "AuthorizationPolicyRepr")]
pub struct AuthorizationPolicy {
    name: String,
    namespace: String,
    spec: AuthorizationPolicySpec,
    scope: PolicyScope,
    rules: Vec<Rule>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AuthorizationPolicyRepr {
    name: String,
    namespace: String,
    #[serde(default)]
    spec: AuthorizationPolicySpec,
}

impl AuthorizationPolicy {
    /// Validates the policy and parses its rules.
    pub fn new(
        name: impl Into<String>,
        namespace: impl Into<String>,
        spec: AuthorizationPolicySpec,
    ) -> Result<Self, ModelError> {
        let (name, namespace) = (name.into(), namespace.into());
        let ctx = ErrorContext {
            kind: KIND,
            namespace: &namespace,
            name: &name,
        };
        ctx.check_metadata()?;
        let scope = parse_scope(&ctx, &spec)?;
        match (spec.action, &spec.provider) {
            (Action::Custom, None) => {
                return Err(ctx.err("spec.provider", "a CUSTOM policy needs a provider"));
            }
            (Action::Custom, Some(provider)) if provider.name.is_empty() => {
                return Err(ctx.err("spec.provider.name", "must not be empty"));
            }
            (Action::Allow | Action::Deny | Action::Audit, Some(_)) => {
                return Err(ctx.err("spec.provider", "is only allowed with action CUSTOM"));
            }
            _ => {}
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
            scope,
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
    pub fn spec(&self) -> &AuthorizationPolicySpec {
        &self.spec
    }

    /// The action.
    pub fn action(&self) -> Action {
        self.spec.action
    }

    /// Where the policy applies.
    pub fn scope(&self) -> &PolicyScope {
        &self.scope
    }

    /// Whether this is a mesh-wide policy: in the root namespace, without selector or targetRefs.
    pub fn is_mesh_wide(&self, root_namespace: &str) -> bool {
        self.scope == PolicyScope::Namespace && self.namespace == root_namespace
    }

    /// The parsed rules; none means the policy matches nothing.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }
}

impl TryFrom<AuthorizationPolicyRepr> for AuthorizationPolicy {
    type Error = ModelError;

    fn try_from(repr: AuthorizationPolicyRepr) -> Result<Self, Self::Error> {
        Self::new(repr.name, repr.namespace, repr.spec)
    }
}

impl From<AuthorizationPolicy> for AuthorizationPolicyRepr {
    fn from(policy: AuthorizationPolicy) -> Self {
        Self {
            name: policy.name,
            namespace: policy.namespace,
            spec: policy.spec,
        }
    }
}

impl ConditionKey {
    /// Parses a `when` key; unknown keys are refused.
    pub fn parse(key: &str) -> Result<Self, String> {
        let simple = match key {
            "source.ip" => Some(Self::SourceIp),
            "source.namespace" => Some(Self::SourceNamespace),
            "source.principal" => Some(Self::SourcePrincipal),
            "destination.ip" => Some(Self::DestinationIp),
            "destination.port" => Some(Self::DestinationPort),
            "connection.sni" => Some(Self::ConnectionSni),
            "remote.ip" => Some(Self::RemoteIp),
            "request.auth.principal" => Some(Self::RequestAuthPrincipal),
            "request.auth.audiences" => Some(Self::RequestAuthAudiences),
            "request.auth.presenter" => Some(Self::RequestAuthPresenter),
            _ => None,
        };
        if let Some(simple) = simple {
            return Ok(simple);
        }
        if let Some(rest) = key.strip_prefix("request.headers") {
            let names = bracketed(rest).ok_or_else(|| {
                format!("{key:?} must be of the form request.headers[<header name>]")
            })?;
            return match names.as_slice() {
                [name] => Ok(Self::RequestHeader(name.to_ascii_lowercase())),
                _ => Err(format!("{key:?} must name exactly one header")),
            };
        }
        if let Some(rest) = key.strip_prefix("request.auth.claims") {
            let path = bracketed(rest).ok_or_else(|| {
                format!("{key:?} must be of the form request.auth.claims[<claim>][<nested>]…")
            })?;
            return Ok(Self::RequestAuthClaims(path));
        }
        Err(format!("unknown condition key {key:?}"))
    }

    fn values_kind(&self) -> ValuesKind {
        match self {
            Self::SourceIp | Self::DestinationIp | Self::RemoteIp => ValuesKind::Ips,
            Self::DestinationPort => ValuesKind::Ports,
            _ => ValuesKind::Strings,
        }
    }
}

impl ConditionValues {
    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        match self {
            Self::Ips(v) => v.is_empty(),
            Self::Ports(v) => v.is_empty(),
            Self::Strings(v) => v.is_empty(),
        }
    }
}

enum ValuesKind {
    Ips,
    Ports,
    Strings,
}

/// `[a][b]` → `["a", "b"]`; `None` unless it is one or more non-empty bracketed parts.
fn bracketed(mut rest: &str) -> Option<Vec<String>> {
    let mut parts = Vec::new();
    while !rest.is_empty() {
        let inner = rest.strip_prefix('[')?;
        let close = inner.find(']')?;
        let part = &inner[..close];
        if part.is_empty() || part.contains('[') {
            return None;
        }
        parts.push(part.to_owned());
        rest = &inner[close + 1..];
    }
    (!parts.is_empty()).then_some(parts)
}

fn parse_scope(
    ctx: &ErrorContext<'_>,
    spec: &AuthorizationPolicySpec,
) -> Result<PolicyScope, ModelError> {
    if spec.target_ref.is_some() && !spec.target_refs.is_empty() {
        return Err(ctx.err("spec.targetRef", "cannot be combined with spec.targetRefs"));
    }
    let targets: Vec<PolicyTargetReference> = match &spec.target_ref {
        Some(target) => vec![target.clone()],
        None => spec.target_refs.clone(),
    };
    let field = if spec.target_ref.is_some() {
        "spec.targetRef"
    } else {
        "spec.targetRefs"
    };
    for (i, target) in targets.iter().enumerate() {
        if target.kind.is_empty() {
            return Err(ctx.err(format!("{field}[{i}].kind"), "must not be empty"));
        }
        if target.name.is_empty() {
            return Err(ctx.err(format!("{field}[{i}].name"), "must not be empty"));
        }
    }
    let selector = spec.selector.as_ref().filter(|s| !s.is_empty());
    match (selector, targets.is_empty()) {
        (Some(_), false) => {
            Err(ctx.err("spec.selector", format!("cannot be combined with {field}")))
        }
        (Some(selector), true) => Ok(PolicyScope::Selector(selector.clone())),
        (None, false) => Ok(PolicyScope::TargetRefs(targets)),
        // Istio treats an empty `matchLabels` like no selector at all.
        (None, true) => Ok(PolicyScope::Namespace),
    }
}

fn parse_rule(ctx: &ErrorContext<'_>, path: &str, rule: &RuleSpec) -> Result<Rule, ModelError> {
    let from = rule
        .from
        .iter()
        .enumerate()
        .map(|(i, from)| {
            let path = format!("{path}.from[{i}].source");
            let source = from
                .source
                .as_ref()
                .ok_or_else(|| ctx.err(&path, "must be set"))?;
            parse_source(ctx, &path, source)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let to = rule
        .to
        .iter()
        .enumerate()
        .map(|(i, to)| {
            let path = format!("{path}.to[{i}].operation");
            let operation = to
                .operation
                .as_ref()
                .ok_or_else(|| ctx.err(&path, "must be set"))?;
            parse_operation(ctx, &path, operation)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let when = rule
        .when
        .iter()
        .enumerate()
        .map(|(i, condition)| parse_condition(ctx, &format!("{path}.when[{i}]"), condition))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Rule { from, to, when })
}

fn parse_source(ctx: &ErrorContext<'_>, path: &str, s: &SourceSpec) -> Result<Source, ModelError> {
    let source = Source {
        principals: principals(ctx, path, "principals", &s.principals)?,
        not_principals: principals(ctx, path, "notPrincipals", &s.not_principals)?,
        request_principals: patterns(ctx, path, "requestPrincipals", &s.request_principals)?,
        not_request_principals: patterns(
            ctx,
            path,
            "notRequestPrincipals",
            &s.not_request_principals,
        )?,
        namespaces: patterns(ctx, path, "namespaces", &s.namespaces)?,
        not_namespaces: patterns(ctx, path, "notNamespaces", &s.not_namespaces)?,
        ip_blocks: ip_blocks(ctx, path, "ipBlocks", &s.ip_blocks)?,
        not_ip_blocks: ip_blocks(ctx, path, "notIpBlocks", &s.not_ip_blocks)?,
        remote_ip_blocks: ip_blocks(ctx, path, "remoteIpBlocks", &s.remote_ip_blocks)?,
        not_remote_ip_blocks: ip_blocks(ctx, path, "notRemoteIpBlocks", &s.not_remote_ip_blocks)?,
    };
    if source == Source::default() {
        return Err(ctx.err(path, "must set at least one field"));
    }
    Ok(source)
}

fn parse_operation(
    ctx: &ErrorContext<'_>,
    path: &str,
    o: &OperationSpec,
) -> Result<Operation, ModelError> {
    let operation = Operation {
        hosts: patterns(ctx, path, "hosts", &o.hosts)?,
        not_hosts: patterns(ctx, path, "notHosts", &o.not_hosts)?,
        ports: ports(ctx, path, "ports", &o.ports)?,
        not_ports: ports(ctx, path, "notPorts", &o.not_ports)?,
        methods: patterns(ctx, path, "methods", &o.methods)?,
        not_methods: patterns(ctx, path, "notMethods", &o.not_methods)?,
        paths: patterns(ctx, path, "paths", &o.paths)?,
        not_paths: patterns(ctx, path, "notPaths", &o.not_paths)?,
    };
    if operation == Operation::default() {
        return Err(ctx.err(path, "must set at least one field"));
    }
    Ok(operation)
}

fn parse_condition(
    ctx: &ErrorContext<'_>,
    path: &str,
    c: &ConditionSpec,
) -> Result<Condition, ModelError> {
    if c.key.is_empty() {
        return Err(ctx.err(format!("{path}.key"), "must not be empty"));
    }
    let key =
        ConditionKey::parse(&c.key).map_err(|reason| ctx.err(format!("{path}.key"), reason))?;
    if c.values.is_empty() && c.not_values.is_empty() {
        return Err(ctx.err(path, "needs values or notValues"));
    }
    let parse = |field: &str, raw: &[String]| -> Result<ConditionValues, ModelError> {
        Ok(match key.values_kind() {
            ValuesKind::Ips => ConditionValues::Ips(ip_blocks(ctx, path, field, raw)?),
            ValuesKind::Ports => ConditionValues::Ports(ports(ctx, path, field, raw)?),
            ValuesKind::Strings if key == ConditionKey::SourcePrincipal => {
                ConditionValues::Strings(principals(ctx, path, field, raw)?)
            }
            ValuesKind::Strings => ConditionValues::Strings(patterns(ctx, path, field, raw)?),
        })
    };
    let values = parse("values", &c.values)?;
    let not_values = parse("notValues", &c.not_values)?;
    Ok(Condition {
        key,
        values,
        not_values,
    })
}

fn each<T>(
    ctx: &ErrorContext<'_>,
    path: &str,
    field: &str,
    raw: &[String],
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Vec<T>, ModelError> {
    raw.iter()
        .enumerate()
        .map(|(i, value)| {
            parse(value).map_err(|reason| ctx.err(format!("{path}.{field}[{i}]"), reason))
        })
        .collect()
}

fn patterns(
    ctx: &ErrorContext<'_>,
    path: &str,
    field: &str,
    raw: &[String],
) -> Result<Vec<StringMatch>, ModelError> {
    each(ctx, path, field, raw, |v| {
        StringMatch::parse(v).map_err(|e| e.to_string())
    })
}

/// Principals are written without `spiffe://` in Istio; a value with it would silently never
/// match, which turns a DENY into nothing, so it is refused.
fn principals(
    ctx: &ErrorContext<'_>,
    path: &str,
    field: &str,
    raw: &[String],
) -> Result<Vec<StringMatch>, ModelError> {
    each(ctx, path, field, raw, |v| {
        if v.starts_with("spiffe://") {
            return Err(format!(
                "{v:?}: principals are written without \"spiffe://\" (e.g. cluster.local/ns/default/sa/sleep)"
            ));
        }
        StringMatch::parse(v).map_err(|e| e.to_string())
    })
}

fn ip_blocks(
    ctx: &ErrorContext<'_>,
    path: &str,
    field: &str,
    raw: &[String],
) -> Result<Vec<IpNet>, ModelError> {
    each(ctx, path, field, raw, |v| {
        parse_ip_block(v).map_err(|e| e.to_string())
    })
}

fn ports(
    ctx: &ErrorContext<'_>,
    path: &str,
    field: &str,
    raw: &[String],
) -> Result<Vec<u16>, ModelError> {
    each(ctx, path, field, raw, |v| {
        parse_port(v).map_err(|e| e.to_string())
    })
}
