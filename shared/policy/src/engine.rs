//! Which policies apply, and how their matches combine into a decision.

use ambit_model::{Action, AuthorizationPolicy, DEFAULT_ROOT_NAMESPACE, PolicyScope, Workload};

use crate::attributes::{Connection, RequestAttributes};
use crate::decision::{Decision, Reason, Verdict};
use crate::matcher::{Attributes, RuleMatch, match_rule};

/// Evaluates policies for the workloads of one mesh; knows the mesh's root namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorizer {
    root_namespace: String,
}

impl Authorizer {
    /// An authorizer whose mesh-wide policies live in `root_namespace`.
    pub fn new(root_namespace: impl Into<String>) -> Self {
        Self {
            root_namespace: root_namespace.into(),
        }
    }

    /// The root namespace.
    pub fn root_namespace(&self) -> &str {
        &self.root_namespace
    }

    /// Whether ztunnel enforces `policy` for `workload`: mesh-wide (root namespace, no
    /// selector), namespace-wide (same namespace, no selector), or a selector matching the
    /// workload's labels, from the workload's namespace or the root namespace. Policies with
    /// `targetRefs` belong to waypoints and never apply here.
    pub fn applies_to(&self, policy: &AuthorizationPolicy, workload: &Workload) -> bool {
        let in_scope_namespace =
            policy.namespace() == workload.namespace() || policy.namespace() == self.root_namespace;
        match policy.scope() {
            PolicyScope::Namespace => in_scope_namespace,
            PolicyScope::Selector(selector) => {
                in_scope_namespace && selector.matches(workload.labels())
            }
            PolicyScope::TargetRefs(_) => false,
        }
    }

    /// The L4 decision for `connection` into `workload`, from all `policies` of the mesh
    /// (those that do not apply to the workload are skipped).
    pub fn evaluate_l4<'p>(
        &self,
        policies: impl IntoIterator<Item = &'p AuthorizationPolicy>,
        workload: &Workload,
        connection: &Connection,
    ) -> Decision {
        let applicable = policies
            .into_iter()
            .filter(|policy| self.applies_to(policy, workload));
        evaluate(applicable, connection, None)
    }
}

impl Default for Authorizer {
    fn default() -> Self {
        Self::new(DEFAULT_ROOT_NAMESPACE)
    }
}

/// [`Authorizer::evaluate_l4`] with the default root namespace, `istio-system`.
pub fn evaluate_l4<'p>(
    policies: impl IntoIterator<Item = &'p AuthorizationPolicy>,
    workload: &Workload,
    connection: &Connection,
) -> Decision {
    Authorizer::default().evaluate_l4(policies, workload, connection)
}

/// Combines already-selected `policies` into a decision. `request` is `None` at ztunnel; a
/// waypoint passes the request's attributes.
pub fn evaluate<'p>(
    policies: impl IntoIterator<Item = &'p AuthorizationPolicy>,
    connection: &Connection,
    request: Option<&dyn RequestAttributes>,
) -> Decision {
    let attrs = Attributes::new(connection, request);
    let mut custom = None;
    let mut deny = None;
    let mut allow = None;
    let mut any_allow = false;
    let mut audit = None;
    for policy in policies {
        match policy.action() {
            Action::Custom if custom.is_none() && policy_matches(policy, &attrs) => {
                custom = Some(policy)
            }
            Action::Deny if deny.is_none() && policy_matches(policy, &attrs) => deny = Some(policy),
            Action::Allow => {
                any_allow = true;
                if allow.is_none() && policy_matches(policy, &attrs) {
                    allow = Some(policy);
                }
            }
            Action::Audit if audit.is_none() && policy_matches(policy, &attrs) => {
                audit = Some(policy)
            }
            _ => {}
        }
    }
    let (verdict, reason, decider) = if let Some(policy) = custom {
        (Verdict::Deny, Reason::CustomUnsupported, Some(policy))
    } else if let Some(policy) = deny {
        (Verdict::Deny, Reason::DenyPolicyMatched, Some(policy))
    } else if let Some(policy) = allow {
        (Verdict::Allow, Reason::AllowPolicyMatched, Some(policy))
    } else if any_allow {
        (Verdict::Deny, Reason::NoAllowPolicyMatched, None)
    } else {
        (Verdict::Allow, Reason::NoAllowPolicy, None)
    };
    Decision::new(verdict, reason, decider, audit)
}

/// Whether any rule of `policy` matches; an unevaluable rule counts as a match for every action
/// except ALLOW, so what cannot be checked is denied rather than allowed.
fn policy_matches(policy: &AuthorizationPolicy, attrs: &Attributes<'_>) -> bool {
    let indeterminate_matches = policy.action() != Action::Allow;
    policy
        .rules()
        .iter()
        .any(|rule| match match_rule(rule, attrs) {
            RuleMatch::Match => true,
            RuleMatch::NoMatch => false,
            RuleMatch::Indeterminate => indeterminate_matches,
        })
}
