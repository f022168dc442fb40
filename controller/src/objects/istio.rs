//! `security.istio.io/v1` objects as users write them. The `spec` types are the model's, which
//! mirror Istio's schema field for field and refuse unknown fields (Istio's schema is closed).

use ambit_model::{AuthorizationPolicySpec, ModelError, PeerAuthenticationSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

/// A `security.istio.io/v1` AuthorizationPolicy object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationPolicy {
    /// `security.istio.io/v1` (or `v1beta1`).
    pub api_version: String,
    /// `AuthorizationPolicy`.
    pub kind: String,
    /// The metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The spec; an empty spec is valid (an ALLOW policy that matches nothing).
    #[serde(default)]
    pub spec: AuthorizationPolicySpec,
    /// Written by the controller; ignored on input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

/// A `security.istio.io/v1` PeerAuthentication object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerAuthentication {
    /// `security.istio.io/v1` (or `v1beta1`).
    pub api_version: String,
    /// `PeerAuthentication`.
    pub kind: String,
    /// The metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The spec.
    #[serde(default)]
    pub spec: PeerAuthenticationSpec,
    /// Written by the controller; ignored on input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

impl AuthorizationPolicy {
    /// Builds the model policy, which validates every field.
    pub fn to_model(&self) -> Result<ambit_model::AuthorizationPolicy, ModelError> {
        ambit_model::AuthorizationPolicy::new(
            self.metadata.name.clone().unwrap_or_default(),
            self.metadata.namespace.clone().unwrap_or_default(),
            self.spec.clone(),
        )
    }
}

impl PeerAuthentication {
    /// Builds the model policy, which validates every field.
    pub fn to_model(&self) -> Result<ambit_model::PeerAuthentication, ModelError> {
        ambit_model::PeerAuthentication::new(
            self.metadata.name.clone().unwrap_or_default(),
            self.metadata.namespace.clone().unwrap_or_default(),
            self.spec.clone(),
        )
    }
}
