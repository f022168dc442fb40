use std::net::IpAddr;

use super::*;

const CONFIG: &str = r#"
workloads:
  - {uid: c, name: client, namespace: shop, serviceAccount: client, node: a, ips: [10.244.1.2], protocol: HBONE}
  - {uid: s1, name: server-0, namespace: shop, serviceAccount: server, node: b, ips: [10.244.2.2], protocol: HBONE}
  - {uid: s2, name: server-1, namespace: shop, serviceAccount: server, node: b, ips: [10.244.2.3]}
  - {uid: wp, name: waypoint-0, namespace: shop, serviceAccount: waypoint, node: c, ips: [10.244.3.10]}
  - uid: w
    name: bound
    namespace: shop
    serviceAccount: bound
    node: b
    ips: [10.244.2.4]
    protocol: HBONE
    waypoint: {addresses: ["10.244.3.9:15008"], identity: "spiffe://cluster.local/ns/shop/sa/waypoint"}
services:
  - name: server
    namespace: shop
    vips: [10.96.0.10]
    ports: [{port: 80, targetPort: 8080}]
    endpoints: {s1: {}, s2: {}}
    subjectAltNames: ["spiffe://cluster.local/ns/shop/sa/extra"]
  - name: waypointed
    namespace: shop
    vips: [10.96.0.11]
    ports: [{port: 80}]
    endpoints: {s1: {}}
    waypoint: {addresses: ["10.244.3.9:15008"], identity: "spiffe://cluster.local/ns/shop/sa/waypoint"}
  - name: behind-vip
    namespace: shop
    vips: [10.96.0.12]
    ports: [{port: 80}]
    endpoints: {s1: {}}
    waypoint: {addresses: ["10.96.0.20:15008"], identity: "spiffe://cluster.local/ns/shop/sa/waypoint"}
  - name: waypoint
    namespace: shop
    vips: [10.96.0.20]
    ports: [{port: 15008}]
    endpoints: {wp: {}}
"#;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn id(sa: &str) -> SpiffeId {
    SpiffeId::new("cluster.local", "shop", sa).unwrap()
}

#[test]
fn routes_follow_the_state() {
    let snapshot = crate::config::parse(CONFIG).unwrap();
    // Service VIP, round robin: enrolled endpoint → HBONE with the target port, the endpoint's
    // identity and the service SANs; the unenrolled one → plain TCP.
    assert_eq!(
        route(&snapshot, addr("10.96.0.10:80"), 0),
        Route::Hbone {
            next_hop: addr("10.244.2.2:15008"),
            target: addr("10.244.2.2:8080"),
            expected: vec![id("server"), id("extra")],
            service_host: Some("server.shop.svc.cluster.local".into()),
        }
    );
    assert_eq!(
        route(&snapshot, addr("10.96.0.10:80"), 1),
        Route::Tcp(addr("10.244.2.3:8080"))
    );
    // Pod IP of an enrolled workload.
    assert_eq!(
        route(&snapshot, addr("10.244.2.2:7000"), 0),
        Route::Hbone {
            next_hop: addr("10.244.2.2:15008"),
            target: addr("10.244.2.2:7000"),
            expected: vec![id("server")],
            service_host: None,
        }
    );
    // Waypoints: the authority is what the app dialled.
    assert_eq!(
        route(&snapshot, addr("10.96.0.11:80"), 0),
        Route::Hbone {
            next_hop: addr("10.244.3.9:15008"),
            target: addr("10.96.0.11:80"),
            expected: vec![id("waypoint")],
            service_host: Some("waypointed.shop.svc.cluster.local".into()),
        }
    );
    assert!(matches!(
        route(&snapshot, addr("10.244.2.4:9000"), 0),
        Route::Hbone { next_hop, target, .. }
            if next_hop == addr("10.244.3.9:15008") && target == addr("10.244.2.4:9000")
    ));
    // A waypoint addressed by its Service's VIP: HBONE goes to one of its pods.
    assert!(matches!(
        route(&snapshot, addr("10.96.0.12:80"), 0),
        Route::Hbone { next_hop, target, .. }
            if next_hop == addr("10.244.3.10:15008") && target == addr("10.96.0.12:80")
    ));
    // Unknown → passthrough; ztunnel ports → refused; undeclared service port → passthrough.
    assert_eq!(
        route(&snapshot, addr("192.0.2.7:443"), 0),
        Route::Tcp(addr("192.0.2.7:443"))
    );
    assert!(matches!(
        route(&snapshot, addr("10.244.2.2:15008"), 0),
        Route::Refuse(_)
    ));
    let ip: IpAddr = "10.96.0.10".parse().unwrap();
    assert_eq!(
        route(&snapshot, SocketAddr::new(ip, 81), 0),
        Route::Tcp(SocketAddr::new(ip, 81))
    );
}
