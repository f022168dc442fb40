//! `KubeSource` against a mocked API server: list then watch, ADDED/MODIFIED/DELETED, a
//! `410 Gone` that forces a relist, bookmarks moving the resume point, invalid objects skipped
//! and reported, a missing CRD. Every request must be covered by `API_PERMISSIONS`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kube_support;

use std::time::Duration;

use ambit_controller::kube::{KubeSource, KubeSourceConfig};
use ambit_controller::objects::{Kind, Resource, ResourceKey};
use ambit_controller::{Snapshot, Source};
use http::StatusCode;
use kube_support::{MockApi, Permitted, Reply, Verb, WAIT, event, fixture, list, status};
use serde_json::json;

const PODS: &str = "/api/v1/pods";
const POLICIES: &str = "/apis/security.istio.io/v1/authorizationpolicies";

fn config() -> KubeSourceConfig {
    KubeSourceConfig {
        debounce: Duration::from_millis(5),
        retry_min: Duration::from_millis(5),
        retry_max: Duration::from_millis(50),
        page_size: 500,
    }
}

async fn next(source: &mut KubeSource) -> Snapshot {
    tokio::time::timeout(WAIT, source.next_snapshot())
        .await
        .expect("no snapshot in time")
        .expect("source ended")
}

/// Snapshots until one satisfies `done` (each change may come in its own snapshot).
async fn next_until(source: &mut KubeSource, done: impl Fn(&Snapshot) -> bool) -> Snapshot {
    tokio::time::timeout(WAIT, async {
        loop {
            let snapshot = source.next_snapshot().await.expect("source ended");
            if done(&snapshot) {
                return snapshot;
            }
        }
    })
    .await
    .expect("the expected snapshot never came")
}

fn key(kind: Kind, namespace: &str, name: &str) -> ResourceKey {
    ResourceKey {
        kind,
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    }
}

fn pod_ip(snapshot: &Snapshot, name: &str) -> Option<String> {
    match snapshot.resources.get(&key(Kind::Pod, "shop", name))? {
        Resource::Pod(pod) => pod.status.as_ref()?.pod_ip.clone(),
        other => panic!("not a pod: {other:?}"),
    }
}

fn pod_names(snapshot: &Snapshot) -> Vec<String> {
    snapshot
        .resources
        .pods()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect()
}

#[tokio::test]
async fn list_then_watch_events_reach_the_snapshot() {
    let (client, api) = MockApi::start(MockApi::empty_cluster);
    api.queue(
        Verb::Get,
        PODS,
        Reply::Json(StatusCode::OK, fixture("pods-list.json")),
    );
    let events = api.queue_watch(PODS);
    let mut source = KubeSource::start(client, config());

    let first = next(&mut source).await;
    assert_eq!(pod_names(&first), ["db-1", "web-1"]);
    assert!(first.errors.is_empty(), "{:?}", first.errors);
    let Some(Resource::Pod(web)) = first.resources.get(&key(Kind::Pod, "shop", "web-1")) else {
        panic!("web-1 missing")
    };
    assert!(
        web.metadata.managed_fields.is_none(),
        "managedFields cached"
    );
    assert!(web.spec.as_ref().unwrap().containers[0].image.is_none());

    // The watch resumes exactly where the list ended, asking for bookmarks.
    let watches = api
        .wait_for(1, |r| r.verb() == Verb::Watch && r.path == PODS)
        .await;
    assert_eq!(watches[0].query["resourceVersion"], "100");
    assert_eq!(watches[0].query["allowWatchBookmarks"], "true");

    events
        .send(event("ADDED", fixture("pod-web-2.json")))
        .unwrap();
    let added = next(&mut source).await;
    assert_eq!(pod_names(&added), ["db-1", "web-1", "web-2"]);

    let mut moved = fixture("pod-web-2.json");
    moved["metadata"]["resourceVersion"] = json!("102");
    moved["status"]["podIP"] = json!("10.1.0.99");
    moved["status"]["podIPs"] = json!([{"ip": "10.1.0.99"}]);
    events.send(event("MODIFIED", moved)).unwrap();
    let modified = next(&mut source).await;
    assert_eq!(pod_ip(&modified, "web-2").as_deref(), Some("10.1.0.99"));

    let db = fixture("pods-list.json")["items"][1].clone();
    events.send(event("DELETED", db)).unwrap();
    let deleted = next(&mut source).await;
    assert_eq!(pod_names(&deleted), ["web-1", "web-2"]);

    api.assert_all_permitted();
}

#[tokio::test]
async fn gone_relists_and_drops_what_was_deleted_meanwhile() {
    let (client, api) = MockApi::start(MockApi::empty_cluster);
    api.queue(
        Verb::Get,
        PODS,
        Reply::Json(StatusCode::OK, fixture("pods-list.json")),
    );
    let events = api.queue_watch(PODS);
    // The relist: db-1 was deleted and web-2 added while the watch was broken.
    let web_1 = fixture("pods-list.json")["items"][0].clone();
    api.queue(
        Verb::Get,
        PODS,
        Reply::Json(
            StatusCode::OK,
            list("200", vec![web_1, fixture("pod-web-2.json")]),
        ),
    );
    let mut source = KubeSource::start(client, config());
    assert_eq!(pod_names(&next(&mut source).await), ["db-1", "web-1"]);

    api.wait_for(1, |r| r.verb() == Verb::Watch && r.path == PODS)
        .await;
    events
        .send(event(
            "ERROR",
            status(410, "Expired", "too old resource version: 100"),
        ))
        .unwrap();
    let relisted = next_until(&mut source, |s| pod_names(s) != ["db-1", "web-1"]).await;
    assert_eq!(pod_names(&relisted), ["web-1", "web-2"]);

    let lists: Vec<_> = api
        .log()
        .into_iter()
        .filter(|r| r.verb() == Verb::Get && r.path == PODS)
        .collect();
    assert_eq!(lists.len(), 2, "one list, one relist");
    // The new watch starts from the relist.
    let watches = api
        .wait_for(2, |r| r.verb() == Verb::Watch && r.path == PODS)
        .await;
    assert_eq!(watches[1].query["resourceVersion"], "200");
    api.assert_all_permitted();
}

#[tokio::test]
async fn bookmarks_move_the_resume_point_without_a_change() {
    let (client, api) = MockApi::start(MockApi::empty_cluster);
    api.queue(
        Verb::Get,
        PODS,
        Reply::Json(StatusCode::OK, fixture("pods-list.json")),
    );
    let events = api.queue_watch(PODS);
    let later = api.queue_watch(PODS);
    let mut source = KubeSource::start(client, config());
    let first = next(&mut source).await;

    api.wait_for(1, |r| r.verb() == Verb::Watch && r.path == PODS)
        .await;
    let bookmark = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"resourceVersion": "150", "annotations": {"k8s.io/initial-events-end": "true"}}});
    events.send(event("BOOKMARK", bookmark)).unwrap();
    // The server closes the watch (as it does after timeoutSeconds).
    drop(events);

    let watches = api
        .wait_for(2, |r| r.verb() == Verb::Watch && r.path == PODS)
        .await;
    assert_eq!(watches[1].query["resourceVersion"], "150");
    // No relist: the bookmark only moved the resume point.
    let lists = api
        .log()
        .into_iter()
        .filter(|r| r.verb() == Verb::Get && r.path == PODS);
    assert_eq!(lists.count(), 1);

    // The bookmark was not an object: the next snapshot is the first plus the next event.
    later
        .send(event("ADDED", fixture("pod-web-2.json")))
        .unwrap();
    let after = next(&mut source).await;
    assert_eq!(pod_names(&after), ["db-1", "web-1", "web-2"]);
    assert_eq!(after.resources.len(), first.resources.len() + 1);
    api.assert_all_permitted();
}

#[tokio::test]
async fn invalid_objects_are_skipped_reported_and_cleared() {
    let (client, api) = MockApi::start(MockApi::empty_cluster);
    api.queue(
        Verb::Get,
        POLICIES,
        Reply::Json(
            StatusCode::OK,
            list(
                "10",
                vec![
                    fixture("authorizationpolicy-invalid.json"),
                    fixture("authorizationpolicy-valid.json"),
                ],
            ),
        ),
    );
    let events = api.queue_watch(POLICIES);
    let mut source = KubeSource::start(client, config());

    let first = next(&mut source).await;
    let policies: Vec<_> = first
        .resources
        .authorization_policies()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(
        policies,
        ["allow-web"],
        "the invalid policy must be left out"
    );
    assert_eq!(first.errors.len(), 1);
    let error = &first.errors[0];
    assert_eq!(error.kind(), Some("AuthorizationPolicy"));
    assert_eq!(error.namespace(), Some("shop"));
    assert_eq!(error.name(), Some("broken"));
    assert!(error.field().unwrap().contains("ipBlocks"), "{error}");

    // Fixed: accepted and the error goes.
    let mut fixed = fixture("authorizationpolicy-invalid.json");
    fixed["metadata"]["resourceVersion"] = json!("11");
    fixed["spec"]["rules"][0]["from"][0]["source"]["ipBlocks"] = json!(["10.0.0.0/8"]);
    api.wait_for(1, |r| r.verb() == Verb::Watch && r.path == POLICIES)
        .await;
    events.send(event("MODIFIED", fixed)).unwrap();
    let after_fix = next(&mut source).await;
    assert!(after_fix.errors.is_empty(), "{:?}", after_fix.errors);
    assert_eq!(after_fix.resources.authorization_policies().count(), 2);

    // Broken again by an update: left out again rather than kept at its old version.
    let mut broken = fixture("authorizationpolicy-invalid.json");
    broken["metadata"]["resourceVersion"] = json!("12");
    events.send(event("MODIFIED", broken)).unwrap();
    let after_break = next(&mut source).await;
    assert_eq!(after_break.resources.authorization_policies().count(), 1);
    assert_eq!(after_break.errors.len(), 1);
    api.assert_all_permitted();
}

#[tokio::test]
async fn a_kind_whose_crd_is_missing_counts_as_empty() {
    let (client, api) = MockApi::start(|recorded| {
        if recorded.path.starts_with("/apis/networking.istio.io/") {
            kube_support::not_found(recorded)
        } else {
            MockApi::empty_cluster(recorded)
        }
    });
    api.queue(
        Verb::Get,
        PODS,
        Reply::Json(StatusCode::OK, fixture("pods-list.json")),
    );
    let mut source = KubeSource::start(client, config());
    let first = next(&mut source).await;
    assert_eq!(pod_names(&first), ["db-1", "web-1"]);
    assert!(first.errors.is_empty());
    // It keeps asking, so installing the CRD later is picked up.
    api.wait_for(2, |r| {
        r.path == "/apis/networking.istio.io/v1/virtualservices"
    })
    .await;
    api.assert_all_permitted();
}
