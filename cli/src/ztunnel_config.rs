//! `ambit ztunnel-config`: what a ztunnel holds, read from its admin port.
//!
//! Workloads, services and policies come from `/config_dump`, which serializes the snapshot
//! with the mesh model's own serde form; they are decoded through the model's validating
//! types, so a dump this CLI cannot understand is an error rather than a half-empty table.
//! Certificates come from `/certs` and connections from `/connections`.

use std::net::SocketAddr;
use std::time::Duration;

use ambit_model::{AuthorizationPolicy, PolicyScope, Service, TransportProtocol, Workload};
use serde::Deserialize;
use serde_json::Value;

use crate::admin::{AdminError, get_json};
use crate::table::Table;

/// What to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Resource {
    /// Pods the ztunnel knows (its node's and the ones it sends to).
    Workloads,
    /// Services with their VIPs, ports and endpoints.
    Services,
    /// AuthorizationPolicies.
    Policies,
    /// Identities the ztunnel holds certificates for.
    Certificates,
    /// Connections open right now.
    Connections,
}

/// How to show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Output {
    /// Aligned columns.
    #[default]
    Table,
    /// The admin server's JSON for that resource, pretty-printed.
    Json,
}

/// Why the command failed.
#[derive(Debug, thiserror::Error)]
pub enum ZtunnelConfigError {
    /// The admin server could not be read.
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// The document does not have the expected shape.
    #[error("unexpected {endpoint} document: {message}")]
    Shape {
        /// The admin endpoint.
        endpoint: &'static str,
        /// What was wrong.
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConfigDump {
    #[serde(default)]
    workloads: Vec<Workload>,
    #[serde(default)]
    services: Vec<Service>,
    #[serde(default)]
    authorization_policies: Vec<AuthorizationPolicy>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConnectionEntry {
    #[serde(default)]
    direction: String,
    #[serde(default)]
    src: String,
    #[serde(default)]
    dst: String,
    src_identity: Option<String>,
    dst_identity: Option<String>,
    dst_service: Option<String>,
    #[serde(default)]
    security_policy: String,
    #[serde(default)]
    bytes_client_to_server: u64,
    #[serde(default)]
    bytes_server_to_client: u64,
    #[serde(default)]
    duration_ms: u64,
}

impl Resource {
    /// The admin endpoint that holds this resource.
    pub fn endpoint(self) -> &'static str {
        match self {
            Self::Workloads | Self::Services | Self::Policies => "/config_dump",
            Self::Certificates => "/certs",
            Self::Connections => "/connections",
        }
    }

    /// The key of this resource inside its endpoint's document.
    fn key(self) -> &'static str {
        match self {
            Self::Workloads => "workloads",
            Self::Services => "services",
            Self::Policies => "authorizationPolicies",
            Self::Certificates => "identities",
            Self::Connections => "connections",
        }
    }
}

/// Fetches `resource` from the ztunnel admin server at `admin` and renders it.
pub async fn show(
    admin: SocketAddr,
    resource: Resource,
    output: Output,
    timeout: Duration,
) -> Result<String, ZtunnelConfigError> {
    let document = get_json(admin, resource.endpoint(), timeout).await?;
    render(resource, output, document)
}

/// Renders an admin document (already fetched) as a table or as JSON.
pub fn render(
    resource: Resource,
    output: Output,
    document: Value,
) -> Result<String, ZtunnelConfigError> {
    let endpoint = resource.endpoint();
    let shape = |message: String| ZtunnelConfigError::Shape { endpoint, message };
    let section = document
        .get(resource.key())
        .cloned()
        .unwrap_or(Value::Array(Vec::new()));
    if !section.is_array() {
        return Err(shape(format!("`{}` is not a list", resource.key())));
    }
    if output == Output::Json {
        let mut text = serde_json::to_string_pretty(&section).map_err(|e| shape(e.to_string()))?;
        text.push('\n');
        return Ok(text);
    }
    let table = match resource {
        Resource::Workloads | Resource::Services | Resource::Policies => {
            let dump: ConfigDump =
                serde_json::from_value(document).map_err(|e| shape(e.to_string()))?;
            match resource {
                Resource::Workloads => workloads_table(&dump.workloads),
                Resource::Services => services_table(&dump.services),
                _ => policies_table(&dump.authorization_policies),
            }
        }
        Resource::Certificates => {
            let identities: Vec<String> =
                serde_json::from_value(section).map_err(|e| shape(e.to_string()))?;
            let mut table = Table::new(&["IDENTITY"]);
            for identity in identities {
                table.row(vec![identity]);
            }
            table
        }
        Resource::Connections => {
            let entries: Vec<ConnectionEntry> =
                serde_json::from_value(section).map_err(|e| shape(e.to_string()))?;
            connections_table(&entries)
        }
    };
    Ok(table.render())
}

fn workloads_table(workloads: &[Workload]) -> Table {
    let mut sorted: Vec<&Workload> = workloads.iter().collect();
    sorted.sort_by(|a, b| (a.namespace(), a.name()).cmp(&(b.namespace(), b.name())));
    let mut table = Table::new(&[
        "NAMESPACE",
        "NAME",
        "ADDRESS",
        "NODE",
        "PROTOCOL",
        "WAYPOINT",
        "IDENTITY",
    ]);
    for workload in sorted {
        let spec = workload.spec();
        table.row(vec![
            workload.namespace().to_owned(),
            workload.name().to_owned(),
            join(workload.ips()),
            workload.node().to_owned(),
            match workload.protocol() {
                TransportProtocol::Hbone => "HBONE".to_owned(),
                TransportProtocol::Tcp => "TCP".to_owned(),
            },
            waypoint(spec.waypoint.as_ref()),
            workload.identity().to_string(),
        ]);
    }
    table
}

fn services_table(services: &[Service]) -> Table {
    let mut sorted: Vec<&Service> = services.iter().collect();
    sorted.sort_by(|a, b| (a.namespace(), a.name()).cmp(&(b.namespace(), b.name())));
    let mut table = Table::new(&[
        "NAMESPACE",
        "NAME",
        "VIPS",
        "PORTS",
        "ENDPOINTS",
        "WAYPOINT",
    ]);
    for service in sorted {
        let ports: Vec<String> = service
            .ports()
            .iter()
            .map(|port| match port.target_port {
                Some(target) if target != port.port => format!("{}->{target}", port.port),
                _ => port.port.to_string(),
            })
            .collect();
        table.row(vec![
            service.namespace().to_owned(),
            service.name().to_owned(),
            join(service.vips()),
            or_dash(ports.join(",")),
            service.endpoints().len().to_string(),
            waypoint(service.spec().waypoint.as_ref()),
        ]);
    }
    table
}

fn policies_table(policies: &[AuthorizationPolicy]) -> Table {
    let mut sorted: Vec<&AuthorizationPolicy> = policies.iter().collect();
    sorted.sort_by(|a, b| (a.namespace(), a.name()).cmp(&(b.namespace(), b.name())));
    let mut table = Table::new(&["NAMESPACE", "NAME", "ACTION", "SCOPE", "RULES"]);
    for policy in sorted {
        let scope = match policy.scope() {
            PolicyScope::Namespace => "namespace".to_owned(),
            PolicyScope::Selector(selector) => {
                let labels: Vec<String> = selector
                    .match_labels
                    .iter()
                    .map(|(key, value)| format!("{key}={value}"))
                    .collect();
                format!("selector {}", labels.join(","))
            }
            PolicyScope::TargetRefs(targets) => {
                let names: Vec<String> = targets
                    .iter()
                    .map(|target| format!("{}/{}", target.kind, target.name))
                    .collect();
                format!("targetRefs {}", names.join(","))
            }
        };
        let action = serde_json::to_value(policy.action())
            .ok()
            .and_then(|value| value.as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("{:?}", policy.action()));
        table.row(vec![
            policy.namespace().to_owned(),
            policy.name().to_owned(),
            action,
            scope,
            policy.spec().rules.len().to_string(),
        ]);
    }
    table
}

fn connections_table(entries: &[ConnectionEntry]) -> Table {
    let mut table = Table::new(&[
        "DIRECTION",
        "SOURCE",
        "DESTINATION",
        "SOURCE IDENTITY",
        "DESTINATION IDENTITY",
        "SERVICE",
        "SECURITY",
        "BYTES OUT/IN",
        "AGE",
    ]);
    for entry in entries {
        table.row(vec![
            entry.direction.clone(),
            entry.src.clone(),
            entry.dst.clone(),
            or_dash(entry.src_identity.clone().unwrap_or_default()),
            or_dash(entry.dst_identity.clone().unwrap_or_default()),
            or_dash(entry.dst_service.clone().unwrap_or_default()),
            entry.security_policy.clone(),
            format!(
                "{}/{}",
                entry.bytes_client_to_server, entry.bytes_server_to_client
            ),
            format!("{:.1}s", entry.duration_ms as f64 / 1000.0),
        ]);
    }
    table
}

fn waypoint(waypoint: Option<&ambit_model::WaypointRef>) -> String {
    waypoint.map_or_else(|| "-".to_owned(), |waypoint| join(&waypoint.addresses))
}

fn join<T: std::fmt::Display>(items: &[T]) -> String {
    let joined: Vec<String> = items.iter().map(ToString::to_string).collect();
    or_dash(joined.join(","))
}

fn or_dash(text: String) -> String {
    if text.is_empty() {
        "-".to_owned()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_dump_the_model_rejects_is_an_error_not_an_empty_table() {
        let document = json!({"workloads": [{"name": "no-uid"}]});
        let error = render(Resource::Workloads, Output::Table, document).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("unexpected /config_dump document"),
            "{error}"
        );
    }

    #[test]
    fn missing_sections_are_empty_and_wrong_types_are_refused() {
        let empty = render(Resource::Services, Output::Table, json!({"version": 3})).unwrap();
        assert_eq!(empty, "NAMESPACE  NAME  VIPS  PORTS  ENDPOINTS  WAYPOINT\n");
        let error = render(
            Resource::Certificates,
            Output::Json,
            json!({"identities": 5}),
        )
        .unwrap_err();
        assert!(error.to_string().contains("not a list"), "{error}");
    }
}
