//! A Helm chart on disk, rendered as `helm template` would: values merged, checked against the
//! chart's `values.schema.json`, templates executed, output split into Kubernetes objects.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::template::{TemplateError, TemplateSet};

/// Kubernetes version reported as `.Capabilities.KubeVersion` (the k8s-openapi level we check
/// against).
const KUBE_VERSION: (&str, &str) = ("1", "32");

/// Helm's install order for the kinds our charts produce; other kinds go last.
const KIND_ORDER: &[&str] = &[
    "Namespace",
    "CustomResourceDefinition",
    "PodDisruptionBudget",
    "ServiceAccount",
    "Secret",
    "ConfigMap",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "Service",
    "DaemonSet",
    "Deployment",
    "HorizontalPodAutoscaler",
];

/// Why a chart could not be rendered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InstallError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// `Chart.yaml`, `values.yaml`, a values file or the schema is malformed.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The merged values break `values.schema.json`; one entry per violation.
    #[error("values do not match {chart}'s values.schema.json:\n  {}", .violations.join("\n  "))]
    Schema {
        /// The chart's name.
        chart: String,
        /// `<instance path>: <message>` per violation.
        violations: Vec<String>,
    },
    /// A template failed to parse or execute.
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// A rendered document is not a Kubernetes object.
    #[error("{template}, document {index}: {message}")]
    Document {
        /// The template that produced it.
        template: String,
        /// 0-based index of the YAML document in that template's output.
        index: usize,
        /// What is wrong.
        message: String,
    },
}

/// `Chart.yaml`, as far as rendering needs it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChartMetadata {
    /// Must be `v2`.
    pub api_version: String,
    /// The chart name.
    pub name: String,
    /// The chart version (semver).
    pub version: String,
    /// The version of the software it installs.
    #[serde(default)]
    pub app_version: Option<String>,
    /// A one-line description.
    #[serde(default)]
    pub description: Option<String>,
    /// `application` or `library`.
    #[serde(default, rename = "type")]
    pub chart_type: Option<String>,
}

/// A chart loaded from disk.
#[derive(Debug)]
pub struct Chart {
    /// The chart directory.
    pub dir: PathBuf,
    /// Its `Chart.yaml`.
    pub metadata: ChartMetadata,
    /// Its `values.yaml`.
    pub default_values: Value,
    /// Its `values.schema.json`, if any.
    pub schema: Option<Value>,
    templates: TemplateSet,
}

/// The release a chart is rendered for (`.Release`).
#[derive(Debug, Clone)]
pub struct Release {
    /// Release name.
    pub name: String,
    /// Namespace the objects go to.
    pub namespace: String,
}

/// One rendered Kubernetes object.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The template that produced it, e.g. `templates/daemonset.yaml`.
    pub template: String,
    /// The object.
    pub object: Value,
}

impl Chart {
    /// Reads `dir/Chart.yaml`, `values.yaml`, `values.schema.json`, every template under
    /// `templates/` and every other file (for `.Files.Get`).
    pub fn load(dir: &Path) -> Result<Self, InstallError> {
        let metadata: ChartMetadata = parse_yaml(&dir.join("Chart.yaml"))?;
        if metadata.api_version != "v2" {
            return Err(InstallError::Invalid {
                path: dir.join("Chart.yaml"),
                message: format!("apiVersion {:?} is not v2", metadata.api_version),
            });
        }
        let values_path = dir.join("values.yaml");
        let default_values = if values_path.exists() {
            parse_yaml::<Value>(&values_path)?
        } else {
            Value::Object(Map::new())
        };
        let schema_path = dir.join("values.schema.json");
        let schema = if schema_path.exists() {
            let text = read(&schema_path)?;
            let schema: Value = serde_json::from_str(&text).map_err(|e| InstallError::Invalid {
                path: schema_path.clone(),
                message: e.to_string(),
            })?;
            jsonschema::validator_for(&schema).map_err(|e| InstallError::Invalid {
                path: schema_path,
                message: format!("not a valid JSON schema: {e}"),
            })?;
            Some(schema)
        } else {
            None
        };
        let mut templates = TemplateSet::new();
        let mut files = Vec::new();
        collect_files(dir, dir, &mut files)?;
        for relative in files {
            let content = read(&dir.join(&relative))?;
            if relative.starts_with("templates/") {
                if relative.ends_with(".yaml")
                    || relative.ends_with(".yml")
                    || relative.ends_with(".tpl")
                {
                    templates.add(&relative, &content)?;
                }
            } else if !relative.starts_with("charts/") {
                templates.add_file(&relative, content);
            }
        }
        Ok(Self {
            dir: dir.to_owned(),
            metadata,
            default_values,
            schema,
            templates,
        })
    }

    /// The chart's defaults with each override merged on top, in order.
    pub fn merged_values(&self, overrides: &[Value]) -> Value {
        let mut values = self.default_values.clone();
        for layer in overrides {
            merge(&mut values, layer.clone());
        }
        values
    }

    /// Checks `values` against `values.schema.json` (no schema: always valid).
    pub fn validate_values(&self, values: &Value) -> Result<(), InstallError> {
        let Some(schema) = &self.schema else {
            return Ok(());
        };
        let validator = jsonschema::validator_for(schema).map_err(|e| InstallError::Invalid {
            path: self.dir.join("values.schema.json"),
            message: e.to_string(),
        })?;
        let violations: Vec<String> = validator
            .iter_errors(values)
            .map(|e| format!("{}: {e}", display_path(&e.instance_path.to_string())))
            .collect();
        if violations.is_empty() {
            Ok(())
        } else {
            Err(InstallError::Schema {
                chart: self.metadata.name.clone(),
                violations,
            })
        }
    }

    /// Renders every template with the merged values; objects come back in install order.
    pub fn render(
        &self,
        overrides: &[Value],
        release: &Release,
    ) -> Result<Vec<Manifest>, InstallError> {
        let values = self.merged_values(overrides);
        self.validate_values(&values)?;
        let data = json!({
            "Values": values,
            "Release": {
                "Name": release.name,
                "Namespace": release.namespace,
                "Service": "Helm",
                "IsInstall": true,
                "IsUpgrade": false,
                "Revision": 1,
            },
            "Chart": {
                "Name": self.metadata.name,
                "Version": self.metadata.version,
                "AppVersion": self.metadata.app_version.clone().unwrap_or_default(),
            },
            "Capabilities": {
                "KubeVersion": {
                    "Version": format!("v{}.{}.0", KUBE_VERSION.0, KUBE_VERSION.1),
                    "Major": KUBE_VERSION.0,
                    "Minor": KUBE_VERSION.1,
                },
            },
        });
        let mut manifests = Vec::new();
        for name in self.templates.names() {
            let file = name.rsplit('/').next().unwrap_or(name);
            if file.starts_with('_') || name.ends_with(".tpl") {
                continue;
            }
            let output = self.templates.render(name, &data)?;
            manifests.extend(split_documents(name, &output)?);
        }
        manifests.sort_by_key(|m| kind_rank(m.kind()));
        tracing::debug!(chart = %self.metadata.name, objects = manifests.len(), "rendered");
        Ok(manifests)
    }
}

impl Manifest {
    /// The object's `kind`.
    pub fn kind(&self) -> &str {
        self.object["kind"].as_str().unwrap_or_default()
    }

    /// The object's `apiVersion`.
    pub fn api_version(&self) -> &str {
        self.object["apiVersion"].as_str().unwrap_or_default()
    }

    /// The object's `metadata.name`.
    pub fn name(&self) -> &str {
        self.object["metadata"]["name"].as_str().unwrap_or_default()
    }
}

/// Loads the chart in `dir`, reads each values file (YAML) and renders.
pub fn render_chart(
    dir: &Path,
    values_files: &[PathBuf],
    release: &Release,
) -> Result<Vec<Manifest>, InstallError> {
    let chart = Chart::load(dir)?;
    let overrides = values_files
        .iter()
        .map(|path| parse_yaml::<Value>(path))
        .collect::<Result<Vec<_>, _>>()?;
    chart.render(&overrides, release)
}

/// Renders manifests as one multi-document YAML stream, with a `# Source:` line per object.
pub fn to_yaml_stream(manifests: &[Manifest]) -> Result<String, serde_yaml_ng::Error> {
    let mut out = String::new();
    for manifest in manifests {
        out.push_str("---\n# Source: ");
        out.push_str(&manifest.template);
        out.push('\n');
        out.push_str(&serde_yaml_ng::to_string(&manifest.object)?);
    }
    Ok(out)
}

/// Helm's merge: maps merge key by key, anything else replaces, and `null` deletes a key.
pub fn merge(base: &mut Value, layer: Value) {
    match (base, layer) {
        (Value::Object(base), Value::Object(layer)) => {
            for (key, value) in layer {
                if value.is_null() {
                    base.remove(&key);
                } else if let Some(existing) = base.get_mut(&key) {
                    merge(existing, value);
                } else {
                    base.insert(key, value);
                }
            }
        }
        (base, layer) => *base = layer,
    }
}

fn kind_rank(kind: &str) -> usize {
    KIND_ORDER
        .iter()
        .position(|k| *k == kind)
        .unwrap_or(KIND_ORDER.len())
}

fn display_path(pointer: &str) -> String {
    if pointer.is_empty() {
        "(root)".to_owned()
    } else {
        pointer.trim_start_matches('/').replace('/', ".")
    }
}

/// Splits a template's output on `---` lines and parses each non-empty document.
fn split_documents(template: &str, output: &str) -> Result<Vec<Manifest>, InstallError> {
    let mut documents = vec![String::new()];
    for line in output.lines() {
        if line.trim_end() == "---" || line.starts_with("--- ") {
            documents.push(String::new());
        } else if let Some(current) = documents.last_mut() {
            current.push_str(line);
            current.push('\n');
        }
    }
    let mut manifests = Vec::new();
    for (index, text) in documents.iter().enumerate() {
        let document_error = |message: String| InstallError::Document {
            template: template.to_owned(),
            index,
            message,
        };
        let object: Value = serde_yaml_ng::from_str(text)
            .map_err(|e| document_error(format!("invalid YAML: {e}\n{text}")))?;
        match &object {
            Value::Null => continue,
            Value::Object(map) => {
                for key in ["apiVersion", "kind"] {
                    if !map.get(key).is_some_and(Value::is_string) {
                        return Err(document_error(format!("no {key}")));
                    }
                }
                if !object["metadata"]["name"].is_string() {
                    return Err(document_error("no metadata.name".to_owned()));
                }
            }
            _ => return Err(document_error("not a mapping".to_owned())),
        }
        manifests.push(Manifest {
            template: template.to_owned(),
            object,
        });
    }
    Ok(manifests)
}

fn read(path: &Path) -> Result<String, InstallError> {
    std::fs::read_to_string(path).map_err(|source| InstallError::Io {
        path: path.to_owned(),
        source,
    })
}

fn parse_yaml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, InstallError> {
    let text = read(path)?;
    serde_yaml_ng::from_str(&text).map_err(|e| InstallError::Invalid {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// Chart-relative paths (with `/`) of every regular file under `dir`, sorted.
fn collect_files(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), InstallError> {
    let io = |source| InstallError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(io)?
        .collect::<Result<_, _>>()
        .map_err(io)?;
    entries.sort_by_key(std::fs::DirEntry::path);
    for entry in entries {
        let path = entry.path();
        let file_type = entry.file_type().map_err(io)?;
        if file_type.is_dir() {
            collect_files(root, &path, out)?;
        } else if file_type.is_file()
            && let Ok(relative) = path.strip_prefix(root)
        {
            let parts: Vec<_> = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            out.push(parts.join("/"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_replaces_scalars_merges_maps_and_null_deletes() {
        let mut base = json!({"a": {"b": 1, "c": 2}, "l": [1, 2], "d": "x"});
        merge(&mut base, json!({"a": {"b": 9}, "l": [3], "d": null}));
        assert_eq!(base, json!({"a": {"b": 9, "c": 2}, "l": [3]}));
    }

    #[test]
    fn documents_split_on_separators_and_empty_ones_are_dropped() {
        let out = "---\n# only a comment\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\n\n";
        let manifests = split_documents("t", out).unwrap();
        assert_eq!(manifests.len(), 1);
        assert_eq!(manifests[0].name(), "a");
    }

    #[test]
    fn a_document_without_kind_is_refused_with_its_index() {
        let err = split_documents("t", "apiVersion: v1\nmetadata:\n  name: a\n").unwrap_err();
        assert!(
            matches!(err, InstallError::Document { index: 0, .. }),
            "{err}"
        );
    }
}
