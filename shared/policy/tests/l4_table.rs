//! Table-driven L4 authorization: every rule of the Istio semantics, each with a case that
//! matches and one that does not, so an inverted condition fails a row.

// Test helpers outside #[test] fns build fixtures from literals; a panic is the right failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ambit_identity::SpiffeId;
use ambit_model::{AuthorizationPolicy, TransportProtocol, Workload, WorkloadSpec};
use ambit_policy::{Authorizer, Connection, Reason, Verdict, evaluate_l4};
use serde_json::{Value, json};

const FRONTEND: &str = "spiffe://cluster.local/ns/front/sa/frontend";
const OTHER: &str = "spiffe://cluster.local/ns/other/sa/batch";

struct Case {
    name: &'static str,
    policies: Vec<(&'static str, &'static str, Value)>,
    conn: Connection,
    verdict: Verdict,
    reason: Reason,
    decider: Option<&'static str>,
    audit: Option<&'static str>,
}

fn workload() -> Workload {
    Workload::new(WorkloadSpec {
        uid: "u1".into(),
        name: "web-0".into(),
        namespace: "shop".into(),
        service_account: "web".into(),
        node: "n1".into(),
        ips: vec!["10.0.0.10".parse().unwrap(), "fd00::10".parse().unwrap()],
        labels: [("app".to_owned(), "web".to_owned())].into(),
        protocol: TransportProtocol::Hbone,
        ..WorkloadSpec::default()
    })
    .unwrap()
}

fn conn(identity: Option<&str>, source_ip: &str, destination_port: u16) -> Connection {
    Connection {
        source_identity: identity.map(|id| SpiffeId::parse(id).unwrap()),
        source_ip: source_ip.parse().unwrap(),
        destination_ip: "10.0.0.10".parse().unwrap(),
        destination_port,
    }
}

/// mTLS from frontend, 10.1.0.5 → :8080.
fn front() -> Connection {
    conn(Some(FRONTEND), "10.1.0.5", 8080)
}

fn other() -> Connection {
    conn(Some(OTHER), "10.1.0.5", 8080)
}

fn plaintext() -> Connection {
    conn(None, "10.1.0.5", 8080)
}

fn policy(name: &str, namespace: &str, spec: &Value) -> AuthorizationPolicy {
    serde_json::from_value(json!({ "name": name, "namespace": namespace, "spec": spec }))
        .unwrap_or_else(|e| panic!("policy {name}: {e}"))
}

fn allow_from(source: Value) -> Value {
    json!({ "action": "ALLOW", "rules": [{ "from": [{ "source": source }] }] })
}

fn allow_to(operation: Value) -> Value {
    json!({ "action": "ALLOW", "rules": [{ "to": [{ "operation": operation }] }] })
}

fn allow_when(key: &str, values: &[&str], not_values: &[&str]) -> Value {
    json!({ "action": "ALLOW", "rules": [{ "when": [{ "key": key, "values": values, "notValues": not_values }] }] })
}

fn with_action(mut spec: Value, action: &str) -> Value {
    spec["action"] = json!(action);
    spec
}

/// A one-policy ALLOW case in namespace `shop`: allowed by `p` or denied for lack of a match.
fn allow_case(name: &'static str, spec: Value, conn: Connection, allowed: bool) -> Case {
    Case {
        name,
        policies: vec![("p", "shop", spec)],
        conn,
        verdict: if allowed {
            Verdict::Allow
        } else {
            Verdict::Deny
        },
        reason: if allowed {
            Reason::AllowPolicyMatched
        } else {
            Reason::NoAllowPolicyMatched
        },
        decider: allowed.then_some("p"),
        audit: None,
    }
}

/// A one-policy DENY case in namespace `shop`: denied by `p`, or allowed for lack of policies.
fn deny_case(name: &'static str, spec: Value, conn: Connection, denied: bool) -> Case {
    Case {
        name,
        policies: vec![("p", "shop", with_action(spec, "DENY"))],
        conn,
        verdict: if denied {
            Verdict::Deny
        } else {
            Verdict::Allow
        },
        reason: if denied {
            Reason::DenyPolicyMatched
        } else {
            Reason::NoAllowPolicy
        },
        decider: denied.then_some("p"),
        audit: None,
    }
}

fn field_cases() -> Vec<Case> {
    vec![
        // principals and wildcards
        allow_case(
            "principal exact",
            allow_from(json!({ "principals": ["cluster.local/ns/front/sa/frontend"] })),
            front(),
            true,
        ),
        allow_case(
            "principal exact, other",
            allow_from(json!({ "principals": ["cluster.local/ns/front/sa/frontend"] })),
            other(),
            false,
        ),
        allow_case(
            "principal exact is not a prefix",
            allow_from(json!({ "principals": ["cluster.local/ns/front/sa/front"] })),
            front(),
            false,
        ),
        allow_case(
            "principal prefix",
            allow_from(json!({ "principals": ["cluster.local/ns/front/*"] })),
            front(),
            true,
        ),
        allow_case(
            "principal prefix, other",
            allow_from(json!({ "principals": ["cluster.local/ns/front/*"] })),
            other(),
            false,
        ),
        allow_case(
            "principal suffix",
            allow_from(json!({ "principals": ["*/sa/frontend"] })),
            front(),
            true,
        ),
        allow_case(
            "principal suffix, other",
            allow_from(json!({ "principals": ["*/sa/frontend"] })),
            other(),
            false,
        ),
        allow_case(
            "principal any of list",
            allow_from(json!({ "principals": ["x/ns/a/sa/b", "*/sa/batch"] })),
            other(),
            true,
        ),
        allow_case(
            "principal * with mTLS",
            allow_from(json!({ "principals": ["*"] })),
            front(),
            true,
        ),
        allow_case(
            "principal * plaintext",
            allow_from(json!({ "principals": ["*"] })),
            plaintext(),
            false,
        ),
        allow_case(
            "principal prefix plaintext",
            allow_from(json!({ "principals": ["cluster.local/*"] })),
            plaintext(),
            false,
        ),
        allow_case(
            "notPrincipals excludes",
            allow_from(json!({ "notPrincipals": ["*/sa/frontend"] })),
            front(),
            false,
        ),
        allow_case(
            "notPrincipals passes others",
            allow_from(json!({ "notPrincipals": ["*/sa/frontend"] })),
            other(),
            true,
        ),
        // Istio: an absent identity is not in the excluded list.
        allow_case(
            "notPrincipals plaintext (Istio)",
            allow_from(json!({ "notPrincipals": ["*/sa/frontend"] })),
            plaintext(),
            true,
        ),
        deny_case(
            "deny notPrincipals * plaintext",
            allow_from(json!({ "notPrincipals": ["*"] })),
            plaintext(),
            true,
        ),
        deny_case(
            "deny notPrincipals * mTLS",
            allow_from(json!({ "notPrincipals": ["*"] })),
            front(),
            false,
        ),
        // trust domain is part of the principal
        allow_case(
            "principal other trust domain",
            allow_from(json!({ "principals": ["example.org/ns/front/sa/frontend"] })),
            front(),
            false,
        ),
        // namespaces
        allow_case(
            "namespace exact",
            allow_from(json!({ "namespaces": ["front"] })),
            front(),
            true,
        ),
        allow_case(
            "namespace exact, other",
            allow_from(json!({ "namespaces": ["front"] })),
            other(),
            false,
        ),
        allow_case(
            "namespace prefix",
            allow_from(json!({ "namespaces": ["fr*"] })),
            front(),
            true,
        ),
        allow_case(
            "namespace suffix, other",
            allow_from(json!({ "namespaces": ["*ont"] })),
            other(),
            false,
        ),
        allow_case(
            "namespace plaintext",
            allow_from(json!({ "namespaces": ["*"] })),
            plaintext(),
            false,
        ),
        allow_case(
            "notNamespaces excludes",
            allow_from(json!({ "notNamespaces": ["front"] })),
            front(),
            false,
        ),
        allow_case(
            "notNamespaces passes others",
            allow_from(json!({ "notNamespaces": ["front"] })),
            other(),
            true,
        ),
        allow_case(
            "notNamespaces plaintext (Istio)",
            allow_from(json!({ "notNamespaces": ["front"] })),
            plaintext(),
            true,
        ),
        // ipBlocks
        allow_case(
            "ipBlock v4 cidr",
            allow_from(json!({ "ipBlocks": ["10.1.0.0/16"] })),
            front(),
            true,
        ),
        allow_case(
            "ipBlock v4 cidr, outside",
            allow_from(json!({ "ipBlocks": ["10.2.0.0/16"] })),
            front(),
            false,
        ),
        allow_case(
            "ipBlock single ip",
            allow_from(json!({ "ipBlocks": ["10.1.0.5"] })),
            front(),
            true,
        ),
        allow_case(
            "ipBlock single ip, neighbour",
            allow_from(json!({ "ipBlocks": ["10.1.0.6"] })),
            front(),
            false,
        ),
        allow_case(
            "ipBlock v6",
            allow_from(json!({ "ipBlocks": ["fd00:1::/64"] })),
            conn(Some(FRONTEND), "fd00:1::7", 8080),
            true,
        ),
        allow_case(
            "ipBlock v6, outside",
            allow_from(json!({ "ipBlocks": ["fd00:1::/64"] })),
            conn(Some(FRONTEND), "fd00:2::7", 8080),
            false,
        ),
        allow_case(
            "ipBlock v4 vs v6 source",
            allow_from(json!({ "ipBlocks": ["0.0.0.0/0"] })),
            conn(Some(FRONTEND), "fd00:1::7", 8080),
            false,
        ),
        allow_case(
            "ipBlock applies to plaintext",
            allow_from(json!({ "ipBlocks": ["10.1.0.0/16"] })),
            plaintext(),
            true,
        ),
        allow_case(
            "notIpBlocks excludes",
            allow_from(json!({ "notIpBlocks": ["10.1.0.0/16"] })),
            front(),
            false,
        ),
        allow_case(
            "notIpBlocks passes others",
            allow_from(json!({ "notIpBlocks": ["10.9.0.0/16"] })),
            front(),
            true,
        ),
        allow_case(
            "ipBlocks and notIpBlocks",
            allow_from(json!({ "ipBlocks": ["10.0.0.0/8"], "notIpBlocks": ["10.1.0.5"] })),
            front(),
            false,
        ),
        // ports
        allow_case(
            "port",
            allow_to(json!({ "ports": ["8080"] })),
            front(),
            true,
        ),
        allow_case(
            "port, other",
            allow_to(json!({ "ports": ["9090"] })),
            front(),
            false,
        ),
        allow_case(
            "port any of list",
            allow_to(json!({ "ports": ["9090", "8080"] })),
            front(),
            true,
        ),
        allow_case(
            "notPorts excludes",
            allow_to(json!({ "notPorts": ["8080"] })),
            front(),
            false,
        ),
        allow_case(
            "notPorts passes others",
            allow_to(json!({ "notPorts": ["22"] })),
            front(),
            true,
        ),
        // when, every L4 key
        allow_case(
            "when source.ip",
            allow_when("source.ip", &["10.1.0.0/16"], &[]),
            front(),
            true,
        ),
        allow_case(
            "when source.ip, outside",
            allow_when("source.ip", &["10.2.0.0/16"], &[]),
            front(),
            false,
        ),
        allow_case(
            "when source.ip notValues",
            allow_when("source.ip", &[], &["10.1.0.5"]),
            front(),
            false,
        ),
        allow_case(
            "when source.namespace",
            allow_when("source.namespace", &["front"], &[]),
            front(),
            true,
        ),
        allow_case(
            "when source.namespace, other",
            allow_when("source.namespace", &["front"], &[]),
            other(),
            false,
        ),
        allow_case(
            "when source.namespace plaintext",
            allow_when("source.namespace", &["*"], &[]),
            plaintext(),
            false,
        ),
        allow_case(
            "when source.namespace notValues",
            allow_when("source.namespace", &[], &["front"]),
            other(),
            true,
        ),
        allow_case(
            "when source.principal",
            allow_when("source.principal", &["*/sa/frontend"], &[]),
            front(),
            true,
        ),
        allow_case(
            "when source.principal, other",
            allow_when("source.principal", &["*/sa/frontend"], &[]),
            other(),
            false,
        ),
        allow_case(
            "when source.principal plaintext",
            allow_when("source.principal", &["*"], &[]),
            plaintext(),
            false,
        ),
        allow_case(
            "when source.principal notValues",
            allow_when("source.principal", &[], &["*/sa/frontend"]),
            front(),
            false,
        ),
        allow_case(
            "when destination.ip",
            allow_when("destination.ip", &["10.0.0.0/24"], &[]),
            front(),
            true,
        ),
        allow_case(
            "when destination.ip, other",
            allow_when("destination.ip", &["10.0.1.0/24"], &[]),
            front(),
            false,
        ),
        allow_case(
            "when destination.port",
            allow_when("destination.port", &["8080"], &[]),
            front(),
            true,
        ),
        allow_case(
            "when destination.port, other",
            allow_when("destination.port", &["80"], &[]),
            front(),
            false,
        ),
        allow_case(
            "when destination.port notValues",
            allow_when("destination.port", &[], &["8080"]),
            front(),
            false,
        ),
        allow_case(
            "when values and notValues",
            allow_when("destination.port", &["8080", "9090"], &["9090"]),
            front(),
            true,
        ),
        // combinations
        allow_case(
            "rule: from AND to, to fails",
            json!({ "rules": [{ "from": [{ "source": { "namespaces": ["front"] } }], "to": [{ "operation": { "ports": ["9090"] } }] }] }),
            front(),
            false,
        ),
        allow_case(
            "rule: from AND to, both hold",
            json!({ "rules": [{ "from": [{ "source": { "namespaces": ["front"] } }], "to": [{ "operation": { "ports": ["8080"] } }] }] }),
            front(),
            true,
        ),
        allow_case(
            "rule: from AND when, when fails",
            json!({ "rules": [{ "from": [{ "source": { "namespaces": ["front"] } }], "when": [{ "key": "destination.port", "values": ["1"] }] }] }),
            front(),
            false,
        ),
        allow_case(
            "rule: all when must hold",
            json!({ "rules": [{ "when": [{ "key": "destination.port", "values": ["8080"] }, { "key": "source.namespace", "values": ["x"] }] }] }),
            front(),
            false,
        ),
        allow_case(
            "from list: any source",
            json!({ "rules": [{ "from": [{ "source": { "namespaces": ["x"] } }, { "source": { "namespaces": ["front"] } }] }] }),
            front(),
            true,
        ),
        allow_case(
            "to list: any operation",
            json!({ "rules": [{ "to": [{ "operation": { "ports": ["1"] } }, { "operation": { "ports": ["8080"] } }] }] }),
            front(),
            true,
        ),
        allow_case(
            "source: all fields",
            allow_from(json!({ "namespaces": ["front"], "ipBlocks": ["10.9.0.0/16"] })),
            front(),
            false,
        ),
        allow_case(
            "rules: any rule",
            json!({ "rules": [{ "to": [{ "operation": { "ports": ["1"] } }] }, { "from": [{ "source": { "principals": ["*"] } }] }] }),
            front(),
            true,
        ),
        allow_case(
            "empty rule matches all",
            json!({ "rules": [{}] }),
            plaintext(),
            true,
        ),
        allow_case("allow-nothing", json!({}), front(), false),
        allow_case(
            "allow-nothing with explicit action",
            json!({ "action": "ALLOW" }),
            plaintext(),
            false,
        ),
        deny_case(
            "deny without rules matches nothing",
            json!({}),
            front(),
            false,
        ),
        deny_case(
            "deny empty rule matches all",
            json!({ "rules": [{}] }),
            front(),
            true,
        ),
        deny_case(
            "deny by principal",
            allow_from(json!({ "principals": ["*/sa/frontend"] })),
            front(),
            true,
        ),
        deny_case(
            "deny by principal, other",
            allow_from(json!({ "principals": ["*/sa/frontend"] })),
            other(),
            false,
        ),
        deny_case(
            "deny by port",
            allow_to(json!({ "ports": ["8080"] })),
            front(),
            true,
        ),
        deny_case(
            "deny by port, other",
            allow_to(json!({ "ports": ["8081"] })),
            front(),
            false,
        ),
        deny_case(
            "deny by ipBlock plaintext",
            allow_from(json!({ "ipBlocks": ["10.1.0.0/16"] })),
            plaintext(),
            true,
        ),
        deny_case(
            "deny by namespace plaintext",
            allow_from(json!({ "namespaces": ["*"] })),
            plaintext(),
            false,
        ),
    ]
}

fn l7_cases() -> Vec<Case> {
    vec![
        allow_case(
            "L7 methods under ALLOW never match",
            allow_to(json!({ "methods": ["GET"] })),
            front(),
            false,
        ),
        allow_case(
            "L7 paths with matching L4 under ALLOW",
            json!({ "rules": [{ "from": [{ "source": { "principals": ["*"] } }], "to": [{ "operation": { "ports": ["8080"], "paths": ["/x"] } }] }] }),
            front(),
            false,
        ),
        allow_case(
            "L7 notHosts under ALLOW",
            allow_to(json!({ "notHosts": ["a"] })),
            front(),
            false,
        ),
        allow_case(
            "L7 requestPrincipals under ALLOW",
            allow_from(json!({ "requestPrincipals": ["*"] })),
            front(),
            false,
        ),
        allow_case(
            "L7 remoteIpBlocks under ALLOW",
            allow_from(json!({ "remoteIpBlocks": ["0.0.0.0/0"] })),
            front(),
            false,
        ),
        allow_case(
            "L7 when header under ALLOW",
            allow_when("request.headers[x-user]", &["a"], &[]),
            front(),
            false,
        ),
        allow_case(
            "JWT claims under ALLOW",
            allow_when("request.auth.claims[iss]", &["a"], &[]),
            front(),
            false,
        ),
        allow_case(
            "one L7 rule does not spoil an L4 rule",
            json!({ "rules": [{ "to": [{ "operation": { "methods": ["GET"] } }] }, { "from": [{ "source": { "namespaces": ["front"] } }] }] }),
            front(),
            true,
        ),
        // Under DENY a rule carrying an L7 field matches whatever its L4 part says.
        deny_case(
            "L7 methods under DENY",
            allow_to(json!({ "methods": ["GET"] })),
            front(),
            true,
        ),
        deny_case(
            "L7 with non-matching principal under DENY",
            json!({ "rules": [{ "from": [{ "source": { "principals": ["x/ns/y/sa/z"] } }], "to": [{ "operation": { "paths": ["/admin"] } }] }] }),
            front(),
            true,
        ),
        deny_case(
            "L7 notMethods under DENY",
            allow_to(json!({ "notMethods": ["GET"] })),
            plaintext(),
            true,
        ),
        deny_case(
            "L7 notRequestPrincipals under DENY",
            allow_from(json!({ "notRequestPrincipals": ["*"] })),
            front(),
            true,
        ),
        deny_case(
            "L7 notRemoteIpBlocks under DENY",
            allow_from(json!({ "notRemoteIpBlocks": ["10.0.0.0/8"] })),
            front(),
            true,
        ),
        deny_case(
            "L7 remote.ip under DENY",
            allow_when("remote.ip", &["1.2.3.4"], &[]),
            front(),
            true,
        ),
        deny_case(
            "L7 request.auth.principal under DENY",
            allow_when("request.auth.principal", &["a/b"], &[]),
            front(),
            true,
        ),
        deny_case(
            "connection.sni under DENY",
            allow_when("connection.sni", &["a.example"], &[]),
            front(),
            true,
        ),
        deny_case(
            "L7 rule among non-matching L4 rules",
            json!({ "rules": [{ "to": [{ "operation": { "ports": ["1"] } }] }, { "to": [{ "operation": { "hosts": ["x"] } }] }] }),
            front(),
            true,
        ),
    ]
}

fn combination_cases() -> Vec<Case> {
    let all = json!({ "rules": [{}] });
    vec![
        Case {
            name: "no policies: allow",
            policies: vec![],
            conn: plaintext(),
            verdict: Verdict::Allow,
            reason: Reason::NoAllowPolicy,
            decider: None,
            audit: None,
        },
        Case {
            name: "DENY beats ALLOW",
            policies: vec![
                ("allow-all", "shop", all.clone()),
                (
                    "deny-front",
                    "shop",
                    with_action(allow_from(json!({ "namespaces": ["front"] })), "DENY"),
                ),
            ],
            conn: front(),
            verdict: Verdict::Deny,
            reason: Reason::DenyPolicyMatched,
            decider: Some("deny-front"),
            audit: None,
        },
        Case {
            name: "unmatched DENY leaves ALLOW",
            policies: vec![
                ("allow-all", "shop", all.clone()),
                (
                    "deny-front",
                    "shop",
                    with_action(allow_from(json!({ "namespaces": ["front"] })), "DENY"),
                ),
            ],
            conn: other(),
            verdict: Verdict::Allow,
            reason: Reason::AllowPolicyMatched,
            decider: Some("allow-all"),
            audit: None,
        },
        Case {
            name: "one of several ALLOW policies matches",
            policies: vec![
                ("a", "shop", allow_to(json!({ "ports": ["1"] }))),
                ("b", "shop", allow_to(json!({ "ports": ["8080"] }))),
            ],
            conn: front(),
            verdict: Verdict::Allow,
            reason: Reason::AllowPolicyMatched,
            decider: Some("b"),
            audit: None,
        },
        Case {
            name: "CUSTOM matching fails closed",
            policies: vec![
                ("allow-all", "shop", all.clone()),
                (
                    "ext",
                    "shop",
                    json!({ "action": "CUSTOM", "provider": { "name": "opa" }, "rules": [{}] }),
                ),
            ],
            conn: front(),
            verdict: Verdict::Deny,
            reason: Reason::CustomUnsupported,
            decider: Some("ext"),
            audit: None,
        },
        Case {
            name: "CUSTOM with an L7 rule fails closed",
            policies: vec![(
                "ext",
                "shop",
                json!({ "action": "CUSTOM", "provider": { "name": "opa" }, "rules": [{ "to": [{ "operation": { "paths": ["/admin"] } }] }] }),
            )],
            conn: front(),
            verdict: Verdict::Deny,
            reason: Reason::CustomUnsupported,
            decider: Some("ext"),
            audit: None,
        },
        Case {
            name: "CUSTOM not matching does not deny",
            policies: vec![(
                "ext",
                "shop",
                json!({ "action": "CUSTOM", "provider": { "name": "opa" }, "rules": [{ "from": [{ "source": { "namespaces": ["x"] } }] }] }),
            )],
            conn: front(),
            verdict: Verdict::Allow,
            reason: Reason::NoAllowPolicy,
            decider: None,
            audit: None,
        },
        Case {
            name: "AUDIT matching does not change allow",
            policies: vec![("audit", "shop", with_action(all.clone(), "AUDIT"))],
            conn: front(),
            verdict: Verdict::Allow,
            reason: Reason::NoAllowPolicy,
            decider: None,
            audit: Some("audit"),
        },
        Case {
            name: "AUDIT not matching is not reported",
            policies: vec![(
                "audit",
                "shop",
                with_action(allow_to(json!({ "ports": ["1"] })), "AUDIT"),
            )],
            conn: front(),
            verdict: Verdict::Allow,
            reason: Reason::NoAllowPolicy,
            decider: None,
            audit: None,
        },
        Case {
            name: "AUDIT reported alongside a deny",
            policies: vec![
                ("audit", "shop", with_action(all.clone(), "AUDIT")),
                ("deny", "shop", with_action(all.clone(), "DENY")),
            ],
            conn: front(),
            verdict: Verdict::Deny,
            reason: Reason::DenyPolicyMatched,
            decider: Some("deny"),
            audit: Some("audit"),
        },
        Case {
            name: "AUDIT reported alongside a missing allow",
            policies: vec![
                ("audit", "shop", with_action(all.clone(), "AUDIT")),
                ("allow-nothing", "shop", json!({})),
            ],
            conn: front(),
            verdict: Verdict::Deny,
            reason: Reason::NoAllowPolicyMatched,
            decider: None,
            audit: Some("audit"),
        },
    ]
}

fn scope_cases() -> Vec<Case> {
    let deny_all = json!({ "action": "DENY", "rules": [{}] });
    let denied = |name: &'static str, policy: (&'static str, &'static str, Value)| Case {
        name,
        decider: Some(policy.0),
        policies: vec![policy],
        conn: front(),
        verdict: Verdict::Deny,
        reason: Reason::DenyPolicyMatched,
        audit: None,
    };
    let ignored = |name: &'static str, policy: (&'static str, &'static str, Value)| Case {
        name,
        policies: vec![policy],
        conn: front(),
        verdict: Verdict::Allow,
        reason: Reason::NoAllowPolicy,
        decider: None,
        audit: None,
    };
    let selecting = |labels: Value| {
        let mut spec = deny_all.clone();
        spec["selector"] = json!({ "matchLabels": labels });
        spec
    };
    vec![
        denied("namespace-wide", ("d", "shop", deny_all.clone())),
        ignored("other namespace", ("d", "billing", deny_all.clone())),
        denied(
            "mesh-wide in root namespace",
            ("d", "istio-system", deny_all.clone()),
        ),
        denied(
            "selector matching",
            ("d", "shop", selecting(json!({ "app": "web" }))),
        ),
        ignored(
            "selector not matching",
            ("d", "shop", selecting(json!({ "app": "db" }))),
        ),
        ignored(
            "selector needing an extra label",
            ("d", "shop", selecting(json!({ "app": "web", "tier": "x" }))),
        ),
        ignored(
            "selector in other namespace",
            ("d", "billing", selecting(json!({ "app": "web" }))),
        ),
        denied(
            "selector in root namespace",
            ("d", "istio-system", selecting(json!({ "app": "web" }))),
        ),
        ignored(
            "selector in root namespace not matching",
            ("d", "istio-system", selecting(json!({ "app": "db" }))),
        ),
        ignored(
            "targetRefs are for waypoints",
            (
                "d",
                "shop",
                json!({ "action": "DENY", "rules": [{}], "targetRefs": [{ "kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "waypoint" }] }),
            ),
        ),
        Case {
            name: "mesh-wide allow-nothing",
            policies: vec![("allow-nothing", "istio-system", json!({}))],
            conn: front(),
            verdict: Verdict::Deny,
            reason: Reason::NoAllowPolicyMatched,
            decider: None,
            audit: None,
        },
        Case {
            name: "an ALLOW for another workload does not turn on default deny",
            policies: vec![("a", "shop", {
                let mut s = allow_to(json!({ "ports": ["1"] }));
                s["selector"] = json!({ "matchLabels": { "app": "db" } });
                s
            })],
            conn: front(),
            verdict: Verdict::Allow,
            reason: Reason::NoAllowPolicy,
            decider: None,
            audit: None,
        },
    ]
}

fn run(cases: Vec<Case>) {
    let workload = workload();
    for case in cases {
        let policies: Vec<AuthorizationPolicy> = case
            .policies
            .iter()
            .map(|(name, ns, spec)| policy(name, ns, spec))
            .collect();
        let decision = evaluate_l4(&policies, &workload, &case.conn);
        let name = case.name;
        assert_eq!(decision.verdict(), case.verdict, "{name}: {decision:?}");
        assert_eq!(
            decision.is_allowed(),
            case.verdict == Verdict::Allow,
            "{name}"
        );
        assert_eq!(
            decision.is_denied(),
            case.verdict == Verdict::Deny,
            "{name}"
        );
        assert_eq!(decision.reason(), case.reason, "{name}: {decision:?}");
        assert_eq!(
            decision.policy().map(|p| p.name.as_str()),
            case.decider,
            "{name}"
        );
        assert_eq!(
            decision.audit_policy().map(|p| p.name.as_str()),
            case.audit,
            "{name}"
        );
        assert_eq!(decision.is_audited(), case.audit.is_some(), "{name}");
        if let Some(policy) = decision.policy() {
            let expected_ns = case
                .policies
                .iter()
                .find(|p| p.0 == policy.name)
                .map(|p| p.1);
            assert_eq!(Some(policy.namespace.as_str()), expected_ns, "{name}");
        }
        // The verdict must not depend on the order policies are listed in.
        let reversed = evaluate_l4(policies.iter().rev(), &workload, &case.conn);
        assert_eq!(reversed.verdict(), case.verdict, "{name} (reversed)");
    }
}

#[test]
fn fields_wildcards_and_combinations() {
    run(field_cases());
}

#[test]
fn l7_fields_fail_safe_at_ztunnel() {
    run(l7_cases());
}

#[test]
fn actions_deny_allow_custom_audit() {
    run(combination_cases());
}

#[test]
fn which_policies_apply() {
    run(scope_cases());
}

#[test]
fn root_namespace_is_configurable() {
    let workload = workload();
    let mesh_deny = policy(
        "d",
        "mesh-root",
        &json!({ "action": "DENY", "rules": [{}] }),
    );
    let authorizer = Authorizer::new("mesh-root");
    assert_eq!(authorizer.root_namespace(), "mesh-root");
    assert!(authorizer.applies_to(&mesh_deny, &workload));
    assert!(
        authorizer
            .evaluate_l4([&mesh_deny], &workload, &front())
            .is_denied()
    );
    // With the default root namespace, the same policy is just another namespace's.
    assert!(!Authorizer::default().applies_to(&mesh_deny, &workload));
    assert!(evaluate_l4([&mesh_deny], &workload, &front()).is_allowed());
}
