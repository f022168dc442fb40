use ambit_api::MeshResource;

use super::*;

/// One object of every kind a waypoint uses, as a config file would hold them.
const EVERY_KIND: &str = r#"
services:
  - name: cart
    namespace: shop
    vips: [10.96.0.20]
    ports: [{ name: http, port: 80, targetPort: 8080 }]
    endpoints: { uid-1: {} }
workloads:
  - { uid: uid-1, name: cart-1, namespace: shop, serviceAccount: cart, node: n1, ips: [10.244.1.7], labels: { version: v1 } }
policies:
  - name: allow-get
    namespace: shop
    spec:
      targetRefs: [{ kind: Service, group: "", name: cart }]
      rules: [{ to: [{ operation: { methods: [GET] } }] }]
routes:
  - name: cart-http
    namespace: shop
    spec:
      parentRefs: [{ group: "", kind: Service, name: cart }]
      rules: [{ backendRefs: [{ name: cart, port: 80 }] }]
destinationRules:
  - name: cart
    namespace: shop
    spec: { host: cart, subsets: [{ name: v1, labels: { version: v1 } }] }
localRateLimits:
  - name: rl
    namespace: shop
    spec:
      targetRefs: [{ group: "", kind: Service, name: cart }]
      rules: [{ tokensPerFill: 1, fillInterval: 1s, maxTokens: 1 }]
grpcRoutes:
  - name: cart-grpc
    namespace: shop
    spec:
      parentRefs: [{ group: "", kind: Service, name: cart }]
      rules: [{ matches: [{ method: { service: shop.Cart } }], backendRefs: [{ name: cart, port: 80 }] }]
virtualServices:
  - name: cart-vs
    namespace: shop
    spec:
      hosts: [cart]
      http: [{ route: [{ destination: { host: cart, subset: v1 } }] }]
requestAuthentications:
  - name: jwt
    namespace: shop
    spec:
      targetRefs: [{ group: "", kind: Service, name: cart }]
      jwtRules: [{ issuer: "https://issuer.example", jwksUri: "https://issuer.example/jwks" }]
"#;

fn gateway() -> GatewayName {
    GatewayName {
        name: "waypoint".into(),
        namespace: "shop".into(),
    }
}

/// The objects of `file` as the controller would send them.
fn resources(file: &ConfigFile) -> Vec<MeshResource> {
    let mut resources: Vec<MeshResource> = Vec::new();
    resources.extend(file.services.iter().cloned().map(Into::into));
    resources.extend(file.workloads.iter().cloned().map(Into::into));
    resources.extend(file.policies.iter().cloned().map(Into::into));
    resources.extend(file.routes.iter().cloned().map(Into::into));
    resources.extend(file.destination_rules.iter().cloned().map(Into::into));
    resources.extend(file.local_rate_limits.iter().cloned().map(Into::into));
    resources.extend(file.grpc_routes.iter().cloned().map(Into::into));
    resources.extend(file.virtual_services.iter().cloned().map(Into::into));
    resources.extend(file.request_authentications.iter().cloned().map(Into::into));
    resources
}

#[test]
fn a_view_with_every_kind_becomes_a_config_file_with_every_kind() {
    let written: ConfigFile = serde_yaml_ng::from_str(EVERY_KIND).unwrap();
    let view = ConfigView::from_resources(3, resources(&written)).unwrap();
    assert_eq!(view.len(), 9);

    let file = config_file(&view, &gateway());
    assert_eq!(file.waypoint, Some(gateway()));
    assert_eq!(file.services, written.services);
    assert_eq!(file.workloads, written.workloads);
    assert_eq!(file.policies, written.policies);
    assert_eq!(file.routes, written.routes);
    assert_eq!(file.destination_rules, written.destination_rules);
    assert_eq!(file.local_rate_limits, written.local_rate_limits);
    assert_eq!(file.grpc_routes, written.grpc_routes);
    assert_eq!(file.virtual_services, written.virtual_services);
    assert_eq!(
        file.request_authentications,
        written.request_authentications
    );

    // And the waypoint takes all of them in.
    let dump = Snapshot::build(file, 1).unwrap().dump();
    for list in [
        "services",
        "workloads",
        "policies",
        "routes",
        "destinationRules",
        "localRateLimits",
        "grpcRoutes",
        "virtualServices",
        "requestAuthentications",
    ] {
        assert_eq!(dump[list].as_array().map(Vec::len), Some(1), "{list}");
    }
}

#[test]
fn an_empty_view_only_names_the_gateway() {
    let view = ConfigView::from_resources(1, []).unwrap();
    let file = config_file(&view, &gateway());
    assert_eq!(file.waypoint, Some(gateway()));
    let dump = Snapshot::build(file, 1).unwrap().dump();
    assert_eq!(dump["virtualServices"], serde_json::json!([]));
    assert_eq!(dump["destinationRules"], serde_json::json!([]));
}
