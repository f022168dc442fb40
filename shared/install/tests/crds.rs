//! ambit-base's CRDs: structural schemas (as the API server requires), and sample objects of
//! each kind validated against them: valid ones pass with nothing pruned, invalid ones fail.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{Value, json};
use support::{crds, violations};

/// Checks the rules of a structural schema that matter for what we write: every node has a
/// type (or preserves unknown fields), and every object says what its fields are.
fn assert_structural(schema: &Value, path: &str) {
    let preserve = schema["x-kubernetes-preserve-unknown-fields"] == json!(true);
    let Some(kind) = schema["type"].as_str() else {
        panic!("{path} has no type");
    };
    match kind {
        "object" => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            assert!(
                properties.is_some() || additional.is_some() || preserve,
                "{path}: an object without properties, additionalProperties or preserve-unknown-fields"
            );
            assert!(
                !(properties.is_some() && additional.is_some()),
                "{path}: both properties and additionalProperties"
            );
            for (name, child) in properties.into_iter().flatten() {
                assert_structural(child, &format!("{path}.{name}"));
            }
            if let Some(child) = additional.filter(|a| a.is_object()) {
                assert_structural(child, &format!("{path}.*"));
            }
        }
        "array" => assert_structural(&schema["items"], &format!("{path}[]")),
        "string" | "integer" | "number" | "boolean" => {}
        other => panic!("{path}: type {other}"),
    }
}

#[test]
fn every_crd_schema_is_structural_with_one_storage_version() {
    let crds = crds();
    assert_eq!(
        crds.keys().collect::<Vec<_>>(),
        [
            "ambit.dev/LocalRateLimit",
            "networking.istio.io/DestinationRule",
            "networking.istio.io/ServiceEntry",
            "networking.istio.io/VirtualService",
            "security.istio.io/AuthorizationPolicy",
            "security.istio.io/PeerAuthentication",
            "security.istio.io/RequestAuthentication",
        ]
    );
    for (name, crd) in &crds {
        let storage: Vec<_> = crd
            .spec
            .versions
            .iter()
            .filter(|v| v.storage)
            .map(|v| &v.name)
            .collect();
        // Istio's kinds store v1; Ambit's own kind is still v1alpha1.
        let expected = if name.starts_with("ambit.dev/") {
            "v1alpha1"
        } else {
            "v1"
        };
        assert_eq!(storage, [expected], "{name}");
        for version in &crd.spec.versions {
            let schema = version
                .schema
                .as_ref()
                .unwrap()
                .open_api_v3_schema
                .as_ref()
                .unwrap();
            assert_structural(
                &serde_json::to_value(schema).unwrap(),
                &format!("{name}@{}", version.name),
            );
        }
    }
}

#[test]
fn sample_objects_of_every_kind_validate_with_nothing_pruned() {
    let crds = crds();
    let text = include_str!("fixtures/istio-objects.yaml");
    let mut kinds = std::collections::BTreeSet::new();
    for document in serde_yaml_ng::Deserializer::from_str(text) {
        let object: Value = serde::Deserialize::deserialize(document).unwrap();
        let found = violations(&crds, &object);
        assert!(
            found.is_empty(),
            "{}/{}: {found:?}",
            object["kind"],
            object["metadata"]["name"]
        );
        kinds.insert(object["kind"].as_str().unwrap().to_owned());
    }
    assert_eq!(kinds.len(), 7, "{kinds:?}");
}

#[test]
fn invalid_objects_are_refused_at_the_offending_field() {
    let crds = crds();
    for (yaml, path) in [
        (
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nspec: {action: PERMIT}",
            "/spec/action",
        ),
        (
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nspec: {mtls: {mode: strict}}",
            "/spec/mtls/mode",
        ),
        (
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nspec: {rules: [{from: [{source: {principal: [a]}}]}]}",
            "/spec/rules/0/from/0/source",
        ),
        (
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nspec: {http: [{route: [{weight: 10}]}]}",
            "/spec/http/0/route/0",
        ),
        (
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nspec: {http: [{match: [{uri: {exact: /a, prefix: /b}}]}]}",
            "/spec/http/0/match/0/uri",
        ),
        (
            "apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\nspec: {trafficPolicy: {loadBalancer: {simple: FASTEST}}}",
            "/spec",
        ),
        (
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nspec: {hosts: [a.example.com], ports: [{number: 70000, name: x}]}",
            "/spec/ports/0/number",
        ),
        (
            "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nspec: {jwtRules: [{audiences: [x]}]}",
            "/spec/jwtRules/0",
        ),
    ] {
        let object: Value = serde_yaml_ng::from_str(yaml).unwrap();
        let found = violations(&crds, &object);
        assert!(
            found.iter().any(|v| v.starts_with(path)),
            "{yaml}\nexpected a violation at {path}: {found:?}"
        );
    }
}
