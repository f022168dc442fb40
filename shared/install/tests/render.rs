//! Every chart renders with its defaults and with each `ci/*.yaml` values file, and every
//! object it renders parses strictly into its k8s-openapi type.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use ambit_install::to_yaml_stream;
use support::{chart_dirs, check_typed, ci_values, render};

#[test]
fn every_chart_renders_with_defaults_and_each_ci_values_file_into_strict_typed_objects() {
    let charts = chart_dirs();
    assert!(charts.len() >= 3, "charts found: {charts:?}");
    for chart in charts {
        let name = chart.file_name().unwrap().to_string_lossy().into_owned();
        let mut cases = vec![Vec::new()];
        let ci = ci_values(&chart);
        assert!(!ci.is_empty(), "{name} has no ci/*.yaml values files");
        cases.extend(ci.into_iter().map(|file| vec![file]));
        for values in cases {
            let manifests =
                render(&name, &values).unwrap_or_else(|e| panic!("{name} with {values:?}: {e:#}"));
            for manifest in &manifests {
                check_typed(manifest).unwrap_or_else(|e| panic!("{name} with {values:?}: {e:#}"));
            }
        }
    }
}

#[test]
fn every_ci_values_file_changes_what_its_chart_renders() {
    for chart in chart_dirs() {
        let name = chart.file_name().unwrap().to_string_lossy().into_owned();
        let default = to_yaml_stream(&render(&name, &[]).unwrap()).unwrap();
        for file in ci_values(&chart) {
            let with_file = to_yaml_stream(&render(&name, std::slice::from_ref(&file)).unwrap());
            assert_ne!(
                default,
                with_file.unwrap(),
                "{} changes nothing",
                file.display()
            );
        }
    }
}
