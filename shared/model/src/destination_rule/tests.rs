use serde_json::{Value, json};

use super::*;

fn rule(spec: Value) -> Result<DestinationRule, ModelError> {
    let spec: DestinationRuleSpec = serde_json::from_value(spec).unwrap();
    DestinationRule::new("dr", "shop", spec)
}

#[test]
fn full_rule_parses_with_subset_overrides() {
    let dr = rule(json!({
        "host": "reviews",
        "trafficPolicy": {
            "loadBalancer": { "simple": "RANDOM" },
            "connectionPool": {
                "tcp": { "maxConnections": 10 },
                "http": { "http1MaxPendingRequests": 1, "http2MaxRequests": 20,
                          "maxRequestsPerConnection": 0, "maxRetries": 3 }
            },
            "outlierDetection": { "consecutive5xxErrors": 3, "interval": "1s",
                                  "baseEjectionTime": "30s", "maxEjectionPercent": 50 }
        },
        "subsets": [
            { "name": "v1", "labels": { "version": "v1" } },
            { "name": "v2", "labels": { "version": "v2" },
              "trafficPolicy": { "loadBalancer": { "consistentHash": {
                  "httpCookie": { "name": "user", "ttl": "1h", "path": "/" } } } } }
        ]
    }))
    .unwrap();
    assert_eq!(dr.service(), Some(("shop", "reviews")));
    let policy = dr.policy();
    assert_eq!(policy.load_balancer, LoadBalancer::Random);
    assert_eq!(
        policy.connection_pool,
        ConnectionPool {
            max_connections: Some(10),
            max_pending_requests: Some(1),
            max_requests: Some(20),
            max_requests_per_connection: None,
            max_retries: Some(3),
        }
    );
    let outlier = policy.outlier_detection.unwrap();
    assert_eq!(outlier.consecutive_5xx_errors, Some(3));
    assert_eq!(outlier.consecutive_gateway_errors, None);
    assert_eq!(outlier.interval, Duration::from_secs(1));
    assert_eq!(outlier.max_ejection_percent, 50);
    // v1 inherits everything; v2 replaces only the load balancer.
    assert_eq!(dr.subset("v1").unwrap().policy, *policy);
    let v2 = &dr.subset("v2").unwrap().policy;
    assert_eq!(
        v2.load_balancer,
        LoadBalancer::ConsistentHash(HashKey::Cookie {
            name: "user".into(),
            path: Some("/".into()),
            ttl: Some(Duration::from_secs(3600)),
        })
    );
    assert_eq!(v2.connection_pool, policy.connection_pool);
    assert_eq!(v2.outlier_detection, policy.outlier_detection);
    assert!(dr.subset("v3").is_none());
}

#[test]
fn hosts_resolve_to_services() {
    let host =
        |h: &str| rule(json!({ "host": h })).map(|r| r.service().map(|(n, s)| format!("{n}/{s}")));
    assert_eq!(host("cart").unwrap().as_deref(), Some("shop/cart"));
    assert_eq!(host("cart.other").unwrap().as_deref(), Some("other/cart"));
    assert_eq!(
        host("cart.other.svc.cluster.local").unwrap().as_deref(),
        Some("other/cart")
    );
    assert_eq!(host("api.example.com").unwrap(), None);
    assert!(host("*.example.com").is_err());
    assert!(host("").is_err());
}

#[test]
fn defaults() {
    let dr = rule(json!({ "host": "cart", "trafficPolicy": {
        "loadBalancer": { "simple": "UNSPECIFIED" }, "outlierDetection": {} } }))
    .unwrap();
    assert_eq!(dr.policy().load_balancer, LoadBalancer::LeastRequest);
    let outlier = dr.policy().outlier_detection.unwrap();
    assert_eq!(outlier.consecutive_5xx_errors, Some(5));
    assert_eq!(outlier.interval, Duration::from_secs(10));
    assert_eq!(outlier.base_ejection_time, Duration::from_secs(30));
    assert_eq!(outlier.max_ejection_percent, 10);
    let plain = rule(json!({ "host": "cart" })).unwrap();
    assert_eq!(plain.policy().load_balancer, LoadBalancer::RoundRobin);
    assert_eq!(plain.policy().outlier_detection, None);
}

#[test]
fn errors_name_the_field() {
    let cases = [
        (
            json!({ "host": "c", "trafficPolicy": { "loadBalancer": {
                "simple": "RANDOM", "consistentHash": { "useSourceIp": true } } } }),
            "spec.trafficPolicy.loadBalancer",
        ),
        (
            json!({ "host": "c", "trafficPolicy": { "loadBalancer": { "consistentHash": {
                "httpHeaderName": "x-user", "useSourceIp": true } } } }),
            "spec.trafficPolicy.loadBalancer.consistentHash",
        ),
        (
            json!({ "host": "c", "trafficPolicy": { "loadBalancer": { "consistentHash": {
                "httpHeaderName": "bad header" } } } }),
            "spec.trafficPolicy.loadBalancer.consistentHash.httpHeaderName",
        ),
        (
            json!({ "host": "c", "subsets": [{ "name": "v1", "trafficPolicy": {
                "outlierDetection": { "interval": "soon" } } }] }),
            "spec.subsets[0].trafficPolicy.outlierDetection.interval",
        ),
        (
            json!({ "host": "c", "trafficPolicy": { "outlierDetection": {
                "maxEjectionPercent": 101 } } }),
            "spec.trafficPolicy.outlierDetection.maxEjectionPercent",
        ),
        (
            json!({ "host": "c", "subsets": [{ "name": "v1" }, { "name": "v1" }] }),
            "spec.subsets[1].name",
        ),
        (
            json!({ "host": "c", "trafficPolicy": { "loadBalancer": { "simple": "PASSTHROUGH" } } }),
            "spec.trafficPolicy.loadBalancer.simple",
        ),
    ];
    for (spec, field) in cases {
        let err = rule(spec.clone()).unwrap_err();
        assert_eq!(err.field(), field, "{spec}: {err}");
    }
}

#[test]
fn unknown_fields_are_refused_and_serde_round_trips() {
    let unknown = json!({ "name": "dr", "namespace": "shop",
        "spec": { "host": "c", "trafficPolicy": { "tls": { "mode": "ISTIO_MUTUAL" } } } });
    assert!(serde_json::from_value::<DestinationRule>(unknown).is_err());
    let text = json!({ "name": "dr", "namespace": "shop", "spec": {
        "host": "c", "trafficPolicy": { "connectionPool": { "http": { "http2MaxRequests": 5 } } },
        "subsets": [{ "name": "v1", "labels": { "version": "v1" } }] } });
    let dr: DestinationRule = serde_json::from_value(text.clone()).unwrap();
    assert_eq!(serde_json::to_value(&dr).unwrap(), text);
    assert_eq!(dr.policy().connection_pool.max_requests, Some(5));
}
