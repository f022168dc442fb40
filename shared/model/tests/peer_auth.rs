//! Effective PeerAuthentication mode: port > workload > namespace > mesh > PERMISSIVE, UNSET
//! inheriting.

// Test helpers outside #[test] fns build fixtures from literals; a panic is the right failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ambit_model::{
    MtlsMode, PeerAuthentication, TransportProtocol, Workload, WorkloadSpec, effective_mtls_mode,
};
use serde_json::{Value, json};

const ROOT: &str = "istio-system";

fn workload() -> Workload {
    Workload::new(WorkloadSpec {
        uid: "u1".into(),
        name: "web-0".into(),
        namespace: "shop".into(),
        service_account: "web".into(),
        node: "n1".into(),
        ips: vec!["10.0.0.1".parse().unwrap()],
        labels: [("app".to_owned(), "web".to_owned())].into(),
        protocol: TransportProtocol::Hbone,
        ..WorkloadSpec::default()
    })
    .unwrap()
}

fn pa(name: &str, namespace: &str, spec: Value) -> PeerAuthentication {
    serde_json::from_value(json!({ "name": name, "namespace": namespace, "spec": spec })).unwrap()
}

fn mode(m: &str) -> Value {
    json!({ "mode": m })
}

fn selected(m: Option<&str>, ports: Value) -> Value {
    let mut spec =
        json!({ "selector": { "matchLabels": { "app": "web" } }, "portLevelMtls": ports });
    if let Some(m) = m {
        spec["mtls"] = mode(m);
    }
    spec
}

#[test]
fn precedence_table() {
    use MtlsMode::*;
    let mesh = |m: &str| pa("mesh", ROOT, json!({ "mtls": mode(m) }));
    let namespace = |m: &str| pa("ns", "shop", json!({ "mtls": mode(m) }));
    let cases: Vec<(&str, Vec<PeerAuthentication>, u16, MtlsMode)> = vec![
        ("nothing: permissive", vec![], 8080, Permissive),
        ("mesh strict", vec![mesh("STRICT")], 8080, Strict),
        (
            "mesh unset: permissive",
            vec![mesh("UNSET")],
            8080,
            Permissive,
        ),
        (
            "namespace beats mesh",
            vec![mesh("STRICT"), namespace("PERMISSIVE")],
            8080,
            Permissive,
        ),
        (
            "namespace unset inherits mesh",
            vec![mesh("STRICT"), namespace("UNSET")],
            8080,
            Strict,
        ),
        (
            "namespace without mtls inherits mesh",
            vec![mesh("STRICT"), pa("ns", "shop", json!({}))],
            8080,
            Strict,
        ),
        (
            "workload beats namespace",
            vec![
                namespace("STRICT"),
                pa("w", "shop", selected(Some("PERMISSIVE"), json!({}))),
            ],
            8080,
            Permissive,
        ),
        (
            "workload unset inherits namespace",
            vec![
                namespace("STRICT"),
                pa("w", "shop", selected(Some("UNSET"), json!({}))),
            ],
            8080,
            Strict,
        ),
        (
            "port beats workload",
            vec![pa(
                "w",
                "shop",
                selected(Some("STRICT"), json!({ "8080": mode("PERMISSIVE") })),
            )],
            8080,
            Permissive,
        ),
        (
            "port level for another port does not apply",
            vec![pa(
                "w",
                "shop",
                selected(Some("STRICT"), json!({ "9090": mode("PERMISSIVE") })),
            )],
            8080,
            Strict,
        ),
        (
            "port unset inherits workload",
            vec![pa(
                "w",
                "shop",
                selected(Some("PERMISSIVE"), json!({ "8080": mode("UNSET") })),
            )],
            8080,
            Permissive,
        ),
        (
            "port unset, workload unset, inherits mesh",
            vec![
                mesh("STRICT"),
                pa(
                    "w",
                    "shop",
                    selected(None, json!({ "8080": mode("UNSET") })),
                ),
            ],
            8080,
            Strict,
        ),
        (
            "port strict over permissive namespace",
            vec![
                namespace("PERMISSIVE"),
                pa(
                    "w",
                    "shop",
                    selected(None, json!({ "8080": mode("STRICT") })),
                ),
            ],
            8080,
            Strict,
        ),
        (
            "selector not matching is ignored",
            vec![
                namespace("PERMISSIVE"),
                pa(
                    "w",
                    "shop",
                    json!({ "selector": { "matchLabels": { "app": "db" } }, "mtls": mode("STRICT") }),
                ),
            ],
            8080,
            Permissive,
        ),
        (
            "other namespace is ignored",
            vec![pa("ns", "other", json!({ "mtls": mode("STRICT") }))],
            8080,
            Permissive,
        ),
        (
            "selector policy in root namespace does not select other namespaces",
            vec![pa("w", ROOT, selected(Some("STRICT"), json!({})))],
            8080,
            Permissive,
        ),
        (
            "disable is reported as such",
            vec![namespace("DISABLE")],
            8080,
            Disable,
        ),
        (
            "smallest name wins at one level",
            vec![
                pa("b", "shop", json!({ "mtls": mode("STRICT") })),
                pa("a", "shop", json!({ "mtls": mode("PERMISSIVE") })),
            ],
            8080,
            Permissive,
        ),
    ];
    let workload = workload();
    for (name, policies, port, expected) in cases {
        assert_eq!(
            effective_mtls_mode(&policies, &workload, port, ROOT),
            expected,
            "{name}"
        );
        // Order of the input must not matter.
        let reversed: Vec<_> = policies.iter().rev().collect();
        assert_eq!(
            effective_mtls_mode(reversed, &workload, port, ROOT),
            expected,
            "{name} (reversed)"
        );
    }
}

#[test]
fn validation() {
    let bad = |spec: Value| {
        PeerAuthentication::new("p", "shop", serde_json::from_value(spec).unwrap()).unwrap_err()
    };
    assert_eq!(
        bad(json!({ "portLevelMtls": { "80": mode("STRICT") } })).field(),
        "spec.portLevelMtls"
    );
    assert_eq!(
        bad(json!({ "selector": { "matchLabels": { "a": "b" } }, "portLevelMtls": { "0": mode("STRICT") } })).field(),
        "spec.portLevelMtls[0]"
    );
    let err = serde_json::from_value::<PeerAuthentication>(
        json!({ "name": "p", "namespace": "shop", "spec": { "mtls": { "mode": "STRICTER" } } }),
    )
    .unwrap_err();
    assert!(err.to_string().contains("STRICTER"), "{err}");
    let ok = pa(
        "p",
        "shop",
        selected(Some("STRICT"), json!({ "80": mode("DISABLE") })),
    );
    assert_eq!(ok.port_mode(80), MtlsMode::Disable);
    assert_eq!(ok.port_mode(81), MtlsMode::Unset);
    let json = serde_json::to_value(&ok).unwrap();
    assert_eq!(json["spec"]["portLevelMtls"]["80"]["mode"], "DISABLE");
    assert_eq!(
        serde_json::from_value::<PeerAuthentication>(json).unwrap(),
        ok
    );
}
