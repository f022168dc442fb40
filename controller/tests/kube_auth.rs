//! Who may ask the CA for what in Kubernetes mode, against a mocked API server: the exact
//! TokenReview the authenticator sends, a ztunnel becoming its node, a waypoint its own
//! identity, and every way a token or its pod is refused; then `PodIdentities` keeping a
//! node to the identities of its own pods.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kube_support;

use std::path::Path;

use ambit_api::server::{Authenticator, Authorizer, Caller};
use ambit_controller::kube::{AuthSettings, PodIdentities, TokenReviewAuthenticator};
use ambit_controller::local::{collect, parse_file};
use ambit_identity::SpiffeId;
use http::{Method, StatusCode};
use kube_support::{MockApi, Permitted, Recorded, Reply, Verb, not_found, status};
use serde_json::{Value, json};

const TOKEN_REVIEWS: &str = "/apis/authentication.k8s.io/v1/tokenreviews";
const ZTUNNEL_POD: &str = "/api/v1/namespaces/ambit-system/pods/ztunnel-abcde";
const WAYPOINT_POD: &str = "/api/v1/namespaces/shop/pods/waypoint-7d9f";

fn settings() -> AuthSettings {
    AuthSettings {
        audiences: vec!["ambit".to_owned()],
        ztunnel_namespace: "ambit-system".to_owned(),
        ztunnel_service_account: "ztunnel".to_owned(),
        trust_domain: "cluster.local".to_owned(),
    }
}

/// A TokenReview answer for a pod-bound ServiceAccount token.
fn reviewed(namespace: &str, account: &str, pod: &str, uid: &str, audiences: &[&str]) -> Value {
    json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {},
        "status": {
            "authenticated": true,
            "audiences": audiences,
            "user": {
                "username": format!("system:serviceaccount:{namespace}:{account}"),
                "uid": "sa-uid",
                "groups": ["system:serviceaccounts"],
                "extra": {
                    "authentication.kubernetes.io/pod-name": [pod],
                    "authentication.kubernetes.io/pod-uid": [uid],
                }
            }
        }
    })
}

fn pod(
    namespace: &str,
    name: &str,
    uid: &str,
    account: &str,
    node: Option<&str>,
    labels: Value,
) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "uid": uid, "labels": labels},
        "spec": {"serviceAccountName": account, "nodeName": node, "containers": []},
    })
}

fn ztunnel_pod(uid: &str, node: Option<&str>) -> Value {
    pod(
        "ambit-system",
        "ztunnel-abcde",
        uid,
        "ztunnel",
        node,
        json!({"app": "ztunnel"}),
    )
}

fn authenticator(api_fallback: fn(&Recorded) -> Reply) -> (TokenReviewAuthenticator, MockApi) {
    let (client, api) = MockApi::start(api_fallback);
    (TokenReviewAuthenticator::new(client, settings()), api)
}

fn ok(body: Value) -> Reply {
    Reply::Json(StatusCode::OK, body)
}

#[tokio::test]
async fn a_ztunnel_token_becomes_its_pods_node() {
    let (auth, api) = authenticator(not_found);
    api.queue(
        Verb::Post,
        TOKEN_REVIEWS,
        ok(reviewed(
            "ambit-system",
            "ztunnel",
            "ztunnel-abcde",
            "uid-zt",
            &["ambit"],
        )),
    );
    api.queue(
        Verb::Get,
        ZTUNNEL_POD,
        ok(ztunnel_pod("uid-zt", Some("node-a"))),
    );

    let caller = auth.authenticate("the-token").await.unwrap();
    assert_eq!(caller, Caller::Node("node-a".to_owned()));

    let log = api.log();
    assert_eq!(
        log.len(),
        2,
        "{:?}",
        log.iter().map(|r| r.line()).collect::<Vec<_>>()
    );
    assert_eq!(log[0].method, Method::POST);
    assert_eq!(log[0].path, TOKEN_REVIEWS);
    assert_eq!(log[0].body["spec"]["token"], "the-token");
    assert_eq!(log[0].body["spec"]["audiences"], json!(["ambit"]));
    assert_eq!(log[1].method, Method::GET);
    assert_eq!(log[1].path, ZTUNNEL_POD);
    api.assert_all_permitted();
}

#[tokio::test]
async fn a_waypoint_token_becomes_its_own_identity() {
    let (auth, api) = authenticator(not_found);
    api.queue(
        Verb::Post,
        TOKEN_REVIEWS,
        ok(reviewed(
            "shop",
            "waypoint",
            "waypoint-7d9f",
            "uid-wp",
            &["ambit"],
        )),
    );
    api.queue(
        Verb::Get,
        WAYPOINT_POD,
        ok(pod(
            "shop",
            "waypoint-7d9f",
            "uid-wp",
            "waypoint",
            Some("node-b"),
            json!({"gateway.networking.k8s.io/gateway-name": "waypoint"}),
        )),
    );
    let caller = auth.authenticate("wp-token").await.unwrap();
    let own = SpiffeId::new("cluster.local", "shop", "waypoint").unwrap();
    assert_eq!(caller, Caller::Waypoint(own));
    api.assert_all_permitted();
}

/// Runs one authentication with a scripted review and pod; returns the refusal.
async fn refused(review: Reply, pod: Option<Value>) -> (String, bool) {
    let (auth, api) = authenticator(not_found);
    api.queue(Verb::Post, TOKEN_REVIEWS, review);
    if let Some(pod) = pod {
        api.queue(Verb::Get, ZTUNNEL_POD, ok(pod));
    }
    let err = auth
        .authenticate("some-token")
        .await
        .expect_err("must be refused");
    api.assert_all_permitted();
    (err.to_string(), err.is_unavailable())
}

#[tokio::test]
async fn bad_tokens_and_mismatched_pods_are_refused_with_the_reason() {
    let zt = |audiences: &[&str]| {
        reviewed(
            "ambit-system",
            "ztunnel",
            "ztunnel-abcde",
            "uid-zt",
            audiences,
        )
    };
    // Expired or forged: the API server does not authenticate it.
    let (reason, unavailable) = refused(
        ok(
            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {},
                  "status": {"authenticated": false, "error": "token has expired"}}),
        ),
        None,
    )
    .await;
    assert!(reason.contains("token has expired"), "{reason}");
    assert!(!unavailable);

    // Valid, but for another audience.
    let (reason, _) = refused(ok(zt(&["kubernetes"])), None).await;
    assert!(reason.contains("audiences"), "{reason}");

    // Not bound to a pod (a long-lived Secret token).
    let mut unbound = zt(&["ambit"]);
    unbound["status"]["user"]["extra"] = json!({});
    let (reason, _) = refused(ok(unbound), None).await;
    assert!(reason.contains("not bound to a pod"), "{reason}");

    // A user, not a ServiceAccount.
    let mut user = zt(&["ambit"]);
    user["status"]["user"]["username"] = json!("alice@example.com");
    let (reason, _) = refused(ok(user), None).await;
    assert!(reason.contains("not a ServiceAccount"), "{reason}");

    // The pod was deleted and recreated under the same name: another uid.
    let (reason, _) = refused(
        ok(zt(&["ambit"])),
        Some(ztunnel_pod("uid-new", Some("node-a"))),
    )
    .await;
    assert!(reason.contains("replaced"), "{reason}");

    // The pod runs as another ServiceAccount than the token's.
    let mut other_account = ztunnel_pod("uid-zt", Some("node-a"));
    other_account["spec"]["serviceAccountName"] = json!("default");
    let (reason, _) = refused(ok(zt(&["ambit"])), Some(other_account)).await;
    assert!(reason.contains("runs as default"), "{reason}");

    // A ztunnel pod that is not scheduled yet has no node to speak for.
    let (reason, _) = refused(ok(zt(&["ambit"])), Some(ztunnel_pod("uid-zt", None))).await;
    assert!(reason.contains("not scheduled"), "{reason}");

    // An ordinary workload is neither ztunnel nor a waypoint.
    let app = reviewed("ambit-system", "web", "ztunnel-abcde", "uid-zt", &["ambit"]);
    let (reason, _) = refused(
        ok(app),
        Some(pod(
            "ambit-system",
            "ztunnel-abcde",
            "uid-zt",
            "web",
            Some("node-a"),
            json!({}),
        )),
    )
    .await;
    assert!(reason.contains("neither ztunnel"), "{reason}");

    // The pod is gone.
    let (reason, unavailable) = refused(ok(zt(&["ambit"])), None).await;
    assert!(reason.contains("no longer exists"), "{reason}");
    assert!(!unavailable);
}

#[tokio::test]
async fn an_api_server_failure_is_unavailable_not_a_refusal() {
    let (reason, unavailable) = refused(
        Reply::Json(
            StatusCode::INTERNAL_SERVER_ERROR,
            status(500, "InternalError", "etcd is down"),
        ),
        None,
    )
    .await;
    assert!(unavailable, "{reason}");
    assert!(reason.contains("TokenReview failed"), "{reason}");
}

#[tokio::test]
async fn an_empty_token_is_refused_without_asking_the_api_server() {
    let (auth, api) = authenticator(not_found);
    let err = auth.authenticate("").await.expect_err("refused");
    assert!(!err.is_unavailable());
    assert!(api.log().is_empty());
}

fn identity(namespace: &str, account: &str) -> SpiffeId {
    SpiffeId::new("cluster.local", namespace, account).unwrap()
}

#[test]
fn a_node_gets_only_the_identities_of_its_running_pods() {
    let yaml = "\
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: shop}
spec: {nodeName: node-a, serviceAccountName: web, containers: []}
status: {phase: Running}
---
apiVersion: v1
kind: Pod
metadata: {name: db-1, namespace: shop}
spec: {nodeName: node-b, serviceAccountName: db, containers: []}
status: {phase: Running}
---
apiVersion: v1
kind: Pod
metadata: {name: batch, namespace: shop}
spec: {nodeName: node-a, serviceAccountName: batch, containers: []}
status: {phase: Succeeded}
---
apiVersion: v1
kind: Pod
metadata: {name: pending, namespace: shop}
spec: {serviceAccountName: pending, containers: []}
---
apiVersion: v1
kind: Pod
metadata: {name: plain, namespace: tools}
spec: {nodeName: node-a, containers: []}
status: {phase: Running}
";
    let (located, errors) = parse_file(Path::new("pods.yaml"), yaml);
    assert!(errors.is_empty(), "{errors:?}");
    let (resources, errors) = collect(located);
    assert!(errors.is_empty(), "{errors:?}");

    let identities = PodIdentities::new("cluster.local");
    let node_a = Caller::Node("node-a".to_owned());
    // Nothing is known before the first snapshot.
    assert!(
        identities
            .authorize(&node_a, &identity("shop", "web"))
            .is_err()
    );
    identities.update(&resources);

    assert!(
        identities
            .authorize(&node_a, &identity("shop", "web"))
            .is_ok()
    );
    // A pod without serviceAccountName runs as `default`.
    assert!(
        identities
            .authorize(&node_a, &identity("tools", "default"))
            .is_ok()
    );
    let denied = identities
        .authorize(&node_a, &identity("shop", "db"))
        .expect_err("db runs on node-b");
    assert!(denied.to_string().contains("node-a"), "{denied}");
    // Finished and unscheduled pods give no node anything.
    assert!(
        identities
            .authorize(&node_a, &identity("shop", "batch"))
            .is_err()
    );
    for node in ["node-a", "node-b", ""] {
        assert!(
            identities
                .authorize(&Caller::Node(node.to_owned()), &identity("shop", "pending"))
                .is_err()
        );
    }
    // A waypoint only ever gets its own identity.
    let waypoint = Caller::Waypoint(identity("shop", "waypoint"));
    assert!(
        identities
            .authorize(&waypoint, &identity("shop", "waypoint"))
            .is_ok()
    );
    assert!(
        identities
            .authorize(&waypoint, &identity("shop", "web"))
            .is_err()
    );

    // The next snapshot replaces the index: web moved away from node-a.
    let (located, _) = parse_file(
        Path::new("pods.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web-1, namespace: shop}\n\
         spec: {nodeName: node-b, serviceAccountName: web, containers: []}\n",
    );
    let (moved, _) = collect(located);
    identities.update(&moved);
    assert!(
        identities
            .authorize(&node_a, &identity("shop", "web"))
            .is_err()
    );
    assert!(
        identities
            .authorize(&Caller::Node("node-b".to_owned()), &identity("shop", "web"))
            .is_ok()
    );
}
