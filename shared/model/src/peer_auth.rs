//! `security.istio.io/v1` PeerAuthentication and the resolution of the effective mTLS mode of a
//! workload port.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{ErrorContext, ModelError};
use crate::labels::WorkloadSelector;
use crate::workload::Workload;

const KIND: &str = "PeerAuthentication";

/// Whether plaintext is accepted into a workload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    /// Inherit from the next broader level.
    #[default]
    Unset,
    /// Plaintext only, in sidecar Istio. Ambient always tunnels in mTLS, so ztunnel treats it
    /// like PERMISSIVE; the model keeps it so the choice is visible in config dumps.
    Disable,
    /// mTLS and plaintext accepted.
    Permissive,
    /// Only mTLS accepted.
    Strict,
}

/// `mtls` / `portLevelMtls` entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerMtls {
    /// The mode; UNSET when omitted.
    #[serde(default)]
    pub mode: MtlsMode,
}

/// The `spec` of a PeerAuthentication, field for field as in Istio.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerAuthenticationSpec {
    /// Workloads the policy applies to; none means the whole namespace (the whole mesh in the
    /// root namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// The mode for the selected workloads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<PeerMtls>,
    /// Per target (container) port modes; only allowed with a selector, as in Istio.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub port_level_mtls: BTreeMap<u16, PeerMtls>,
}

/// A validated PeerAuthentication; serializes as `{name, namespace, spec}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "PeerAuthenticationRepr", into = "PeerAuthenticationRepr")]
pub struct PeerAuthentication {
    name: String,
    namespace: String,
    spec: PeerAuthenticationSpec,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PeerAuthenticationRepr {
    name: String,
    namespace: String,
    #[serde(default)]
    spec: PeerAuthenticationSpec,
}

impl PeerAuthentication {
    /// Validates the policy.
    pub fn new(
        name: impl Into<String>,
        namespace: impl Into<String>,
        spec: PeerAuthenticationSpec,
    ) -> Result<Self, ModelError> {
        let (name, namespace) = (name.into(), namespace.into());
        let ctx = ErrorContext {
            kind: KIND,
            namespace: &namespace,
            name: &name,
        };
        ctx.check_metadata()?;
        if !spec.port_level_mtls.is_empty() && !has_selector(&spec) {
            return Err(ctx.err(
                "spec.portLevelMtls",
                "port-level modes need a workload selector",
            ));
        }
        if spec.port_level_mtls.contains_key(&0) {
            return Err(ctx.err("spec.portLevelMtls[0]", "port must be 1 to 65535"));
        }
        Ok(Self {
            name,
            namespace,
            spec,
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
    pub fn spec(&self) -> &PeerAuthenticationSpec {
        &self.spec
    }

    /// The policy-level mode (UNSET when `mtls` is omitted).
    pub fn mode(&self) -> MtlsMode {
        self.spec.mtls.map(|m| m.mode).unwrap_or_default()
    }

    /// The mode set for `port`, UNSET if none.
    pub fn port_mode(&self, port: u16) -> MtlsMode {
        self.spec
            .port_level_mtls
            .get(&port)
            .map(|m| m.mode)
            .unwrap_or_default()
    }

    /// Whether the policy has a non-empty workload selector.
    pub fn has_selector(&self) -> bool {
        has_selector(&self.spec)
    }
}

impl TryFrom<PeerAuthenticationRepr> for PeerAuthentication {
    type Error = ModelError;

    fn try_from(repr: PeerAuthenticationRepr) -> Result<Self, Self::Error> {
        Self::new(repr.name, repr.namespace, repr.spec)
    }
}

impl From<PeerAuthentication> for PeerAuthenticationRepr {
    fn from(policy: PeerAuthentication) -> Self {
        Self {
            name: policy.name,
            namespace: policy.namespace,
            spec: policy.spec,
        }
    }
}

fn has_selector(spec: &PeerAuthenticationSpec) -> bool {
    spec.selector.as_ref().is_some_and(|s| !s.is_empty())
}

/// The mTLS mode in force for connections to `port` (the workload's target port) of `workload`.
///
/// Istio precedence, most specific first, an UNSET level inheriting from the next: port-level of
/// a workload policy > workload policy > namespace policy > mesh policy (root namespace, no
/// selector) > PERMISSIVE. Never returns UNSET. A workload policy selects by labels within the
/// workload's own namespace. Where Istio picks the oldest of several policies at one level, the
/// model has no creation time, so the one with the smallest name wins (deterministic).
pub fn effective_mtls_mode<'a>(
    policies: impl IntoIterator<Item = &'a PeerAuthentication>,
    workload: &Workload,
    port: u16,
    root_namespace: &str,
) -> MtlsMode {
    let mut workload_level: Option<&PeerAuthentication> = None;
    let mut namespace_level: Option<&PeerAuthentication> = None;
    let mut mesh_level: Option<&PeerAuthentication> = None;
    let first = |slot: &mut Option<&'a PeerAuthentication>, policy: &'a PeerAuthentication| {
        if slot.is_none_or(|current| policy.name < current.name) {
            *slot = Some(policy);
        }
    };
    for policy in policies {
        if policy.namespace == workload.namespace() {
            match &policy.spec.selector {
                Some(selector) if !selector.is_empty() => {
                    if selector.matches(workload.labels()) {
                        first(&mut workload_level, policy);
                    }
                }
                _ => first(&mut namespace_level, policy),
            }
        }
        if policy.namespace == root_namespace && !policy.has_selector() {
            first(&mut mesh_level, policy);
        }
    }
    let candidates = [
        workload_level.map(|p| p.port_mode(port)),
        workload_level.map(PeerAuthentication::mode),
        namespace_level.map(PeerAuthentication::mode),
        mesh_level.map(PeerAuthentication::mode),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|mode| *mode != MtlsMode::Unset)
        .unwrap_or(MtlsMode::Permissive)
}
