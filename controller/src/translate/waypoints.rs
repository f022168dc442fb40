//! Waypoints: Gateways of class `istio-waypoint`, where they are and whose identity they carry,
//! and the resolution of `istio.io/use-waypoint` bindings to them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use ambit_identity::SpiffeId;
use ambit_model::{WaypointFor, WaypointRef};

use super::TranslateOptions;
use super::error::Errors;
use super::labels::{Binding, GATEWAY_SERVICE_ACCOUNT, WAYPOINT_FOR, label_field, labels_of};
use crate::objects::{Gateway, Resources, Service};

/// The HBONE port of a waypoint's `mesh` listener.
const HBONE_PORT: u16 = 15008;
const HBONE_PROTOCOL: &str = "HBONE";

/// A usable waypoint.
#[derive(Debug, Clone)]
pub(crate) struct Waypoint {
    pub(crate) reference: WaypointRef,
    pub(crate) waypoint_for: WaypointFor,
}

/// Which traffic a binding is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Traffic {
    Service,
    Workload,
}

/// What a binding resolved to.
#[derive(Debug)]
pub(crate) enum Resolved {
    /// No label at any level, or `none`.
    Nothing,
    /// Bound.
    Bound(WaypointRef),
    /// The named Gateway is not a usable waypoint.
    Unknown { namespace: String, name: String },
    /// The waypoint does not take this kind of traffic.
    NotFor {
        namespace: String,
        name: String,
        waypoint_for: WaypointFor,
    },
}

/// Every waypoint Gateway, usable or not.
#[derive(Debug, Default)]
pub(crate) struct Waypoints {
    usable: BTreeMap<(String, String), Waypoint>,
    declared: BTreeSet<(String, String)>,
}

impl Waypoints {
    pub(crate) fn build(
        resources: &Resources,
        options: &TranslateOptions,
        errors: &mut Errors,
    ) -> Self {
        let services: BTreeMap<(&str, &str), &Service> = resources
            .services()
            .map(|s| {
                let meta = &s.metadata;
                (
                    (
                        meta.namespace.as_deref().unwrap_or_default(),
                        meta.name.as_deref().unwrap_or_default(),
                    ),
                    s,
                )
            })
            .collect();
        let mut waypoints = Self::default();
        for gateway in resources.gateways() {
            let namespace = gateway.metadata.namespace.clone().unwrap_or_default();
            let name = gateway.metadata.name.clone().unwrap_or_default();
            if !gateway.is_waypoint() {
                errors.not_translated(
                    "Gateway",
                    &namespace,
                    &name,
                    &format!(
                        "only class istio-waypoint is handled, not {:?}",
                        gateway.spec.gateway_class_name
                    ),
                );
                continue;
            }
            waypoints.declared.insert((namespace.clone(), name.clone()));
            let mut report = |field: String, message: String| {
                errors.push("Gateway", &namespace, &name, field, message);
            };
            match build_waypoint(gateway, &namespace, &name, options, &services) {
                Ok((waypoint, warning)) => {
                    if let Some((field, message)) = warning {
                        report(field, message);
                    }
                    waypoints.usable.insert((namespace, name), waypoint);
                }
                Err((field, message)) => report(field, message),
            }
        }
        waypoints
    }

    /// The usable waypoints in namespace and name order.
    pub(crate) fn listed(&self) -> Vec<super::MeshWaypoint> {
        self.usable
            .iter()
            .map(|((namespace, name), waypoint)| super::MeshWaypoint {
                namespace: namespace.clone(),
                name: name.clone(),
                reference: waypoint.reference.clone(),
                waypoint_for: waypoint.waypoint_for,
            })
            .collect()
    }

    /// Whether `namespace/name` is a waypoint Gateway (so its own Service and pods are never
    /// bound to a waypoint).
    pub(crate) fn is_waypoint(&self, namespace: &str, name: &str) -> bool {
        self.declared
            .contains(&(namespace.to_owned(), name.to_owned()))
    }

    pub(crate) fn resolve(&self, binding: &Binding, traffic: Traffic) -> Resolved {
        let Binding::Named { namespace, name } = binding else {
            return Resolved::Nothing;
        };
        let Some(waypoint) = self.usable.get(&(namespace.clone(), name.clone())) else {
            return Resolved::Unknown {
                namespace: namespace.clone(),
                name: name.clone(),
            };
        };
        let handles = match traffic {
            Traffic::Service => waypoint.waypoint_for.handles_services(),
            Traffic::Workload => waypoint.waypoint_for.handles_workloads(),
        };
        if handles {
            Resolved::Bound(waypoint.reference.clone())
        } else {
            Resolved::NotFor {
                namespace: namespace.clone(),
                name: name.clone(),
                waypoint_for: waypoint.waypoint_for,
            }
        }
    }
}

type FieldError = (String, String);

/// The waypoint, plus a non-fatal problem (a bad `waypoint-for` label falls back to `service`).
fn build_waypoint(
    gateway: &Gateway,
    namespace: &str,
    name: &str,
    options: &TranslateOptions,
    services: &BTreeMap<(&str, &str), &Service>,
) -> Result<(Waypoint, Option<FieldError>), FieldError> {
    let has_hbone = gateway
        .spec
        .listeners
        .iter()
        .any(|l| l.port == HBONE_PORT && l.protocol == HBONE_PROTOCOL);
    if !has_hbone {
        return Err((
            "spec.listeners".into(),
            format!(
                "a waypoint needs a listener on port {HBONE_PORT} with protocol {HBONE_PROTOCOL}"
            ),
        ));
    }
    let mut warning = None;
    let waypoint_for = match labels_of(&gateway.metadata).get(WAYPOINT_FOR) {
        None => WaypointFor::default(),
        Some(value) => WaypointFor::from_label(value).unwrap_or_else(|| {
            warning = Some((
                label_field(WAYPOINT_FOR),
                format!("{value:?} is not one of service, workload, all, none; using service"),
            ));
            WaypointFor::default()
        }),
    };
    // Istio names a waypoint's deployment, Service and ServiceAccount after the Gateway itself
    // (no class suffix for istio-waypoint); an annotation may name another account.
    let service_account = gateway
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(GATEWAY_SERVICE_ACCOUNT))
        .map_or(name, String::as_str);
    let identity =
        SpiffeId::new(&options.trust_domain, namespace, service_account).map_err(|err| {
            (
                format!("metadata.annotations[{GATEWAY_SERVICE_ACCOUNT:?}]"),
                format!("no valid identity: {err}"),
            )
        })?;
    let addresses = addresses(gateway, services.get(&(namespace, name)).copied())?;
    if addresses.is_empty() {
        return Err((
            "status.addresses".into(),
            format!(
                "the waypoint has no address yet: no Service {namespace}/{name} with a cluster IP, \
                 and no IP in spec.addresses or status.addresses"
            ),
        ));
    }
    Ok((
        Waypoint {
            reference: WaypointRef {
                addresses,
                identity,
            },
            waypoint_for,
        },
        warning,
    ))
}

/// The waypoint's HBONE addresses: its Service's cluster IPs, else the Gateway's IP addresses
/// from the spec, else from the status.
fn addresses(gateway: &Gateway, service: Option<&Service>) -> Result<Vec<SocketAddr>, FieldError> {
    let to_addr = |ip: IpAddr| SocketAddr::new(ip, HBONE_PORT);
    if let Some(spec) = service.and_then(|s| s.spec.as_ref()) {
        let ips: Vec<IpAddr> = cluster_ips(spec)
            .iter()
            .filter_map(|ip| ip.parse().ok())
            .collect();
        if !ips.is_empty() {
            return Ok(ips.into_iter().map(to_addr).collect());
        }
    }
    let lists = [
        ("spec.addresses", &gateway.spec.addresses),
        (
            "status.addresses",
            match &gateway.status {
                Some(status) => &status.addresses,
                None => &Vec::new(),
            },
        ),
    ];
    for (field, list) in lists {
        let mut found = Vec::new();
        for (i, address) in list.iter().enumerate().filter(|(_, a)| a.is_ip()) {
            let ip: IpAddr = address.value.parse().map_err(|_| {
                (
                    format!("{field}[{i}].value"),
                    format!("{:?} is not an IP address", address.value),
                )
            })?;
            found.push(to_addr(ip));
        }
        if !found.is_empty() {
            return Ok(found);
        }
    }
    Ok(Vec::new())
}

/// `clusterIPs`, else `clusterIP`, without the headless marker `None`.
pub(crate) fn cluster_ips(spec: &k8s_openapi::api::core::v1::ServiceSpec) -> Vec<String> {
    let ips: Vec<String> = match (&spec.cluster_ips, &spec.cluster_ip) {
        (Some(ips), _) if !ips.is_empty() => ips.clone(),
        (_, Some(ip)) => vec![ip.clone()],
        _ => Vec::new(),
    };
    ips.into_iter()
        .filter(|ip| !ip.is_empty() && ip != "None")
        .collect()
}

/// Reports, once per Namespace, a namespace-level binding to a Gateway that is not a usable
/// waypoint (the objects inheriting it are then simply unbound).
pub(crate) fn report_namespace_bindings(
    resources: &Resources,
    namespaces: &super::labels::NamespaceSettings,
    waypoints: &Waypoints,
    errors: &mut Errors,
) {
    for namespace in resources.namespaces() {
        let name = namespace.metadata.name.as_deref().unwrap_or_default();
        let binding = namespaces.binding(name);
        if let Resolved::Unknown {
            namespace: gw_namespace,
            name: gw_name,
        } = waypoints.resolve(&binding, Traffic::Service)
        {
            errors.push(
                "Namespace",
                "",
                name,
                label_field(super::labels::USE_WAYPOINT),
                format!("no usable waypoint Gateway {gw_namespace}/{gw_name}"),
            );
        }
    }
}

/// The waypoint for an object with `labels` in `namespace`: its own `istio.io/use-waypoint`
/// wins over its namespace's, and `none` on the object opts out. Problems with the object's own
/// label are reported on it; namespace-level ones were reported on the Namespace.
pub(crate) fn bind(
    labels: &std::collections::BTreeMap<String, String>,
    namespace: &str,
    namespaces: &super::labels::NamespaceSettings,
    waypoints: &Waypoints,
    traffic: Traffic,
    report: &mut dyn FnMut(String, String),
) -> Option<WaypointRef> {
    let own = super::labels::binding(labels, namespace).unwrap_or_else(|(field, message)| {
        report(field, message);
        Binding::Unset
    });
    let explicit = own != Binding::Unset;
    let effective = if explicit {
        own
    } else {
        namespaces.binding(namespace)
    };
    let field = || label_field(super::labels::USE_WAYPOINT);
    match waypoints.resolve(&effective, traffic) {
        Resolved::Bound(reference) => Some(reference),
        Resolved::Nothing => None,
        _ if !explicit => None,
        Resolved::Unknown { namespace, name } => {
            report(
                field(),
                format!("no usable waypoint Gateway {namespace}/{name}"),
            );
            None
        }
        Resolved::NotFor {
            namespace,
            name,
            waypoint_for,
        } => {
            let traffic = match traffic {
                Traffic::Service => "service",
                Traffic::Workload => "workload",
            };
            report(
                field(),
                format!(
                    "waypoint {namespace}/{name} is for {waypoint_for:?} traffic, not {traffic} traffic"
                ),
            );
            None
        }
    }
}
