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

fn virtual_service(name: &str, http: Value) -> VirtualService {
    serde_json::from_value(json!({
        "name": name, "namespace": "shop", "spec": { "hosts": ["cart"], "http": http }
    }))
    .unwrap()
}

fn grpc_route(rules: Value) -> GrpcRoute {
    serde_json::from_value(json!({
        "name": "grpc", "namespace": "shop",
        "spec": {
            "parentRefs": [{ "group": "", "kind": "Service", "name": "cart" }],
            "rules": rules,
        }
    }))
    .unwrap()
}

fn dest(host: &str) -> Value {
    json!([{ "destination": { "host": host } }])
}

#[test]
fn virtual_service_routes_go_in_spec_order() {
    // A later, more specific match does not win: first match in spec order.
    let vs = virtual_service(
        "a",
        json!([
            { "match": [{ "uri": { "prefix": "/api" } }], "route": dest("api") },
            { "match": [{ "uri": { "exact": "/api/items" } }], "route": dest("exact") },
            { "match": [{ "headers": { "x-v": { "prefix": "2" } } }], "route": dest("v2") },
            { "match": [{ "port": 9090 }], "route": dest("admin") },
        ]),
    );
    let later = virtual_service("b", json!([{ "route": dest("fallback") }]));
    let table = RouteTable::build_all(&[], &[], &[later, vs]).unwrap();
    assert_eq!(selected(&table, &request("GET", "/api/items", &[])), "api");
    assert_eq!(
        selected(&table, &request("GET", "/apis", &[])),
        "api",
        "string prefix"
    );
    assert_eq!(
        selected(&table, &request("GET", "/x", &[("x-v", "2.1")])),
        "v2"
    );
    assert_eq!(selected(&table, &request("GET", "/x", &[])), "fallback");
    let Selection::Matched { rule, prefix } =
        table.select(&cart(), 80, &request("GET", "/api/x", &[]))
    else {
        panic!("no match")
    };
    assert_eq!(
        (rule.kind, rule.route.as_str(), prefix),
        (RouteKind::VirtualService, "shop/a", Some("/api"))
    );
    let Selection::Matched { rule, .. } = table.select(&cart(), 9090, &request("GET", "/x", &[]))
    else {
        panic!("no match")
    };
    assert_eq!(rule.rule.backends[0].name, "admin");
}

#[test]
fn gateway_routes_win_over_virtual_services() {
    let vs = virtual_service("a", json!([{ "route": dest("from-vs") }]));
    let http = route(
        "r",
        json!([{ "matches": [{ "path": { "type": "PathPrefix", "value": "/only" } }], "backendRefs": backend("from-route") }]),
    );
    let table = RouteTable::build_all(&[http], &[], std::slice::from_ref(&vs)).unwrap();
    assert_eq!(
        selected(&table, &request("GET", "/only", &[])),
        "from-route"
    );
    // The VirtualService is ignored entirely, not used as a fallback.
    assert_eq!(selected(&table, &request("GET", "/else", &[])), "-");
    let grpc = grpc_route(json!([{ "backendRefs": backend("from-grpc") }]));
    let table = RouteTable::build_all(&[], &[grpc], &[vs]).unwrap();
    assert_eq!(selected(&table, &request("GET", "/else", &[])), "-");
}

#[test]
fn grpc_routes_match_methods_of_grpc_requests_only() {
    let grpc = grpc_route(json!([
        { "matches": [{ "method": { "service": "shop.Cart", "method": "Add" } }], "backendRefs": backend("add") },
        { "matches": [{ "method": { "type": "RegularExpression", "method": "Get.*" } }], "backendRefs": backend("get") },
        { "matches": [{ "method": { "service": "shop.Cart" } }], "backendRefs": backend("cart") },
    ]));
    let plain = route("r", json!([{ "backendRefs": backend("http") }]));
    let table = RouteTable::build_all(&[plain], &[grpc], &[]).unwrap();
    let grpc_call = |path: &str| {
        let mut call = request("POST", path, &[("content-type", "application/grpc+proto")]);
        call.version = http::Version::HTTP_2;
        call
    };
    assert_eq!(selected(&table, &grpc_call("/shop.Cart/Add")), "add");
    // A matching service outranks a method-only match (GRPCRoute precedence).
    assert_eq!(selected(&table, &grpc_call("/shop.Cart/GetItems")), "cart");
    assert_eq!(selected(&table, &grpc_call("/other.Svc/GetItems")), "get");
    assert_eq!(selected(&table, &grpc_call("/shop.Cart/Remove")), "cart");
    assert_eq!(selected(&table, &grpc_call("/other.Svc/Remove")), "http");
    let mut over_h1 = grpc_call("/shop.Cart/Add");
    over_h1.version = http::Version::HTTP_11;
    assert_eq!(selected(&table, &over_h1), "http", "gRPC needs HTTP/2");
    assert_eq!(
        selected(
            &table,
            &request(
                "POST",
                "/shop.Cart/Add",
                &[("content-type", "application/json")]
            )
        ),
        "http"
    );
}
