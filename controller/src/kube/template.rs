//! [`WaypointTemplate`]: the objects of a waypoint as YAML files with placeholders, read from
//! `--waypoint-template-dir` (the ambit-controller chart mounts its `ambit-waypoint-template`
//! ConfigMap there) and filled in per Gateway.
//!
//! Files: `serviceaccount.yaml`, `deployment.yaml` and `service.yaml` are required;
//! `hpa.yaml` (autoscaling/v2 HorizontalPodAutoscaler) and `pdb.yaml` (policy/v1
//! PodDisruptionBudget) are optional. Each holds one object of its kind. The placeholders
//! `{name}`, `{namespace}`, `{service_account}` and `{identity}` are replaced by the Gateway's
//! values (DNS names and a SPIFFE ID, so they never need YAML quoting). Names are fixed, since
//! the controller finds the objects by them: the ServiceAccount is `{service_account}`, every
//! other object `{name}`; `metadata.namespace`, if given, is `{namespace}`.
//!
//! Everything is checked when the template is loaded, by filling it with sample values: a
//! template that would fail for one Gateway fails at start, with the file's path.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// One file of the template: the object it must hold and where the API serves it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct TemplateFile {
    pub(crate) file: &'static str,
    pub(crate) group: &'static str,
    pub(crate) version: &'static str,
    pub(crate) kind: &'static str,
    pub(crate) plural: &'static str,
    required: bool,
}

/// In the order the objects are applied: the Service last of the three required ones, since
/// the Gateway's status reports its address.
const FILES: &[TemplateFile] = &[
    file(
        "serviceaccount.yaml",
        "",
        "v1",
        "ServiceAccount",
        "serviceaccounts",
        true,
    ),
    file(
        "deployment.yaml",
        "apps",
        "v1",
        "Deployment",
        "deployments",
        true,
    ),
    file("service.yaml", "", "v1", "Service", "services", true),
    file(
        "hpa.yaml",
        "autoscaling",
        "v2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        false,
    ),
    file(
        "pdb.yaml",
        "policy",
        "v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        false,
    ),
];

const fn file(
    file: &'static str,
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    required: bool,
) -> TemplateFile {
    TemplateFile {
        file,
        group,
        version,
        kind,
        plural,
        required,
    }
}

/// The placeholders a template may use.
pub const PLACEHOLDERS: [&str; 4] = ["{name}", "{namespace}", "{service_account}", "{identity}"];

/// What fills a template for one Gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TemplateValues<'a> {
    /// The Gateway's name.
    pub name: &'a str,
    /// The Gateway's namespace.
    pub namespace: &'a str,
    /// The waypoint's ServiceAccount.
    pub service_account: &'a str,
    /// The waypoint's SPIFFE ID.
    pub identity: &'a str,
}

/// Values for checking a template at load time; distinct, so a name in the wrong place shows.
const SAMPLE: TemplateValues<'static> = TemplateValues {
    name: "sample-waypoint",
    namespace: "sample-namespace",
    service_account: "sample-account",
    identity: "spiffe://cluster.local/ns/sample-namespace/sa/sample-account",
};

/// The waypoint templates, checked.
#[derive(Clone, PartialEq, Eq)]
pub struct WaypointTemplate {
    /// File → its text, for the files present, in [`FILES`] order.
    files: Vec<(&'static TemplateFile, String)>,
}

/// One filled-in object.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RenderedObject {
    pub(crate) file: &'static TemplateFile,
    pub(crate) name: String,
    pub(crate) body: Value,
}

/// The template folder, or one of its files, is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("waypoint template {}: {message}", path.display())]
pub struct TemplateError {
    /// The file (or the folder).
    pub path: PathBuf,
    /// What is wrong.
    pub message: String,
}

impl WaypointTemplate {
    /// Reads and checks the template files of `dir`. Entries starting with `.` are skipped
    /// (a mounted ConfigMap holds `..data` links next to its files); any other unknown file is
    /// an error, so that a misnamed file is not silently left out.
    pub fn load(dir: &Path) -> Result<Self, TemplateError> {
        let error = |path: &Path, message: String| TemplateError {
            path: path.to_owned(),
            message,
        };
        let entries = std::fs::read_dir(dir)
            .map_err(|err| error(dir, format!("cannot read the folder: {err}")))?;
        let mut texts = BTreeMap::new();
        for entry in entries {
            let entry =
                entry.map_err(|err| error(dir, format!("cannot read the folder: {err}")))?;
            let file_name = entry.file_name().to_string_lossy().into_owned();
            if file_name.starts_with('.') {
                continue;
            }
            let path = entry.path();
            let text = std::fs::read_to_string(&path)
                .map_err(|err| error(&path, format!("cannot read: {err}")))?;
            texts.insert(file_name, text);
        }
        Self::from_files(texts).map_err(|(file, message)| TemplateError {
            path: dir.join(file),
            message,
        })
    }

    /// Checks the template files given as (file name, text); errors are (file name, message).
    pub fn from_files(
        files: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, (String, String)> {
        let mut texts: BTreeMap<String, String> = files.into_iter().collect();
        let known: Vec<&str> = FILES.iter().map(|f| f.file).collect();
        if let Some(unknown) = texts.keys().find(|name| !known.contains(&name.as_str())) {
            return Err((
                unknown.clone(),
                format!("unknown file; a waypoint template has {}", known.join(", ")),
            ));
        }
        let mut present = Vec::new();
        for template_file in FILES {
            match texts.remove(template_file.file) {
                Some(text) => present.push((template_file, text)),
                None if template_file.required => {
                    return Err((template_file.file.to_owned(), "missing".to_owned()));
                }
                None => {}
            }
        }
        let template = Self { files: present };
        for (template_file, text) in &template.files {
            render_file(template_file, text, &SAMPLE)
                .map_err(|message| (template_file.file.to_owned(), message))?;
        }
        Ok(template)
    }

    /// The files present, in the order their objects are applied.
    pub fn files(&self) -> Vec<&'static str> {
        self.files.iter().map(|(f, _)| f.file).collect()
    }

    /// The objects for one Gateway, in the order they are applied. Errors name the file; they
    /// cannot happen for values that are DNS names (checked at load with such values).
    pub(crate) fn render(
        &self,
        values: &TemplateValues<'_>,
    ) -> Result<Vec<RenderedObject>, (String, String)> {
        self.files
            .iter()
            .map(|(template_file, text)| {
                render_file(template_file, text, values)
                    .map_err(|message| (template_file.file.to_owned(), message))
            })
            .collect()
    }
}

impl fmt::Debug for WaypointTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaypointTemplate")
            .field("files", &self.files())
            .finish()
    }
}

/// Fills `text` with `values` and checks the object: one YAML document of the file's kind,
/// named as required, that parses as its Kubernetes type.
fn render_file(
    template_file: &'static TemplateFile,
    text: &str,
    values: &TemplateValues<'_>,
) -> Result<RenderedObject, String> {
    let filled = text
        .replace("{name}", values.name)
        .replace("{namespace}", values.namespace)
        .replace("{service_account}", values.service_account)
        .replace("{identity}", values.identity);
    if let Some(unknown) = leftover_placeholder(&filled) {
        return Err(format!(
            "unknown placeholder {unknown}; known: {}",
            PLACEHOLDERS.join(", ")
        ));
    }
    let body: Value = serde_yaml_ng::from_str(&filled).map_err(|err| format!("not YAML: {err}"))?;
    if !body.is_object() {
        return Err("must hold one object".to_owned());
    }
    let api_version = if template_file.group.is_empty() {
        template_file.version.to_owned()
    } else {
        format!("{}/{}", template_file.group, template_file.version)
    };
    if body["apiVersion"] != api_version.as_str() || body["kind"] != template_file.kind {
        return Err(format!(
            "must hold a {} of apiVersion {api_version}, not {} {}",
            template_file.kind, body["apiVersion"], body["kind"]
        ));
    }
    let (expected_name, placeholder) = if template_file.kind == "ServiceAccount" {
        (values.service_account, "{service_account}")
    } else {
        (values.name, "{name}")
    };
    if body["metadata"]["name"] != expected_name {
        return Err(format!("metadata.name must be \"{placeholder}\""));
    }
    match &body["metadata"]["namespace"] {
        Value::Null => {}
        namespace if namespace == values.namespace => {}
        _ => return Err("metadata.namespace must be \"{namespace}\" or absent".to_owned()),
    }
    check_type(template_file, &body)?;
    Ok(RenderedObject {
        file: template_file,
        name: expected_name.to_owned(),
        body,
    })
}

/// The object parses as its Kubernetes type (field types, required fields).
fn check_type(template_file: &TemplateFile, body: &Value) -> Result<(), String> {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
    use k8s_openapi::api::core::v1::{Service, ServiceAccount};
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;

    fn parse<T: serde::de::DeserializeOwned>(body: &Value) -> Result<(), String> {
        serde_path_to_error::deserialize::<_, T>(body.clone())
            .map(drop)
            .map_err(|err| format!("{}: {}", err.path(), err.inner()))
    }
    match template_file.kind {
        "ServiceAccount" => parse::<ServiceAccount>(body),
        "Deployment" => parse::<Deployment>(body),
        "Service" => parse::<Service>(body),
        "HorizontalPodAutoscaler" => parse::<HorizontalPodAutoscaler>(body),
        "PodDisruptionBudget" => parse::<PodDisruptionBudget>(body),
        other => Err(format!("no type check for {other}")),
    }
}

/// The first `{word}` left in `text` (lowercase letters and `_`): a misspelt placeholder.
fn leftover_placeholder(text: &str) -> Option<&str> {
    let mut rest = text;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        let word_len = after
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(after.len());
        if word_len > 0 && after[word_len..].starts_with('}') {
            return Some(&rest[start..start + word_len + 2]);
        }
        rest = after;
    }
    None
}

#[cfg(test)]
mod tests;
