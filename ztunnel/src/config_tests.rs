use std::net::IpAddr;

use super::*;

const GOOD: &str = r#"
workloads:
  - uid: u1
    name: web-0
    namespace: shop
    serviceAccount: web
    node: node-a
    ips: [10.244.1.2]
    protocol: HBONE
services:
  - name: web
    namespace: shop
    vips: [10.96.0.10]
    ports: [{port: 80, targetPort: 8080}]
    endpoints: {u1: {}}
authorizationPolicies:
  - name: deny-bank
    namespace: shop
    spec:
      action: DENY
      rules: [{from: [{source: {namespaces: [bank]}}]}]
peerAuthentications:
  - name: default
    namespace: istio-system
    spec: {mtls: {mode: STRICT}}
"#;

fn error(yaml: &str) -> ConfigError {
    match parse(yaml) {
        Ok(_) => panic!("config should be refused:\n{yaml}"),
        Err(err) => err,
    }
}

#[test]
fn parses_every_kind() {
    let snapshot = parse(GOOD).unwrap();
    let ip: IpAddr = "10.244.1.2".parse().unwrap();
    assert_eq!(snapshot.workload_by_ip(ip).unwrap().name(), "web-0");
    assert_eq!(
        snapshot
            .service_by_vip("10.96.0.10".parse().unwrap())
            .unwrap()
            .name(),
        "web"
    );
    assert_eq!(snapshot.policies().len(), 1);
    assert_eq!(snapshot.peer_authentications().len(), 1);
    assert!(parse("").unwrap().workloads().is_empty());
}

#[test]
fn invalid_objects_are_named_with_index_and_field() {
    let bad_ip = GOOD.replace("ips: [10.244.1.2]", "ips: []");
    let err = error(&bad_ip);
    assert_eq!(err.location(), "workloads[0] (Workload shop/web-0)");
    assert!(err.message().contains("ips"), "{err}");

    let bad_port = GOOD.replace("targetPort: 8080", "targetPort: 0");
    let err = error(&bad_port);
    assert_eq!(err.location(), "services[0] (Service shop/web)");
    assert!(err.message().contains("ports[0].targetPort"), "{err}");

    let bad_block = GOOD.replace("namespaces: [bank]", "ipBlocks: [10.0.0.0/99]");
    let err = error(&bad_block);
    assert_eq!(
        err.location(),
        "authorizationPolicies[0] (AuthorizationPolicy shop/deny-bank)"
    );
    assert!(err.message().contains("ipBlocks[0]"), "{err}");

    let bad_mode = GOOD.replace("mode: STRICT", "mode: SOMETIMES");
    let err = error(&bad_mode);
    assert_eq!(
        err.location(),
        "peerAuthentications[0] (PeerAuthentication istio-system/default)"
    );

    let unknown_field = GOOD.replace("node: node-a", "node: node-a\n    color: blue");
    let err = error(&unknown_field);
    assert!(err.message().contains("color"), "{err}");

    let unknown_list = format!("{GOOD}\ngateways: []\n");
    let err = error(&unknown_list);
    assert_eq!(err.location(), "config");
    assert!(err.message().contains("gateways"), "{err}");

    let not_yaml = error("workloads: [");
    assert_eq!(not_yaml.location(), "config");
}

#[test]
fn conflicts_between_objects_are_refused() {
    let twice = GOOD.replace(
        "services:",
        "  - uid: u2\n    name: web-1\n    namespace: shop\n    serviceAccount: web\n    node: node-a\n    ips: [10.244.1.2]\nservices:",
    );
    let err = error(&twice);
    assert!(err.message().contains("Workload shop/web-1"), "{err}");
    assert!(err.message().contains("ips[0]"), "{err}");
}

#[tokio::test]
async fn watcher_applies_good_changes_and_keeps_the_last_good_config() {
    let dir = std::env::temp_dir().join(format!("ambit-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("watch.yaml");
    std::fs::write(&path, GOOD).unwrap();
    let store = Arc::new(StateStore::new(load(&path).unwrap()));
    let task = tokio::spawn(watch(path.clone(), store.clone(), GOOD.to_owned()));

    let wait_version = |version: u64| {
        let store = store.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(10), async {
                while store.version() < version {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
            .await
            .unwrap();
        }
    };

    // A bad change is ignored...
    std::fs::write(&path, GOOD.replace("ips: [10.244.1.2]", "ips: []")).unwrap();
    // ...and the good change after it is applied (version 1, so the bad one published nothing).
    let changed = GOOD.replace("10.244.1.2", "10.244.1.3");
    // Give the watcher a chance to see the bad content first: wait two poll periods' worth of
    // reads by observing that nothing was published meanwhile.
    tokio::time::sleep(POLL_INTERVAL * 2).await;
    assert_eq!(
        store.version(),
        0,
        "an invalid config must not be published"
    );
    assert!(
        store.load().workload_by_uid("u1").is_some(),
        "last good config stays"
    );
    std::fs::write(&path, &changed).unwrap();
    wait_version(1).await;
    let ip: IpAddr = "10.244.1.3".parse().unwrap();
    assert!(store.load().workload_by_ip(ip).is_some());
    task.abort();
    std::fs::remove_dir_all(&dir).unwrap();
}
