//! The controller's Kubernetes mode as the binary wires it (`app::run_with_client`), against a
//! mocked API server: workloads listed from the API reach a ztunnel's config stream, a
//! waypoint Gateway is deployed from the template folder by server-side apply, a hanging API
//! server never holds up config pushes, and the background writers coalesce and retry.
//! Every request must be covered by the controller's declared RBAC rules.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kube_support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ambit_api::{
    ConfigClient, ConfigClientOptions, ConfigServer, ConfigServerOptions, ConfigView,
    ControllerEndpoint, GrpcIssuer, ScopeKey,
};
use ambit_controller::Snapshot;
use ambit_controller::app::{Args, run_with_client};
use ambit_controller::kube::{
    DEFAULT_CONTROLLER_NAME, KubeWriters, OPTIONAL_WAYPOINT_PERMISSIONS, RootPublisher,
    StatusWriter, WaypointDeployer, WaypointSettings,
};
use ambit_controller::metrics::ControllerMetrics;
use ambit_controller::objects::{Resource, Resources};
use ambit_controller::pipeline::Translation;
use ambit_controller::translate::{TranslateOptions, translate};
use ambit_identity::{IssueError, SpiffeId, WorkloadKey};
use ambit_runtime::{DrainTrigger, Shutdown};
use ambit_telemetry::MetricsRegistry;
use clap::Parser;
use http::{Method, StatusCode};
use kube_support::{
    MockApi, Permitted, Recorded, Reply, Verb, WAIT, echo, event, fixture, list, status,
};
use serde_json::{Value, json};
use tokio::sync::watch;

const CLUSTER_IP: &str = "10.96.7.7";
const GATEWAYS: &str = "/apis/gateway.networking.k8s.io/v1/gateways";
const PODS: &str = "/api/v1/pods";
const SERVICE_ACCOUNT: &str = "/api/v1/namespaces/shop/serviceaccounts/waypoint";
const DEPLOYMENT: &str = "/apis/apps/v1/namespaces/shop/deployments/waypoint";
const SERVICE: &str = "/api/v1/namespaces/shop/services/waypoint";
const HPA: &str = "/apis/autoscaling/v2/namespaces/shop/horizontalpodautoscalers/waypoint";
const ROOTS_AMBIT_SYSTEM: &str = "/api/v1/namespaces/ambit-system/configmaps/ambit-ca-root-cert";
const ROOTS_SHOP: &str = "/api/v1/namespaces/shop/configmaps/ambit-ca-root-cert";
const GATEWAY_STATUS: &str =
    "/apis/gateway.networking.k8s.io/v1/namespaces/shop/gateways/waypoint/status";

fn namespace() -> Value {
    json!({
        "metadata": {"name": "shop", "uid": "uid-ns-shop", "resourceVersion": "5",
                     "labels": {"istio.io/dataplane-mode": "ambient"}}
    })
}

fn service() -> Value {
    json!({
        "metadata": {"name": "web", "namespace": "shop", "uid": "uid-svc-web", "resourceVersion": "7"},
        "spec": {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"], "selector": {"app": "web"},
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}
    })
}

/// A cluster with the namespace `shop` (ambient), two pods (`web-1` on node-a, `db-1` on
/// node-b), the Service `web` and the waypoint Gateway, and ztunnel's pod on node-a whose
/// token TokenReview accepts; every watch stays open; applies are echoed, Services get a
/// cluster IP.
fn cluster(recorded: &Recorded) -> Reply {
    // ztunnel's token, for the config stream and the CA.
    match (recorded.verb(), recorded.path.as_str()) {
        (Verb::Post, TOKEN_REVIEWS) => return token_review(recorded),
        (Verb::Get, ZTUNNEL_POD) => return Reply::Json(StatusCode::OK, ztunnel_pod()),
        _ => {}
    }
    match recorded.verb() {
        Verb::Get => Reply::Json(
            StatusCode::OK,
            match recorded.path.as_str() {
                "/api/v1/namespaces" => list("10", vec![namespace()]),
                PODS => fixture("pods-list.json"),
                "/api/v1/services" => list("11", vec![service()]),
                GATEWAYS => list("12", vec![fixture("gateway-waypoint.json")]),
                _ => list("1", Vec::new()),
            },
        ),
        Verb::Watch => Reply::Hang,
        Verb::Patch => applied(recorded),
        Verb::Post | Verb::Delete => kube_support::not_found(recorded),
    }
}

/// What the API server answers to an apply.
fn applied(recorded: &Recorded) -> Reply {
    if recorded.path.contains("/services/") && !recorded.path.ends_with("/status") {
        let mut service = recorded.body.clone();
        service["spec"]["clusterIP"] = json!(CLUSTER_IP);
        service["spec"]["clusterIPs"] = json!([CLUSTER_IP]);
        return Reply::Json(StatusCode::OK, service);
    }
    echo(recorded)
}

fn template_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/waypoint-template")
}

/// The controller of one test, run in this process on the mocked API.
struct Running {
    grpc: SocketAddr,
    stop: DrainTrigger,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _state: tempfile::TempDir,
}

impl Running {
    async fn start(client: kube::Client, extra: &[&str]) -> Self {
        let state = tempfile::tempdir().unwrap();
        let ready_file = state.path().join("ready.json");
        let mut argv: Vec<String> = [
            "ambit-controller",
            "--kube",
            "--grpc-addr=127.0.0.1:0",
            "--grpc-ip-san=127.0.0.1",
            "--metrics-addr=127.0.0.1:0",
            "--readiness-addr=127.0.0.1:0",
            "--debounce-ms=5",
            "--ztunnel-namespace=ambit-system",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        argv.push(format!("--state-dir={}", state.path().display()));
        argv.push(format!("--ready-file={}", ready_file.display()));
        // Required in Kubernetes mode: unless the test brings its own, the template's
        // required files only, so no HPA/PDB grants are needed.
        if !extra
            .iter()
            .any(|arg| arg.starts_with("--waypoint-template-dir"))
        {
            let template = state.path().join("template");
            std::fs::create_dir(&template).unwrap();
            for file in ["serviceaccount.yaml", "deployment.yaml", "service.yaml"] {
                std::fs::copy(template_dir().join(file), template.join(file)).unwrap();
            }
            argv.push(format!("--waypoint-template-dir={}", template.display()));
        }
        argv.extend(extra.iter().map(|s| (*s).to_owned()));
        let args = Args::try_parse_from(argv).unwrap();
        let shutdown = Shutdown::without_signals(Duration::from_secs(1));
        let stop = shutdown.trigger();
        let task = tokio::spawn(run_with_client(args, Some(client), shutdown));
        let grpc = wait_ready_file(&ready_file, &task).await;
        Self {
            grpc,
            stop,
            task,
            _state: state,
        }
    }

    /// The gRPC port over TLS, trusting the root the controller generated in its state folder.
    fn endpoint(&self) -> ControllerEndpoint {
        ControllerEndpoint::tls(
            format!("https://{}", self.grpc).parse().unwrap(),
            self._state.path().join("ca").join("root-cert.pem"),
            None,
        )
        .unwrap()
    }

    /// A ztunnel-like config client for `node`, presenting ztunnel's projected token (whose
    /// pod runs on node-a).
    fn node_client(&self, node: &str) -> ConfigClient {
        ConfigClient::start(
            self.endpoint(),
            ScopeKey::node(node),
            ConfigClientOptions::new(format!("ztunnel/{node}"))
                .with_backoff(Duration::from_millis(20), Duration::from_millis(100))
                .with_token(ZTUNNEL_TOKEN)
                .unwrap(),
        )
    }

    /// Drains and waits for `run_with_client` to return.
    async fn stop(self) {
        self.stop.start();
        let result = tokio::time::timeout(WAIT, self.task)
            .await
            .expect("the controller did not stop")
            .unwrap();
        result.unwrap();
    }
}

/// The gRPC address from the ready file, once the controller has written it.
async fn wait_ready_file(
    path: &Path,
    task: &tokio::task::JoinHandle<anyhow::Result<()>>,
) -> SocketAddr {
    tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(text) = std::fs::read_to_string(path) {
                let addresses: Value = serde_json::from_str(&text).unwrap();
                return addresses["grpc"].as_str().unwrap().parse().unwrap();
            }
            assert!(
                !task.is_finished(),
                "the controller ended before it was ready"
            );
            // The file gives no event to await; check again shortly.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the controller wrote no ready file")
}

async fn wait_view(client: &ConfigClient, what: &str, pred: impl Fn(&ConfigView) -> bool) {
    let mut config = client.config();
    tokio::time::timeout(WAIT, config.wait_for(|view: &Arc<ConfigView>| pred(view)))
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .unwrap();
}

fn workload_nodes(view: &ConfigView) -> Vec<(String, String)> {
    let mut workloads: Vec<(String, String)> = view
        .workloads()
        .map(|w| (w.name().to_owned(), w.node().to_owned()))
        .collect();
    workloads.sort();
    workloads
}

fn is_apply(request: &Recorded) -> bool {
    request.method == Method::PATCH
}

fn is_roots_apply(request: &Recorded) -> bool {
    is_apply(request) && request.path.ends_with("/configmaps/ambit-ca-root-cert")
}

fn is_waypoint_apply(request: &Recorded) -> bool {
    is_apply(request) && !is_roots_apply(request)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_mode_serves_workloads_and_deploys_the_waypoint_from_the_template() {
    let (client, api) = MockApi::start(cluster);
    let template = format!("--waypoint-template-dir={}", template_dir().display());
    let controller = Running::start(client, &[&template]).await;

    // A ztunnel on node-a gets the workloads, its own and those it may send to.
    let ztunnel = controller.node_client("node-a");
    wait_view(&ztunnel, "the workloads", |view| {
        view.workloads().count() == 2
    })
    .await;
    assert_eq!(
        workload_nodes(&ztunnel.current()),
        [
            ("db-1".to_owned(), "node-b".to_owned()),
            ("web-1".to_owned(), "node-a".to_owned())
        ]
    );
    assert_eq!(ztunnel.current().services().count(), 1);

    // The mesh roots, for the proxies to verify the controller by: where ztunnel runs and
    // where the waypoint goes, before the waypoint's objects.
    let roots = api.wait_for(2, is_roots_apply).await;
    let paths: Vec<&str> = roots.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, [ROOTS_AMBIT_SYSTEM, ROOTS_SHOP]);
    let root_pem =
        std::fs::read_to_string(controller._state.path().join("ca").join("root-cert.pem")).unwrap();
    for request in &roots {
        assert_eq!(request.body["data"]["root-cert.pem"], root_pem.as_str());
        assert_eq!(request.query["fieldManager"], "ambit-controller");
    }
    let first_waypoint_write = api
        .log()
        .iter()
        .position(|r| is_apply(r) && !is_roots_apply(r))
        .unwrap_or(usize::MAX);
    let last_roots_write = api.log().iter().rposition(is_roots_apply).unwrap();
    assert!(last_roots_write < first_waypoint_write);

    // The waypoint: every template object by server-side apply, then the Gateway status.
    let applies = api.wait_for(5, is_waypoint_apply).await;
    let paths: Vec<&str> = applies.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        [SERVICE_ACCOUNT, DEPLOYMENT, SERVICE, HPA, GATEWAY_STATUS]
    );
    for request in &applies {
        assert_eq!(request.query["fieldManager"], "ambit-controller");
        assert_eq!(request.query["force"], "true");
        assert_eq!(
            request.content_type.as_deref(),
            Some("application/apply-patch+yaml")
        );
    }
    for object in applies[..4].iter().map(|r| &r.body) {
        assert_eq!(object["metadata"]["namespace"], "shop", "{object:#}");
        assert_eq!(
            object["metadata"]["ownerReferences"][0]["uid"],
            "uid-gw-waypoint"
        );
        assert_eq!(
            object["metadata"]["labels"]["gateway.networking.k8s.io/gateway-name"],
            "waypoint"
        );
    }
    let deployment = &applies[1].body;
    // The template's own label stays; the deployer's labels are added to the pods.
    assert_eq!(
        deployment["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "ambit"
    );
    let pod = &deployment["spec"]["template"];
    assert_eq!(
        pod["metadata"]["labels"],
        json!({"gateway.networking.k8s.io/gateway-name": "waypoint",
               "istio.io/dataplane-mode": "none"})
    );
    assert_eq!(
        pod["spec"]["containers"][0]["args"],
        json!([
            "--identity=spiffe://cluster.local/ns/shop/sa/waypoint",
            "--gateway=shop/waypoint"
        ])
    );
    assert_eq!(
        applies[3].body["spec"]["scaleTargetRef"]["name"],
        "waypoint"
    );
    assert_eq!(
        applies[4].body["status"]["addresses"],
        json!([{"type": "IPAddress", "value": CLUSTER_IP}])
    );

    controller.stop().await;
    api.assert_all_permitted_with(OPTIONAL_WAYPOINT_PERMISSIONS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_api_server_does_not_hold_up_config_pushes() {
    // Every apply hangs: the waypoint deployer never finishes its first sync.
    let (client, api) = MockApi::start(|recorded| match recorded.verb() {
        Verb::Patch => Reply::Hang,
        _ => cluster(recorded),
    });
    api.queue(
        Verb::Get,
        PODS,
        Reply::Json(StatusCode::OK, fixture("pods-list.json")),
    );
    let pods = api.queue_watch(PODS);
    let controller = Running::start(client, &[]).await;
    let ztunnel = controller.node_client("node-a");
    wait_view(&ztunnel, "the workloads", |view| {
        view.workloads().count() == 2
    })
    .await;
    api.wait_for(1, is_apply).await;

    pods.send(event("ADDED", fixture("pod-web-2.json")))
        .unwrap();
    wait_view(&ztunnel, "the new pod", |view| {
        view.workloads().any(|w| w.name() == "web-2")
    })
    .await;
    // Still the one hanging apply: nothing else was sent meanwhile, nothing was lost.
    assert_eq!(api.log().into_iter().filter(is_apply).count(), 1);
    controller.stop().await;
    api.assert_all_permitted();
}

const ZTUNNEL_TOKEN: &str = "projected-token-of-ztunnel-abc";
const ZTUNNEL_POD: &str = "/api/v1/namespaces/ambit-system/pods/ztunnel-abc";
const TOKEN_REVIEWS: &str = "/apis/authentication.k8s.io/v1/tokenreviews";

/// The API server's answer to a TokenReview: ztunnel's pod-bound token is valid for `ambit`,
/// anything else is not.
fn token_review(recorded: &Recorded) -> Reply {
    let valid = recorded.body["spec"]["token"] == ZTUNNEL_TOKEN;
    let mut review = recorded.body.clone();
    review["status"] = if valid {
        json!({
            "authenticated": true,
            "audiences": ["ambit"],
            "user": {
                "username": "system:serviceaccount:ambit-system:ztunnel",
                "extra": {
                    "authentication.kubernetes.io/pod-name": ["ztunnel-abc"],
                    "authentication.kubernetes.io/pod-uid": ["uid-ztunnel-abc"],
                },
            },
        })
    } else {
        json!({"authenticated": false, "error": "invalid bearer token"})
    };
    Reply::Json(StatusCode::CREATED, review)
}

fn ztunnel_pod() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "ztunnel-abc", "namespace": "ambit-system", "uid": "uid-ztunnel-abc"},
        "spec": {"nodeName": "node-a", "serviceAccountName": "ztunnel",
                 "containers": [{"name": "ztunnel", "image": "ztunnel:1"}]},
    })
}

async fn ask_ca(
    controller: &ControllerEndpoint,
    token: &str,
    service_account: &str,
) -> Result<(), IssueError> {
    let issuer = GrpcIssuer::new(controller, token).unwrap();
    let identity = SpiffeId::new("cluster.local", "shop", service_account).unwrap();
    let key = WorkloadKey::generate().unwrap();
    let csr = key.csr_der(&identity).unwrap();
    tokio::time::timeout(WAIT, issuer.create_certificate(&identity, &csr))
        .await
        .expect("the CA did not answer")
        .map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ztunnel_gets_by_token_review_the_identities_of_the_pods_on_its_node() {
    let (client, api) = MockApi::start(cluster);
    let controller = Running::start(client, &[]).await;
    // The CA's view comes from the same snapshots as the config: wait until it is published.
    let ztunnel = controller.node_client("node-a");
    wait_view(&ztunnel, "the workloads", |view| {
        view.workloads().count() == 2
    })
    .await;
    let is_review = |r: &Recorded| r.path == TOKEN_REVIEWS;
    // The config stream was authenticated by TokenReview too.
    let reviews_before = api.log().into_iter().filter(is_review).count();
    assert!(reviews_before >= 1);

    // web-1 (ServiceAccount web) runs on node-a; db-1 (db) on node-b.
    ask_ca(&controller.endpoint(), ZTUNNEL_TOKEN, "web")
        .await
        .unwrap();
    let denied = ask_ca(&controller.endpoint(), ZTUNNEL_TOKEN, "db")
        .await
        .unwrap_err();
    assert!(denied.to_string().contains("PermissionDenied"), "{denied}");
    let unknown = ask_ca(&controller.endpoint(), "someone-elses-token", "web")
        .await
        .unwrap_err();
    assert!(unknown.to_string().contains("Unauthenticated"), "{unknown}");

    let reviews: Vec<Recorded> = api.log().into_iter().filter(is_review).collect();
    assert_eq!(reviews.len(), reviews_before + 3);
    assert_eq!(reviews[0].body["spec"]["audiences"], json!(["ambit"]));
    controller.stop().await;
    api.assert_all_permitted();
}

#[tokio::test]
async fn a_broken_template_stops_the_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    for file in ["serviceaccount.yaml", "deployment.yaml", "service.yaml"] {
        std::fs::copy(template_dir().join(file), dir.path().join(file)).unwrap();
    }
    std::fs::write(dir.path().join("pdb.yaml"), "kind: PodDisruptionBudget\n").unwrap();
    let (client, api) = MockApi::start(cluster);
    let state = tempfile::tempdir().unwrap();
    let args = Args::try_parse_from([
        "ambit-controller".to_owned(),
        "--kube".to_owned(),
        format!("--state-dir={}", state.path().display()),
        format!("--waypoint-template-dir={}", dir.path().display()),
    ])
    .unwrap();
    let shutdown = Shutdown::without_signals(Duration::from_secs(1));
    let result = tokio::time::timeout(WAIT, run_with_client(args, Some(client), shutdown))
        .await
        .unwrap();
    let message = format!("{:#}", result.unwrap_err());
    assert!(message.contains("pdb.yaml"), "{message}");
    assert!(
        message.contains("must hold a PodDisruptionBudget"),
        "{message}"
    );
    // Refused before anything was asked of the API server.
    assert!(api.log().is_empty());
}

/// One translation of `gateways` for the writers.
fn translation(gateways: &[Value]) -> Translation {
    let mut resources = Resources::new();
    for gateway in gateways {
        let gateway = serde_json::from_value(gateway.clone()).unwrap();
        resources
            .insert(Resource::Gateway(Box::new(gateway)))
            .unwrap();
    }
    let (config, errors) = translate(&resources, &TranslateOptions::default());
    Translation {
        snapshot: Arc::new(Snapshot {
            resources,
            errors: Vec::new(),
        }),
        config: Arc::new(config),
        errors: errors.into(),
    }
}

fn gateway(generation: i64) -> Value {
    let mut gateway = fixture("gateway-waypoint.json");
    gateway["metadata"]["generation"] = json!(generation);
    gateway
}

fn writers(client: kube::Client) -> KubeWriters {
    KubeWriters::new(
        WaypointDeployer::new(client.clone(), WaypointSettings::default()),
        StatusWriter::new(client, DEFAULT_CONTROLLER_NAME),
    )
    .with_retry(Duration::from_millis(10), Duration::from_millis(40))
}

fn observed_generation(request: &Recorded) -> &Value {
    &request.body["status"]["conditions"][0]["observedGeneration"]
}

#[tokio::test]
async fn translations_during_a_sync_are_coalesced_into_one_more_with_the_latest() {
    let (client, api) = MockApi::start(cluster);
    // The first ServiceAccount apply is held until the test answers it.
    let (release, held) = tokio::sync::mpsc::unbounded_channel();
    api.queue(Verb::Patch, SERVICE_ACCOUNT, Reply::Stream(held));
    let (translations, latest) = watch::channel(None);
    let shutdown = Shutdown::without_signals(Duration::from_secs(1));
    let task = tokio::spawn(writers(client).run(latest, shutdown.watch()));

    translations.send_replace(Some(translation(&[gateway(1)])));
    let first = api.wait_for(1, is_apply).await;
    assert_eq!(first[0].path, SERVICE_ACCOUNT);
    for generation in 2..=4 {
        translations.send_replace(Some(translation(&[gateway(generation)])));
    }
    release.send(first[0].body.clone()).unwrap();
    drop(release);

    // Round one finishes (generation 1), then one round with generation 4; 2 and 3 are skipped.
    let applies = api.wait_for(8, is_apply).await;
    let statuses: Vec<&Value> = applies
        .iter()
        .filter(|r| r.path == GATEWAY_STATUS)
        .map(observed_generation)
        .collect();
    assert_eq!(statuses, [&json!(1), &json!(4)]);
    let deployments = applies.iter().filter(|r| r.path == DEPLOYMENT).count();
    assert_eq!(deployments, 2);
    assert_eq!(
        applies.len(),
        8,
        "{:?}",
        applies.iter().map(Recorded::line).collect::<Vec<_>>()
    );

    shutdown.trigger().start();
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    api.assert_all_permitted();
}

#[tokio::test]
async fn a_failed_sync_is_retried_without_a_new_translation() {
    let (client, api) = MockApi::start(cluster);
    api.queue(
        Verb::Patch,
        DEPLOYMENT,
        Reply::Json(
            StatusCode::INTERNAL_SERVER_ERROR,
            status(500, "InternalError", "etcd unavailable"),
        ),
    );
    let metrics = ControllerMetrics::register(
        &mut MetricsRegistry::new(),
        &ConfigServer::new(ConfigServerOptions::default()),
        None,
    );
    let (translations, latest) = watch::channel(None);
    let shutdown = Shutdown::without_signals(Duration::from_secs(1));
    let writers = writers(client).with_metrics(metrics.clone());
    let task = tokio::spawn(writers.run(latest, shutdown.watch()));
    translations.send_replace(Some(translation(&[gateway(1)])));

    let status = api.wait_for(1, |r| r.path == GATEWAY_STATUS).await;
    assert_eq!(observed_generation(&status[0]), &json!(1));
    let paths: Vec<String> = api.log().into_iter().map(|r| r.path).collect();
    assert_eq!(
        paths,
        [
            SERVICE_ACCOUNT,
            DEPLOYMENT,
            SERVICE_ACCOUNT,
            DEPLOYMENT,
            SERVICE,
            GATEWAY_STATUS
        ]
    );
    // Closing the channel ends the writers once the sync under way is done (a drain would
    // cut it short, before it is counted).
    drop(translations);
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    assert_eq!(metrics.kube_syncs.get(), 2);
    assert_eq!(metrics.waypoint_deploy_errors.get(), 1);
    assert_eq!(metrics.status_write_errors.get(), 0);
}

#[tokio::test]
async fn an_https_client_builds_with_the_workspace_tls_provider() {
    // kube builds its rustls config with the process-wide provider, which rustls only picks
    // by itself while a single provider is compiled in (ring, here). If another one joined
    // the build, `run` would fail to make its client in a cluster; this fails first.
    let config = kube::Config::new("https://127.0.0.1:6443".parse().unwrap());
    kube::Client::try_from(config).unwrap();
}

#[tokio::test]
async fn the_roots_are_published_where_proxies_run_and_a_failure_is_retried() {
    let (client, api) = MockApi::start(cluster);
    api.queue(
        Verb::Patch,
        ROOTS_SHOP,
        Reply::Json(
            StatusCode::INTERNAL_SERVER_ERROR,
            status(500, "InternalError", "etcd unavailable"),
        ),
    );
    let roots_pem = "-----BEGIN CERTIFICATE-----\nroots\n-----END CERTIFICATE-----\n";
    let publisher = RootPublisher::new(
        client.clone(),
        roots_pem.to_owned(),
        ["ambit-system".to_owned(), "ambit-system".to_owned()],
    );
    let (translations, latest) = watch::channel(None);
    let shutdown = Shutdown::without_signals(Duration::from_secs(1));
    let task = tokio::spawn(
        writers(client)
            .with_roots(publisher)
            .run(latest, shutdown.watch()),
    );
    translations.send_replace(Some(translation(&[gateway(1)])));

    // ambit-system, shop (refused), then shop again on the retry.
    let roots = api.wait_for(3, is_roots_apply).await;
    let paths: Vec<&str> = roots.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, [ROOTS_AMBIT_SYSTEM, ROOTS_SHOP, ROOTS_SHOP]);
    for request in &roots {
        assert_eq!(request.body["kind"], "ConfigMap");
        assert_eq!(request.body["data"]["root-cert.pem"], roots_pem);
        assert_eq!(request.query["force"], "true");
    }
    // Published once per namespace: a later translation writes no ConfigMap again.
    let writes_before = api.log().into_iter().filter(is_roots_apply).count();
    translations.send_replace(Some(translation(&[gateway(2)])));
    api.wait_for(1, |r| {
        r.path == GATEWAY_STATUS && observed_generation(r) == &json!(2)
    })
    .await;
    assert_eq!(
        api.log().into_iter().filter(is_roots_apply).count(),
        writes_before
    );

    shutdown.trigger().start();
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    api.assert_all_permitted();
}
