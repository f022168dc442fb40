//! The outcome of an authorization check, with what decided it (for access logs and metrics).

use std::fmt;

use ambit_model::AuthorizationPolicy;

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// The connection or request may proceed.
    Allow,
    /// It must be refused.
    Deny,
}

/// Why the verdict was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// No ALLOW policy applies and nothing denied.
    NoAllowPolicy,
    /// An ALLOW policy matched ([`Decision::policy`] names it).
    AllowPolicyMatched,
    /// ALLOW policies apply but none matched.
    NoAllowPolicyMatched,
    /// A DENY policy matched ([`Decision::policy`] names it).
    DenyPolicyMatched,
    /// A CUSTOM policy matched; Ambit cannot consult external authorizers, so it fails closed.
    CustomUnsupported,
}

/// `namespace/name` of a policy.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PolicyRef {
    /// The policy namespace.
    pub namespace: String,
    /// The policy name.
    pub name: String,
}

/// The decision for one connection or request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    verdict: Verdict,
    reason: Reason,
    policy: Option<PolicyRef>,
    audit: Option<PolicyRef>,
}

impl Decision {
    pub(crate) fn new(
        verdict: Verdict,
        reason: Reason,
        policy: Option<&AuthorizationPolicy>,
        audit: Option<&AuthorizationPolicy>,
    ) -> Self {
        Self {
            verdict,
            reason,
            policy: policy.map(PolicyRef::from),
            audit: audit.map(PolicyRef::from),
        }
    }

    /// Allow or deny.
    pub fn verdict(&self) -> Verdict {
        self.verdict
    }

    /// Whether the connection or request may proceed.
    pub fn is_allowed(&self) -> bool {
        self.verdict == Verdict::Allow
    }

    /// Whether it must be refused.
    pub fn is_denied(&self) -> bool {
        self.verdict == Verdict::Deny
    }

    /// Why.
    pub fn reason(&self) -> Reason {
        self.reason
    }

    /// The policy that decided, when a single one did.
    pub fn policy(&self) -> Option<&PolicyRef> {
        self.policy.as_ref()
    }

    /// The first AUDIT policy that matched, if any.
    pub fn audit_policy(&self) -> Option<&PolicyRef> {
        self.audit.as_ref()
    }

    /// Whether an AUDIT policy matched.
    pub fn is_audited(&self) -> bool {
        self.audit.is_some()
    }
}

impl From<&AuthorizationPolicy> for PolicyRef {
    fn from(policy: &AuthorizationPolicy) -> Self {
        Self {
            namespace: policy.namespace().to_owned(),
            name: policy.name().to_owned(),
        }
    }
}

impl fmt::Display for PolicyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}
