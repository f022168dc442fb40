//! Config distribution over real gRPC on 127.0.0.1: snapshots, diffs, scoping, NACK,
//! reconnect and slow clients.

// Test helpers outside #[test] functions may panic on setup failures too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ambit_api::proto::config_distribution_client::ConfigDistributionClient;
use ambit_api::proto::{self, subscribe_request};
use ambit_api::server::{AuthError, AuthFuture, Authenticator, Caller, ScopeAccess, StaticTokens};
use ambit_api::{
    ConfigClient, ConfigClientOptions, ConfigServer, ConfigServerOptions, ConfigView, ResourceKey,
    ResourceKind, ScopeKey,
};
use ambit_identity::SpiffeId;
use bytes::Bytes;
use common::{TestServer, WAIT, service, snapshot, wait_for, wait_for_server, workload};
use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};

fn fast_server() -> ConfigServer {
    ConfigServer::new(ConfigServerOptions::default().with_debounce(Duration::from_millis(10)))
}

fn client(server: &TestServer, scope: ScopeKey, id: &str) -> ConfigClient {
    ConfigClient::start(
        server.endpoint(),
        scope,
        ConfigClientOptions::new(id)
            .with_backoff(Duration::from_millis(20), Duration::from_millis(200)),
    )
}

async fn wait_version(rx: &mut watch::Receiver<Arc<ConfigView>>, version: u64) {
    wait_for(rx, &format!("version {version}"), |c| {
        c.version() == Some(version)
    })
    .await;
}

fn workload_names(view: &ConfigView) -> Vec<String> {
    view.workloads().map(|w| w.name().to_owned()).collect()
}

#[tokio::test]
async fn full_snapshot_then_incremental_updates() {
    let config = fast_server();
    let server = TestServer::start(Some(config.clone()), None).await;
    let node = ScopeKey::node("node-a");
    let v1 = config.publish(
        node.clone(),
        snapshot(&[
            workload("a", "node-a"),
            workload("b", "node-a"),
            service("cart"),
        ]),
    );
    let client = client(&server, node.clone(), "ztunnel/node-a");
    let mut rx = client.config();
    wait_version(&mut rx, v1).await;
    assert_eq!(workload_names(&client.current()), ["a", "b"]);
    assert_eq!(client.current().services().count(), 1);

    // Change a, drop b, add c, keep the service: one incremental update.
    let v2 = config.publish(
        node.clone(),
        snapshot(&[
            common::workload_with_label("a", "node-a", "v2"),
            workload("c", "node-a"),
            service("cart"),
        ]),
    );
    assert!(v2 > v1);
    wait_version(&mut rx, v2).await;
    let view = client.current();
    assert_eq!(workload_names(&view), ["a", "c"]);
    let a = view
        .get(&ResourceKey::new(ResourceKind::Workload, "shop", "a"))
        .and_then(|r| r.as_workload())
        .unwrap();
    assert_eq!(a.labels().get("version").map(String::as_str), Some("v2"));

    // Removing the service only.
    let v3 = config.publish(
        node.clone(),
        snapshot(&[
            common::workload_with_label("a", "node-a", "v2"),
            workload("c", "node-a"),
        ]),
    );
    assert!(v3 > v2);
    wait_version(&mut rx, v3).await;
    assert_eq!(client.current().services().count(), 0);

    // Publishing identical content is not a new version and sends nothing.
    let same = config.publish(
        node.clone(),
        snapshot(&[
            common::workload_with_label("a", "node-a", "v2"),
            workload("c", "node-a"),
        ]),
    );
    assert_eq!(same, v3);
    wait_for_server(&config, "three ACKs", |s| s.stats().acks == 3).await;
    let stats = config.stats();
    assert_eq!(stats.pushes, 3, "{stats:?}");
    assert_eq!(stats.nacks, 0);
    let clients = config.clients();
    assert_eq!(clients.len(), 1);
    assert_eq!(clients[0].id, "ztunnel/node-a");
    assert_eq!(clients[0].acked_version, Some(v3));
    assert_eq!(client.stats().borrow().applied, 3);
}

#[tokio::test]
async fn fifty_nodes_each_receive_only_their_scope() {
    let config = fast_server();
    let server = TestServer::start(Some(config.clone()), None).await;
    let mut versions = Vec::new();
    for i in 0..50 {
        let node = format!("node-{i}");
        let resources = [
            workload(&format!("pod-{i}-a"), &node),
            workload(&format!("pod-{i}-b"), &node),
            service("shared"),
        ];
        versions.push(config.publish(ScopeKey::node(&node), snapshot(&resources)));
    }
    let waypoint = ScopeKey::waypoint("shop", "waypoint");
    let waypoint_version = config.publish(waypoint.clone(), snapshot(&[service("cart")]));

    let clients: Vec<_> = (0..50)
        .map(|i| {
            client(
                &server,
                ScopeKey::node(format!("node-{i}")),
                &format!("ztunnel-{i}"),
            )
        })
        .collect();
    let waypoint_client = client(&server, waypoint, "waypoint");
    for (i, client) in clients.iter().enumerate() {
        wait_version(&mut client.config(), versions[i]).await;
        let view = client.current();
        assert_eq!(
            workload_names(&view),
            [format!("pod-{i}-a"), format!("pod-{i}-b")]
        );
        assert!(view.workloads().all(|w| w.node() == format!("node-{i}")));
        assert_eq!(view.len(), 3);
    }
    wait_version(&mut waypoint_client.config(), waypoint_version).await;
    let view = waypoint_client.current();
    assert_eq!(view.len(), 1);
    assert_eq!(view.services().next().unwrap().name(), "cart");

    wait_for_server(&config, "51 clients acknowledged", |s| {
        s.clients().len() == 51 && s.clients().iter().all(|c| c.acked_version.is_some())
    })
    .await;

    // A change on one node reaches that node only.
    let v = config.publish(
        ScopeKey::node("node-7"),
        snapshot(&[workload("pod-7-a", "node-7"), service("shared")]),
    );
    wait_version(&mut clients[7].config(), v).await;
    assert_eq!(workload_names(&clients[7].current()), ["pod-7-a"]);
    assert_eq!(clients[8].current().version(), Some(versions[8]));
    assert_eq!(clients[8].current().len(), 3);
}

#[tokio::test]
async fn invalid_resource_is_nacked_and_last_good_config_kept() {
    let config = fast_server();
    let server = TestServer::start(Some(config.clone()), None).await;
    let node = ScopeKey::node("node-a");
    let good = [workload("a", "node-a"), service("cart")];
    let v1 = config.publish(node.clone(), snapshot(&good));
    let client = client(&server, node.clone(), "ztunnel/node-a");
    let mut rx = client.config();
    wait_version(&mut rx, v1).await;

    // A valid new workload plus a Service whose name is not a DNS label: the whole update
    // must be rejected.
    let mut bad = snapshot(&[
        workload("a", "node-a"),
        workload("b", "node-a"),
        service("cart"),
    ]);
    bad.insert_encoded(
        ResourceKey::new(ResourceKind::Service, "shop", "Bad_Name"),
        Bytes::from_static(br#"{"name":"Bad_Name","namespace":"shop"}"#),
    )
    .unwrap();
    let v2 = config.publish(node.clone(), bad);
    wait_for(&mut client.stats(), "a NACK", |s| s.nacks == 1).await;
    assert_eq!(client.current().version(), Some(v1));
    assert_eq!(workload_names(&client.current()), ["a"]);

    wait_for_server(&config, "the NACK recorded", |s| s.stats().nacks == 1).await;
    let status = &config.clients()[0];
    assert_eq!(status.acked_version, Some(v1));
    assert_eq!(status.nacks, 1);
    let (nacked, detail) = status.last_nack.clone().unwrap();
    assert_eq!(nacked, v2);
    assert!(detail.contains("Service shop/Bad_Name"), "{detail}");

    // The next good publish is diffed against v1 (what the client kept) and applies.
    let v3 = config.publish(
        node.clone(),
        snapshot(&[workload("a", "node-a"), workload("c", "node-a")]),
    );
    wait_version(&mut rx, v3).await;
    let view = client.current();
    assert_eq!(workload_names(&view), ["a", "c"]);
    assert_eq!(view.services().count(), 0);
}

#[tokio::test]
async fn clients_keep_config_through_a_restart_and_resync() {
    let config = fast_server();
    let server = TestServer::start(Some(config.clone()), None).await;
    let addr = server.addr;
    let node = ScopeKey::node("node-a");
    let v1 = config.publish(
        node.clone(),
        snapshot(&[workload("a", "node-a"), workload("b", "node-a")]),
    );
    let clients: Vec<_> = (0..3)
        .map(|i| client(&server, node.clone(), &format!("client-{i}")))
        .collect();
    for client in &clients {
        wait_version(&mut client.config(), v1).await;
    }

    server.stop().await;
    for client in &clients {
        wait_for(&mut client.stats(), "disconnect", |s| !s.connected).await;
        // Unreachable controller: the last good config stays.
        assert_eq!(client.current().version(), Some(v1));
        assert_eq!(client.current().len(), 2);
    }

    // A new controller with different state on the same address: a full resync replaces
    // everything, including removing what the old one had sent.
    let restarted = fast_server();
    let v2 = restarted.publish(
        node.clone(),
        snapshot(&[workload("b", "node-a"), workload("c", "node-a")]),
    );
    assert!(v2 > v1, "versions keep increasing across restarts");
    let _server = TestServer::start_at(addr, Some(restarted.clone())).await;
    for client in &clients {
        wait_version(&mut client.config(), v2).await;
        assert_eq!(workload_names(&client.current()), ["b", "c"]);
        assert_eq!(client.stats().borrow().connects, 2);
    }
    wait_for_server(&restarted, "three resynced clients", |s| {
        s.clients()
            .iter()
            .filter(|c| c.acked_version == Some(v2))
            .count()
            == 3
    })
    .await;
}

#[tokio::test]
async fn client_waits_until_its_scope_is_published() {
    let config = fast_server();
    let server = TestServer::start(Some(config.clone()), None).await;
    let node = ScopeKey::node("node-late");
    let client = client(&server, node.clone(), "late");
    wait_for_server(&config, "the subscription", |s| s.clients().len() == 1).await;
    assert!(!client.current().is_synced());
    let v = config.publish(node, snapshot(&[workload("a", "node-late")]));
    wait_version(&mut client.config(), v).await;
}

#[tokio::test]
async fn bursts_of_publishes_are_coalesced() {
    let config =
        ConfigServer::new(ConfigServerOptions::default().with_debounce(Duration::from_millis(300)));
    let server = TestServer::start(Some(config.clone()), None).await;
    let node = ScopeKey::node("node-a");
    let v0 = config.publish(node.clone(), snapshot(&[workload("w0", "node-a")]));
    let client = client(&server, node.clone(), "c");
    wait_version(&mut client.config(), v0).await;

    let mut last = v0;
    for i in 1..=20 {
        last = config.publish(
            node.clone(),
            snapshot(&[workload(&format!("w{i}"), "node-a")]),
        );
    }
    wait_version(&mut client.config(), last).await;
    assert_eq!(workload_names(&client.current()), ["w20"]);
    // The initial full push plus one for the whole burst (two if the burst straddled a
    // debounce window, which 20 in-memory publishes cannot do in 300 ms on any sane machine).
    let pushes = config.stats().pushes;
    assert!(pushes <= 3, "{pushes} pushes for a burst of 20 publishes");
    assert!(client.stats().borrow().applied <= 3);
}

/// A raw subscription that never reads and never ACKs.
async fn stalled_subscription(
    server: &TestServer,
    scope: &str,
) -> (
    tonic::Streaming<proto::ConfigUpdate>,
    mpsc::Sender<proto::SubscribeRequest>,
) {
    raw_subscription(server, scope, None).await
}

#[tokio::test]
async fn a_client_that_never_reads_blocks_nobody() {
    let config = ConfigServer::new(
        ConfigServerOptions::default()
            .with_debounce(Duration::from_millis(10))
            .with_ack_timeout(Duration::from_secs(2)),
    );
    let server = TestServer::start(Some(config.clone()), None).await;
    let node = ScopeKey::node("node-a");
    // Big snapshots (~300 kB each), so an unread stream fills every buffer on the way.
    let big = |round: usize| {
        let resources: Vec<_> = (0..1000)
            .map(|i| {
                common::workload_with_label(&format!("pod-{i}"), "node-a", &format!("r{round}"))
            })
            .collect();
        snapshot(&resources)
    };
    config.publish(node.clone(), big(0));
    let (_stalled, _requests) = stalled_subscription(&server, "node-a").await;
    let reader = client(&server, node.clone(), "reader");

    let started = Instant::now();
    let mut last = 0;
    for round in 1..=5 {
        let publish_started = Instant::now();
        last = config.publish(node.clone(), big(round));
        assert!(
            publish_started.elapsed() < Duration::from_millis(200),
            "publish waited for a client"
        );
        wait_version(&mut reader.config(), last).await;
    }
    assert!(started.elapsed() < WAIT);
    assert_eq!(reader.current().len(), 1000);

    // The stalled stream never ACKed: it is closed, and counted.
    wait_for_server(&config, "the stalled stream closed", |s| {
        s.stats().ack_timeouts >= 1 && s.clients().len() == 1
    })
    .await;
    assert_eq!(config.clients()[0].id, "reader");
    assert_eq!(config.clients()[0].acked_version, Some(last));
}

#[tokio::test]
async fn first_message_must_be_subscribe() {
    let config = fast_server();
    let server = TestServer::start(Some(config.clone()), None).await;
    let mut raw = ConfigDistributionClient::connect(server.uri().to_string())
        .await
        .unwrap();
    let ack = proto::SubscribeRequest {
        message: Some(subscribe_request::Message::Ack(proto::Ack::default())),
    };
    let status = tokio::time::timeout(WAIT, raw.subscribe(futures_util::stream::iter([ack])))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);

    let no_scope = proto::SubscribeRequest {
        message: Some(subscribe_request::Message::Subscribe(
            proto::Subscribe::default(),
        )),
    };
    let status = tokio::time::timeout(WAIT, raw.subscribe(futures_util::stream::iter([no_scope])))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(config.stats().bad_subscriptions, 2);
}

// --- Authenticated subscriptions ---

const NODE_A_TOKEN: &str = "node-a-token-0123456789";
const NODE_B_TOKEN: &str = "node-b-token-0123456789";
const WAYPOINT_TOKEN: &str = "waypoint-token-0123456789";
const OTHER_WAYPOINT_TOKEN: &str = "other-waypoint-token-0123";

fn waypoint_id(service_account: &str) -> SpiffeId {
    SpiffeId::new("cluster.local", "shop", service_account).unwrap()
}

/// A server accepting the node-a, node-b and two waypoint tokens; waypoint `shop/waypoint`
/// runs as service account `waypoint-sa`, `shop/other` as `other-sa`.
fn authenticated_server() -> ConfigServer {
    let tokens = StaticTokens::new();
    tokens.insert(NODE_A_TOKEN, Caller::Node("node-a".into()), None);
    tokens.insert(NODE_B_TOKEN, Caller::Node("node-b".into()), None);
    tokens.insert(
        WAYPOINT_TOKEN,
        Caller::Waypoint(waypoint_id("waypoint-sa")),
        None,
    );
    tokens.insert(
        OTHER_WAYPOINT_TOKEN,
        Caller::Waypoint(waypoint_id("other-sa")),
        None,
    );
    let access = ScopeAccess::new(|namespace, name| match (namespace, name) {
        ("shop", "waypoint") => Some(waypoint_id("waypoint-sa")),
        ("shop", "other") => Some(waypoint_id("other-sa")),
        _ => None,
    });
    fast_server().with_authenticator(Arc::new(tokens), access)
}

/// Opens a raw subscription to `scope` with `token` (if any); the server's answer.
async fn subscribe_raw(
    server: &TestServer,
    token: Option<&str>,
    scope: proto::scope::Kind,
) -> Result<tonic::Streaming<proto::ConfigUpdate>, tonic::Status> {
    let mut raw = ConfigDistributionClient::connect(server.uri().to_string())
        .await
        .unwrap();
    let subscribe = proto::SubscribeRequest {
        message: Some(subscribe_request::Message::Subscribe(proto::Subscribe {
            scope: Some(proto::Scope { kind: Some(scope) }),
            client: None,
        })),
    };
    // The stream stays open after the Subscribe, as a real client's does.
    let outbound = futures_util::stream::iter([subscribe]).chain(futures_util::stream::pending());
    let mut request = tonic::Request::new(outbound);
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    tokio::time::timeout(WAIT, raw.subscribe(request))
        .await
        .expect("the server answers in time")
        .map(tonic::Response::into_inner)
}

fn node_scope(node: &str) -> proto::scope::Kind {
    proto::scope::Kind::Node(node.to_owned())
}

fn waypoint_scope(name: &str) -> proto::scope::Kind {
    proto::scope::Kind::Waypoint(proto::WaypointScope {
        namespace: "shop".to_owned(),
        name: name.to_owned(),
    })
}

#[tokio::test]
async fn subscriptions_without_a_valid_token_are_unauthenticated() {
    let config = authenticated_server();
    let server = TestServer::start(Some(config.clone()), None).await;
    let status = subscribe_raw(&server, None, node_scope("node-a"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("authorization"), "{status:?}");
    let status = subscribe_raw(
        &server,
        Some("not-a-known-token-at-all"),
        node_scope("node-a"),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert_eq!(config.stats().unauthenticated, 2);
    assert!(config.clients().is_empty());
}

#[tokio::test]
async fn a_node_may_subscribe_only_to_its_own_scope() {
    let config = authenticated_server();
    let server = TestServer::start(Some(config.clone()), None).await;
    let version = config.publish(
        ScopeKey::node("node-a"),
        snapshot(&[workload("a", "node-a")]),
    );

    let status = subscribe_raw(&server, Some(NODE_B_TOKEN), node_scope("node-a"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("node node-b") && status.message().contains("node=node-a"),
        "the refusal names caller and scope: {status:?}"
    );
    // A node token does not open a waypoint's scope either.
    let status = subscribe_raw(&server, Some(NODE_A_TOKEN), waypoint_scope("waypoint"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert_eq!(config.stats().denied, 2);

    let mut updates = subscribe_raw(&server, Some(NODE_A_TOKEN), node_scope("node-a"))
        .await
        .unwrap();
    let first = tokio::time::timeout(WAIT, updates.message())
        .await
        .unwrap()
        .unwrap()
        .expect("a full update");
    assert_eq!(first.version, version);
    assert!(first.full);
    assert_eq!(config.stats().denied, 2);
}

#[tokio::test]
async fn a_waypoint_may_subscribe_only_to_the_scope_of_its_identity() {
    let config = authenticated_server();
    let server = TestServer::start(Some(config.clone()), None).await;
    config.publish(ScopeKey::waypoint("shop", "waypoint"), snapshot(&[]));

    let status = subscribe_raw(
        &server,
        Some(OTHER_WAYPOINT_TOKEN),
        waypoint_scope("waypoint"),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("other-sa") && status.message().contains("shop/waypoint"),
        "the refusal names caller and scope: {status:?}"
    );
    // Published, yet no waypoint the controller knows: refused at once.
    config.publish(ScopeKey::waypoint("shop", "unknown"), snapshot(&[]));
    for scope in [waypoint_scope("unknown"), node_scope("node-a")] {
        let status = subscribe_raw(&server, Some(WAYPOINT_TOKEN), scope)
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    }
    assert_eq!(config.stats().denied, 3);

    let mut updates = subscribe_raw(&server, Some(WAYPOINT_TOKEN), waypoint_scope("waypoint"))
        .await
        .unwrap();
    let first = tokio::time::timeout(WAIT, updates.message())
        .await
        .unwrap()
        .unwrap()
        .expect("a full update");
    assert!(first.full);
}

/// An authenticator whose backend (the Kubernetes API) cannot be reached.
#[derive(Debug)]
struct Unreachable;

impl Authenticator for Unreachable {
    fn authenticate<'a>(&'a self, _token: &'a str) -> AuthFuture<'a> {
        Box::pin(std::future::ready(Err(AuthError::unavailable(
            "TokenReview failed: connection refused",
        ))))
    }
}

#[tokio::test]
async fn an_unavailable_authenticator_makes_subscriptions_unavailable() {
    let config = fast_server().with_authenticator(
        Arc::new(Unreachable),
        ScopeAccess::new(|_: &str, _: &str| None),
    );
    let server = TestServer::start(Some(config.clone()), None).await;
    let status = subscribe_raw(&server, Some(NODE_A_TOKEN), node_scope("node-a"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("connection refused"),
        "{status:?}"
    );
    assert_eq!(config.stats().auth_unavailable, 1);
    assert_eq!(config.stats().unauthenticated, 0);
}

#[tokio::test]
async fn the_client_rereads_its_token_file_on_reconnect() {
    let config = authenticated_server();
    let server = TestServer::start(Some(config.clone()), None).await;
    let node = ScopeKey::node("node-a");
    let version = config.publish(node.clone(), snapshot(&[workload("a", "node-a")]));
    let dir = std::env::temp_dir().join(format!("ambit-config-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let token_file = dir.join("token");
    // Another node's token first: refused, the client keeps retrying.
    std::fs::write(&token_file, format!("{NODE_B_TOKEN}\n")).unwrap();
    let client = ConfigClient::start(
        server.endpoint(),
        node.clone(),
        ConfigClientOptions::new("ztunnel/node-a")
            .with_backoff(Duration::from_millis(20), Duration::from_millis(100))
            .with_token_file(&token_file),
    );
    wait_for_server(&config, "a refused attempt", |s| s.stats().denied >= 1).await;
    assert_eq!(client.stats().borrow().connects, 0);
    // The rotated token is picked up on the next attempt.
    std::fs::write(&token_file, format!("{NODE_A_TOKEN}\n")).unwrap();
    wait_version(&mut client.config(), version).await;
    assert_eq!(workload_names(&client.current()), ["a"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_waypoint_subscribing_before_its_gateway_is_known_waits_for_the_first_publish() {
    let tokens = StaticTokens::new();
    tokens.insert(
        WAYPOINT_TOKEN,
        Caller::Waypoint(waypoint_id("waypoint-sa")),
        None,
    );
    // What the controller knows of waypoints: nothing until its first translation.
    let known = Arc::new(std::sync::RwLock::new(None::<SpiffeId>));
    let (asked, mut asked_rx) = watch::channel(0u32);
    let access = ScopeAccess::new({
        let known = known.clone();
        move |_: &str, _: &str| {
            asked.send_modify(|n| *n += 1);
            known.read().unwrap().clone()
        }
    });
    let config = fast_server().with_authenticator(Arc::new(tokens), access);
    let server = TestServer::start(Some(config.clone()), None).await;
    let subscribing = tokio::spawn({
        let uri = server.uri();
        async move {
            let mut raw = ConfigDistributionClient::connect(uri.to_string())
                .await
                .unwrap();
            let subscribe = proto::SubscribeRequest {
                message: Some(subscribe_request::Message::Subscribe(proto::Subscribe {
                    scope: Some(proto::Scope {
                        kind: Some(waypoint_scope("waypoint")),
                    }),
                    client: None,
                })),
            };
            let outbound =
                futures_util::stream::iter([subscribe]).chain(futures_util::stream::pending());
            let mut request = tonic::Request::new(outbound);
            request.metadata_mut().insert(
                "authorization",
                format!("Bearer {WAYPOINT_TOKEN}").parse().unwrap(),
            );
            raw.subscribe(request)
                .await
                .map(tonic::Response::into_inner)
        }
    });
    // The server asked about the Gateway before anything was published: it now waits.
    tokio::time::timeout(WAIT, asked_rx.wait_for(|n| *n >= 1))
        .await
        .unwrap()
        .unwrap();
    // The translation makes the Gateway known, then publishes its scope.
    *known.write().unwrap() = Some(waypoint_id("waypoint-sa"));
    let version = config.publish(ScopeKey::waypoint("shop", "waypoint"), snapshot(&[]));
    let mut updates = tokio::time::timeout(WAIT, subscribing)
        .await
        .unwrap()
        .unwrap()
        .expect("served once the scope is published");
    let first = tokio::time::timeout(WAIT, updates.message())
        .await
        .unwrap()
        .unwrap()
        .expect("a full update");
    assert_eq!(first.version, version);
    assert_eq!(config.stats().denied, 0);
}

/// A raw subscription of a node scope, sending `client` as its ClientInfo; it never ACKs.
async fn raw_subscription(
    server: &TestServer,
    scope: &str,
    client: Option<proto::ClientInfo>,
) -> (
    tonic::Streaming<proto::ConfigUpdate>,
    mpsc::Sender<proto::SubscribeRequest>,
) {
    let mut raw = ConfigDistributionClient::connect(server.uri().to_string())
        .await
        .unwrap()
        // Large enough for the single-message push of a client without parts.
        .max_decoding_message_size(64 * 1024 * 1024);
    let (tx, rx) = mpsc::channel(4);
    tx.send(proto::SubscribeRequest {
        message: Some(subscribe_request::Message::Subscribe(proto::Subscribe {
            scope: Some(proto::Scope {
                kind: Some(proto::scope::Kind::Node(scope.to_owned())),
            }),
            client,
        })),
    })
    .await
    .unwrap();
    let outbound =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    let response = raw.subscribe(outbound).await.unwrap().into_inner();
    (response, tx)
}

fn client_info(accepts_parts: bool) -> Option<proto::ClientInfo> {
    Some(proto::ClientInfo {
        id: format!("raw-{accepts_parts}"),
        accepts_parts,
        ..Default::default()
    })
}

/// A node scope of `count` workloads, about 300 bytes each.
fn many_workloads(count: usize) -> ambit_api::Snapshot {
    let resources: Vec<_> = (0..count)
        .map(|i| workload(&format!("pod-{i:05}"), "node-a"))
        .collect();
    snapshot(&resources)
}

#[tokio::test]
async fn a_large_push_goes_in_parts_to_clients_that_accept_them() {
    use prost::Message;

    let config = fast_server();
    let server = TestServer::start(Some(config.clone()), None).await;
    let node = ScopeKey::node("node-a");
    // Over 4 MiB whole: more than tonic lets a client decode in one message by default, so
    // without parts our client could never sync a scope this large.
    let count = 20_000;
    let version = config.publish(node.clone(), many_workloads(count));

    let (mut parts, _requests) = raw_subscription(&server, "node-a", client_info(true)).await;
    let mut received = Vec::new();
    let mut messages = 0;
    loop {
        let part = tokio::time::timeout(WAIT, parts.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        messages += 1;
        assert_eq!((part.version, part.full), (version, true));
        // A resource never straddles parts, so a part may pass the target by one resource.
        assert!(
            part.encoded_len() <= ambit_api::server::PART_BYTES + 1024,
            "part of {} bytes",
            part.encoded_len()
        );
        received.extend(part.upserts.into_iter().map(|r| r.key.unwrap().name));
        if !part.more {
            break;
        }
    }
    let expected: Vec<_> = (0..count).map(|i| format!("pod-{i:05}")).collect();
    assert_eq!(received, expected, "every resource once, in order");
    assert!(messages > 16, "{messages} messages for {count} workloads");

    // A client that does not reassemble gets the push whole.
    let (mut whole, _requests) = raw_subscription(&server, "node-a", client_info(false)).await;
    let update = tokio::time::timeout(WAIT, whole.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(!update.more);
    assert_eq!(update.upserts.len(), count);
    assert!(
        update.encoded_len() > 4 * 1024 * 1024,
        "{}",
        update.encoded_len()
    );

    // Our client puts the parts together and acknowledges the push once.
    let reader = client(&server, node.clone(), "reader");
    wait_version(&mut reader.config(), version).await;
    assert_eq!(reader.current().len(), count);
    wait_for_server(&config, "the reader's ACK", |s| s.stats().acks == 1).await;
    assert_eq!(reader.stats().borrow().applied, 1);
    assert_eq!(reader.stats().borrow().nacks, 0);
}
