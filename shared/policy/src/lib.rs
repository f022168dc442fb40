//! Pure evaluation of Istio AuthorizationPolicy.
//!
//! ztunnel calls [`evaluate_l4`] (or [`Authorizer::evaluate_l4`] with a configured root
//! namespace) for each inbound connection. The waypoint will call [`evaluate`] with the policies
//! attached to it and the [`RequestAttributes`] of each request: the rules and the matcher are
//! the same, only the attributes available differ.
//!
//! Semantics (Istio's):
//! - CUSTOM policies cannot be evaluated by Ambit (no external authorizer): a matching CUSTOM
//!   policy denies (fail closed). Then DENY: any matching DENY policy denies. Then ALLOW: if any
//!   ALLOW policy applies, the connection is allowed only if one matches; with no ALLOW policy
//!   it is allowed. AUDIT never changes the decision; the decision reports the first AUDIT
//!   policy that matched.
//! - A policy without rules matches nothing (an ALLOW one therefore allows nothing); an empty
//!   rule `{}` matches everything.
//! - A rule that needs an attribute the evaluator does not have (an L7 field, including the
//!   JWT's `request.auth.*`, at ztunnel; `connection.sni`, which Ambit never evaluates) cannot be
//!   checked: it never matches for ALLOW and always matches for DENY, CUSTOM and AUDIT
//!   (fail safe).
//! - Plaintext sources have no identity: `principals`, `namespaces` and the `source.principal`
//!   / `source.namespace` conditions never match them, and — as in Istio — their `not*` forms
//!   are therefore satisfied (an absent identity is not in the excluded list). To require mTLS,
//!   use `principals: ["*"]` in an ALLOW rule or `notPrincipals: ["*"]` in a DENY rule.
#![forbid(unsafe_code)]

mod attributes;
mod decision;
mod engine;
mod matcher;

pub use attributes::{Connection, RequestAttributes};
pub use decision::{Decision, PolicyRef, Reason, Verdict};
pub use engine::{Authorizer, evaluate, evaluate_l4};
