use serde_json::{Value, json};

use super::*;

fn route(spec: Value) -> Result<HttpRoute, ModelError> {
    let spec: HttpRouteSpec = serde_json::from_value(spec).unwrap();
    HttpRoute::new("r", "shop", spec)
}

fn base() -> Value {
    json!({
        "parentRefs": [{ "group": "", "kind": "Service", "name": "cart", "port": 80 }],
        "rules": [{
            "matches": [{
                "path": { "type": "PathPrefix", "value": "/api/" },
                "headers": [{ "name": "X-User", "value": "alice" }],
                "queryParams": [{ "type": "RegularExpression", "name": "v", "value": "[0-9]+" }],
                "method": "GET"
            }],
            "filters": [
                { "type": "RequestHeaderModifier",
                  "requestHeaderModifier": { "set": [{ "name": "X-A", "value": "1" }], "remove": ["X-B"] } },
                { "type": "URLRewrite",
                  "urlRewrite": { "path": { "type": "ReplacePrefixMatch", "replacePrefixMatch": "/v2" } } }
            ],
            "backendRefs": [
                { "name": "cart-v1", "port": 80, "weight": 90 },
                { "name": "cart-v2", "namespace": "canary", "port": 8080, "weight": 10 }
            ],
            "timeouts": { "request": "1m30s", "backendRequest": "500ms" },
            "retry": { "attempts": 3, "codes": [503, 502], "backoff": "10ms" }
        }, {}]
    })
}

#[test]
fn parses_rules_with_defaults() {
    let route = route(base()).unwrap();
    assert_eq!(
        route.service_parents(),
        &[ServiceParent {
            namespace: "shop".into(),
            name: "cart".into(),
            port: Some(80)
        }]
    );
    let rule = &route.rules()[0];
    let m = &rule.matches[0];
    assert_eq!(
        m.path,
        PathMatch::Prefix("/api".into()),
        "trailing '/' trimmed"
    );
    assert_eq!(m.headers[0].name, "x-user");
    assert!(m.query_params[0].regex);
    assert_eq!(m.method.as_deref(), Some("GET"));
    assert_eq!(
        rule.filters[0],
        RouteFilter::RequestHeaders(HeaderModifier {
            set: vec![("x-a".into(), "1".into())],
            add: vec![],
            remove: vec!["x-b".into()],
        })
    );
    assert_eq!(rule.backends[0].namespace, "shop");
    assert_eq!(rule.backends[1].namespace, "canary");
    assert_eq!(rule.backends[1].weight, 10);
    assert_eq!(rule.request_timeout, Some(Duration::from_secs(90)));
    assert_eq!(
        rule.backend_request_timeout,
        Some(Duration::from_millis(500))
    );
    let retry = rule.retry.as_ref().unwrap();
    assert_eq!(retry.attempts, 3);
    assert_eq!(retry.codes.iter().copied().collect::<Vec<_>>(), [502, 503]);
    assert_eq!(retry.backoff, Duration::from_millis(10));
    let empty = &route.rules()[1];
    assert_eq!(empty.matches[0].path, PathMatch::Prefix("/".into()));
    assert!(empty.backends.is_empty() && empty.retry.is_none());
}

#[test]
fn durations() {
    let ok = [
        ("0s", 0),
        ("10s", 10_000),
        ("1h", 3_600_000),
        ("1m30s", 90_000),
        ("1h1m1s1ms", 3_661_001),
        ("99999ms", 99_999),
    ];
    for (text, millis) in ok {
        assert_eq!(
            parse_duration(text).unwrap(),
            Duration::from_millis(millis),
            "{text}"
        );
    }
    for bad in [
        "",
        "10",
        "s",
        "1.5s",
        "100000s",
        "1h1m1s1ms1s",
        "-1s",
        "1 s",
        "1d",
    ] {
        assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn rejects_invalid_fields_naming_them() {
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "/rules/0/matches/0/path/value",
            json!("api"),
            "spec.rules[0].matches[0].path.value",
        ),
        (
            "/rules/0/matches/0/path",
            json!({"type": "RegularExpression", "value": "(("}),
            "spec.rules[0].matches[0].path.value",
        ),
        (
            "/rules/0/matches/0/method",
            json!("get"),
            "spec.rules[0].matches[0].method",
        ),
        (
            "/rules/0/matches/0/headers/0/name",
            json!("bad header"),
            "spec.rules[0].matches[0].headers[0].name",
        ),
        (
            "/rules/0/matches/0/queryParams/0/value",
            json!("[z-a]"),
            "spec.rules[0].matches[0].queryParams[0].value",
        ),
        (
            "/rules/0/backendRefs/0/port",
            Value::Null,
            "spec.rules[0].backendRefs[0].port",
        ),
        (
            "/rules/0/backendRefs/0/kind",
            json!("ServiceImport"),
            "spec.rules[0].backendRefs[0].kind",
        ),
        (
            "/rules/0/backendRefs/1/name",
            json!("Cart"),
            "spec.rules[0].backendRefs[1].name",
        ),
        (
            "/rules/0/timeouts/request",
            json!("10"),
            "spec.rules[0].timeouts.request",
        ),
        (
            "/rules/0/timeouts/request",
            json!("100ms"),
            "spec.rules[0].timeouts.backendRequest",
        ),
        (
            "/rules/0/retry/codes/1",
            json!(200),
            "spec.rules[0].retry.codes[1]",
        ),
        (
            "/rules/0/retry/backoff",
            json!("soon"),
            "spec.rules[0].retry.backoff",
        ),
        (
            "/rules/0/filters/0/requestHeaderModifier/set/0/value",
            json!("a\nb"),
            "spec.rules[0].filters[0].requestHeaderModifier.set[0].value",
        ),
        (
            "/rules/0/filters/1/type",
            json!("RequestHeaderModifier"),
            "spec.rules[0].filters[1].requestHeaderModifier",
        ),
        (
            "/rules/0/matches/0/path/type",
            json!("Exact"),
            "spec.rules[0].filters[1].urlRewrite.path.type",
        ),
        (
            "/parentRefs/0/kind",
            json!("Deployment"),
            "spec.parentRefs[0].kind",
        ),
        ("/parentRefs/0/port", json!(0), "spec.parentRefs[0].port"),
    ];
    for (pointer, value, field) in cases {
        let mut spec = base();
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        match spec.pointer_mut(parent) {
            Some(Value::Object(map)) => {
                map.insert(key.to_owned(), value);
            }
            Some(Value::Array(items)) => items[key.parse::<usize>().unwrap()] = value,
            _ => panic!("{pointer}"),
        }
        let err = route(spec).unwrap_err();
        assert_eq!(err.field(), field, "{pointer}: {err}");
    }
}

#[test]
fn redirect_rules() {
    let mut spec = base();
    spec["rules"][0]["filters"] = json!([{ "type": "RequestRedirect",
        "requestRedirect": { "scheme": "https", "statusCode": 301 } }]);
    let err = route(spec.clone()).unwrap_err();
    assert_eq!(err.field(), "spec.rules[0].backendRefs");
    spec["rules"][0]["backendRefs"] = json!([]);
    let route = route(spec).unwrap();
    match &route.rules()[0].filters[0] {
        RouteFilter::Redirect(redirect) => {
            assert_eq!(redirect.status_code, 301);
            assert_eq!(redirect.scheme.as_deref(), Some("https"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unknown_filter_type_is_refused() {
    let mut spec = base();
    spec["rules"][0]["filters"] = json!([{ "type": "RequestMirror", "requestMirror": {} }]);
    assert!(serde_json::from_value::<HttpRouteSpec>(spec).is_err());
}

#[test]
fn serde_round_trip() {
    let route = route(base()).unwrap();
    let json = serde_json::to_value(&route).unwrap();
    assert_eq!(json["spec"]["rules"][0]["timeouts"]["request"], "1m30s");
    let back: HttpRoute = serde_json::from_value(json).unwrap();
    assert_eq!(back, route);
}

#[test]
fn request_mirrors() {
    let mirrors = |filters: Value| {
        route(json!({
            "parentRefs": [{ "group": "", "kind": "Service", "name": "cart" }],
            "rules": [{ "filters": filters, "backendRefs": [{ "name": "cart", "port": 80 }] }]
        }))
    };
    let parsed = mirrors(json!([
        { "type": "RequestMirror", "requestMirror": { "backendRef": { "name": "shadow", "port": 80 } } },
        { "type": "RequestMirror", "requestMirror": { "backendRef": { "name": "half", "namespace": "other", "port": 81 }, "percent": 50 } },
        { "type": "RequestMirror", "requestMirror": { "backendRef": { "name": "third", "port": 82 }, "fraction": { "numerator": 1, "denominator": 3 } } }
    ]))
    .unwrap();
    let shares: Vec<(String, u32)> = parsed.rules()[0]
        .filters
        .iter()
        .map(|filter| match filter {
            RouteFilter::Mirror(m) => (
                format!(
                    "{}/{}:{}",
                    m.backend.namespace, m.backend.name, m.backend.port
                ),
                m.fraction.per_million(),
            ),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        shares,
        [
            ("shop/shadow:80".to_owned(), 1_000_000),
            ("other/half:81".to_owned(), 500_000),
            ("shop/third:82".to_owned(), 333_333),
        ]
    );
    let cases = [
        (
            json!([{ "type": "RequestMirror", "requestMirror": { "backendRef": { "name": "m", "port": 80 }, "percent": 101 } }]),
            "spec.rules[0].filters[0].requestMirror.percent",
        ),
        (
            json!([{ "type": "RequestMirror", "requestMirror": { "backendRef": { "name": "m", "port": 80 }, "fraction": { "numerator": 2, "denominator": 1 } } }]),
            "spec.rules[0].filters[0].requestMirror.fraction",
        ),
        (
            json!([{ "type": "RequestMirror", "requestMirror": { "backendRef": { "name": "m", "port": 80 }, "percent": 5, "fraction": { "numerator": 1 } } }]),
            "spec.rules[0].filters[0].requestMirror",
        ),
        (
            json!([{ "type": "RequestMirror", "requestMirror": { "backendRef": { "name": "m" } } }]),
            "spec.rules[0].filters[0].requestMirror.backendRef.port",
        ),
        (
            json!([{ "type": "RequestMirror" }]),
            "spec.rules[0].filters[0]",
        ),
    ];
    for (filters, field) in cases {
        let err = mirrors(filters.clone()).unwrap_err();
        assert_eq!(err.field(), field, "{filters}: {err}");
    }
}
