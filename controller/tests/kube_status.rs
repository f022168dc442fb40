//! `StatusWriter` against a mocked API server: the exact server-side applies of the
//! `istio.io/WaypointBound` Service condition and of HTTPRoute parent statuses, nothing
//! rewritten while nothing changed, a deleted object skipped, a failure retried.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kube_support;

use std::path::Path;

use ambit_controller::kube::StatusWriter;
use ambit_controller::local::{collect, parse_file};
use ambit_controller::objects::Resources;
use ambit_controller::translate::{MeshConfig, TranslateError, TranslateOptions, translate};
use http::{Method, StatusCode};
use kube_support::{MockApi, Permitted, Recorded, Reply, Verb, echo, status};
use serde_json::{Value, json};

const BOUND_STATUS: &str = "/api/v1/namespaces/shop/services/reviews/status";
const UNBOUND_STATUS: &str = "/api/v1/namespaces/shop/services/broken/status";
const ROUTE_STATUS: &str =
    "/apis/gateway.networking.k8s.io/v1/namespaces/shop/httproutes/reviews-v2/status";

const CLUSTER: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: shop}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
  addresses: [{value: 10.96.0.100}]
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop, labels: {istio.io/use-waypoint: waypoint}}
spec: {clusterIP: 10.96.0.20, selector: {app: reviews}, ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: broken, namespace: shop, labels: {istio.io/use-waypoint: missing}}
spec: {clusterIP: 10.96.0.21, selector: {app: broken}, ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: plain, namespace: shop}
spec: {clusterIP: 10.96.0.22, selector: {app: plain}, ports: [{name: http, port: 9080}]}
";

const ROUTE: &str = "
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: reviews-v2, namespace: shop, generation: 3}
spec:
  parentRefs: [{group: '', kind: Service, name: reviews, port: 9080}]
  rules: [{backendRefs: [{name: BACKEND, port: 9080}]}]
";

fn cluster(route_backend: Option<&str>) -> (Resources, MeshConfig, Vec<TranslateError>) {
    let mut yaml = CLUSTER.to_owned();
    if let Some(backend) = route_backend {
        yaml.push_str("---");
        yaml.push_str(&ROUTE.replace("BACKEND", backend));
    }
    let (located, errors) = parse_file(Path::new("cluster.yaml"), &yaml);
    assert!(errors.is_empty(), "{errors:?}");
    let (resources, errors) = collect(located);
    assert!(errors.is_empty(), "{errors:?}");
    let (config, errors) = translate(&resources, &TranslateOptions::default());
    (resources, config, errors)
}

fn assert_applied(request: &Recorded, path: &str) {
    assert_eq!(request.method, Method::PATCH, "{}", request.line());
    assert_eq!(request.path, path);
    assert_eq!(request.query["fieldManager"], "ambit-controller");
    assert_eq!(request.query["force"], "true");
    assert_eq!(
        request.content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
}

fn condition(request: &Recorded) -> &Value {
    let conditions = request.body["status"]["conditions"].as_array().unwrap();
    assert_eq!(conditions.len(), 1, "{:#}", request.body);
    &conditions[0]
}

fn by_path<'a>(writes: &'a [Recorded], path: &str) -> &'a Recorded {
    writes
        .iter()
        .find(|r| r.path == path)
        .unwrap_or_else(|| panic!("no write to {path}"))
}

#[tokio::test]
async fn services_get_waypoint_bound_and_routes_their_parent_status() {
    let (client, api) = MockApi::start(echo);
    let writer = StatusWriter::new(client, "istio.io/mesh-controller");
    let (resources, config, errors) = cluster(Some("reviews"));
    let failures = writer.sync(&resources, &config, &errors).await;
    assert!(failures.is_empty(), "{failures:?}");

    let writes = api.writes();
    // Two Services have something to say; `plain` has no waypoint and no error: no request.
    assert_eq!(
        writes.len(),
        3,
        "{:?}",
        writes.iter().map(Recorded::line).collect::<Vec<_>>()
    );
    let bound = by_path(&writes, BOUND_STATUS);
    assert_applied(bound, BOUND_STATUS);
    assert_eq!(bound.body["apiVersion"], "v1");
    assert_eq!(bound.body["kind"], "Service");
    assert_eq!(
        bound.body["metadata"],
        json!({"name": "reviews", "namespace": "shop"})
    );
    let bound = condition(bound);
    assert_eq!(bound["type"], "istio.io/WaypointBound");
    assert_eq!(bound["status"], "True");
    assert_eq!(bound["reason"], "WaypointAccepted");
    assert!(bound["lastTransitionTime"].is_string(), "{bound:#}");

    let unbound = condition(by_path(&writes, UNBOUND_STATUS));
    assert_eq!(unbound["status"], "False");
    assert_eq!(unbound["reason"], "WaypointNotUsable");
    assert!(
        unbound["message"].as_str().unwrap().contains("missing"),
        "{unbound:#}"
    );

    let route = by_path(&writes, ROUTE_STATUS);
    assert_applied(route, ROUTE_STATUS);
    assert_eq!(route.body["kind"], "HTTPRoute");
    let parents = route.body["status"]["parents"].as_array().unwrap();
    assert_eq!(parents.len(), 1, "{:#}", route.body);
    assert_eq!(parents[0]["controllerName"], "istio.io/mesh-controller");
    assert_eq!(
        parents[0]["parentRef"],
        json!({"group": "", "kind": "Service", "name": "reviews", "port": 9080})
    );
    let conditions = kube_support::condition_summary(&parents[0]["conditions"]);
    assert_eq!(
        conditions,
        [("Accepted", "True", 3), ("ResolvedRefs", "True", 3)]
            .map(|(t, s, g)| (t.to_owned(), s.to_owned(), g))
            .to_vec()
    );
    api.assert_all_permitted();

    // Nothing changed: nothing is written again.
    let failures = writer.sync(&resources, &config, &errors).await;
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(api.writes().len(), 3);

    // The route's backend disappears: only the route's status is rewritten.
    let (resources, config, errors) = cluster(Some("gone"));
    let failures = writer.sync(&resources, &config, &errors).await;
    assert!(failures.is_empty(), "{failures:?}");
    let writes = api.writes();
    assert_eq!(writes.len(), 4);
    assert_eq!(writes[3].path, ROUTE_STATUS);
    let resolved = &writes[3].body["status"]["parents"][0]["conditions"][1];
    assert_eq!(resolved["type"], "ResolvedRefs");
    assert_eq!(resolved["status"], "False");
    assert_eq!(resolved["reason"], "BackendNotFound");
    assert!(
        resolved["message"]
            .as_str()
            .unwrap()
            .contains("spec.rules[0].backendRefs[0]"),
        "{resolved:#}"
    );
}

#[tokio::test]
async fn a_failed_write_is_reported_and_retried_and_a_deleted_object_is_skipped() {
    let (client, api) = MockApi::start(echo);
    let writer = StatusWriter::new(client, "istio.io/mesh-controller");
    let (resources, config, errors) = cluster(None);
    api.queue(
        Verb::Patch,
        BOUND_STATUS,
        Reply::Json(
            StatusCode::INTERNAL_SERVER_ERROR,
            status(500, "InternalError", "etcd is down"),
        ),
    );
    api.queue(
        Verb::Patch,
        UNBOUND_STATUS,
        Reply::Json(
            StatusCode::NOT_FOUND,
            status(404, "NotFound", "services \"broken\" not found"),
        ),
    );
    let failures = writer.sync(&resources, &config, &errors).await;
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(!failures[0].is_not_found());
    let message = failures[0].to_string();
    assert!(message.contains("shop/reviews"), "{message}");

    // The next sync retries the failed write, and then remembers its success.
    let before = api.writes().len();
    let failures = writer.sync(&resources, &config, &errors).await;
    assert!(failures.is_empty(), "{failures:?}");
    let writes = api.writes();
    let retried: Vec<&str> = writes[before..].iter().map(|r| r.path.as_str()).collect();
    assert!(retried.contains(&BOUND_STATUS), "{retried:?}");
    let after = api.writes().len();
    let failures = writer.sync(&resources, &config, &errors).await;
    assert!(failures.is_empty());
    let settled: Vec<String> = api.writes()[after..].iter().map(Recorded::line).collect();
    assert!(
        !settled
            .iter()
            .any(|line| line.contains("/services/reviews/")),
        "{settled:?}"
    );
    api.assert_all_permitted();
}
