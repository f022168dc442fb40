//! Services: a hostname, VIPs and ports in front of a set of workload endpoints.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ambit_identity::SpiffeId;
use serde::{Deserialize, Serialize};

use crate::CLUSTER_DOMAIN;
use crate::error::{ErrorContext, ModelError, check_dns_label};
use crate::protocol::{AppProtocol, select_protocol};
use crate::waypoint::WaypointRef;

const KIND: &str = "Service";

/// One TCP port of a service (UDP ports are not part of the mesh model).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePort {
    /// The port name; its `<protocol>-` prefix declares the protocol when `appProtocol` is unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The port clients connect to on the VIP.
    pub port: u16,
    /// The numeric target port, if the Service names one; endpoints may override it (named
    /// target ports resolve per pod). Unset means the same as `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u16>,
    /// The Kubernetes `appProtocol` of the port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
}

/// A workload behind a service, with the target port for each service port it serves.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Endpoint {
    /// Service port → target port on this workload. A service port missing here falls back to
    /// the port's `targetPort`.
    #[serde(default)]
    pub ports: BTreeMap<u16, u16>,
}

/// The input a [`Service`] is built from, and its serialized form.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSpec {
    /// The Service name.
    pub name: String,
    /// The Service namespace.
    pub namespace: String,
    /// Cluster IPs (none for headless services).
    #[serde(default)]
    pub vips: Vec<IpAddr>,
    /// The ports.
    #[serde(default)]
    pub ports: Vec<ServicePort>,
    /// Workload UID → endpoint.
    #[serde(default)]
    pub endpoints: BTreeMap<String, Endpoint>,
    /// The waypoint this service's traffic goes through, if bound to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waypoint: Option<WaypointRef>,
    /// Extra identities a client accepts from this service's endpoints (SPIFFE URIs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
}

/// A validated service. Built with [`Service::new`]; serializes as its [`ServiceSpec`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ServiceSpec", into = "ServiceSpec")]
pub struct Service {
    spec: ServiceSpec,
    hostname: String,
    subject_alt_names: Vec<SpiffeId>,
}

impl ServicePort {
    /// The protocol of this port, decided by [`select_protocol`].
    pub fn protocol(&self) -> AppProtocol {
        select_protocol(self.app_protocol.as_deref(), self.name.as_deref(), false)
    }
}

impl Service {
    /// Validates `spec`: names, unique non-zero ports, unique VIPs, endpoints that only mention
    /// declared ports, SPIFFE subject alt names.
    pub fn new(spec: ServiceSpec) -> Result<Self, ModelError> {
        let ctx = ErrorContext {
            kind: KIND,
            namespace: &spec.namespace,
            name: &spec.name,
        };
        check_dns_label(&spec.namespace).map_err(|reason| ctx.err("namespace", reason))?;
        check_dns_label(&spec.name).map_err(|reason| ctx.err("name", reason))?;
        let mut vips = BTreeSet::new();
        for (i, vip) in spec.vips.iter().enumerate() {
            if !vips.insert(vip) {
                return Err(ctx.err(format!("vips[{i}]"), format!("{vip} is listed twice")));
            }
        }
        let mut ports = BTreeSet::new();
        let mut names = BTreeSet::new();
        for (i, port) in spec.ports.iter().enumerate() {
            if port.port == 0 {
                return Err(ctx.err(format!("ports[{i}].port"), "must be 1 to 65535"));
            }
            if port.target_port == Some(0) {
                return Err(ctx.err(format!("ports[{i}].targetPort"), "must be 1 to 65535"));
            }
            if !ports.insert(port.port) {
                return Err(ctx.err(
                    format!("ports[{i}].port"),
                    format!("port {} is declared twice", port.port),
                ));
            }
            if let Some(name) = &port.name {
                check_dns_label(name)
                    .map_err(|reason| ctx.err(format!("ports[{i}].name"), reason))?;
                if !names.insert(name) {
                    return Err(ctx.err(
                        format!("ports[{i}].name"),
                        format!("name {name:?} is used twice"),
                    ));
                }
            }
        }
        for (uid, endpoint) in &spec.endpoints {
            if uid.is_empty() {
                return Err(ctx.err("endpoints", "a workload UID must not be empty"));
            }
            for (service_port, target) in &endpoint.ports {
                let field = || format!("endpoints[{uid:?}].ports[{service_port}]");
                if !ports.contains(service_port) {
                    return Err(ctx.err(field(), "is not a port of the service"));
                }
                if *target == 0 {
                    return Err(ctx.err(field(), "target port must be 1 to 65535"));
                }
            }
        }
        let subject_alt_names = spec
            .subject_alt_names
            .iter()
            .enumerate()
            .map(|(i, san)| {
                SpiffeId::parse(san)
                    .map_err(|err| ctx.err(format!("subjectAltNames[{i}]"), err.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let hostname = format!("{}.{}.svc.{CLUSTER_DOMAIN}", spec.name, spec.namespace);
        Ok(Self {
            spec,
            hostname,
            subject_alt_names,
        })
    }

    /// The Service name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The Service namespace.
    pub fn namespace(&self) -> &str {
        &self.spec.namespace
    }

    /// `<name>.<namespace>.svc.cluster.local`.
    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// The cluster IPs.
    pub fn vips(&self) -> &[IpAddr] {
        &self.spec.vips
    }

    /// The ports.
    pub fn ports(&self) -> &[ServicePort] {
        &self.spec.ports
    }

    /// The port declared with number `port`.
    pub fn port(&self, port: u16) -> Option<&ServicePort> {
        self.spec.ports.iter().find(|p| p.port == port)
    }

    /// Workload UID → endpoint.
    pub fn endpoints(&self) -> &BTreeMap<String, Endpoint> {
        &self.spec.endpoints
    }

    /// The port to connect to on workload `uid` for service port `port`: the endpoint's own
    /// target, else the port's `targetPort`, else `port` itself. `None` if `uid` is not an
    /// endpoint or `port` is not a port of the service.
    pub fn target_port(&self, uid: &str, port: u16) -> Option<u16> {
        let declared = self.port(port)?;
        let endpoint = self.spec.endpoints.get(uid)?;
        Some(
            endpoint
                .ports
                .get(&port)
                .copied()
                .or(declared.target_port)
                .unwrap_or(port),
        )
    }

    /// The waypoint bound to this service, if any.
    pub fn waypoint(&self) -> Option<&WaypointRef> {
        self.spec.waypoint.as_ref()
    }

    /// Extra identities accepted from this service's endpoints.
    pub fn subject_alt_names(&self) -> &[SpiffeId] {
        &self.subject_alt_names
    }

    /// The validated input.
    pub fn spec(&self) -> &ServiceSpec {
        &self.spec
    }
}

impl TryFrom<ServiceSpec> for Service {
    type Error = ModelError;

    fn try_from(spec: ServiceSpec) -> Result<Self, Self::Error> {
        Self::new(spec)
    }
}

impl From<Service> for ServiceSpec {
    fn from(service: Service) -> Self {
        service.spec
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ServiceSpec {
        ServiceSpec {
            name: "cart".into(),
            namespace: "shop".into(),
            vips: vec!["10.96.0.20".parse().unwrap()],
            ports: vec![
                ServicePort {
                    name: Some("http-web".into()),
                    port: 80,
                    target_port: Some(8080),
                    app_protocol: None,
                },
                ServicePort {
                    name: Some("grpc".into()),
                    port: 9090,
                    target_port: None,
                    app_protocol: None,
                },
            ],
            endpoints: [
                ("uid-1".to_owned(), Endpoint::default()),
                (
                    "uid-2".to_owned(),
                    Endpoint {
                        ports: [(80, 8081)].into(),
                    },
                ),
            ]
            .into(),
            waypoint: None,
            subject_alt_names: vec!["spiffe://cluster.local/ns/shop/sa/cart".into()],
        }
    }

    #[test]
    fn hostname_ports_and_targets() {
        let service = Service::new(spec()).unwrap();
        assert_eq!(service.hostname(), "cart.shop.svc.cluster.local");
        assert_eq!(service.port(80).unwrap().protocol(), AppProtocol::Http);
        assert_eq!(service.port(9090).unwrap().protocol(), AppProtocol::Grpc);
        assert_eq!(service.target_port("uid-1", 80), Some(8080));
        assert_eq!(service.target_port("uid-2", 80), Some(8081));
        assert_eq!(service.target_port("uid-1", 9090), Some(9090));
        assert_eq!(service.target_port("uid-3", 80), None);
        assert_eq!(service.target_port("uid-1", 81), None);
        assert_eq!(service.subject_alt_names()[0].service_account(), "cart");
    }

    #[test]
    fn rejects_invalid_fields_naming_them() {
        let mut cases: Vec<(ServiceSpec, &str)> = Vec::new();
        let mut s = spec();
        s.name = "Cart".into();
        cases.push((s, "name"));
        let mut s = spec();
        s.vips.push("10.96.0.20".parse().unwrap());
        cases.push((s, "vips[1]"));
        let mut s = spec();
        s.ports[1].port = 80;
        cases.push((s, "ports[1].port"));
        let mut s = spec();
        s.ports[0].port = 0;
        cases.push((s, "ports[0].port"));
        let mut s = spec();
        s.ports[1].target_port = Some(0);
        cases.push((s, "ports[1].targetPort"));
        let mut s = spec();
        s.ports[1].name = Some("http-web".into());
        cases.push((s, "ports[1].name"));
        let mut s = spec();
        s.endpoints.insert(
            "uid-9".into(),
            Endpoint {
                ports: [(81, 1)].into(),
            },
        );
        cases.push((s, "endpoints[\"uid-9\"].ports[81]"));
        let mut s = spec();
        s.endpoints.insert(
            "uid-9".into(),
            Endpoint {
                ports: [(80, 0)].into(),
            },
        );
        cases.push((s, "endpoints[\"uid-9\"].ports[80]"));
        let mut s = spec();
        s.subject_alt_names.push("cart.shop".into());
        cases.push((s, "subjectAltNames[1]"));
        for (bad, field) in cases {
            let err = Service::new(bad).unwrap_err();
            assert_eq!(err.field(), field, "{err}");
        }
    }

    #[test]
    fn serde_round_trip() {
        let service = Service::new(spec()).unwrap();
        let json = serde_json::to_string(&service).unwrap();
        assert!(json.contains("\"targetPort\":8080"), "{json}");
        let back: Service = serde_json::from_str(&json).unwrap();
        assert_eq!(back, service);
        assert_eq!(back.hostname(), service.hostname());
    }
}
