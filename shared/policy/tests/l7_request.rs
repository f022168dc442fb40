//! The same rules with request attributes, as the waypoint will evaluate them.

// Test helpers outside #[test] fns build fixtures from literals; a panic is the right failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;

use ambit_identity::SpiffeId;
use ambit_model::AuthorizationPolicy;
use ambit_policy::{Connection, Reason, RequestAttributes, evaluate};
use serde_json::{Value, json};

struct Request {
    method: &'static str,
    host: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    request_principal: Option<&'static str>,
    audiences: Vec<&'static str>,
    /// Top-level claims and their string values.
    claims: Vec<(&'static str, Vec<&'static str>)>,
    remote_ip: IpAddr,
}

impl RequestAttributes for Request {
    fn method(&self) -> &str {
        self.method
    }
    fn host(&self) -> &str {
        self.host
    }
    fn path(&self) -> &str {
        self.path
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
    }
    fn request_principal(&self) -> Option<&str> {
        self.request_principal
    }
    fn remote_ip(&self) -> IpAddr {
        self.remote_ip
    }
    fn request_audiences(&self) -> Vec<&str> {
        self.audiences.clone()
    }
    fn request_claim(&self, path: &[String]) -> Vec<&str> {
        match path {
            [name] => self
                .claims
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, values)| values.clone())
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }
}

fn get() -> Request {
    Request {
        method: "GET",
        host: "Cart.Shop.svc.cluster.local",
        path: "/api/items",
        headers: vec![("x-user", "alice")],
        request_principal: Some("https://issuer/alice"),
        audiences: vec!["cart", "billing"],
        claims: vec![
            ("groups", vec!["admin", "dev"]),
            ("iss", vec!["https://issuer"]),
        ],
        remote_ip: "192.0.2.7".parse().unwrap(),
    }
}

fn conn() -> Connection {
    Connection {
        source_identity: Some(
            SpiffeId::parse("spiffe://cluster.local/ns/front/sa/frontend").unwrap(),
        ),
        source_ip: "10.1.0.5".parse().unwrap(),
        destination_ip: "10.0.0.10".parse().unwrap(),
        destination_port: 8080,
    }
}

fn allowed(spec: Value, request: &Request) -> bool {
    let policy: AuthorizationPolicy =
        serde_json::from_value(json!({ "name": "p", "namespace": "shop", "spec": spec })).unwrap();
    evaluate([&policy], &conn(), Some(request)).is_allowed()
}

fn to(operation: Value) -> Value {
    json!({ "rules": [{ "to": [{ "operation": operation }] }] })
}

fn from(source: Value) -> Value {
    json!({ "rules": [{ "from": [{ "source": source }] }] })
}

fn when(key: &str, values: &[&str], not_values: &[&str]) -> Value {
    json!({ "rules": [{ "when": [{ "key": key, "values": values, "notValues": not_values }] }] })
}

#[test]
fn request_fields_are_evaluated_when_available() {
    let request = get();
    let cases: Vec<(&str, Value, bool)> = vec![
        ("method", to(json!({ "methods": ["GET"] })), true),
        ("method, other", to(json!({ "methods": ["POST"] })), false),
        (
            "method is case-sensitive",
            to(json!({ "methods": ["get"] })),
            false,
        ),
        ("notMethods", to(json!({ "notMethods": ["GET"] })), false),
        ("path prefix", to(json!({ "paths": ["/api/*"] })), true),
        ("path exact, other", to(json!({ "paths": ["/api"] })), false),
        ("notPaths", to(json!({ "notPaths": ["/admin*"] })), true),
        (
            "host ignores case",
            to(json!({ "hosts": ["cart.shop.svc.cluster.local"] })),
            true,
        ),
        (
            "host suffix",
            to(json!({ "hosts": ["*.svc.cluster.local"] })),
            true,
        ),
        (
            "notHosts",
            to(json!({ "notHosts": ["*.shop.svc.cluster.local"] })),
            false,
        ),
        (
            "port and method",
            to(json!({ "ports": ["8080"], "methods": ["GET"] })),
            true,
        ),
        (
            "port fails, method holds",
            to(json!({ "ports": ["9"], "methods": ["GET"] })),
            false,
        ),
        (
            "requestPrincipals",
            from(json!({ "requestPrincipals": ["https://issuer/*"] })),
            true,
        ),
        (
            "requestPrincipals, other",
            from(json!({ "requestPrincipals": ["other/*"] })),
            false,
        ),
        (
            "notRequestPrincipals",
            from(json!({ "notRequestPrincipals": ["*"] })),
            false,
        ),
        (
            "remoteIpBlocks",
            from(json!({ "remoteIpBlocks": ["192.0.2.0/24"] })),
            true,
        ),
        (
            "remoteIpBlocks, other",
            from(json!({ "remoteIpBlocks": ["198.51.100.0/24"] })),
            false,
        ),
        (
            "notRemoteIpBlocks",
            from(json!({ "notRemoteIpBlocks": ["192.0.2.7"] })),
            false,
        ),
        (
            "header",
            when("request.headers[X-User]", &["alice"], &[]),
            true,
        ),
        (
            "header, other value",
            when("request.headers[x-user]", &["bob"], &[]),
            false,
        ),
        (
            "header absent",
            when("request.headers[x-missing]", &["*"], &[]),
            false,
        ),
        (
            "header absent, notValues",
            when("request.headers[x-missing]", &[], &["a"]),
            true,
        ),
        ("remote.ip", when("remote.ip", &["192.0.2.0/24"], &[]), true),
        (
            "request.auth.principal",
            when("request.auth.principal", &["https://issuer/alice"], &[]),
            true,
        ),
        (
            "JWT claim",
            when("request.auth.claims[iss]", &["https://issuer"], &[]),
            true,
        ),
        (
            "JWT list claim, any element",
            when("request.auth.claims[groups]", &["admin"], &[]),
            true,
        ),
        (
            "JWT list claim, notValues",
            when("request.auth.claims[groups]", &[], &["dev"]),
            false,
        ),
        (
            "JWT claim absent",
            when("request.auth.claims[missing]", &["*"], &[]),
            false,
        ),
        (
            "JWT nested claim absent",
            when("request.auth.claims[groups][x]", &["*"], &[]),
            false,
        ),
        (
            "request.auth.audiences",
            when("request.auth.audiences", &["billing"], &[]),
            true,
        ),
        (
            "request.auth.audiences, other",
            when("request.auth.audiences", &["shipping"], &[]),
            false,
        ),
        (
            "request.auth.presenter absent",
            when("request.auth.presenter", &["*"], &[]),
            false,
        ),
        (
            "connection.sni stays unevaluable",
            when("connection.sni", &["*"], &[]),
            false,
        ),
    ];
    for (name, spec, expected) in cases {
        assert_eq!(allowed(spec, &request), expected, "{name}");
    }
}

#[test]
fn missing_jwt_never_matches_request_principals() {
    let anonymous = Request {
        request_principal: None,
        ..get()
    };
    assert!(!allowed(
        from(json!({ "requestPrincipals": ["*"] })),
        &anonymous
    ));
    assert!(allowed(
        from(json!({ "notRequestPrincipals": ["x/*"] })),
        &anonymous
    ));
}

#[test]
fn unevaluable_rules_still_deny_at_the_waypoint() {
    let policy: AuthorizationPolicy = serde_json::from_value(json!({
        "name": "d", "namespace": "shop",
        "spec": { "action": "DENY", "rules": [{ "when": [{ "key": "connection.sni", "values": ["x"] }] }] }
    }))
    .unwrap();
    let decision = evaluate([&policy], &conn(), Some(&get()));
    assert!(decision.is_denied());
    assert_eq!(decision.reason(), Reason::DenyPolicyMatched);
}
