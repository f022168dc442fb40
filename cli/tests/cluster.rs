//! `ambit waypoint …` and `ambit ztunnel-config …` against a cluster: the verbs run on a real
//! `kube::Client` whose API server is a recording mock, so each test checks the exact
//! requests (method, path, query, content type, body) and the printed output. Reading a
//! ztunnel's documents takes a port-forward, which this mock cannot do: `cluster_ztunnel.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Helpers outside #[test] fns panic on purpose.

mod kube_support;

use std::time::Duration;

use ambit_cli::args::WaypointFor;
use ambit_cli::cluster::ClusterError;
use ambit_cli::cluster::waypoint::{self, ApplyOptions};
use ambit_cli::cluster::ztunnel::{self, ZtunnelOn};
use ambit_cli::ztunnel_config::{Output, Resource};
use http::{Method, StatusCode};
use kube_support::{MockApi, Recorded, Reply, Verb, echo, event, list, not_found, status};
use serde_json::{Value, json};

const GATEWAYS: &str = "/apis/gateway.networking.k8s.io/v1/namespaces/shop/gateways";

/// Writes echo their body; anything unscripted is a 404.
fn echo_writes(recorded: &Recorded) -> Reply {
    match recorded.verb() {
        Verb::Patch => echo(recorded),
        _ => not_found(recorded),
    }
}

fn options(enroll_namespace: bool, wait: Option<Duration>) -> ApplyOptions {
    ApplyOptions {
        namespace: "shop".to_owned(),
        name: "wp".to_owned(),
        waypoint_for: WaypointFor::All,
        enroll_namespace,
        wait,
    }
}

fn gateway(namespace: &str, name: &str, class: &str, labels: Value, status: Value) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": format!("uid-{namespace}-{name}"),
            "generation": 1,
            "resourceVersion": "8",
            "labels": labels,
        },
        "spec": {
            "gatewayClassName": class,
            "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}],
        },
        "status": status,
    })
}

fn programmed(state: &str, reason: &str, address: Option<&str>) -> Value {
    let addresses: Vec<Value> = address
        .map(|value| json!({"type": "IPAddress", "value": value}))
        .into_iter()
        .collect();
    json!({
        "addresses": addresses,
        "conditions": [{
            "type": "Programmed",
            "status": state,
            "reason": reason,
            "message": "",
            "observedGeneration": 1,
            "lastTransitionTime": "2026-01-01T00:00:00Z",
        }],
    })
}

#[tokio::test]
async fn apply_is_a_forced_server_side_apply_then_a_namespace_label() {
    let (client, api) = MockApi::start(echo_writes);
    let out = waypoint::apply(&client, &options(true, None))
        .await
        .unwrap();
    assert_eq!(
        out,
        "waypoint shop/wp applied (Gateway, class istio-waypoint, for all)\n\
         namespace/shop labeled istio.io/use-waypoint=wp\n"
    );
    let log = api.log();
    assert_eq!(log.len(), 2, "{log:?}");

    let apply = &log[0];
    assert_eq!(apply.method, Method::PATCH);
    assert_eq!(apply.path, format!("{GATEWAYS}/wp"));
    assert_eq!(apply.param("fieldManager").as_deref(), Some("ambit"));
    assert_eq!(apply.param("force").as_deref(), Some("true"));
    assert_eq!(
        apply.content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
    assert_eq!(
        apply.body,
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {
                "name": "wp",
                "namespace": "shop",
                "labels": {"istio.io/waypoint-for": "all"},
            },
            "spec": {
                "gatewayClassName": "istio-waypoint",
                "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}],
            },
        })
    );

    let label = &log[1];
    assert_eq!(label.method, Method::PATCH);
    assert_eq!(label.path, "/api/v1/namespaces/shop");
    assert_eq!(label.param("fieldManager").as_deref(), Some("ambit"));
    assert_eq!(label.param("force"), None);
    assert_eq!(
        label.content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    assert_eq!(
        label.body,
        json!({"metadata": {"labels": {"istio.io/use-waypoint": "wp"}}})
    );
}

#[tokio::test]
async fn apply_without_enrollment_touches_only_the_gateway_and_reports_refusals() {
    let (client, api) = MockApi::start(echo_writes);
    waypoint::apply(&client, &options(false, None))
        .await
        .unwrap();
    assert_eq!(api.log().len(), 1);

    // An API error is reported with what was being done.
    let (client, api) = MockApi::start(|_| {
        Reply::Json(
            StatusCode::FORBIDDEN,
            status(403, "Forbidden", "gateways is forbidden: User \"dev\""),
        )
    });
    let error = waypoint::apply(&client, &options(true, None))
        .await
        .unwrap_err();
    assert!(matches!(error, ClusterError::Api { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.starts_with("applying Gateway shop/wp:") && message.contains("forbidden"),
        "{message}"
    );
    assert_eq!(api.log().len(), 1, "no label after a failed apply");

    // A missing namespace is named as such.
    let (client, api) = MockApi::start(echo_writes);
    api.queue(
        Verb::Patch,
        "/api/v1/namespaces/shop",
        Reply::Json(
            StatusCode::NOT_FOUND,
            status(404, "NotFound", "namespaces \"shop\" not found"),
        ),
    );
    let error = waypoint::apply(&client, &options(true, None))
        .await
        .unwrap_err();
    assert_eq!(error.to_string(), "namespace shop not found");
}

/// The list a watch on the Gateway starts with: applied, not programmed yet.
fn queue_pending_gateway(api: &MockApi) {
    let pending = gateway(
        "shop",
        "wp",
        "istio-waypoint",
        json!({}),
        programmed("False", "Pending", None),
    );
    api.queue(
        Verb::Get,
        GATEWAYS,
        Reply::Json(StatusCode::OK, list("7", vec![pending])),
    );
}

#[tokio::test]
async fn wait_returns_once_the_gateway_is_programmed() {
    let (client, api) = MockApi::start(echo_writes);
    queue_pending_gateway(&api);
    let events = api.queue_watch(GATEWAYS);
    let applying = tokio::spawn(async move {
        waypoint::apply(&client, &options(false, Some(Duration::from_secs(10)))).await
    });
    let watches = api.wait_for(1, |r| r.verb() == Verb::Watch).await;
    assert_eq!(
        watches[0].param("fieldSelector").as_deref(),
        Some("metadata.name=wp")
    );
    let ready = gateway(
        "shop",
        "wp",
        "istio-waypoint",
        json!({}),
        programmed("True", "Programmed", Some("10.244.1.9")),
    );
    events.send(event("MODIFIED", ready)).unwrap();
    let out = tokio::time::timeout(kube_support::WAIT, applying)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        out.ends_with("waypoint shop/wp programmed (address 10.244.1.9)\n"),
        "{out}"
    );
}

#[tokio::test]
async fn wait_is_bounded_and_says_what_it_last_saw() {
    let (client, api) = MockApi::start(echo_writes);
    queue_pending_gateway(&api);
    api.queue(Verb::Watch, GATEWAYS, Reply::Hang);
    let error = waypoint::apply(&client, &options(false, Some(Duration::from_millis(300))))
        .await
        .unwrap_err();
    assert!(
        matches!(error, ClusterError::WaitTimeout { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains("Programmed=False Pending"), "{message}");
    assert!(
        message.contains("kubectl describe gateway -n shop wp"),
        "{message}"
    );
}

#[tokio::test]
async fn delete_checks_the_class_then_deletes_that_very_object() {
    let (client, api) = MockApi::start(not_found);
    let existing = gateway("shop", "wp", "istio-waypoint", json!({}), json!({}));
    api.queue(
        Verb::Get,
        &format!("{GATEWAYS}/wp"),
        Reply::Json(StatusCode::OK, existing.clone()),
    );
    api.queue(
        Verb::Delete,
        &format!("{GATEWAYS}/wp"),
        Reply::Json(StatusCode::OK, existing),
    );
    let out = waypoint::delete(&client, "shop", "wp", false)
        .await
        .unwrap();
    assert_eq!(out, "waypoint shop/wp deleted\n");
    let log = api.log();
    let lines: Vec<(Method, String)> = log
        .iter()
        .map(|r| (r.method.clone(), r.path.clone()))
        .collect();
    assert_eq!(
        lines,
        [
            (Method::GET, format!("{GATEWAYS}/wp")),
            (Method::DELETE, format!("{GATEWAYS}/wp")),
        ]
    );
    assert_eq!(
        log[1].body["preconditions"],
        json!({"uid": "uid-shop-wp"}),
        "{:?}",
        log[1].body
    );
}

#[tokio::test]
async fn deleting_a_missing_waypoint_fails_unless_told_to_ignore_it() {
    let (client, api) = MockApi::start(not_found);
    let error = waypoint::delete(&client, "shop", "wp", false)
        .await
        .unwrap_err();
    assert!(matches!(error, ClusterError::NotFound { .. }), "{error:?}");
    assert_eq!(error.to_string(), "waypoint shop/wp not found");
    let out = waypoint::delete(&client, "shop", "wp", true).await.unwrap();
    assert_eq!(out, "waypoint shop/wp not found; nothing to delete\n");
    assert!(
        api.log().iter().all(|r| r.method == Method::GET),
        "nothing to delete, nothing deleted"
    );
}

#[tokio::test]
async fn a_gateway_of_another_class_is_not_deleted() {
    let (client, api) = MockApi::start(not_found);
    api.queue(
        Verb::Get,
        &format!("{GATEWAYS}/wp"),
        Reply::Json(
            StatusCode::OK,
            gateway("shop", "wp", "istio", json!({}), json!({})),
        ),
    );
    let error = waypoint::delete(&client, "shop", "wp", false)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("not a waypoint"), "{error}");
    assert_eq!(api.log().len(), 1);
}

fn canned_gateways() -> Value {
    list(
        "42",
        vec![
            gateway(
                "shop",
                "wp",
                "istio-waypoint",
                json!({"istio.io/waypoint-for": "all"}),
                programmed("True", "Programmed", Some("10.244.1.9")),
            ),
            gateway(
                "shop",
                "ingress",
                "istio",
                json!({}),
                programmed("True", "Programmed", Some("192.0.2.1")),
            ),
            gateway(
                "bookinfo",
                "waypoint",
                "istio-waypoint",
                json!({}),
                programmed("False", "Pending", None),
            ),
        ],
    )
}

#[tokio::test]
async fn list_prints_only_waypoints_sorted_with_their_state() {
    let (client, api) = MockApi::start(not_found);
    api.queue(
        Verb::Get,
        "/apis/gateway.networking.k8s.io/v1/gateways",
        Reply::Json(StatusCode::OK, canned_gateways()),
    );
    let out = waypoint::list(&client, None).await.unwrap();
    assert_eq!(
        out,
        "NAMESPACE  NAME      FOR      ADDRESS     PROGRAMMED\n\
         bookinfo   waypoint  service  -           False\n\
         shop       wp        all      10.244.1.9  True\n"
    );

    api.queue(
        Verb::Get,
        GATEWAYS,
        Reply::Json(StatusCode::OK, list("43", Vec::new())),
    );
    let out = waypoint::list(&client, Some("shop")).await.unwrap();
    assert_eq!(out, "NAMESPACE  NAME  FOR  ADDRESS  PROGRAMMED\n");
    let paths: Vec<String> = api.log().iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        paths,
        ["/apis/gateway.networking.k8s.io/v1/gateways", GATEWAYS]
    );
}

fn ztunnel_pod(name: &str, node: &str, phase: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "ambit-system",
            "labels": {"app.kubernetes.io/name": "ztunnel"},
        },
        "spec": {"nodeName": node, "containers": [{"name": "ztunnel"}]},
        "status": {"phase": phase},
    })
}

const ZTUNNEL_PODS: &str = "/api/v1/namespaces/ambit-system/pods";
const LIMIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn ztunnel_config_says_which_ztunnel_it_cannot_find() {
    let (client, api) = MockApi::start(not_found);
    let on_c = ZtunnelOn::Node("node-c".to_owned());
    api.queue(
        Verb::Get,
        ZTUNNEL_PODS,
        Reply::Json(StatusCode::OK, list("5", Vec::new())),
    );
    let error = ztunnel::show(
        &client,
        "ambit-system",
        &on_c,
        Resource::Workloads,
        Output::Table,
        LIMIT,
    )
    .await
    .unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("no ztunnel pod (app.kubernetes.io/name=ztunnel) on node node-c in namespace ambit-system"),
        "{error}"
    );

    // Without --node or --pod, several ztunnels are ambiguous.
    api.queue(
        Verb::Get,
        ZTUNNEL_PODS,
        Reply::Json(
            StatusCode::OK,
            list(
                "5",
                vec![
                    ztunnel_pod("ztunnel-a", "node-a", "Running"),
                    ztunnel_pod("ztunnel-b", "node-b", "Running"),
                ],
            ),
        ),
    );
    let error = ztunnel::show(
        &client,
        "ambit-system",
        &ZtunnelOn::Only,
        Resource::Workloads,
        Output::Table,
        LIMIT,
    )
    .await
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "2 ztunnel pods in namespace ambit-system (on node-a, node-b); choose one with --node or --pod"
    );
    assert_eq!(api.log().last().unwrap().param("fieldSelector"), None);
}
