//! Services → model services: VIPs, TCP ports with target ports, endpoints, waypoint.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ambit_model::{Endpoint, Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::error::Errors;
use super::labels::{NamespaceSettings, SERVICE_NAME, labels_of};
use super::waypoints::{Traffic, Waypoints, bind, cluster_ips};
use super::workloads::{PodWorkload, workload_uid};
use crate::objects::{EndpointSlice, Pod, Resources};

type FieldError = (String, String);

/// One TCP port of the Service, with its named target port if it has one.
struct PortPlan {
    model: ServicePort,
    target_name: Option<String>,
    index: usize,
}

/// Lookups from endpoints to workloads.
struct WorkloadIndex<'a> {
    by_uid: BTreeMap<&'a str, &'a PodWorkload<'a>>,
    by_ip: BTreeMap<IpAddr, &'a PodWorkload<'a>>,
}

pub(crate) fn translate(
    resources: &Resources,
    workloads: &[PodWorkload<'_>],
    namespaces: &NamespaceSettings,
    waypoints: &Waypoints,
    errors: &mut Errors,
) -> Vec<Service> {
    let index = WorkloadIndex {
        by_uid: workloads.iter().map(|w| (w.workload.uid(), w)).collect(),
        by_ip: workloads
            .iter()
            .flat_map(|w| w.workload.ips().iter().map(move |ip| (*ip, w)))
            .collect(),
    };
    let mut slices: BTreeMap<(&str, &str), Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in resources.endpoint_slices() {
        let namespace = slice.metadata.namespace.as_deref().unwrap_or_default();
        if let Some(service) = labels_of(&slice.metadata).get(SERVICE_NAME) {
            slices.entry((namespace, service)).or_default().push(slice);
        }
    }
    let mut out = Vec::new();
    for service in resources.services() {
        let namespace = service.metadata.namespace.as_deref().unwrap_or_default();
        let name = service.metadata.name.as_deref().unwrap_or_default();
        let Some(spec) = &service.spec else {
            errors.push("Service", namespace, name, "spec", "is required");
            continue;
        };
        if spec.type_.as_deref() == Some("ExternalName") {
            errors.not_translated("Service", namespace, name, "type ExternalName");
            continue;
        }
        let mut report = |field: String, message: String| {
            errors.push("Service", namespace, name, field, message);
        };
        let result = translate_service(
            service,
            spec,
            slices
                .get(&(namespace, name))
                .map(Vec::as_slice)
                .unwrap_or_default(),
            &index,
            namespaces,
            waypoints,
            &mut report,
        );
        match result {
            Ok(model_spec) => match Service::new(model_spec) {
                Ok(model) => out.push(model),
                Err(err) => errors.model("Service", namespace, name, &err),
            },
            Err((field, message)) => errors.push("Service", namespace, name, field, message),
        }
    }
    out
}

fn translate_service(
    service: &crate::objects::Service,
    spec: &k8s_openapi::api::core::v1::ServiceSpec,
    slices: &[&EndpointSlice],
    index: &WorkloadIndex<'_>,
    namespaces: &NamespaceSettings,
    waypoints: &Waypoints,
    report: &mut dyn FnMut(String, String),
) -> Result<ServiceSpec, FieldError> {
    let namespace = service.metadata.namespace.as_deref().unwrap_or_default();
    let name = service.metadata.name.as_deref().unwrap_or_default();
    let field_of_ips = if spec.cluster_ips.as_ref().is_some_and(|ips| !ips.is_empty()) {
        "spec.clusterIPs"
    } else {
        "spec.clusterIP"
    };
    let vips = cluster_ips(spec)
        .iter()
        .enumerate()
        .map(|(i, ip)| {
            ip.parse::<IpAddr>().map_err(|_| {
                let field = if field_of_ips == "spec.clusterIP" {
                    field_of_ips.to_owned()
                } else {
                    format!("{field_of_ips}[{i}]")
                };
                (field, format!("{ip:?} is not an IP address"))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let ports = port_plans(spec)?;
    let endpoints = if !slices.is_empty() {
        endpoints_from_slices(namespace, slices, &ports, index, report)
    } else {
        endpoints_from_selector(namespace, spec, &ports, index, report)
    };
    let waypoint = if waypoints.is_waypoint(namespace, name) {
        None
    } else {
        bind(
            labels_of(&service.metadata),
            namespace,
            namespaces,
            waypoints,
            Traffic::Service,
            report,
        )
    };
    Ok(ServiceSpec {
        name: name.to_owned(),
        namespace: namespace.to_owned(),
        vips,
        ports: ports.into_iter().map(|p| p.model).collect(),
        endpoints,
        waypoint,
        subject_alt_names: Vec::new(),
    })
}

/// The TCP ports; UDP and SCTP ports are not part of the mesh.
fn port_plans(spec: &k8s_openapi::api::core::v1::ServiceSpec) -> Result<Vec<PortPlan>, FieldError> {
    let mut plans = Vec::new();
    for (i, port) in spec.ports.iter().flatten().enumerate() {
        if port.protocol.as_deref().is_some_and(|p| p != "TCP") {
            continue;
        }
        let number = to_port(port.port).ok_or_else(|| {
            (
                format!("spec.ports[{i}].port"),
                "must be 1 to 65535".to_owned(),
            )
        })?;
        let (target_port, target_name) = match &port.target_port {
            None => (None, None),
            Some(IntOrString::Int(n)) => (
                Some(to_port(*n).ok_or_else(|| {
                    (
                        format!("spec.ports[{i}].targetPort"),
                        "must be 1 to 65535".to_owned(),
                    )
                })?),
                None,
            ),
            Some(IntOrString::String(name)) => (None, Some(name.clone())),
        };
        plans.push(PortPlan {
            model: ServicePort {
                name: port.name.clone(),
                port: number,
                target_port,
                app_protocol: port.app_protocol.clone(),
            },
            target_name,
            index: i,
        });
    }
    Ok(plans)
}

fn to_port(n: i32) -> Option<u16> {
    u16::try_from(n).ok().filter(|p| *p != 0)
}

/// Ready endpoints of the slices, mapped to workloads by target reference, else by IP.
/// Endpoints that are no workload (not running, or outside the cluster) are left out.
fn endpoints_from_slices(
    namespace: &str,
    slices: &[&EndpointSlice],
    ports: &[PortPlan],
    index: &WorkloadIndex<'_>,
    report: &mut dyn FnMut(String, String),
) -> BTreeMap<String, Endpoint> {
    let mut endpoints = BTreeMap::new();
    for slice in slices {
        if slice.address_type == "FQDN" {
            continue;
        }
        for endpoint in &slice.endpoints {
            // Kubernetes: an unset `ready` means ready.
            if endpoint.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                continue;
            }
            let by_ref = endpoint
                .target_ref
                .as_ref()
                .filter(|r| r.kind.as_deref() == Some("Pod"))
                .and_then(|r| {
                    let ns = r.namespace.as_deref().unwrap_or(namespace);
                    let uid = workload_uid(ns, r.name.as_deref()?);
                    index.by_uid.get(uid.as_str()).copied()
                });
            let workload = by_ref.or_else(|| {
                endpoint
                    .addresses
                    .iter()
                    .filter_map(|a| a.parse::<IpAddr>().ok())
                    .find_map(|ip| index.by_ip.get(&ip).copied())
            });
            let Some(workload) = workload else {
                continue;
            };
            let slice_port = |service_port: &ServicePort| {
                slice
                    .ports
                    .iter()
                    .flatten()
                    .find(|p| p.name == service_port.name)
                    .and_then(|p| p.port)
                    .and_then(to_port)
            };
            if let Some(ep) = endpoint_for(workload, ports, &slice_port, report) {
                endpoints.insert(workload.workload.uid().to_owned(), ep);
            }
        }
    }
    endpoints
}

/// Without EndpointSlices (local mode has no endpoints controller), the workloads the
/// Service's selector matches in its namespace.
fn endpoints_from_selector(
    namespace: &str,
    spec: &k8s_openapi::api::core::v1::ServiceSpec,
    ports: &[PortPlan],
    index: &WorkloadIndex<'_>,
    report: &mut dyn FnMut(String, String),
) -> BTreeMap<String, Endpoint> {
    let mut endpoints = BTreeMap::new();
    let Some(selector) = spec.selector.as_ref().filter(|s| !s.is_empty()) else {
        return endpoints;
    };
    for workload in index.by_uid.values() {
        let w = &workload.workload;
        if w.namespace() != namespace || !selector.iter().all(|(k, v)| w.labels().get(k) == Some(v))
        {
            continue;
        }
        if let Some(ep) = endpoint_for(workload, ports, &|_| None, report) {
            endpoints.insert(w.uid().to_owned(), ep);
        }
    }
    endpoints
}

/// The endpoint of `workload`: named target ports resolved against its pod's container ports
/// (else the slice's port). A pod that lacks a named port is left out and reported: the model
/// cannot say "this endpoint serves only some ports".
fn endpoint_for(
    workload: &PodWorkload<'_>,
    ports: &[PortPlan],
    slice_port: &dyn Fn(&ServicePort) -> Option<u16>,
    report: &mut dyn FnMut(String, String),
) -> Option<Endpoint> {
    let mut endpoint = Endpoint::default();
    for plan in ports {
        let Some(target_name) = &plan.target_name else {
            continue;
        };
        let resolved =
            container_port(workload.pod, target_name).or_else(|| slice_port(&plan.model));
        match resolved {
            Some(port) => {
                endpoint.ports.insert(plan.model.port, port);
            }
            None => {
                report(
                    format!("spec.ports[{}].targetPort", plan.index),
                    format!(
                        "pod {}/{} has no TCP container port named {target_name:?}; it is not an endpoint",
                        workload.workload.namespace(),
                        workload.workload.name()
                    ),
                );
                return None;
            }
        }
    }
    Some(endpoint)
}

fn container_port(pod: &Pod, name: &str) -> Option<u16> {
    pod.spec
        .as_ref()?
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| {
            p.name.as_deref() == Some(name) && p.protocol.as_deref().is_none_or(|p| p == "TCP")
        })
        .and_then(|p| to_port(p.container_port))
}
