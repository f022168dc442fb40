//! AuthorizationPolicy parsing and validation: Istio-shaped JSON in, typed rules or an error
//! naming the field out.

// Test helpers outside #[test] fns build fixtures from literals; a panic is the right failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ambit_model::authz::{ConditionKey, ConditionValues, PolicyScope};
use ambit_model::{Action, AuthorizationPolicy, StringMatch};
use serde_json::{Value, json};

fn parse(spec: Value) -> Result<AuthorizationPolicy, String> {
    let object = json!({ "name": "p", "namespace": "shop", "spec": spec });
    serde_json::from_value(object).map_err(|e| e.to_string())
}

#[test]
fn parses_every_field_into_typed_rules() {
    let policy = parse(json!({
        "selector": { "matchLabels": { "app": "web" } },
        "action": "DENY",
        "rules": [{
            "from": [{ "source": {
                "principals": ["cluster.local/ns/a/sa/b", "*/sa/admin"],
                "notPrincipals": ["cluster.local/*"],
                "namespaces": ["prod-*"],
                "notNamespaces": ["*"],
                "ipBlocks": ["10.0.0.0/8", "fd00::1"],
                "notIpBlocks": ["10.1.0.0/16"],
                "requestPrincipals": ["iss/sub"],
                "notRequestPrincipals": ["*"],
                "remoteIpBlocks": ["1.2.3.4"],
                "notRemoteIpBlocks": ["5.6.7.0/24"]
            }}],
            "to": [{ "operation": {
                "hosts": ["*.example.com"], "notHosts": ["a.example.com"],
                "ports": ["8080"], "notPorts": ["9090"],
                "methods": ["GET"], "notMethods": ["DELETE"],
                "paths": ["/api/*"], "notPaths": ["/api/admin"]
            }}],
            "when": [
                { "key": "source.ip", "values": ["10.0.0.0/8"] },
                { "key": "destination.port", "notValues": ["22"] },
                { "key": "request.headers[X-User]", "values": ["alice"] },
                { "key": "request.auth.claims[groups][admin]", "values": ["true"] }
            ]
        }]
    }))
    .unwrap();
    assert_eq!(policy.action(), Action::Deny);
    assert!(matches!(policy.scope(), PolicyScope::Selector(s) if s.match_labels["app"] == "web"));
    let rule = &policy.rules()[0];
    let source = &rule.from[0];
    assert_eq!(
        source.principals,
        vec![
            StringMatch::Exact("cluster.local/ns/a/sa/b".into()),
            StringMatch::Suffix("/sa/admin".into())
        ]
    );
    assert_eq!(source.not_namespaces, vec![StringMatch::Present]);
    assert_eq!(source.ip_blocks[1].to_string(), "fd00::1/128");
    assert_eq!(source.not_remote_ip_blocks[0].prefix_len(), 24);
    let operation = &rule.to[0];
    assert_eq!(
        (operation.ports.clone(), operation.not_ports.clone()),
        (vec![8080], vec![9090])
    );
    assert_eq!(rule.when[0].key, ConditionKey::SourceIp);
    assert!(matches!(&rule.when[0].values, ConditionValues::Ips(ips) if ips.len() == 1));
    assert!(matches!(&rule.when[1].not_values, ConditionValues::Ports(p) if p == &[22]));
    assert!(rule.when[1].values.is_empty());
    assert_eq!(
        rule.when[2].key,
        ConditionKey::RequestHeader("x-user".into())
    );
    assert_eq!(
        rule.when[3].key,
        ConditionKey::RequestAuthClaims(vec!["groups".into(), "admin".into()])
    );
}

#[test]
fn serializes_back_to_the_istio_shape() {
    let spec = json!({
        "action": "ALLOW",
        "rules": [{ "from": [{ "source": { "notIpBlocks": ["10.0.0.0/8"] } }],
                    "to": [{ "operation": { "notPorts": ["22"] } }],
                    "when": [{ "key": "source.namespace", "notValues": ["kube-*"] }] }]
    });
    let policy = parse(spec.clone()).unwrap();
    let back = serde_json::to_value(&policy).unwrap();
    assert_eq!(
        back,
        json!({ "name": "p", "namespace": "shop", "spec": spec })
    );
    assert_eq!(
        serde_json::from_value::<AuthorizationPolicy>(back).unwrap(),
        policy
    );
}

#[test]
fn scopes() {
    let root = "istio-system";
    let ns_wide = parse(json!({})).unwrap();
    assert_eq!(ns_wide.scope(), &PolicyScope::Namespace);
    assert!(!ns_wide.is_mesh_wide(root));
    assert!(ns_wide.is_mesh_wide("shop"));
    // An empty matchLabels is no selector at all.
    let empty_selector = parse(json!({ "selector": { "matchLabels": {} } })).unwrap();
    assert_eq!(empty_selector.scope(), &PolicyScope::Namespace);
    let targeted = parse(json!({ "targetRefs": [{ "kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "waypoint" }] })).unwrap();
    assert!(matches!(targeted.scope(), PolicyScope::TargetRefs(t) if t[0].name == "waypoint"));
    let single = parse(json!({ "targetRef": { "kind": "Service", "name": "cart" } })).unwrap();
    assert!(matches!(single.scope(), PolicyScope::TargetRefs(t) if t[0].kind == "Service"));
    assert_eq!(parse(json!({})).unwrap().action(), Action::Allow);
    assert!(parse(json!({})).unwrap().rules().is_empty());
}

#[test]
fn invalid_policies_name_the_field() {
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({ "rules": [{ "from": [{ "source": { "principals": ["a*b"] } }] }] }),
            "spec.rules[0].from[0].source.principals[0]",
        ),
        (
            json!({ "rules": [{}, { "from": [{ "source": { "namespaces": ["**"] } }] }] }),
            "spec.rules[1].from[0].source.namespaces[0]",
        ),
        (
            json!({ "rules": [{ "from": [{ "source": { "notPrincipals": ["spiffe://cluster.local/ns/a/sa/b"] } }] }] }),
            "spec.rules[0].from[0].source.notPrincipals[0]",
        ),
        (
            json!({ "rules": [{ "from": [{ "source": { "ipBlocks": ["10.0.0.1", "10.0.0.0/33"] } }] }] }),
            "spec.rules[0].from[0].source.ipBlocks[1]",
        ),
        (
            json!({ "rules": [{ "from": [{ "source": { "notIpBlocks": ["bogus"] } }] }] }),
            "spec.rules[0].from[0].source.notIpBlocks[0]",
        ),
        (
            json!({ "rules": [{ "from": [{ "source": { "remoteIpBlocks": ["::/200"] } }] }] }),
            "spec.rules[0].from[0].source.remoteIpBlocks[0]",
        ),
        (
            json!({ "rules": [{ "from": [{ "source": { "principals": [""] } }] }] }),
            "spec.rules[0].from[0].source.principals[0]",
        ),
        (
            json!({ "rules": [{ "from": [{}] }] }),
            "spec.rules[0].from[0].source",
        ),
        (
            json!({ "rules": [{ "from": [{ "source": {} }] }] }),
            "spec.rules[0].from[0].source",
        ),
        (
            json!({ "rules": [{ "to": [{ "operation": { "ports": ["0"] } }] }] }),
            "spec.rules[0].to[0].operation.ports[0]",
        ),
        (
            json!({ "rules": [{ "to": [{ "operation": { "notPorts": ["65536"] } }] }] }),
            "spec.rules[0].to[0].operation.notPorts[0]",
        ),
        (
            json!({ "rules": [{ "to": [{ "operation": { "ports": ["http"] } }] }] }),
            "spec.rules[0].to[0].operation.ports[0]",
        ),
        (
            json!({ "rules": [{ "to": [{ "operation": { "paths": ["/a/*/b"] } }] }] }),
            "spec.rules[0].to[0].operation.paths[0]",
        ),
        (
            json!({ "rules": [{ "to": [{ "operation": {} }] }] }),
            "spec.rules[0].to[0].operation",
        ),
        (
            json!({ "rules": [{ "to": [{}] }] }),
            "spec.rules[0].to[0].operation",
        ),
        (
            json!({ "rules": [{ "when": [{ "key": "source.ipaddr", "values": ["x"] }] }] }),
            "spec.rules[0].when[0].key",
        ),
        (
            json!({ "rules": [{ "when": [{ "key": "", "values": ["x"] }] }] }),
            "spec.rules[0].when[0].key",
        ),
        (
            json!({ "rules": [{ "when": [{ "key": "request.headers", "values": ["x"] }] }] }),
            "spec.rules[0].when[0].key",
        ),
        (
            json!({ "rules": [{ "when": [{ "key": "request.headers[a][b]", "values": ["x"] }] }] }),
            "spec.rules[0].when[0].key",
        ),
        (
            json!({ "rules": [{ "when": [{ "key": "request.auth.claims[]", "values": ["x"] }] }] }),
            "spec.rules[0].when[0].key",
        ),
        (
            json!({ "rules": [{ "when": [{ "key": "source.ip" }] }] }),
            "spec.rules[0].when[0]",
        ),
        (
            json!({ "rules": [{ "when": [{ "key": "source.ip", "values": ["nope"] }] }] }),
            "spec.rules[0].when[0].values[0]",
        ),
        (
            json!({ "rules": [{ "when": [{ "key": "destination.port", "notValues": ["99999"] }] }] }),
            "spec.rules[0].when[0].notValues[0]",
        ),
        (
            json!({ "rules": [{ "when": [{ "key": "source.principal", "values": ["spiffe://x/ns/a/sa/b"] }] }] }),
            "spec.rules[0].when[0].values[0]",
        ),
        (
            json!({ "rules": [{ "when": [{ "key": "source.namespace", "values": ["a*b"] }] }] }),
            "spec.rules[0].when[0].values[0]",
        ),
        (json!({ "action": "CUSTOM" }), "spec.provider"),
        (
            json!({ "action": "CUSTOM", "provider": { "name": "" } }),
            "spec.provider.name",
        ),
        (
            json!({ "action": "DENY", "provider": { "name": "ext" } }),
            "spec.provider",
        ),
        (
            json!({ "selector": { "matchLabels": { "a": "b" } }, "targetRefs": [{ "kind": "Gateway", "name": "w" }] }),
            "spec.selector",
        ),
        (
            json!({ "targetRef": { "kind": "Gateway", "name": "w" }, "targetRefs": [{ "kind": "Gateway", "name": "w" }] }),
            "spec.targetRef",
        ),
        (
            json!({ "targetRefs": [{ "kind": "", "name": "w" }] }),
            "spec.targetRefs[0].kind",
        ),
        (
            json!({ "targetRefs": [{ "kind": "Gateway", "name": "" }] }),
            "spec.targetRefs[0].name",
        ),
    ];
    for (spec, field) in cases {
        let err =
            AuthorizationPolicy::new("p", "shop", serde_json::from_value(spec.clone()).unwrap())
                .expect_err(&spec.to_string());
        assert_eq!(err.field(), field, "{spec}: {err}");
        assert_eq!(err.kind(), "AuthorizationPolicy");
        assert!(
            err.to_string().starts_with("AuthorizationPolicy shop/p: "),
            "{err}"
        );
        // Deserialization goes through the same validation.
        let message = parse(spec.clone()).expect_err(&spec.to_string());
        assert!(message.contains(field), "{message}");
    }
}

#[test]
fn invalid_metadata_and_unknown_fields_are_refused() {
    let spec = serde_json::from_value(json!({})).unwrap();
    assert_eq!(
        AuthorizationPolicy::new("p", "", spec).unwrap_err().field(),
        "namespace"
    );
    let spec = serde_json::from_value(json!({})).unwrap();
    assert_eq!(
        AuthorizationPolicy::new("Bad Name", "shop", spec)
            .unwrap_err()
            .field(),
        "name"
    );
    // A typo in a field name must not silently drop a condition.
    let err = parse(json!({ "rules": [{ "from": [{ "source": { "notPrincipal": ["x"] } }] }] }))
        .unwrap_err();
    assert!(err.contains("notPrincipal"), "{err}");
    let err = parse(json!({ "action": "REJECT" })).unwrap_err();
    assert!(err.contains("REJECT"), "{err}");
}

#[test]
fn every_istio_condition_key_parses() {
    let keys = [
        ("source.ip", ConditionKey::SourceIp),
        ("source.namespace", ConditionKey::SourceNamespace),
        ("source.principal", ConditionKey::SourcePrincipal),
        ("destination.ip", ConditionKey::DestinationIp),
        ("destination.port", ConditionKey::DestinationPort),
        ("connection.sni", ConditionKey::ConnectionSni),
        ("remote.ip", ConditionKey::RemoteIp),
        ("request.auth.principal", ConditionKey::RequestAuthPrincipal),
        ("request.auth.audiences", ConditionKey::RequestAuthAudiences),
        ("request.auth.presenter", ConditionKey::RequestAuthPresenter),
        (
            "request.headers[:Authority]",
            ConditionKey::RequestHeader(":authority".into()),
        ),
        (
            "request.auth.claims[iss]",
            ConditionKey::RequestAuthClaims(vec!["iss".into()]),
        ),
    ];
    for (raw, expected) in keys {
        assert_eq!(ConditionKey::parse(raw).unwrap(), expected, "{raw}");
    }
    for bad in [
        "experimental.envoy.filters.x",
        "request.headers[a",
        "request.headersx",
        "source.IP",
    ] {
        assert!(ConditionKey::parse(bad).is_err(), "{bad}");
    }
}
