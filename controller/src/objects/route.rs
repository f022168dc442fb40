//! `gateway.networking.k8s.io/v1` HTTPRoute. The spec type is the model's
//! ([`ambit_model::route::HttpRouteSpec`]), which refuses the fields and filters a waypoint does not
//! implement, so an unsupported route is reported instead of half-applied.

use ambit_model::ModelError;
use ambit_model::route::HttpRouteSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

/// A Gateway API HTTPRoute object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRoute {
    /// `gateway.networking.k8s.io/v1` (or `v1beta1`).
    pub api_version: String,
    /// `HTTPRoute`.
    pub kind: String,
    /// The metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The spec.
    #[serde(default)]
    pub spec: HttpRouteSpec,
    /// Written by the controller; ignored on input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

impl HttpRoute {
    /// Builds the model route, which validates every field.
    pub fn to_model(&self) -> Result<ambit_model::HttpRoute, ModelError> {
        ambit_model::HttpRoute::new(
            self.metadata.name.clone().unwrap_or_default(),
            self.metadata.namespace.clone().unwrap_or_default(),
            self.spec.clone(),
        )
    }
}
