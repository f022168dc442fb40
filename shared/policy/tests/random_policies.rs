//! Fuzz-like: many random policies (valid or not) and connections. Construction may refuse a
//! policy but never panics; evaluation never panics and keeps the invariants that hold whatever
//! the rules say.

// Test helpers outside #[test] fns build fixtures from literals; a panic is the right failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ambit_identity::SpiffeId;
use ambit_model::{AuthorizationPolicy, TransportProtocol, Workload, WorkloadSpec};
use ambit_policy::{Connection, Reason, Verdict, evaluate_l4};
use serde_json::{Value, json};

/// xorshift64*: deterministic, so a failure reproduces from the printed iteration.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
    fn list(&mut self, items: &[&str]) -> Value {
        let n = self.below(3);
        json!((0..n).map(|_| self.pick(items)).collect::<Vec<_>>())
    }
}

const STRINGS: &[&str] = &[
    "cluster.local/ns/front/sa/frontend",
    "*",
    "front",
    "fr*",
    "*end",
    "a*b",
    "",
    "**",
    "spiffe://x",
    "shop",
    "cluster.local/*",
    "GET",
    "/api/*",
];
const IPS: &[&str] = &[
    "10.0.0.0/8",
    "10.1.0.5",
    "fd00::/8",
    "::1",
    "0.0.0.0/0",
    "10.0.0.0/99",
    "x",
    "",
];
const PORTS: &[&str] = &["8080", "80", "0", "65535", "65536", "http", ""];
const KEYS: &[&str] = &[
    "source.ip",
    "source.namespace",
    "source.principal",
    "destination.ip",
    "destination.port",
    "connection.sni",
    "remote.ip",
    "request.headers[x]",
    "request.auth.claims[a]",
    "bogus",
    "",
];
const ACTIONS: &[&str] = &["ALLOW", "DENY", "AUDIT", "CUSTOM"];

fn random_spec(rng: &mut Rng) -> Value {
    let mut rules = Vec::new();
    for _ in 0..rng.below(3) {
        let mut rule = json!({});
        if rng.below(2) == 0 {
            let source_fields = [
                ("principals", STRINGS),
                ("notPrincipals", STRINGS),
                ("namespaces", STRINGS),
                ("notNamespaces", STRINGS),
                ("ipBlocks", IPS),
                ("notIpBlocks", IPS),
                ("requestPrincipals", STRINGS),
                ("remoteIpBlocks", IPS),
            ];
            let mut source = json!({});
            for _ in 0..1 + rng.below(3) {
                let (name, values) = source_fields[rng.below(source_fields.len())];
                source[name] = rng.list(values);
            }
            rule["from"] = json!([{ "source": source }]);
        }
        if rng.below(2) == 0 {
            let operation_fields = [
                ("ports", PORTS),
                ("notPorts", PORTS),
                ("methods", STRINGS),
                ("paths", STRINGS),
                ("hosts", STRINGS),
            ];
            let (name, values) = operation_fields[rng.below(operation_fields.len())];
            rule["to"] = json!([{ "operation": { name: rng.list(values) } }]);
        }
        if rng.below(3) == 0 {
            let key = rng.pick(KEYS);
            let pool = match key {
                "source.ip" | "destination.ip" | "remote.ip" => IPS,
                "destination.port" => PORTS,
                _ => STRINGS,
            };
            rule["when"] =
                json!([{ "key": key, "values": rng.list(pool), "notValues": rng.list(pool) }]);
        }
        rules.push(rule);
    }
    let action = rng.pick(ACTIONS);
    let mut spec = json!({ "action": action, "rules": rules });
    if action == "CUSTOM" && rng.below(4) != 0 {
        spec["provider"] = json!({ "name": "ext" });
    }
    if rng.below(3) == 0 {
        spec["selector"] = json!({ "matchLabels": { "app": rng.pick(&["web", "db"]) } });
    }
    spec
}

fn random_connection(rng: &mut Rng) -> Connection {
    let identity = match rng.below(3) {
        0 => None,
        1 => Some("spiffe://cluster.local/ns/front/sa/frontend"),
        _ => Some("spiffe://example.org/ns/shop/sa/db"),
    };
    Connection {
        source_identity: identity.map(|id| SpiffeId::parse(id).unwrap()),
        source_ip: rng
            .pick(&["10.1.0.5", "192.168.1.1", "fd00::7", "::1"])
            .parse()
            .unwrap(),
        destination_ip: rng.pick(&["10.0.0.10", "fd00::10"]).parse().unwrap(),
        destination_port: [8080, 80, 65535, 1][rng.below(4)],
    }
}

#[test]
fn random_policies_never_panic_and_keep_invariants() {
    let workload = Workload::new(WorkloadSpec {
        uid: "u1".into(),
        name: "web-0".into(),
        namespace: "shop".into(),
        service_account: "web".into(),
        node: "n1".into(),
        ips: vec!["10.0.0.10".parse().unwrap()],
        labels: [("app".to_owned(), "web".to_owned())].into(),
        protocol: TransportProtocol::Hbone,
        ..WorkloadSpec::default()
    })
    .unwrap();
    let deny_all: AuthorizationPolicy = serde_json::from_value(
        json!({ "name": "deny-all", "namespace": "shop", "spec": { "action": "DENY", "rules": [{}] } }),
    )
    .unwrap();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut accepted, mut refused) = (0, 0);
    for iteration in 0..3000 {
        let mut policies = Vec::new();
        for i in 0..1 + rng.below(4) {
            let spec = random_spec(&mut rng);
            let object = json!({ "name": format!("p{i}"), "namespace": "shop", "spec": spec });
            match serde_json::from_value::<AuthorizationPolicy>(object) {
                Ok(policy) => {
                    accepted += 1;
                    policies.push(policy);
                }
                Err(err) => {
                    refused += 1;
                    assert!(!err.to_string().is_empty());
                }
            }
        }
        let conn = random_connection(&mut rng);
        let decision = evaluate_l4(&policies, &workload, &conn);
        let context = format!("iteration {iteration}: {policies:?} {conn:?} -> {decision:?}");
        // The verdict follows from the reason.
        let expected_verdict = match decision.reason() {
            Reason::NoAllowPolicy | Reason::AllowPolicyMatched => Verdict::Allow,
            _ => Verdict::Deny,
        };
        assert_eq!(decision.verdict(), expected_verdict, "{context}");
        // Order does not change the verdict.
        assert_eq!(
            evaluate_l4(policies.iter().rev(), &workload, &conn).verdict(),
            decision.verdict(),
            "{context}"
        );
        // Deny wins: adding a deny-all always denies.
        let with_deny: Vec<_> = policies.iter().chain([&deny_all]).collect();
        assert!(
            evaluate_l4(with_deny, &workload, &conn).is_denied(),
            "{context}"
        );
        // AUDIT policies never change the verdict.
        let without_audit: Vec<_> = policies
            .iter()
            .filter(|p| p.action() != ambit_model::Action::Audit)
            .collect();
        assert_eq!(
            evaluate_l4(without_audit, &workload, &conn).verdict(),
            decision.verdict(),
            "{context}"
        );
    }
    // The generator must exercise both paths, or this test proves nothing.
    assert!(
        accepted > 1000 && refused > 1000,
        "accepted {accepted}, refused {refused}"
    );
}
