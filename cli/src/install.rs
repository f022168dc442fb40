//! `ambit install --dry-run`: the manifests the Helm charts install, rendered by
//! `ambit-install` (no Helm binary needed). One values file holds each chart's values under
//! its name:
//!
//! ```yaml
//! ambit-base: {}
//! ambit-controller: {ca: {source: generated}}
//! ambit-ztunnel: {resources: {requests: {cpu: 200m}}}
//! ```
//!
//! Applying to a cluster is not built yet: pipe the output to `kubectl apply -f -`, or use Helm.

use std::path::Path;

use ambit_install::{Chart, Release, to_yaml_stream};
use anyhow::{Context, Result, bail};
use serde_json::Value;

/// The charts, in install order.
pub const CHARTS: &[&str] = &["ambit-base", "ambit-controller", "ambit-ztunnel"];

/// Renders every chart of `charts_dir` with the per-chart values of `values` (if any) into
/// one YAML stream.
pub fn render(charts_dir: &Path, values: Option<&Path>, namespace: &str) -> Result<String> {
    let values: Value = match values {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            serde_yaml_ng::from_str(&text).with_context(|| format!("{}", path.display()))?
        }
        None => Value::Object(Default::default()),
    };
    let Value::Object(per_chart) = &values else {
        bail!("the values file must be a mapping of chart name to values");
    };
    if let Some(unknown) = per_chart.keys().find(|k| !CHARTS.contains(&k.as_str())) {
        bail!(
            "values file: unknown chart {unknown:?} (charts: {})",
            CHARTS.join(", ")
        );
    }
    let release = Release {
        name: "ambit".to_owned(),
        namespace: namespace.to_owned(),
    };
    let mut out = String::new();
    for name in CHARTS {
        let dir = charts_dir.join(name);
        let chart = Chart::load(&dir).with_context(|| format!("chart {}", dir.display()))?;
        let overrides: Vec<Value> = per_chart.get(*name).cloned().into_iter().collect();
        let manifests = chart
            .render(&overrides, &release)
            .with_context(|| format!("rendering {name}"))?;
        out.push_str(&to_yaml_stream(&manifests)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn charts() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts")
    }

    #[test]
    fn every_chart_renders_with_defaults_and_with_per_chart_values() {
        let all = render(&charts(), None, "ambit-system").unwrap();
        for kind in [
            "CustomResourceDefinition",
            "Deployment",
            "DaemonSet",
            "ClusterRole",
        ] {
            assert!(all.contains(&format!("kind: {kind}")), "{kind} missing");
        }
        let dir = std::env::temp_dir().join(format!("ambit-install-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let values = dir.join("values.yaml");
        std::fs::write(&values, "ambit-controller: {replicas: 3}\n").unwrap();
        let custom = render(&charts(), Some(&values), "mesh").unwrap();
        assert!(custom.contains("replicas: 3"), "values reach the chart");
        assert!(custom.contains("namespace: mesh"));

        std::fs::write(&values, "ambit-gateway: {}\n").unwrap();
        let err = render(&charts(), Some(&values), "mesh").unwrap_err();
        assert!(err.to_string().contains("unknown chart"), "{err}");
        std::fs::write(&values, "ambit-controller: {replicas: many}\n").unwrap();
        assert!(
            render(&charts(), Some(&values), "mesh").is_err(),
            "the schema applies"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
