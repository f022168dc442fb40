//! What the local runtime does in place of the Kubernetes API server and its controllers
//! (pure, no IO): parse multi-document YAML, check each object's identity fields, expand
//! Deployments into Pods, and fill in what a cluster would (UIDs, cluster IPs, node placement,
//! pod IPs, `Running` status).
//!
//! Objects are kept as JSON values: the controller, which reads the same folder a cluster's
//! objects would fill, validates their specs in full and reports errors with file, document
//! and field. Here only what the runtime itself acts on is checked.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use serde_json::{Value, json};

/// The label (on a namespace or a pod, the pod winning) that enrolls pods in the mesh.
pub const DATAPLANE_MODE: &str = "istio.io/dataplane-mode";
/// The Gateway class of waypoints.
pub const WAYPOINT_CLASS: &str = "istio-waypoint";
/// The label a waypoint's pod and Service selector carry.
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";
/// The annotation naming a waypoint's service account (default: the Gateway's name).
pub const GATEWAY_SERVICE_ACCOUNT: &str = "gateway.istio.io/service-account";
/// Where cluster IPs are allocated from (`10.96.0.0/16`, as kind's default).
const SERVICE_CIDR_BASE: [u8; 2] = [10, 96];
/// Replicas of a Deployment that says nothing.
const DEFAULT_REPLICAS: u64 = 1;
/// More replicas than a laptop demo needs is a typo.
const MAX_REPLICAS: u64 = 50;

/// One object of a YAML stream, identified.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    /// `apiVersion` then `kind`, e.g. `("v1", "Pod")`.
    pub api_version: String,
    /// The kind.
    pub kind: String,
    /// Namespace (`None` for cluster-scoped kinds).
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
    /// The whole object.
    pub body: Value,
}

/// A YAML document could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: document {document}: {field}: {message}")]
pub struct ObjectError {
    /// The file (or `-`).
    pub origin: String,
    /// 0-based index of the document in the file.
    pub document: usize,
    /// The field at fault (`metadata.name`, `spec.replicas`, or `(document)`).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// `namespace/name` (or just `name`) of an object, for messages and keys.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// The kind.
    pub kind: String,
    /// The namespace; empty for cluster-scoped kinds.
    pub namespace: String,
    /// The name.
    pub name: String,
}

/// A pod the runtime must create: where and as what.
#[derive(Debug, Clone, PartialEq)]
pub struct PodPlan {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Labels (they select Services and may set the dataplane mode).
    pub labels: BTreeMap<String, String>,
    /// Service account (`default` unless the spec names one).
    pub service_account: String,
    /// `spec.nodeName`, if the object pins the pod.
    pub node_name: Option<String>,
    /// The first container's `command` followed by its `args`: what runs in the pod's netns.
    pub command: Vec<String>,
    /// The first container's `env`: plain values, and `fieldRef`s resolved when the pod runs.
    pub env: Vec<(String, EnvValue)>,
    /// The Pod object as given (or as made from a Deployment's template).
    pub body: Value,
}

/// An environment variable's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvValue {
    /// A literal.
    Value(String),
    /// The downward API: `metadata.name`, `metadata.namespace`, `spec.nodeName`,
    /// `spec.serviceAccountName` or `status.podIP`.
    Field(String),
}

/// The `fieldRef` paths local mode can fill in.
pub const ENV_FIELDS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.podIP",
];

/// Kinds that are not namespaced.
const CLUSTER_SCOPED: &[&str] = &[
    "Namespace",
    "GatewayClass",
    "ClusterRole",
    "ClusterRoleBinding",
];

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

impl Object {
    /// The key of this object.
    pub fn key(&self) -> ObjectKey {
        ObjectKey {
            kind: self.kind.clone(),
            namespace: self.namespace.clone().unwrap_or_default(),
            name: self.name.clone(),
        }
    }

    /// `metadata.labels`.
    pub fn labels(&self) -> BTreeMap<String, String> {
        string_map(self.body.pointer("/metadata/labels"))
    }

    /// Whether this is a Gateway of the waypoint class.
    pub fn is_waypoint_gateway(&self) -> bool {
        self.kind == "Gateway"
            && self.api_version.starts_with("gateway.networking.k8s.io/")
            && self
                .body
                .pointer("/spec/gatewayClassName")
                .and_then(Value::as_str)
                == Some(WAYPOINT_CLASS)
    }
}

/// Parses a multi-document YAML stream from `origin`. Empty documents are skipped; a document
/// that is a `List` contributes its `items`. Every error is returned, each with its document
/// index; the good objects come back beside them.
pub fn parse_documents(origin: &str, text: &str) -> (Vec<Object>, Vec<ObjectError>) {
    let mut objects = Vec::new();
    let mut errors = Vec::new();
    for (document, de) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let error = |field: &str, message: String| ObjectError {
            origin: origin.to_owned(),
            document,
            field: field.to_owned(),
            message,
        };
        let value: Value = match serde::Deserialize::deserialize(de) {
            Ok(value) => value,
            Err(err) => {
                errors.push(error("(document)", format!("not valid YAML: {err}")));
                // A syntax error ends the stream: the parser cannot find the next document.
                break;
            }
        };
        if value.is_null() {
            continue;
        }
        let items = if value.get("kind").and_then(Value::as_str) == Some("List") {
            match value.get("items") {
                Some(Value::Array(items)) => items.clone(),
                _ => {
                    errors.push(error("items", "a List needs an items array".to_owned()));
                    continue;
                }
            }
        } else {
            vec![value]
        };
        for item in items {
            match identify(item) {
                Ok(object) => objects.push(object),
                Err((field, message)) => errors.push(error(&field, message)),
            }
        }
    }
    (objects, errors)
}

fn identify(mut body: Value) -> Result<Object, (String, String)> {
    if !body.is_object() {
        return Err(("(document)".into(), "must be a mapping".into()));
    }
    let text = |body: &Value, field: &str| {
        body.get(field)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| (field.to_owned(), "is required".to_owned()))
    };
    let api_version = text(&body, "apiVersion")?;
    let kind = text(&body, "kind")?;
    let name = body
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .ok_or_else(|| ("metadata.name".to_owned(), "is required".to_owned()))?
        .to_owned();
    check_dns_subdomain(&name).map_err(|m| ("metadata.name".to_owned(), m))?;
    let namespace = if CLUSTER_SCOPED.contains(&kind.as_str()) {
        None
    } else {
        let namespace = body
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default")
            .to_owned();
        check_dns_label(&namespace).map_err(|m| ("metadata.namespace".to_owned(), m))?;
        // Written back so the controller sees the namespace the runtime assumed.
        body["metadata"]["namespace"] = json!(namespace);
        Some(namespace)
    };
    for field in ["labels", "annotations"] {
        if let Some(map) = body.pointer(&format!("/metadata/{field}"))
            && !map.is_null()
            && !map
                .as_object()
                .is_some_and(|m| m.values().all(Value::is_string))
        {
            return Err((
                format!("metadata.{field}"),
                "must map strings to strings".into(),
            ));
        }
    }
    Ok(Object {
        api_version,
        kind,
        namespace,
        name,
        body,
    })
}

/// The pods a Pod or a Deployment stands for. A Deployment's pods are `<name>-<i>`, carrying
/// the template's labels and spec.
pub fn pod_plans(object: &Object) -> Result<Vec<PodPlan>, (String, String)> {
    let namespace = object.namespace.clone().unwrap_or_default();
    match (object.api_version.as_str(), object.kind.as_str()) {
        ("v1", "Pod") => Ok(vec![pod_plan(&namespace, &object.name, &object.body, "")?]),
        ("apps/v1", "Deployment") => {
            let replicas = match object.body.pointer("/spec/replicas") {
                None | Some(Value::Null) => DEFAULT_REPLICAS,
                Some(value) => value
                    .as_u64()
                    .filter(|n| *n <= MAX_REPLICAS)
                    .ok_or_else(|| {
                        (
                            "spec.replicas".to_owned(),
                            format!("must be a whole number from 0 to {MAX_REPLICAS}"),
                        )
                    })?,
            };
            let template = object
                .body
                .pointer("/spec/template")
                .ok_or_else(|| ("spec.template".to_owned(), "is required".to_owned()))?;
            let selector = string_map(object.body.pointer("/spec/selector/matchLabels"));
            let labels = string_map(template.pointer("/metadata/labels"));
            if let Some((key, _)) = selector.iter().find(|(k, v)| labels.get(*k) != Some(*v)) {
                return Err((
                    "spec.selector.matchLabels".to_owned(),
                    format!("{key:?} does not match the template's labels"),
                ));
            }
            (0..replicas)
                .map(|i| {
                    let name = format!("{}-{i}", object.name);
                    let mut body = json!({
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "metadata": {
                            "name": name,
                            "namespace": namespace,
                            "labels": labels,
                        },
                        "spec": template.get("spec").cloned().unwrap_or(Value::Null),
                    });
                    if let Some(annotations) = template.pointer("/metadata/annotations") {
                        body["metadata"]["annotations"] = annotations.clone();
                    }
                    pod_plan(&namespace, &name, &body, "spec.template.")
                })
                .collect()
        }
        _ => Ok(Vec::new()),
    }
}

fn pod_plan(
    namespace: &str,
    name: &str,
    body: &Value,
    prefix: &str,
) -> Result<PodPlan, (String, String)> {
    let spec = body
        .get("spec")
        .filter(|s| s.is_object())
        .ok_or_else(|| (format!("{prefix}spec"), "is required".to_owned()))?;
    let containers = spec
        .get("containers")
        .and_then(Value::as_array)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            (
                format!("{prefix}spec.containers"),
                "needs at least one container".to_owned(),
            )
        })?;
    let container = &containers[0];
    let strings = |field: &str| -> Result<Vec<String>, (String, String)> {
        match container.get(field) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Value::String(s) => Ok(s.clone()),
                    // YAML turns `--port 8080` args into numbers; a shell would see text.
                    Value::Number(n) => Ok(n.to_string()),
                    _ => Err((
                        format!("{prefix}spec.containers[0].{field}"),
                        "must be a list of strings".to_owned(),
                    )),
                })
                .collect(),
            Some(_) => Err((
                format!("{prefix}spec.containers[0].{field}"),
                "must be a list of strings".to_owned(),
            )),
        }
    };
    let mut command = strings("command")?;
    command.extend(strings("args")?);
    let mut env = Vec::new();
    if let Some(list) = container.get("env").and_then(Value::as_array) {
        for (i, entry) in list.iter().enumerate() {
            let name = entry.get("name").and_then(Value::as_str);
            let value = entry.get("value").and_then(Value::as_str);
            match (name, value) {
                (Some(name), Some(value)) => {
                    env.push((name.to_owned(), EnvValue::Value(value.to_owned())));
                }
                (Some(name), None) if entry.get("valueFrom").is_some() => {
                    let field = entry
                        .pointer("/valueFrom/fieldRef/fieldPath")
                        .and_then(Value::as_str)
                        .filter(|path| ENV_FIELDS.contains(path))
                        .ok_or_else(|| {
                            (
                                format!("{prefix}spec.containers[0].env[{i}].valueFrom"),
                                format!(
                                    "local mode fills in only fieldRef.fieldPath {}",
                                    ENV_FIELDS.join(", ")
                                ),
                            )
                        })?;
                    env.push((name.to_owned(), EnvValue::Field(field.to_owned())));
                }
                _ => {
                    return Err((
                        format!("{prefix}spec.containers[0].env[{i}]"),
                        "needs a name and a string value".to_owned(),
                    ));
                }
            }
        }
    }
    let service_account = spec
        .get("serviceAccountName")
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_owned();
    check_dns_subdomain(&service_account)
        .map_err(|m| (format!("{prefix}spec.serviceAccountName"), m))?;
    Ok(PodPlan {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        labels: string_map(body.pointer("/metadata/labels")),
        service_account,
        node_name: spec
            .get("nodeName")
            .and_then(Value::as_str)
            .map(str::to_owned),
        command,
        env,
        body: body.clone(),
    })
}

/// The Pod object as the controller should see it once the pod runs.
pub fn running_pod(plan: &PodPlan, uid: &str, node: &str, ip: Ipv4Addr) -> Value {
    let mut body = plan.body.clone();
    body["metadata"]["uid"] = json!(uid);
    body["metadata"]["namespace"] = json!(plan.namespace);
    body["metadata"]["name"] = json!(plan.name);
    body["spec"]["nodeName"] = json!(node);
    body["spec"]["serviceAccountName"] = json!(plan.service_account);
    body["status"] = json!({
        "phase": "Running",
        "podIP": ip.to_string(),
        "podIPs": [{ "ip": ip.to_string() }],
    });
    body
}

/// Whether a pod with `pod_labels` in a namespace with `namespace_labels` is in the mesh: the
/// pod's `istio.io/dataplane-mode` wins over the namespace's; `ambient` enrolls.
pub fn enrolled(
    namespace_labels: &BTreeMap<String, String>,
    pod_labels: &BTreeMap<String, String>,
) -> bool {
    pod_labels
        .get(DATAPLANE_MODE)
        .or_else(|| namespace_labels.get(DATAPLANE_MODE))
        .is_some_and(|mode| mode == "ambient")
}

/// Hands out cluster IPs from `10.96.0.0/16`, from `.0.11` up (kind reserves the low
/// addresses for the API server and DNS, `.0.10`).
#[derive(Debug, Default, Clone)]
pub struct VipAllocator {
    used: std::collections::BTreeSet<Ipv4Addr>,
}

impl VipAllocator {
    /// Marks `ip` as taken (a Service that names its own cluster IP).
    pub fn reserve(&mut self, ip: Ipv4Addr) -> bool {
        self.used.insert(ip)
    }

    /// Gives `ip` back.
    pub fn release(&mut self, ip: Ipv4Addr) {
        self.used.remove(&ip);
    }

    /// The lowest free address.
    pub fn allocate(&mut self) -> Option<Ipv4Addr> {
        let [a, b] = SERVICE_CIDR_BASE;
        let ip = (11u32..=0xfffe)
            .map(|host| Ipv4Addr::new(a, b, (host >> 8) as u8, (host & 0xff) as u8))
            .find(|ip| !self.used.contains(ip))?;
        self.used.insert(ip);
        Some(ip)
    }
}

/// A Service without a cluster IP gets one; `None` (headless) stays. Returns the IP to record.
pub fn assign_cluster_ip(
    body: &mut Value,
    vips: &mut VipAllocator,
) -> Result<Option<Ipv4Addr>, (String, String)> {
    match body.pointer("/spec/clusterIP").and_then(Value::as_str) {
        Some("None") => Ok(None),
        Some(given) if !given.is_empty() => {
            let ip: Ipv4Addr = given.parse().map_err(|_| {
                (
                    "spec.clusterIP".to_owned(),
                    format!("{given:?} is not an IPv4 address"),
                )
            })?;
            vips.reserve(ip);
            Ok(Some(ip))
        }
        _ => {
            let ip = vips.allocate().ok_or_else(|| {
                (
                    "spec.clusterIP".to_owned(),
                    "no free cluster IP left".to_owned(),
                )
            })?;
            if !body.get("spec").is_some_and(Value::is_object) {
                body["spec"] = json!({});
            }
            body["spec"]["clusterIP"] = json!(ip.to_string());
            body["spec"]["clusterIPs"] = json!([ip.to_string()]);
            Ok(Some(ip))
        }
    }
}

/// The ServiceAccount name of a waypoint Gateway.
pub fn waypoint_service_account(gateway: &Object) -> String {
    gateway
        .body
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(GATEWAY_SERVICE_ACCOUNT))
        .and_then(Value::as_str)
        .unwrap_or(&gateway.name)
        .to_owned()
}

/// The pod and Service the runtime creates for a waypoint Gateway, as Kubernetes would from
/// its Deployment and Service: pod `<gateway>-0`, never enrolled (the waypoint terminates
/// HBONE itself), and Service `<gateway>` selecting it on the HBONE port.
pub fn waypoint_objects(gateway: &Object) -> (PodPlan, Value) {
    let namespace = gateway.namespace.clone().unwrap_or_default();
    let service_account = waypoint_service_account(gateway);
    let labels = BTreeMap::from([
        (GATEWAY_NAME_LABEL.to_owned(), gateway.name.clone()),
        (DATAPLANE_MODE.to_owned(), "none".to_owned()),
    ]);
    let pod_name = format!("{}-0", gateway.name);
    let body = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": pod_name, "namespace": namespace, "labels": labels },
        "spec": { "serviceAccountName": service_account, "containers": [{ "name": "waypoint" }] },
    });
    let pod = PodPlan {
        namespace: namespace.clone(),
        name: pod_name,
        labels,
        service_account,
        node_name: None,
        command: Vec::new(),
        env: Vec::new(),
        body,
    };
    let service = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": gateway.name,
            "namespace": namespace,
            "labels": { GATEWAY_NAME_LABEL: gateway.name },
        },
        "spec": {
            "selector": { GATEWAY_NAME_LABEL: gateway.name },
            "ports": [{ "name": "mesh", "port": 15008, "targetPort": 15008, "protocol": "TCP" }],
        },
    });
    (pod, service)
}

fn string_map(value: Option<&Value>) -> BTreeMap<String, String> {
    value
        .and_then(Value::as_object)
        .map(|map| {
            map.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// RFC 1123 label: lowercase alphanumerics and `-`, 1–63 characters, alphanumeric at both ends.
pub fn check_dns_label(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a DNS label (lowercase letters, digits and '-', at most 63)"
        ))
    }
}

/// RFC 1123 subdomain: dot-separated labels, at most 253 characters.
pub fn check_dns_subdomain(name: &str) -> Result<(), String> {
    if name.len() > 253 || name.split('.').any(|label| check_dns_label(label).is_err()) {
        return Err(format!(
            "{name:?} is not a DNS subdomain (lowercase letters, digits, '-' and '.')"
        ));
    }
    Ok(())
}

#[cfg(test)]
#[path = "objects_tests.rs"]
mod tests;
