//! Matching one rule against the attributes at hand.
//!
//! A rule is first classified by the attributes it needs ([`Needs`]); if the evaluator lacks
//! one, the rule is [`RuleMatch::Indeterminate`] as a whole and the caller resolves that by the
//! policy's action. Only then are the fields compared, so the comparison code may assume every
//! attribute it reads is available. Adding an L7 attribute means: a field in
//! [`RequestAttributes`], a line in [`needs`], a comparison below.

use std::net::IpAddr;

use ambit_model::StringMatch;
use ambit_model::authz::{Condition, ConditionKey, ConditionValues, Operation, Rule, Source};
use ipnet::IpNet;

use crate::attributes::{Connection, RequestAttributes};

/// The result of matching one rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RuleMatch {
    Match,
    NoMatch,
    /// The rule needs attributes this evaluator does not have.
    Indeterminate,
}

/// Which attributes a rule needs beyond the connection's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Needs {
    /// Request attributes (a waypoint has them, ztunnel does not).
    request: bool,
    /// Attributes Ambit never evaluates (`connection.sni`).
    unsupported: bool,
}

/// What the evaluator knows.
pub(crate) struct Attributes<'a> {
    pub(crate) connection: &'a Connection,
    pub(crate) principal: Option<String>,
    pub(crate) request: Option<&'a dyn RequestAttributes>,
}

impl<'a> Attributes<'a> {
    pub(crate) fn new(
        connection: &'a Connection,
        request: Option<&'a dyn RequestAttributes>,
    ) -> Self {
        Self {
            connection,
            principal: connection.principal(),
            request,
        }
    }
}

pub(crate) fn match_rule(rule: &Rule, attrs: &Attributes<'_>) -> RuleMatch {
    let needs = needs(rule);
    if needs.unsupported || (needs.request && attrs.request.is_none()) {
        return RuleMatch::Indeterminate;
    }
    let from = rule.from.is_empty() || rule.from.iter().any(|s| match_source(s, attrs));
    let to = rule.to.is_empty() || rule.to.iter().any(|o| match_operation(o, attrs));
    let when = rule.when.iter().all(|c| match_condition(c, attrs));
    if from && to && when {
        RuleMatch::Match
    } else {
        RuleMatch::NoMatch
    }
}

fn needs(rule: &Rule) -> Needs {
    let mut needs = Needs::default();
    for s in &rule.from {
        needs.request |= !(s.request_principals.is_empty()
            && s.not_request_principals.is_empty()
            && s.remote_ip_blocks.is_empty()
            && s.not_remote_ip_blocks.is_empty());
    }
    for o in &rule.to {
        needs.request |= !(o.hosts.is_empty()
            && o.not_hosts.is_empty()
            && o.methods.is_empty()
            && o.not_methods.is_empty()
            && o.paths.is_empty()
            && o.not_paths.is_empty());
    }
    for c in &rule.when {
        match c.key {
            ConditionKey::SourceIp
            | ConditionKey::SourceNamespace
            | ConditionKey::SourcePrincipal
            | ConditionKey::DestinationIp
            | ConditionKey::DestinationPort => {}
            ConditionKey::RemoteIp
            | ConditionKey::RequestHeader(_)
            | ConditionKey::RequestAuthPrincipal
            | ConditionKey::RequestAuthAudiences
            | ConditionKey::RequestAuthPresenter
            | ConditionKey::RequestAuthClaims(_) => needs.request = true,
            // Everything else, including keys added to the model later: never evaluable here.
            _ => needs.unsupported = true,
        }
    }
    needs
}

/// Istio's per-field rule: the positive list (if any) must contain a match, the negative list
/// must contain none.
fn field<T>(positive: &[T], negative: &[T], matches: impl Fn(&T) -> bool) -> bool {
    (positive.is_empty() || positive.iter().any(&matches)) && !negative.iter().any(&matches)
}

fn string_field(positive: &[StringMatch], negative: &[StringMatch], value: Option<&str>) -> bool {
    // An absent value matches no pattern: positive lists fail, negative lists pass.
    let value = value.unwrap_or("");
    field(positive, negative, |m| m.matches(value))
}

fn ip_field(positive: &[IpNet], negative: &[IpNet], ip: IpAddr) -> bool {
    field(positive, negative, |net| net.contains(&ip))
}

fn match_source(s: &Source, attrs: &Attributes<'_>) -> bool {
    let conn = attrs.connection;
    let request = attrs.request;
    string_field(&s.principals, &s.not_principals, attrs.principal.as_deref())
        && string_field(&s.namespaces, &s.not_namespaces, conn.source_namespace())
        && ip_field(&s.ip_blocks, &s.not_ip_blocks, conn.source_ip)
        && (no_values(&s.request_principals, &s.not_request_principals)
            || request.is_some_and(|r| {
                string_field(
                    &s.request_principals,
                    &s.not_request_principals,
                    r.request_principal(),
                )
            }))
        && (no_values(&s.remote_ip_blocks, &s.not_remote_ip_blocks)
            || request.is_some_and(|r| {
                ip_field(&s.remote_ip_blocks, &s.not_remote_ip_blocks, r.remote_ip())
            }))
}

fn match_operation(o: &Operation, attrs: &Attributes<'_>) -> bool {
    let port = attrs.connection.destination_port;
    let l4 = field(&o.ports, &o.not_ports, |p| *p == port);
    let l7_free = no_values(&o.hosts, &o.not_hosts)
        && no_values(&o.methods, &o.not_methods)
        && no_values(&o.paths, &o.not_paths);
    l4 && (l7_free
        || attrs.request.is_some_and(|r| {
            let host = r.host();
            field(&o.hosts, &o.not_hosts, |m| m.matches_ignore_case(host))
                && string_field(&o.methods, &o.not_methods, Some(r.method()))
                && string_field(&o.paths, &o.not_paths, Some(r.path()))
        }))
}

fn match_condition(c: &Condition, attrs: &Attributes<'_>) -> bool {
    let conn = attrs.connection;
    let request = attrs.request;
    let ip = |ip: Option<IpAddr>| {
        values_match(&c.values, &c.not_values, |v| match (v, ip) {
            (ConditionValue::Ip(net), Some(ip)) => net.contains(&ip),
            _ => false,
        })
    };
    let string = |value: Option<&str>| {
        values_match(&c.values, &c.not_values, |v| match v {
            ConditionValue::String(m) => m.matches(value.unwrap_or("")),
            _ => false,
        })
    };
    // Multi-valued attributes (audiences, list claims): a value matches if any element does.
    let any_string = |present: Vec<&str>| {
        values_match(&c.values, &c.not_values, |v| match v {
            ConditionValue::String(m) => present.iter().any(|p| m.matches(p)),
            _ => false,
        })
    };
    match &c.key {
        ConditionKey::SourceIp => ip(Some(conn.source_ip)),
        ConditionKey::DestinationIp => ip(Some(conn.destination_ip)),
        ConditionKey::RemoteIp => ip(request.map(|r| r.remote_ip())),
        ConditionKey::DestinationPort => values_match(
            &c.values,
            &c.not_values,
            |v| matches!(v, ConditionValue::Port(p) if p == conn.destination_port),
        ),
        ConditionKey::SourceNamespace => string(conn.source_namespace()),
        ConditionKey::SourcePrincipal => string(attrs.principal.as_deref()),
        ConditionKey::RequestHeader(name) => string(request.and_then(|r| r.header(name))),
        ConditionKey::RequestAuthPrincipal => string(request.and_then(|r| r.request_principal())),
        ConditionKey::RequestAuthPresenter => string(request.and_then(|r| r.request_presenter())),
        ConditionKey::RequestAuthAudiences => {
            any_string(request.map(|r| r.request_audiences()).unwrap_or_default())
        }
        ConditionKey::RequestAuthClaims(path) => {
            any_string(request.map(|r| r.request_claim(path)).unwrap_or_default())
        }
        // Classified as unsupported by `needs`, so never reached; no match is the safe answer.
        _ => false,
    }
}

fn no_values<T>(positive: &[T], negative: &[T]) -> bool {
    positive.is_empty() && negative.is_empty()
}

/// One value of a condition, borrowed from whichever typed list holds it.
enum ConditionValue<'a> {
    Ip(&'a IpNet),
    Port(u16),
    String(&'a StringMatch),
}

fn values_match(
    values: &ConditionValues,
    not_values: &ConditionValues,
    matches: impl Fn(ConditionValue<'_>) -> bool,
) -> bool {
    let any = |list: &ConditionValues| -> bool {
        match list {
            ConditionValues::Ips(v) => v.iter().any(|x| matches(ConditionValue::Ip(x))),
            ConditionValues::Ports(v) => v.iter().any(|x| matches(ConditionValue::Port(*x))),
            ConditionValues::Strings(v) => v.iter().any(|x| matches(ConditionValue::String(x))),
        }
    };
    (values.is_empty() || any(values)) && !any(not_values)
}
