//! The real `ambit-controller` binary pushing config to many simulated ztunnels and a
//! waypoint over gRPC: node scoping, incremental updates, invalid input, crash and restart.

// Test helpers outside #[test] functions may panic on setup failures too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use ambit_api::client::ClientStats;
use ambit_api::{ConfigClient, ConfigView, ScopeKey};
use common::{
    Controller, Dirs, WAYPOINT_TOKEN, client_with_token, node_client, node_name, pod_yaml,
    pods_yaml, policy_yaml, sample, token, token_file, wait_for,
};

const NODES: usize = 24;

/// A waypoint `shop/waypoint`, the service `reviews` (selecting web-01) bound to it, an
/// HTTPRoute on that service, an L7 policy targeting it, and an unbound service `ratings`.
const WAYPOINT_YAML: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: shop}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
  addresses: [{value: 10.96.0.200}]
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop, labels: {istio.io/use-waypoint: waypoint}}
spec: {clusterIP: 10.96.0.10, selector: {app: web-01}, ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: shop}
spec: {clusterIP: 10.96.0.11, selector: {app: web-02}, ports: [{name: http, port: 9080}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: reviews, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: reviews, port: 9080}]
  rules: [{backendRefs: [{name: reviews, port: 9080}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-get, namespace: shop}
spec:
  targetRefs: [{kind: Service, group: "", name: reviews}]
  rules: [{to: [{operation: {methods: [GET]}}]}]
"#;

fn policies(view: &ConfigView) -> BTreeSet<String> {
    view.authorization_policies()
        .map(|p| p.name().to_owned())
        .collect()
}

fn workloads(view: &ConfigView) -> BTreeSet<String> {
    view.workloads().map(|w| w.name().to_owned()).collect()
}

fn stats(client: &ConfigClient) -> ClientStats {
    *client.stats().borrow()
}

async fn wait_view(client: &ConfigClient, what: &str, pred: impl Fn(&ConfigView) -> bool) {
    let mut config = client.config();
    wait_for(&mut config, what, |view: &Arc<ConfigView>| pred(view)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ztunnels_get_their_node_scope_and_only_affected_ones_get_updates() {
    let dirs = Dirs::new();
    std::fs::write(dirs.tokens(), token_file(NODES)).unwrap();
    dirs.write_config("pods.yaml", &pods_yaml(NODES));
    dirs.write_config("waypoint.yaml", WAYPOINT_YAML);
    dirs.write_config("policies.yaml", &policy_yaml("allow-web-03", "web-03"));
    let controller = Controller::start(&dirs, &[]).await;

    let clients: Vec<ConfigClient> = (0..NODES).map(|i| node_client(&controller, i)).collect();
    let waypoint = client_with_token(
        &controller,
        ScopeKey::waypoint("shop", "waypoint"),
        WAYPOINT_TOKEN,
    );
    for client in &clients {
        wait_view(client, "initial sync", ConfigView::is_synced).await;
    }
    wait_view(&waypoint, "waypoint sync", ConfigView::is_synced).await;

    // Every ztunnel knows every workload (any may be a destination, and its identity is what
    // the client ztunnel checks), but holds only the policies of its own node's workloads.
    for (index, client) in clients.iter().enumerate() {
        let view = client.current();
        assert_eq!(workloads(&view).len(), NODES);
        let own: Vec<_> = view
            .workloads()
            .filter(|w| w.node() == node_name(index))
            .map(|w| w.name().to_owned())
            .collect();
        assert_eq!(own, [format!("web-{index:02}")]);
        let expected: BTreeSet<String> = if index == 3 {
            ["allow-web-03".to_owned()].into()
        } else {
            BTreeSet::new()
        };
        assert_eq!(policies(&view), expected, "node {index}");
        assert_eq!(view.services().count(), 2);
        assert_eq!(view.http_routes().count(), 0, "routes are for waypoints");
    }

    // The waypoint gets its bound service, the workloads behind it, the policy targeting it
    // and the route attached to it; nothing about the unbound service.
    let view = waypoint.current();
    let services: Vec<_> = view.services().map(|s| s.name().to_owned()).collect();
    assert_eq!(services, ["reviews"]);
    assert_eq!(workloads(&view), ["web-01".to_owned()].into());
    assert_eq!(policies(&view), ["reviews-get".to_owned()].into());
    let routes: Vec<_> = view.http_routes().map(|r| r.name().to_owned()).collect();
    assert_eq!(routes, ["reviews"]);

    let metrics = controller.metrics().await;
    assert_eq!(
        sample(&metrics, "ambit_controller_connected_proxies"),
        Some((NODES + 1) as f64)
    );

    // A new policy for web-07 reaches node-07 only.
    let before: Vec<ClientStats> = clients.iter().map(stats).collect();
    let waypoint_before = stats(&waypoint);
    let text = policy_yaml("allow-web-03", "web-03") + &policy_yaml("deny-web-07", "web-07");
    dirs.write_config("policies.yaml", &text);
    wait_view(&clients[7], "policy on node-07", |v| {
        policies(v).contains("deny-web-07")
    })
    .await;
    // Barrier: a new pod changes every node's scope; once all have it, any stray update for
    // the policy change would have arrived before it.
    let mut pods = pods_yaml(NODES);
    pod_yaml(&mut pods, "late", 900, &node_name(0));
    dirs.write_config("pods.yaml", &pods);
    for client in &clients {
        wait_view(client, "new pod everywhere", |v| {
            workloads(v).contains("late")
        })
        .await;
    }
    for (index, client) in clients.iter().enumerate() {
        let updates = stats(client).applied - before[index].applied;
        let expected = if index == 7 { 2 } else { 1 };
        assert_eq!(updates, expected, "updates to node {index}");
        assert_eq!(stats(client).connects, 1, "no resync for node {index}");
        assert_eq!(
            policies(&client.current()).contains("deny-web-07"),
            index == 7
        );
    }
    // Neither change touched the waypoint's scope.
    assert_eq!(stats(&waypoint).applied, waypoint_before.applied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_object_is_reported_and_skipped_while_the_rest_applies() {
    let dirs = Dirs::new();
    std::fs::write(dirs.tokens(), token_file(4)).unwrap();
    dirs.write_config("pods.yaml", &pods_yaml(4));
    let controller = Controller::start(&dirs, &[]).await;
    let client = node_client(&controller, 1);
    wait_view(&client, "sync", ConfigView::is_synced).await;

    // Document 1 has an invalid action; documents 0 and 2 are fine.
    let text = policy_yaml("allow-web-01", "web-01")
        + &policy_yaml("broken", "web-01").replace("action: ALLOW", "action: MAYBE")
        + &policy_yaml("second-web-01", "web-01");
    dirs.write_config("mixed.yaml", &text);
    wait_view(&client, "valid policies", |v| {
        policies(v) == ["allow-web-01".to_owned(), "second-web-01".to_owned()].into()
    })
    .await;

    let line = controller
        .wait_for_log("skipped object", |l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("skipped object"))
        })
        .await;
    let fields = &line;
    assert!(
        fields["file"].as_str().unwrap().ends_with("mixed.yaml"),
        "{line}"
    );
    assert_eq!(fields["document"], 1, "{line}");
    assert_eq!(fields["name"], "broken", "{line}");
    assert_eq!(fields["field"], "spec.action", "{line}");
    let metrics = controller.metrics().await;
    assert_eq!(
        sample(&metrics, "ambit_controller_source_errors"),
        Some(1.0)
    );
    assert_eq!(
        sample(&metrics, "ambit_controller_config_errors_new_total"),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_keep_last_config_when_controller_dies_and_resync_after_restart() {
    let dirs = Dirs::new();
    std::fs::write(dirs.tokens(), token_file(3)).unwrap();
    dirs.write_config("pods.yaml", &pods_yaml(3));
    let controller = Controller::start(&dirs, &[]).await;
    let grpc = controller.addrs.grpc.to_string();
    let clients: Vec<ConfigClient> = (0..3).map(|i| node_client(&controller, i)).collect();
    for client in &clients {
        wait_view(client, "sync", ConfigView::is_synced).await;
    }
    let before: Vec<Arc<ConfigView>> = clients.iter().map(ConfigClient::current).collect();

    controller.kill();
    for client in &clients {
        let mut stats = client.stats();
        wait_for(&mut stats, "disconnect", |s| !s.connected).await;
        // The last good config stays.
        assert_eq!(workloads(&client.current()).len(), 3);
    }
    for (client, before) in clients.iter().zip(&before) {
        assert_eq!(client.current().version(), before.version());
    }

    // Changed while the controller was down; a restart on the same port resyncs everyone.
    let mut pods = pods_yaml(3);
    pod_yaml(&mut pods, "while-down", 50, &node_name(2));
    dirs.write_config("pods.yaml", &pods);
    let _restarted = Controller::start_at(&dirs, &grpc, &[]).await;
    for (client, before) in clients.iter().zip(&before) {
        wait_view(client, "resync", |v| workloads(v).contains("while-down")).await;
        let view = client.current();
        assert!(view.version() > before.version());
        assert_eq!(workloads(&view).len(), 4);
        assert!(stats(client).connects >= 2);
    }
}

#[tokio::test]
async fn without_a_source_the_binary_says_what_to_pass() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_ambit-controller"))
        .args([
            "--grpc-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .args(["--readiness-addr", "127.0.0.1:0"])
        .output();
    let output = tokio::time::timeout(common::WAIT, output)
        .await
        .unwrap()
        .unwrap();
    assert!(!output.status.success());
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(text.contains("--config-dir"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_get_only_the_scope_their_token_allows() {
    let dirs = Dirs::new();
    std::fs::write(dirs.tokens(), token_file(2)).unwrap();
    dirs.write_config("pods.yaml", &pods_yaml(2));
    dirs.write_config("waypoint.yaml", WAYPOINT_YAML);
    let controller = Controller::start(&dirs, &[]).await;
    let node_0 = ScopeKey::node(node_name(0));
    let other_node = client_with_token(&controller, node_0.clone(), &token(1));
    let waypoint_as_node = client_with_token(&controller, node_0.clone(), WAYPOINT_TOKEN);
    let unknown = client_with_token(&controller, node_0.clone(), "not-a-bootstrap-token");
    let refusal = |caller: &'static str| {
        move |line: &serde_json::Value| {
            line["message"] == "refused config subscription"
                && line["reason"].as_str().is_some_and(|r| {
                    r.contains(caller) && r.contains("may not subscribe to node=node-00")
                })
        }
    };
    controller
        .wait_for_log("node-01 refused node-00's scope", refusal("node node-01"))
        .await;
    controller
        .wait_for_log(
            "the waypoint refused a node scope",
            refusal("waypoint spiffe://"),
        )
        .await;
    controller
        .wait_for_log("an unknown token refused", |line| {
            line["message"] == "refused config subscription"
                && line["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("unknown token"))
        })
        .await;

    // The right token is served; the others never got a stream.
    let own = node_client(&controller, 0);
    wait_view(&own, "node-00 sync", ConfigView::is_synced).await;
    for refused in [&other_node, &waypoint_as_node, &unknown] {
        assert_eq!(stats(refused).connects, 0);
        assert!(!refused.current().is_synced());
    }
    let metrics = controller.metrics().await;
    let refused = |reason: &str| {
        sample(
            &metrics,
            &format!("ambit_controller_config_subscriptions_refused_total{{reason=\"{reason}\"}}"),
        )
        .unwrap_or_default()
    };
    assert!(refused("denied") >= 2.0, "{metrics}");
    assert!(refused("unauthenticated") >= 1.0, "{metrics}");
}
