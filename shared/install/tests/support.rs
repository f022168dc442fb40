//! Shared by the chart tests: where the charts are, rendering every chart for every values
//! file, and strict parsing of rendered objects into their k8s-openapi types.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use ambit_install::{Manifest, Release, render_chart};
use anyhow::{Context, bail};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The repository's `charts/` folder.
pub fn charts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../charts")
}

/// Every chart folder (one with a `Chart.yaml`), sorted.
pub fn chart_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(charts_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("Chart.yaml").is_file())
        .collect();
    dirs.sort();
    dirs
}

/// The chart's `ci/*.yaml` values files, sorted.
pub fn ci_values(chart: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(chart.join("ci")) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// The release every test renders for.
pub fn release() -> Release {
    Release {
        name: "ambit".to_owned(),
        namespace: "ambit-system".to_owned(),
    }
}

/// Renders `chart` (a folder name under `charts/`) with the given values files.
pub fn render(chart: &str, values: &[PathBuf]) -> anyhow::Result<Vec<Manifest>> {
    Ok(render_chart(&charts_dir().join(chart), values, &release())?)
}

/// Renders `chart` with one inline YAML values document.
pub fn render_with(chart: &str, values_yaml: &str) -> anyhow::Result<Vec<Manifest>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("values.yaml");
    std::fs::write(&path, values_yaml)?;
    render(chart, &[path])
}

/// The one object of `kind` named `name`.
pub fn find<'a>(manifests: &'a [Manifest], kind: &str, name: &str) -> &'a Value {
    let found: Vec<_> = manifests
        .iter()
        .filter(|m| m.kind() == kind && m.name() == name)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {kind} {name}, found {}",
        found.len()
    );
    &found[0].object
}

/// Parses `object` into `T` and checks nothing was dropped or changed: serializing `T` back
/// must give the same JSON. That is serde with deny-unknown-fields semantics for types that
/// ignore unknown fields (as k8s-openapi's do).
pub fn strict<T: DeserializeOwned + Serialize>(object: &Value) -> anyhow::Result<T> {
    let typed: T = serde_path_to_error::deserialize(object.clone()).context("typed parse")?;
    let back = serde_json::to_value(&typed)?;
    if let Some(difference) = first_difference(object, &back, String::new()) {
        bail!("not preserved by the typed parse (unknown or misplaced field?): {difference}");
    }
    Ok(typed)
}

/// Strictly parses a rendered object into its k8s-openapi type, chosen by apiVersion and kind.
pub fn check_typed(manifest: &Manifest) -> anyhow::Result<()> {
    let object = &manifest.object;
    match (manifest.api_version(), manifest.kind()) {
        ("v1", "Namespace") => strict::<Namespace>(object).map(drop),
        ("v1", "ServiceAccount") => strict::<ServiceAccount>(object).map(drop),
        ("v1", "Secret") => strict::<Secret>(object).map(drop),
        ("v1", "ConfigMap") => strict::<ConfigMap>(object).map(drop),
        ("v1", "Service") => strict::<Service>(object).map(drop),
        ("apps/v1", "Deployment") => strict::<Deployment>(object).map(drop),
        ("apps/v1", "DaemonSet") => strict::<DaemonSet>(object).map(drop),
        ("policy/v1", "PodDisruptionBudget") => strict::<PodDisruptionBudget>(object).map(drop),
        ("autoscaling/v2", "HorizontalPodAutoscaler") => {
            strict::<HorizontalPodAutoscaler>(object).map(drop)
        }
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => strict::<ClusterRole>(object).map(drop),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            strict::<ClusterRoleBinding>(object).map(drop)
        }
        ("rbac.authorization.k8s.io/v1", "Role") => strict::<Role>(object).map(drop),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => strict::<RoleBinding>(object).map(drop),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => {
            strict::<CustomResourceDefinition>(object).map(drop)
        }
        (api_version, kind) => bail!("no typed check for {api_version} {kind}"),
    }
    .with_context(|| {
        format!(
            "{} {} from {}",
            manifest.kind(),
            manifest.name(),
            manifest.template
        )
    })
}

/// Where `actual` first differs from `expected`, as a JSON path; `None` if equal. Numbers
/// compare by value (an integer may come back as the same integer in another width).
fn first_difference(expected: &Value, actual: &Value, path: String) -> Option<String> {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (key, value) in e {
                let here = format!("{path}.{key}");
                match a.get(key) {
                    Some(other) => {
                        if let Some(d) = first_difference(value, other, here) {
                            return Some(d);
                        }
                    }
                    None => return Some(format!("{here} was dropped")),
                }
            }
            a.keys()
                .find(|k| !e.contains_key(*k))
                .map(|k| format!("{path}.{k} appeared"))
        }
        (Value::Array(e), Value::Array(a)) => {
            if e.len() != a.len() {
                return Some(format!("{path}: {} items became {}", e.len(), a.len()));
            }
            e.iter()
                .zip(a)
                .enumerate()
                .find_map(|(i, (e, a))| first_difference(e, a, format!("{path}[{i}]")))
        }
        (Value::Number(e), Value::Number(a)) if e.as_f64() == a.as_f64() => None,
        (e, a) if e == a => None,
        (e, a) => Some(format!("{path}: {e} became {a}")),
    }
}

/// The CRDs by `group/kind`.
pub fn crds() -> BTreeMap<String, CustomResourceDefinition> {
    let manifests: Vec<Manifest> = render("ambit-base", &[]).unwrap();
    manifests
        .iter()
        .map(|m| {
            let crd: CustomResourceDefinition = strict(&m.object).unwrap();
            (format!("{}/{}", crd.spec.group, crd.spec.names.kind), crd)
        })
        .collect()
}

/// The version's schema as a JSON Schema that refuses what the API server would prune.
fn strict_schema(schema: &Value) -> Value {
    let mut schema = schema.clone();
    close_objects(&mut schema);
    schema
}

fn close_objects(schema: &mut Value) {
    let Some(map) = schema.as_object_mut() else {
        return;
    };
    let preserve = map.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
    if map.contains_key("properties") && !map.contains_key("additionalProperties") && !preserve {
        map.insert("additionalProperties".to_owned(), json!(false));
    }
    for key in ["properties"] {
        if let Some(Value::Object(children)) = map.get_mut(key) {
            children.values_mut().for_each(close_objects);
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(child) = map.get_mut(key) {
            close_objects(child);
        }
    }
}

fn schema_of(crds: &BTreeMap<String, CustomResourceDefinition>, object: &Value) -> Value {
    let api_version = object["apiVersion"].as_str().unwrap();
    let (group, version) = api_version.split_once('/').unwrap();
    let kind = object["kind"].as_str().unwrap();
    let crd = &crds[&format!("{group}/{kind}")];
    let version = crd
        .spec
        .versions
        .iter()
        .find(|v| v.name == version)
        .unwrap();
    let schema = version
        .schema
        .as_ref()
        .unwrap()
        .open_api_v3_schema
        .as_ref()
        .unwrap();
    strict_schema(&serde_json::to_value(schema).unwrap())
}

pub fn violations(
    crds: &BTreeMap<String, CustomResourceDefinition>,
    object: &Value,
) -> Vec<String> {
    let schema = schema_of(crds, object);
    let validator = jsonschema::validator_for(&schema).unwrap();
    // metadata is the API server's business, not the schema's.
    let mut object = object.clone();
    object.as_object_mut().unwrap().remove("metadata");
    object.as_object_mut().unwrap().remove("apiVersion");
    object.as_object_mut().unwrap().remove("kind");
    validator
        .iter_errors(&object)
        .map(|e| format!("{}: {e}", e.instance_path))
        .collect()
}
