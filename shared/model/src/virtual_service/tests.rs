use std::time::Duration;

use serde_json::{Value, json};

use super::*;

fn vs(http: Value) -> Result<VirtualService, ModelError> {
    let spec = json!({ "hosts": ["cart"], "http": http });
    VirtualService::new("cart", "shop", serde_json::from_value(spec).unwrap())
}

fn one_route(http: Value) -> VirtualServiceRoute {
    vs(json!([http])).unwrap().routes()[0].clone()
}

#[test]
fn parses_every_field() {
    let route = one_route(json!({
        "name": "main",
        "match": [
            { "uri": { "prefix": "/api" }, "headers": { "X-User": { "exact": "jo" } },
              "queryParams": { "v": { "regex": "[0-9]+" } }, "method": { "exact": "GET" },
              "port": 80 },
            { "uri": { "exact": "/health" } }
        ],
        "route": [
            { "destination": { "host": "cart", "subset": "v1", "port": { "number": 80 } },
              "weight": 90,
              "headers": { "request": { "set": { "x-dest": "v1" } } } },
            { "destination": { "host": "cart-v2.shop.svc.cluster.local" }, "weight": 10 }
        ],
        "timeout": "2.5s",
        "retries": { "attempts": 3, "perTryTimeout": "500ms", "retryOn": "gateway-error,409" },
        "fault": {
            "delay": { "fixedDelay": "1s", "percentage": { "value": 12.5 } },
            "abort": { "httpStatus": 503, "percentage": { "value": 0.1 } }
        },
        "mirror": { "host": "cart-shadow" },
        "mirrorPercentage": { "value": 50 },
        "rewrite": { "uri": "/v1", "authority": "cart.internal" },
        "headers": { "request": { "add": { "x-a": "1" }, "remove": ["x-b"] },
                     "response": { "set": { "x-c": "2" } } }
    }));
    assert_eq!(route.name.as_deref(), Some("main"));
    let rule = &route.rule;
    assert_eq!(route.match_ports, [Some(80), None]);
    assert_eq!(rule.matches[0].path, PathMatch::StringPrefix("/api".into()));
    assert_eq!(rule.matches[0].headers[0].name, "x-user");
    assert!(!rule.matches[0].headers[0].regex);
    assert!(rule.matches[0].query_params[0].regex);
    assert_eq!(rule.matches[0].method.as_deref(), Some("GET"));
    assert_eq!(rule.matches[1].path, PathMatch::Exact("/health".into()));

    assert_eq!(rule.backends.len(), 2);
    let (v1, v2) = (&rule.backends[0], &rule.backends[1]);
    assert_eq!(
        (v1.name.as_str(), v1.port, v1.weight, v1.subset.as_deref()),
        ("cart", 80, 90, Some("v1"))
    );
    assert_eq!(v1.filters.len(), 1);
    assert_eq!(
        (v2.namespace.as_str(), v2.name.as_str(), v2.port, v2.weight),
        ("shop", "cart-v2", 0, 10)
    );

    assert_eq!(rule.request_timeout, Some(Duration::from_millis(2500)));
    assert_eq!(
        rule.backend_request_timeout,
        Some(Duration::from_millis(500))
    );
    let retry = rule.retry.as_ref().unwrap();
    assert_eq!(retry.attempts, 3);
    assert!(retry.codes.contains(&409));
    assert!(retry.on.gateway_errors && retry.on.connect_failure && retry.on.reset);
    assert!(!retry.on.server_errors);

    let fault = rule.fault.as_ref().unwrap();
    let (delay, delay_share) = fault.delay.unwrap();
    assert_eq!(delay, Duration::from_secs(1));
    assert_eq!(delay_share.per_million(), 125_000);
    let (abort, abort_share) = fault.abort.unwrap();
    assert_eq!(abort, FaultAbort::Http(503));
    assert_eq!(abort_share.per_million(), 1_000);

    let kinds: Vec<&str> = rule
        .filters
        .iter()
        .map(|f| match f {
            RouteFilter::RequestHeaders(_) => "req",
            RouteFilter::ResponseHeaders(_) => "resp",
            RouteFilter::UrlRewrite { .. } => "rewrite",
            RouteFilter::Redirect(_) => "redirect",
            RouteFilter::Mirror(_) => "mirror",
        })
        .collect();
    assert_eq!(kinds, ["req", "resp", "rewrite", "mirror"]);
    let RouteFilter::Mirror(mirror) = &rule.filters[3] else {
        unreachable!()
    };
    assert_eq!(mirror.backend.name, "cart-shadow");
    assert_eq!(mirror.fraction.per_million(), 500_000);
}

#[test]
fn hosts_bind_services_and_gateways_can_unbind() {
    let spec = |hosts: Value, gateways: Value| {
        serde_json::from_value::<VirtualServiceSpec>(json!({
            "hosts": hosts, "gateways": gateways,
            "http": [{ "route": [{ "destination": { "host": "cart" } }] }]
        }))
        .unwrap()
    };
    let bound = VirtualService::new(
        "v",
        "shop",
        spec(
            json!([
                "cart",
                "pay.billing.svc.cluster.local",
                "example.com",
                "cart.shop",
                "*.x.io"
            ]),
            json!([]),
        ),
    )
    .unwrap();
    let names: Vec<_> = bound
        .services()
        .iter()
        .map(|s| format!("{}/{}", s.namespace, s.name))
        .collect();
    assert_eq!(names, ["shop/cart", "billing/pay"]);
    let gateway_only =
        VirtualService::new("v", "shop", spec(json!(["cart"]), json!(["ingress"]))).unwrap();
    assert!(gateway_only.services().is_empty());
    let mesh_too = VirtualService::new(
        "v",
        "shop",
        spec(json!(["cart"]), json!(["ingress", "mesh"])),
    )
    .unwrap();
    assert_eq!(mesh_too.services().len(), 1);
}

#[test]
fn defaults() {
    let route = one_route(json!({ "route": [{ "destination": { "host": "cart" } }] }));
    assert_eq!(route.rule.matches.len(), 1, "no match means match all");
    assert_eq!(
        route.rule.matches[0].path,
        PathMatch::StringPrefix("/".into())
    );
    assert_eq!(
        route.rule.backends[0].weight, 100,
        "a lone destination takes all"
    );
    assert!(route.rule.retry.is_none());
    let retry = one_route(json!({
        "route": [{ "destination": { "host": "cart" } }],
        "retries": { "attempts": 2 }
    }))
    .rule
    .retry
    .unwrap();
    assert!(retry.on.connect_failure && !retry.on.server_errors && !retry.on.reset);
    let grpc = one_route(json!({
        "route": [{ "destination": { "host": "cart" } }],
        "retries": { "attempts": 2, "retryOn": "unavailable,cancelled" },
        "fault": { "abort": { "grpcStatus": "UNAVAILABLE" } }
    }))
    .rule;
    assert_eq!(
        grpc.retry
            .unwrap()
            .on
            .grpc_codes
            .into_iter()
            .collect::<Vec<_>>(),
        [1, 14]
    );
    assert_eq!(
        grpc.fault.unwrap().abort,
        Some((FaultAbort::Grpc(14), Fraction::ALL))
    );
}

#[test]
fn bad_input_names_the_field() {
    let dest = json!([{ "destination": { "host": "cart" } }]);
    let cases: Vec<(Value, &str)> = vec![
        (
            json!([{ "route": [{ "destination": { "host": "a.b.c.d" } }] }]),
            "spec.http[0].route[0].destination.host",
        ),
        (json!([{}]), "spec.http[0].route"),
        (
            json!([{ "match": [{ "uri": { "exact": "/a", "prefix": "/b" } }], "route": dest }]),
            "spec.http[0].match[0].uri",
        ),
        (
            json!([{ "match": [{ "uri": { "regex": "(" } }], "route": dest }]),
            "spec.http[0].match[0].uri.regex",
        ),
        (
            json!([{ "match": [{ "headers": { "bad header": { "exact": "x" } } }], "route": dest }]),
            "spec.http[0].match[0].headers.bad header",
        ),
        (
            json!([{ "match": [{ "method": { "prefix": "G" } }], "route": dest }]),
            "spec.http[0].match[0].method",
        ),
        (
            json!([{ "route": [{ "destination": { "host": "cart" }, "weight": -1 }] }]),
            "spec.http[0].route[0].weight",
        ),
        (
            json!([{ "route": [{ "destination": { "host": "cart", "port": { "number": 70000 } } }] }]),
            "spec.http[0].route[0].destination.port.number",
        ),
        (
            json!([{ "route": [{ "destination": { "host": "a" }, "weight": 0 }, { "destination": { "host": "b" }, "weight": 0 }] }]),
            "spec.http[0].route",
        ),
        (
            json!([{ "route": dest, "timeout": "soon" }]),
            "spec.http[0].timeout",
        ),
        (
            json!([{ "route": dest, "retries": { "attempts": 2, "retryOn": "sometimes" } }]),
            "spec.http[0].retries.retryOn",
        ),
        (
            json!([{ "route": dest, "retries": { "attempts": -1 } }]),
            "spec.http[0].retries.attempts",
        ),
        (
            json!([{ "route": dest, "fault": {} }]),
            "spec.http[0].fault",
        ),
        (
            json!([{ "route": dest, "fault": { "abort": { "httpStatus": 99 } } }]),
            "spec.http[0].fault.abort.httpStatus",
        ),
        (
            json!([{ "route": dest, "fault": { "abort": { "grpcStatus": "NOPE" } } }]),
            "spec.http[0].fault.abort.grpcStatus",
        ),
        (
            json!([{ "route": dest, "fault": { "delay": { "fixedDelay": "1s", "percentage": { "value": 101 } } } }]),
            "spec.http[0].fault.delay.percentage.value",
        ),
        (
            json!([{ "route": dest, "mirrorPercentage": { "value": 5 } }]),
            "spec.http[0].mirrorPercentage",
        ),
        (
            json!([{ "route": dest, "mirror": { "host": "m" }, "mirrorPercentage": { "value": -1 } }]),
            "spec.http[0].mirrorPercentage.value",
        ),
        (
            json!([{ "redirect": { "uri": "/x" }, "route": dest }]),
            "spec.http[0].redirect",
        ),
        (
            json!([{ "redirect": { "uri": "/x", "redirectCode": 200 } }]),
            "spec.http[0].redirect.redirectCode",
        ),
        (
            json!([{ "route": dest, "rewrite": { "uri": "relative" } }]),
            "spec.http[0].rewrite.uri",
        ),
        (
            json!([{ "route": dest, "rewrite": { "authority": "a/b" } }]),
            "spec.http[0].rewrite.authority",
        ),
        (
            json!([{ "route": dest, "headers": { "request": { "set": { "x": "a\nb" } } } }]),
            "spec.http[0].headers.request.set.x",
        ),
    ];
    for (http, field) in cases {
        let err = vs(http.clone()).unwrap_err();
        assert_eq!(err.field(), field, "{http}: {err}");
    }
    let no_hosts = VirtualService::new("v", "shop", VirtualServiceSpec::default()).unwrap_err();
    assert_eq!(no_hosts.field(), "spec.hosts");
    let bad_host: Result<VirtualServiceSpec, _> =
        serde_json::from_value(json!({ "hosts": ["a b"] }));
    let bad_host = VirtualService::new("v", "shop", bad_host.unwrap()).unwrap_err();
    assert_eq!(bad_host.field(), "spec.hosts[0]");
}

#[test]
fn unknown_fields_are_refused_and_serde_round_trips() {
    let tcp: Result<VirtualService, _> = serde_json::from_value(json!({
        "name": "v", "namespace": "shop", "spec": { "hosts": ["cart"], "tcp": [] }
    }));
    assert!(tcp.is_err());
    let json = json!({ "name": "v", "namespace": "shop", "spec": {
        "hosts": ["cart"],
        "http": [{ "match": [{ "uri": { "prefix": "/a" } }],
                   "route": [{ "destination": { "host": "cart", "subset": "v1" }, "weight": 100 }],
                   "fault": { "abort": { "httpStatus": 500, "percentage": { "value": 10.0 } } } }]
    } });
    let parsed: VirtualService = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(serde_json::to_value(&parsed).unwrap(), json);
}

#[test]
fn durations_and_ignore_case() {
    assert_eq!(parse_istio_duration("0.5s"), Ok(Duration::from_millis(500)));
    assert_eq!(parse_istio_duration("1m30s"), Ok(Duration::from_secs(90)));
    assert!(parse_istio_duration("-1s").is_err());
    let route = one_route(json!({
        "match": [{ "uri": { "prefix": "/API" }, "ignoreUriCase": true }],
        "route": [{ "destination": { "host": "cart" } }]
    }));
    let PathMatch::Regex(pattern) = &route.rule.matches[0].path else {
        panic!("{:?}", route.rule.matches[0].path)
    };
    let regex = regex::Regex::new(&format!("^(?:{pattern})$")).unwrap();
    assert!(regex.is_match("/api/items"));
    assert!(!regex.is_match("/apx"));
}
