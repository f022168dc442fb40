//! `gateway.networking.k8s.io/v1` Gateway: the fields the mesh reads. Unknown spec fields are
//! accepted (unlike Istio's kinds) because the Gateway API adds fields every release and the
//! API server prunes what a CRD version does not know anyway.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

/// The Gateway class that makes a Gateway an Istio ambient waypoint.
pub const WAYPOINT_GATEWAY_CLASS: &str = "istio-waypoint";

/// A Gateway API Gateway object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Gateway {
    /// `gateway.networking.k8s.io/v1` (or `v1beta1`).
    pub api_version: String,
    /// `Gateway`.
    pub kind: String,
    /// The metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The spec.
    pub spec: GatewaySpec,
    /// The status (addresses are read from it when the spec names none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<GatewayStatus>,
}

/// The Gateway spec.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewaySpec {
    /// `istio-waypoint` for waypoints.
    pub gateway_class_name: String,
    /// The listeners; a waypoint has one named `mesh` on port 15008 with protocol `HBONE`.
    #[serde(default)]
    pub listeners: Vec<Listener>,
    /// Requested addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<GatewayAddress>,
}

/// One listener.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Listener {
    /// The listener name.
    pub name: String,
    /// The port.
    pub port: u16,
    /// The protocol (`HBONE`, `HTTP`, …).
    pub protocol: String,
    /// The hostname the listener matches, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// TLS settings, unparsed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<serde_json::Value>,
    /// Which routes may attach, unparsed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_routes: Option<serde_json::Value>,
}

/// An address in the spec or status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayAddress {
    /// `IPAddress` (the default) or `Hostname`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub address_type: Option<String>,
    /// The address.
    pub value: String,
}

/// The parts of the status the mesh reads.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayStatus {
    /// Addresses assigned to the Gateway.
    #[serde(default)]
    pub addresses: Vec<GatewayAddress>,
}

impl Gateway {
    /// Whether this Gateway is an ambient waypoint.
    pub fn is_waypoint(&self) -> bool {
        self.spec.gateway_class_name == WAYPOINT_GATEWAY_CLASS
    }
}

impl GatewayAddress {
    /// Whether the address is an IP address (the default type).
    pub fn is_ip(&self) -> bool {
        matches!(self.address_type.as_deref(), None | Some("IPAddress"))
    }
}
