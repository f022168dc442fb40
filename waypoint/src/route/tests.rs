use ambit_model::HttpRoute;
use serde_json::{Value, json};

use super::*;

fn route(name: &str, rules: Value) -> HttpRoute {
    serde_json::from_value(json!({
        "name": name,
        "namespace": "shop",
        "spec": {
            "parentRefs": [{ "group": "", "kind": "Service", "name": "cart" }],
            "rules": rules,
        }
    }))
    .unwrap()
}

fn backend(name: &str) -> Value {
    json!([{ "name": name, "port": 80 }])
}

fn request(method: &str, uri: &str, headers: &[(&str, &str)]) -> Parts {
    let mut builder = http::Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(()).unwrap().into_parts().0
}

fn cart() -> ServiceKey {
    ServiceKey {
        namespace: "shop".into(),
        name: "cart".into(),
    }
}

/// The first backend name of the selected rule, `"-"` for no match, `"unrouted"`.
fn selected(table: &RouteTable, request: &Parts) -> String {
    match table.select(&cart(), 80, request) {
        Selection::Unrouted => "unrouted".into(),
        Selection::NoMatch => "-".into(),
        Selection::Matched { rule, .. } => rule.rule.backends[0].name.clone(),
    }
}

#[test]
fn precedence_exact_then_longest_prefix_then_regex() {
    let table = RouteTable::build(&[route(
        "r",
        json!([
            { "matches": [{ "path": { "type": "RegularExpression", "value": "/api/.*" } }], "backendRefs": backend("regex") },
            { "matches": [{ "path": { "type": "PathPrefix", "value": "/api" } }], "backendRefs": backend("short") },
            { "matches": [{ "path": { "type": "PathPrefix", "value": "/api/items" } }], "backendRefs": backend("long") },
            { "matches": [{ "path": { "type": "Exact", "value": "/api/items/1" } }], "backendRefs": backend("exact") },
        ]),
    )])
    .unwrap();
    let cases = [
        ("/api/items/1", "exact"),
        ("/api/items/2", "long"),
        ("/api/items", "long"),
        ("/api/itemsx", "short"),
        ("/api", "short"),
        ("/apix/y", "-"),
        ("/other", "-"),
    ];
    for (path, expected) in cases {
        assert_eq!(
            selected(&table, &request("GET", path, &[])),
            expected,
            "{path}"
        );
    }
}

#[test]
fn method_headers_and_query_break_ties() {
    let table = RouteTable::build(&[route(
        "r",
        json!([
            { "backendRefs": backend("plain") },
            { "matches": [{ "headers": [{ "name": "x-a", "value": "1" }] }], "backendRefs": backend("one-header") },
            { "matches": [{ "headers": [{ "name": "x-a", "value": "1" }, { "name": "x-b", "type": "RegularExpression", "value": "b+" }] }], "backendRefs": backend("two-headers") },
            { "matches": [{ "method": "POST" }], "backendRefs": backend("post") },
            { "matches": [{ "queryParams": [{ "name": "v", "value": "2" }] }], "backendRefs": backend("query") },
        ]),
    )])
    .unwrap();
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case<'_>] = &[
        ("GET", "/", &[], "plain"),
        ("GET", "/", &[("x-a", "1")], "one-header"),
        ("GET", "/", &[("x-a", "1"), ("x-b", "bbb")], "two-headers"),
        ("GET", "/", &[("x-a", "1"), ("x-b", "bc")], "one-header"),
        ("POST", "/", &[("x-a", "1"), ("x-b", "b")], "post"),
        ("GET", "/?v=2", &[], "query"),
        ("GET", "/?v=22", &[], "plain"),
        ("GET", "/?x=1&v=2", &[("x-a", "1")], "one-header"),
    ];
    for (method, uri, headers, expected) in cases {
        assert_eq!(
            selected(&table, &request(method, uri, headers)),
            *expected,
            "{method} {uri} {headers:?}"
        );
    }
}

#[test]
fn ties_between_routes_go_by_name_and_ports_are_respected() {
    let a = route("a", json!([{ "backendRefs": backend("from-a") }]));
    let b = route("b", json!([{ "backendRefs": backend("from-b") }]));
    let table = RouteTable::build(&[b, a]).unwrap();
    assert_eq!(selected(&table, &request("GET", "/", &[])), "from-a");

    let on_port: HttpRoute = serde_json::from_value(json!({
        "name": "p", "namespace": "shop",
        "spec": {
            "parentRefs": [{ "group": "", "kind": "Service", "name": "cart", "port": 9090 }],
            "rules": [{ "backendRefs": backend("grpc") }]
        }
    }))
    .unwrap();
    let table = RouteTable::build(&[on_port]).unwrap();
    assert!(matches!(
        table.select(&cart(), 80, &request("GET", "/", &[])),
        Selection::Unrouted
    ));
    assert!(matches!(
        table.select(&cart(), 9090, &request("GET", "/", &[])),
        Selection::Matched { .. }
    ));
}

#[test]
fn prefix_segments() {
    assert!(prefix_matches("/a", "/a"));
    assert!(prefix_matches("/a", "/a/"));
    assert!(prefix_matches("/a", "/a/b"));
    assert!(!prefix_matches("/a", "/ab"));
    assert!(prefix_matches("/", "/anything"));
}
