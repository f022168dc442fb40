use std::io::Write;

use super::*;

pub(crate) const SAMPLE: &str = r#"
waypoint: { name: waypoint, namespace: shop }
endpointHbonePort: 25008
hboneAddressOverrides: { "10.244.1.8": "127.0.0.1:30000" }
services:
  - name: cart
    namespace: shop
    vips: [10.96.0.20]
    ports: [{ name: http, port: 80, targetPort: 8080 }]
    endpoints: { uid-1: {} }
workloads:
  - { uid: uid-1, name: cart-1, namespace: shop, serviceAccount: cart, node: n1, ips: [10.244.1.7] }
policies:
  - name: allow-get
    namespace: shop
    spec:
      targetRefs: [{ kind: Service, group: "", name: cart }]
      rules: [{ to: [{ operation: { methods: [GET] } }] }]
routes:
  - name: cart
    namespace: shop
    spec:
      parentRefs: [{ group: "", kind: Service, name: cart }]
      rules: [{ backendRefs: [{ name: cart, port: 80 }] }]
"#;

#[test]
fn parses_and_indexes() {
    let snapshot = parse(SAMPLE, 1).unwrap();
    let entry = snapshot
        .service_by_vip("10.96.0.20:80".parse().unwrap())
        .unwrap();
    assert_eq!(entry.service.name(), "cart");
    assert!(
        snapshot
            .service_by_vip("10.96.0.20:81".parse().unwrap())
            .is_none()
    );
    assert_eq!(
        snapshot
            .workload_by_ip("10.244.1.7".parse().unwrap())
            .unwrap()
            .uid(),
        "uid-1"
    );
    assert_eq!(
        snapshot.hbone_address("10.244.1.7".parse().unwrap()),
        "10.244.1.7:25008".parse().unwrap()
    );
    assert_eq!(
        snapshot.hbone_address("10.244.1.8".parse().unwrap()),
        "127.0.0.1:30000".parse().unwrap()
    );
    assert_eq!(snapshot.policies().len(), 1);
}

#[test]
fn errors_name_the_field() {
    let bad = SAMPLE.replace("targetPort: 8080", "targetPort: 0");
    let err = parse(&bad, 1).unwrap_err();
    assert!(err.contains("ports[0].targetPort"), "{err}");
    let bad = SAMPLE.replace("methods: [GET]", "methods: [GET], paths: [\"a*b*\"]");
    let err = parse(&bad, 1).unwrap_err();
    assert!(err.contains("paths[0]"), "{err}");
    let bad = SAMPLE.replace("{ name: cart, port: 80 }", "{ name: cart }");
    let err = parse(&bad, 1).unwrap_err();
    assert!(err.contains("backendRefs[0].port"), "{err}");
    let bad = format!("{SAMPLE}  - {{ name: cart, namespace: shop, spec: {{}} }}\n");
    assert!(
        parse(&bad, 1).is_ok(),
        "a second route with the same name is allowed"
    );
    let twice = SAMPLE.replace(
        "workloads:",
        "  - { name: cart, namespace: shop, vips: [10.96.0.21] }\nworkloads:",
    );
    let err = parse(&twice, 1).unwrap_err();
    assert!(err.contains("listed twice"), "{err}");
}

#[tokio::test]
async fn reloads_on_change_and_keeps_the_last_good_config() {
    let dir = std::env::temp_dir().join(format!("ambit-waypoint-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("reload.yaml");
    std::fs::write(&path, SAMPLE).unwrap();
    let (_watcher, handle) = ConfigWatcher::start(path.clone(), Duration::from_millis(10)).unwrap();
    assert_eq!(handle.load().generation, 1);

    // An invalid version is not published …
    std::fs::write(&path, "services: [{ name: Bad }]").unwrap();
    // … and a good one after it is.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        handle.load().generation,
        1,
        "an invalid file must not replace the config"
    );
    let mut file = std::fs::File::create(&path).unwrap();
    file.write_all(SAMPLE.replace("10.96.0.20", "10.96.0.30").as_bytes())
        .unwrap();
    drop(file);
    tokio::time::timeout(Duration::from_secs(10), handle.wait_for_generation(2))
        .await
        .unwrap();
    let snapshot = handle.load();
    assert!(
        snapshot
            .service_by_vip("10.96.0.30:80".parse().unwrap())
            .is_some()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn destination_rules_and_rate_limits_are_indexed_and_validated() {
    let with = |extra: &str| parse(&format!("{SAMPLE}{extra}"), 1);
    let snapshot = with(
        r#"
destinationRules:
  - name: cart
    namespace: shop
    spec: { host: cart.shop.svc.cluster.local, trafficPolicy: { loadBalancer: { simple: RANDOM } } }
localRateLimits:
  - name: rl
    namespace: shop
    spec:
      targetRefs: [{ group: "", kind: Service, name: cart }]
      rules: [{ tokensPerFill: 1, fillInterval: 1s, maxTokens: 1 }]
"#,
    )
    .unwrap();
    let key = ServiceKey {
        namespace: "shop".into(),
        name: "cart".into(),
    };
    assert_eq!(snapshot.destination_rule(&key).unwrap().name(), "cart");
    assert_eq!(snapshot.local_rate_limits().len(), 1);
    let dump = snapshot.dump();
    assert_eq!(
        dump["destinationRules"][0]["spec"]["host"],
        "cart.shop.svc.cluster.local"
    );
    assert_eq!(dump["localRateLimits"][0]["name"], "rl");

    let twice = with(
        r#"
destinationRules:
  - { name: a, namespace: shop, spec: { host: cart } }
  - { name: b, namespace: shop, spec: { host: cart.shop } }
"#,
    )
    .unwrap_err();
    assert!(
        twice.contains("destinationRules[1]") && twice.contains("shop/a"),
        "{twice}"
    );
    let invalid = with(
        r#"
destinationRules:
  - { name: a, namespace: shop, spec: { host: cart, trafficPolicy: { outlierDetection: { interval: soon } } } }
"#,
    )
    .unwrap_err();
    assert!(
        invalid.contains("spec.trafficPolicy.outlierDetection.interval"),
        "{invalid}"
    );
}

#[test]
fn virtual_services_and_grpc_routes_load_with_field_errors() {
    let with_routes = format!(
        "{SAMPLE}{}",
        r#"grpcRoutes:
  - name: cart-grpc
    namespace: shop
    spec:
      parentRefs: [{ group: "", kind: Service, name: cart }]
      rules: [{ matches: [{ method: { service: shop.Cart } }], backendRefs: [{ name: cart, port: 80 }] }]
virtualServices:
  - name: cart
    namespace: shop
    spec:
      hosts: [cart]
      http:
        - fault: { abort: { httpStatus: 503, percentage: { value: 10 } } }
          route: [{ destination: { host: cart, subset: v1 } }]
"#
    );
    let snapshot = parse(&with_routes, 1).unwrap();
    let dump = snapshot.dump();
    assert_eq!(dump["virtualServices"][0]["name"], "cart");
    assert_eq!(dump["grpcRoutes"][0]["name"], "cart-grpc");
    let bad = with_routes.replace("httpStatus: 503", "httpStatus: 5030");
    let err = parse(&bad, 1).unwrap_err();
    assert!(err.contains("spec.http[0].fault.abort.httpStatus"), "{err}");
    let bad = with_routes.replace("service: shop.Cart", "service: \"shop/Cart\"");
    let err = parse(&bad, 1).unwrap_err();
    assert!(err.contains("matches[0].method.service"), "{err}");
}
