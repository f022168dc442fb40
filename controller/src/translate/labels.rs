//! The Istio labels that enroll workloads and bind waypoints, and their per-namespace values.

use std::collections::BTreeMap;

use super::error::Errors;
use crate::objects::{ObjectMeta, Resources};

/// `ambient` enrolls, `none` opts out; on namespaces and pods, the pod's wins.
pub(crate) const DATAPLANE_MODE: &str = "istio.io/dataplane-mode";
/// The waypoint's name, or `none`; on namespaces, services and pods.
pub(crate) const USE_WAYPOINT: &str = "istio.io/use-waypoint";
/// The waypoint's namespace when it is not the object's own.
pub(crate) const USE_WAYPOINT_NAMESPACE: &str = "istio.io/use-waypoint-namespace";
/// On a waypoint Gateway: which traffic it takes.
pub(crate) const WAYPOINT_FOR: &str = "istio.io/waypoint-for";
/// On pods of a Gateway's deployment: the Gateway's name.
pub(crate) const GATEWAY_NAME: &str = "gateway.networking.k8s.io/gateway-name";
/// Annotation overriding the service account of a Gateway's deployment.
pub(crate) const GATEWAY_SERVICE_ACCOUNT: &str = "gateway.istio.io/service-account";
/// Annotation Istio's sidecar injector sets: such pods are not ambient workloads.
pub(crate) const SIDECAR_STATUS: &str = "sidecar.istio.io/status";
/// On EndpointSlices: the Service they belong to.
pub(crate) const SERVICE_NAME: &str = "kubernetes.io/service-name";

const EMPTY: &BTreeMap<String, String> = &BTreeMap::new();

/// What an object's `istio.io/use-waypoint` labels say.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) enum Binding {
    /// No label: inherit from the broader level.
    #[default]
    Unset,
    /// `none`: no waypoint, whatever the broader level says.
    OptOut,
    /// A waypoint Gateway.
    Named { namespace: String, name: String },
}

/// Per-namespace settings from Namespace labels (a namespace without a Namespace object has
/// none).
#[derive(Debug, Default)]
pub(crate) struct NamespaceSettings {
    by_name: BTreeMap<String, NamespaceLabels>,
}

#[derive(Debug, Default)]
pub(crate) struct NamespaceLabels {
    pub(crate) enrolled: Option<bool>,
    pub(crate) binding: Binding,
}

impl NamespaceSettings {
    pub(crate) fn build(resources: &Resources, errors: &mut Errors) -> Self {
        let mut by_name = BTreeMap::new();
        for namespace in resources.namespaces() {
            let name = namespace.metadata.name.clone().unwrap_or_default();
            let report = |errors: &mut Errors, field: String, message: String| {
                errors.push("Namespace", "", &name, field, message);
            };
            let labels = labels_of(&namespace.metadata);
            let enrolled = dataplane_mode(labels).unwrap_or_else(|(field, message)| {
                report(errors, field, message);
                None
            });
            let binding = binding(labels, &name).unwrap_or_else(|(field, message)| {
                report(errors, field, message);
                Binding::Unset
            });
            by_name.insert(name.clone(), NamespaceLabels { enrolled, binding });
        }
        Self { by_name }
    }

    pub(crate) fn get(&self, namespace: &str) -> Option<&NamespaceLabels> {
        self.by_name.get(namespace)
    }

    pub(crate) fn enrolled(&self, namespace: &str) -> bool {
        self.get(namespace)
            .and_then(|ns| ns.enrolled)
            .unwrap_or(false)
    }

    pub(crate) fn binding(&self, namespace: &str) -> Binding {
        self.get(namespace)
            .map(|ns| ns.binding.clone())
            .unwrap_or_default()
    }
}

pub(crate) fn labels_of(meta: &ObjectMeta) -> &BTreeMap<String, String> {
    meta.labels.as_ref().unwrap_or(EMPTY)
}

pub(crate) fn label_field(label: &str) -> String {
    format!("metadata.labels[{label:?}]")
}

/// `istio.io/dataplane-mode`: `Some(true)` for ambient, `Some(false)` for none, `None` unset.
pub(crate) fn dataplane_mode(
    labels: &BTreeMap<String, String>,
) -> Result<Option<bool>, (String, String)> {
    match labels.get(DATAPLANE_MODE).map(String::as_str) {
        None => Ok(None),
        Some("ambient") => Ok(Some(true)),
        Some("none") => Ok(Some(false)),
        Some(other) => Err((
            label_field(DATAPLANE_MODE),
            format!("{other:?} is not a dataplane mode (ambient or none); ignored"),
        )),
    }
}

/// `istio.io/use-waypoint` (+ `istio.io/use-waypoint-namespace`) of an object in `namespace`.
pub(crate) fn binding(
    labels: &BTreeMap<String, String>,
    namespace: &str,
) -> Result<Binding, (String, String)> {
    let Some(name) = labels.get(USE_WAYPOINT) else {
        if labels.contains_key(USE_WAYPOINT_NAMESPACE) {
            return Err((
                label_field(USE_WAYPOINT_NAMESPACE),
                format!("is set without {USE_WAYPOINT}; ignored"),
            ));
        }
        return Ok(Binding::Unset);
    };
    if name == "none" {
        return Ok(Binding::OptOut);
    }
    if name.is_empty() {
        return Err((
            label_field(USE_WAYPOINT),
            "must name a waypoint or be none".into(),
        ));
    }
    let waypoint_namespace = labels
        .get(USE_WAYPOINT_NAMESPACE)
        .cloned()
        .unwrap_or_else(|| namespace.to_owned());
    Ok(Binding::Named {
        namespace: waypoint_namespace,
        name: name.clone(),
    })
}
