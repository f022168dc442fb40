//! `WaypointDeployer` against a mocked API server: the exact server-side applies for a
//! waypoint (method, path, field manager, force, content type, owner references, ports), the
//! Gateway status that follows, and when nothing is (re)applied.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kube_support;

use ambit_controller::kube::{WaypointDeployer, WaypointSettings};
use ambit_controller::objects::{Resource, Resources};
use http::{Method, StatusCode};
use kube_support::{MockApi, Permitted, Recorded, Reply, Verb, echo, fixture, status};
use serde_json::{Value, json};

const CLUSTER_IP: &str = "10.96.7.7";
const SERVICE_ACCOUNT: &str = "/api/v1/namespaces/shop/serviceaccounts/waypoint";
const DEPLOYMENT: &str = "/apis/apps/v1/namespaces/shop/deployments/waypoint";
const SERVICE: &str = "/api/v1/namespaces/shop/services/waypoint";
const GATEWAY_STATUS: &str =
    "/apis/gateway.networking.k8s.io/v1/namespaces/shop/gateways/waypoint/status";

/// The API server: applies are echoed back, Services get a cluster IP.
fn api_server(recorded: &Recorded) -> Reply {
    if recorded.method != Method::PATCH {
        return kube_support::not_found(recorded);
    }
    if recorded.path.contains("/services/") && !recorded.path.ends_with("/status") {
        let mut service = recorded.body.clone();
        service["spec"]["clusterIP"] = json!(CLUSTER_IP);
        service["spec"]["clusterIPs"] = json!([CLUSTER_IP]);
        return Reply::Json(StatusCode::OK, service);
    }
    echo(recorded)
}

fn resources(gateways: &[Value]) -> Resources {
    let mut resources = Resources::new();
    for gateway in gateways {
        let gateway = serde_json::from_value(gateway.clone()).unwrap();
        resources
            .insert(Resource::Gateway(Box::new(gateway)))
            .unwrap();
    }
    resources
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

fn owned_by_the_gateway(object: &Value) {
    assert_eq!(
        object["metadata"]["ownerReferences"],
        json!([{
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "name": "waypoint",
            "uid": "uid-gw-waypoint",
            "controller": true,
            "blockOwnerDeletion": true,
        }]),
        "{object:#}"
    );
}

#[tokio::test]
async fn a_waypoint_gateway_gets_its_objects_then_its_status() {
    let (client, api) = MockApi::start(api_server);
    let deployer = WaypointDeployer::new(client, WaypointSettings::default());
    let cluster = resources(&[
        fixture("gateway-waypoint.json"),
        fixture("gateway-ingress.json"),
    ]);

    let errors = deployer.sync(&cluster).await;
    assert!(errors.is_empty(), "{errors:?}");
    let log = api.log();
    let paths: Vec<&str> = log.iter().map(|r| r.path.as_str()).collect();
    // In this order: the Gateway's addresses come from the applied Service. The class-`istio`
    // Gateway belongs to someone else and gets nothing.
    assert_eq!(
        paths,
        [SERVICE_ACCOUNT, DEPLOYMENT, SERVICE, GATEWAY_STATUS]
    );
    for (request, path) in log.iter().zip(&paths) {
        assert_applied(request, path);
    }

    let service_account = &log[0].body;
    assert_eq!(service_account["kind"], "ServiceAccount");
    owned_by_the_gateway(service_account);

    let deployment = &log[1].body;
    assert_eq!(deployment["kind"], "Deployment");
    assert_eq!(deployment["apiVersion"], "apps/v1");
    owned_by_the_gateway(deployment);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "waypoint");
    let container = &pod["containers"][0];
    assert_eq!(container["name"], "waypoint");
    let ports: Vec<&Value> = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["containerPort"])
        .collect();
    assert_eq!(ports, [&json!(15008), &json!(15020), &json!(15021)]);
    assert_eq!(
        container["readinessProbe"]["httpGet"],
        json!({"path": "/healthz/ready", "port": 15021})
    );
    assert_eq!(
        container["args"],
        json!(["--identity", "spiffe://cluster.local/ns/shop/sa/waypoint"])
    );
    let selector = &deployment["spec"]["selector"]["matchLabels"];
    assert_eq!(
        selector["gateway.networking.k8s.io/gateway-name"],
        "waypoint"
    );

    let service = &log[2].body;
    assert_eq!(service["kind"], "Service");
    owned_by_the_gateway(service);
    assert_eq!(service["spec"]["selector"], *selector);
    let service_ports: Vec<(i64, &str)> = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["port"].as_i64().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    assert_eq!(service_ports, [(15008, "mesh"), (15020, "metrics")]);

    let gateway = &log[3].body;
    assert_eq!(gateway["kind"], "Gateway");
    assert_eq!(
        gateway["metadata"],
        json!({"name": "waypoint", "namespace": "shop"})
    );
    assert_eq!(
        gateway["status"]["addresses"],
        json!([{"type": "IPAddress", "value": CLUSTER_IP}])
    );
    let conditions = kube_support::condition_summary(&gateway["status"]["conditions"]);
    assert_eq!(
        conditions,
        [("Accepted", "True", 1), ("Programmed", "True", 1)]
            .map(|(t, s, g)| (t.to_owned(), s.to_owned(), g))
            .to_vec()
    );
    api.assert_all_permitted();
}

#[tokio::test]
async fn unchanged_gateways_are_not_reapplied_and_changed_ones_are() {
    let (client, api) = MockApi::start(api_server);
    let deployer = WaypointDeployer::new(client, WaypointSettings::default());
    let gateway = fixture("gateway-waypoint.json");
    assert!(
        deployer
            .sync(&resources(std::slice::from_ref(&gateway)))
            .await
            .is_empty()
    );
    assert_eq!(api.log().len(), 4);

    assert!(
        deployer
            .sync(&resources(std::slice::from_ref(&gateway)))
            .await
            .is_empty()
    );
    assert_eq!(api.log().len(), 4, "an unchanged Gateway is not reapplied");

    let mut changed = gateway.clone();
    changed["metadata"]["generation"] = json!(2);
    assert!(deployer.sync(&resources(&[changed])).await.is_empty());
    let log = api.log();
    assert_eq!(log.len(), 8, "a new generation is reapplied");
    let observed = &log[7].body["status"]["conditions"][0]["observedGeneration"];
    assert_eq!(observed, &json!(2));

    // Deleted: nothing is sent (owner references let the garbage collector remove the
    // objects), and a Gateway recreated under the same name is deployed afresh.
    assert!(deployer.sync(&Resources::new()).await.is_empty());
    assert_eq!(api.log().len(), 8);
    let mut recreated = gateway;
    recreated["metadata"]["uid"] = json!("uid-gw-waypoint-2");
    assert!(deployer.sync(&resources(&[recreated])).await.is_empty());
    let log = api.log();
    assert_eq!(log.len(), 12);
    assert_eq!(
        log[9].body["metadata"]["ownerReferences"][0]["uid"],
        "uid-gw-waypoint-2"
    );
    assert!(log.iter().all(|r| r.method == Method::PATCH));
    api.assert_all_permitted();
}

#[tokio::test]
async fn a_failed_apply_is_reported_and_retried() {
    let (client, api) = MockApi::start(api_server);
    api.queue(
        Verb::Patch,
        DEPLOYMENT,
        Reply::Json(
            StatusCode::INTERNAL_SERVER_ERROR,
            status(500, "InternalError", "etcd unavailable"),
        ),
    );
    let deployer = WaypointDeployer::new(client, WaypointSettings::default());
    let cluster = resources(&[fixture("gateway-waypoint.json")]);

    let errors = deployer.sync(&cluster).await;
    assert_eq!(errors.len(), 1);
    let message = errors[0].to_string();
    assert!(
        message.contains("shop/waypoint") && message.contains("Deployment"),
        "{message}"
    );
    assert!(!errors[0].is_invalid_gateway());
    // Stopped at the failure: no Service and no status claiming success.
    let paths: Vec<String> = api.log().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, [SERVICE_ACCOUNT, DEPLOYMENT]);

    assert!(deployer.sync(&cluster).await.is_empty());
    let paths: Vec<String> = api.log().into_iter().skip(2).map(|r| r.path).collect();
    assert_eq!(
        paths,
        [SERVICE_ACCOUNT, DEPLOYMENT, SERVICE, GATEWAY_STATUS]
    );
}

#[tokio::test]
async fn a_gateway_without_an_hbone_listener_is_refused_in_its_status() {
    let (client, api) = MockApi::start(api_server);
    let deployer = WaypointDeployer::new(client, WaypointSettings::default());
    assert!(
        deployer
            .sync(&resources(&[fixture("gateway-no-hbone.json")]))
            .await
            .is_empty()
    );

    let log = api.log();
    assert_eq!(log.len(), 1, "nothing deployed, only the status");
    assert_applied(
        &log[0],
        "/apis/gateway.networking.k8s.io/v1/namespaces/shop/gateways/odd/status",
    );
    let conditions = &log[0].body["status"]["conditions"];
    assert_eq!(conditions[0]["type"], "Accepted");
    assert_eq!(conditions[0]["status"], "False");
    assert_eq!(conditions[0]["reason"], "ListenersNotValid");
    assert_eq!(conditions[0]["observedGeneration"], 3);
    assert_eq!(conditions[1]["type"], "Programmed");
    assert_eq!(conditions[1]["status"], "False");
    assert_eq!(log[0].body["status"]["addresses"], json!([]));
    api.assert_all_permitted();
}

#[tokio::test]
async fn settings_and_the_service_account_annotation_shape_the_deployment() {
    let (client, api) = MockApi::start(api_server);
    let settings = WaypointSettings {
        image: "registry.example/ambit/waypoint:1.2".to_owned(),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        args: vec![
            "--name={namespace}/{name}".to_owned(),
            "--sa={service_account}".to_owned(),
        ],
        trust_domain: "example.org".to_owned(),
        replicas: 2,
    };
    let deployer = WaypointDeployer::new(client, settings);
    let mut gateway = fixture("gateway-waypoint.json");
    gateway["metadata"]["annotations"] = json!({"gateway.istio.io/service-account": "wp-sa"});
    assert!(deployer.sync(&resources(&[gateway])).await.is_empty());

    let log = api.log();
    assert_eq!(log[0].path, "/api/v1/namespaces/shop/serviceaccounts/wp-sa");
    let deployment = &log[1].body["spec"];
    assert_eq!(deployment["replicas"], 2);
    let pod = &deployment["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "wp-sa");
    let container = &pod["containers"][0];
    assert_eq!(container["image"], "registry.example/ambit/waypoint:1.2");
    assert_eq!(container["imagePullPolicy"], "IfNotPresent");
    assert_eq!(
        container["args"],
        json!(["--name=shop/waypoint", "--sa=wp-sa"])
    );
}
