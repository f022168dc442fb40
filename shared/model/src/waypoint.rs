//! Waypoints: where traffic bound to one goes, and which traffic a waypoint takes.

use std::net::SocketAddr;

use ambit_identity::SpiffeId;
use serde::{Deserialize, Serialize};

/// A reference to the waypoint a workload or service is bound to: where to send HBONE and which
/// identity the waypoint must present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WaypointRef {
    /// The waypoint's HBONE addresses (`ip:15008`), one per IP family.
    pub addresses: Vec<SocketAddr>,
    /// The identity the waypoint's certificate carries.
    #[serde(with = "crate::identity_serde")]
    pub identity: SpiffeId,
}

/// `istio.io/waypoint-for` on a waypoint Gateway: which traffic the waypoint handles.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WaypointFor {
    /// Traffic addressed to services (the Istio default).
    #[default]
    Service,
    /// Traffic addressed to workloads directly.
    Workload,
    /// Both.
    All,
    /// Neither: the waypoint is deployed but takes no traffic.
    None,
}

impl WaypointFor {
    /// Parses the label value; `None` for anything Istio does not define.
    pub fn from_label(value: &str) -> Option<Self> {
        match value {
            "service" => Some(Self::Service),
            "workload" => Some(Self::Workload),
            "all" => Some(Self::All),
            "none" => Some(Self::None),
            _ => None,
        }
    }

    /// Whether service-addressed traffic goes through the waypoint.
    pub fn handles_services(self) -> bool {
        matches!(self, Self::Service | Self::All)
    }

    /// Whether workload-addressed traffic goes through the waypoint.
    pub fn handles_workloads(self) -> bool {
        matches!(self, Self::Workload | Self::All)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waypoint_for_label_values() {
        assert_eq!(WaypointFor::default(), WaypointFor::Service);
        assert_eq!(WaypointFor::from_label("all"), Some(WaypointFor::All));
        assert_eq!(WaypointFor::from_label("All"), None);
        assert!(WaypointFor::All.handles_services() && WaypointFor::All.handles_workloads());
        assert!(
            WaypointFor::Service.handles_services() && !WaypointFor::Service.handles_workloads()
        );
        assert!(
            !WaypointFor::Workload.handles_services() && WaypointFor::Workload.handles_workloads()
        );
        assert!(!WaypointFor::None.handles_services() && !WaypointFor::None.handles_workloads());
    }

    #[test]
    fn waypoint_ref_round_trips_through_json() {
        let waypoint = WaypointRef {
            addresses: vec!["10.0.0.9:15008".parse().unwrap()],
            identity: SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/waypoint").unwrap(),
        };
        let json = serde_json::to_string(&waypoint).unwrap();
        assert!(json.contains("\"spiffe://cluster.local/ns/shop/sa/waypoint\""));
        assert_eq!(
            serde_json::from_str::<WaypointRef>(&json).unwrap(),
            waypoint
        );
        let bad = json.replace("spiffe://", "http://");
        assert!(serde_json::from_str::<WaypointRef>(&bad).is_err());
    }
}
