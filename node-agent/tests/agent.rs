//! The agent's run function end to end: a mocked Kubernetes API behind a real `kube::Client`,
//! a recording ztunnel on `serve_ztunnel`, and the CNI side through the protocol client and
//! the plugin's own code (`ambit_cni::plugin::run` with the socket agent).

#![allow(clippy::unwrap_used, clippy::expect_used)]

// A crate root's modules sit beside it; this one is the agent's own (not a test target).
#[path = "agent/discovery.rs"]
mod discovery;
mod kube_support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ambit_cni::client::{Client as CniClient, ClientConfig};
use ambit_cni::plugin::{self, CniEnv, SocketAgent};
use ambit_cni::protocol::{AgentRequest, ErrorKind, PodInfo, PodReport, Reply};
use ambit_cni::server::{BoxFuture, EnrollmentHandler, HandlerError, Server};
use ambit_cni::snapshot::PodSet;
use ambit_node_agent::agent::AgentTimeouts;
use ambit_node_agent::app::{self, AgentOptions};
use ambit_node_agent::ztunnel::LinkConfig;
use http::StatusCode;
use kube_support::{MockApi, Recorded, Reply as ApiReply, Verb, WAIT, event, list, status};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

const PODS: &str = "/api/v1/pods";
const NAMESPACES: &str = "/api/v1/namespaces";
const NODE: &str = "node-1";
const UID_WEB: &str = "6b1f0c2e-0000-4000-8000-000000000001";
const UID_DB: &str = "6b1f0c2e-0000-4000-8000-000000000002";
/// The agent's `--netns-dir`, inside each test's folder.
const NETNS_DIR: &str = "netns";

// ---------------------------------------------------------------------------------------
// A recording ztunnel.

/// ztunnel's side reduced to bookkeeping: what it serves and every request, in order.
#[derive(Default)]
struct Ztunnel {
    pods: Mutex<PodSet>,
    log: Mutex<Vec<String>>,
    changed: watch::Sender<u64>,
}

impl Ztunnel {
    fn record(&self, line: String) {
        self.log.lock().unwrap().push(line);
        self.changed.send_modify(|n| *n += 1);
    }

    /// Names of the served pods, sorted.
    fn served(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .pods
            .lock()
            .unwrap()
            .iter()
            .map(|p| p.name.clone())
            .collect();
        names.sort();
        names
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the served pods are `names` (sorted).
    async fn wait_served(&self, names: &[&str]) {
        self.wait_until(|z| z.served() == names)
            .await
            .unwrap_or_else(|()| panic!("served {:?}, wanted {names:?}", self.served()));
    }

    async fn wait_until(&self, done: impl Fn(&Self) -> bool) -> Result<(), ()> {
        let mut changed = self.changed.subscribe();
        tokio::time::timeout(WAIT, async {
            loop {
                changed.borrow_and_update();
                if done(self) {
                    return;
                }
                changed.changed().await.unwrap();
            }
        })
        .await
        .map_err(|_| ())
    }
}

impl EnrollmentHandler for Ztunnel {
    fn enroll(&self, pod: PodInfo) -> BoxFuture<'_, Result<(), HandlerError>> {
        Box::pin(async move {
            let line = format!("enroll {}", pod.name);
            if pod.name.starts_with("refused") {
                self.record(line);
                return Err(HandlerError::internal("netns cannot be entered"));
            }
            self.pods.lock().unwrap().enroll(pod);
            self.record(line);
            Ok(())
        })
    }

    fn unenroll(&self, uid: String) -> BoxFuture<'_, Result<(), HandlerError>> {
        Box::pin(async move {
            let name = self.pods.lock().unwrap().unenroll(&uid).map(|p| p.name);
            self.record(format!("unenroll {}", name.unwrap_or(uid)));
            Ok(())
        })
    }

    fn snapshot(&self, pods: Vec<PodInfo>) -> BoxFuture<'_, Result<(), HandlerError>> {
        Box::pin(async move {
            let names: Vec<String> = pods.iter().map(|p| p.name.clone()).collect();
            {
                let mut set = self.pods.lock().unwrap();
                let plan = set.plan(&pods);
                set.apply(&plan);
            }
            self.record(format!("snapshot [{}]", names.join(",")));
            Ok(())
        })
    }
}

fn start_ztunnel(path: &Path) -> (Arc<Ztunnel>, JoinHandle<()>) {
    let ztunnel = Arc::new(Ztunnel::default());
    let server = Server::bind(path).unwrap();
    let task = tokio::spawn(server.serve_ztunnel(ztunnel.clone()));
    (ztunnel, task)
}

// ---------------------------------------------------------------------------------------
// Kubernetes objects and the mocked API.

fn pod(name: &str, namespace: &str, uid: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": uid,
            "resourceVersion": "10",
            "labels": labels,
            "managedFields": [{"manager": "kubectl", "operation": "Update"}],
        },
        "spec": {
            "nodeName": NODE,
            "serviceAccountName": "web",
            "containers": [{"name": "app", "image": "app:1"}],
        },
    })
}

fn namespace(name: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "resourceVersion": "5", "labels": labels},
    })
}

fn ambient() -> Value {
    json!({"istio.io/dataplane-mode": "ambient"})
}

/// A cluster with the ambient namespace `shop` and `pods`.
fn shop(pods: Vec<Value>) -> Cluster {
    Cluster::start(pods, vec![namespace("shop", ambient())])
}

/// Lists and live watches for pods and namespaces; later relists find an empty cluster.
struct Cluster {
    api: MockApi,
    client: kube::Client,
    pods: mpsc::UnboundedSender<Value>,
    namespaces: mpsc::UnboundedSender<Value>,
}

impl Cluster {
    fn start(pods: Vec<Value>, namespaces: Vec<Value>) -> Self {
        let (client, api) = MockApi::start(MockApi::empty_cluster);
        api.queue(
            Verb::Get,
            PODS,
            ApiReply::Json(StatusCode::OK, list("100", pods)),
        );
        api.queue(
            Verb::Get,
            NAMESPACES,
            ApiReply::Json(StatusCode::OK, list("50", namespaces)),
        );
        let pods = api.queue_watch(PODS);
        let namespaces = api.queue_watch(NAMESPACES);
        Self {
            api,
            client,
            pods,
            namespaces,
        }
    }

    /// An API server that never answers: the agent runs on its state file alone.
    fn unreachable() -> Self {
        let (client, api) = MockApi::start(|_: &Recorded| ApiReply::Hang);
        let (pods, _) = mpsc::unbounded_channel();
        let (namespaces, _) = mpsc::unbounded_channel();
        Self {
            api,
            client,
            pods,
            namespaces,
        }
    }

    fn pod_event(&self, type_: &str, object: Value) {
        self.pods.send(event(type_, object)).unwrap();
    }

    fn namespace_event(&self, type_: &str, object: Value) {
        self.namespaces.send(event(type_, object)).unwrap();
    }
}

// ---------------------------------------------------------------------------------------
// The agent.

/// A private folder removed on drop; short, so socket paths stay under 108 bytes.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "ambit-na-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// A stand-in for a pod's network namespace: the agent only checks that it exists.
    fn netns(&self, name: &str) -> String {
        let path = self.join(&format!("netns-{name}"));
        std::fs::write(&path, "").unwrap();
        path.display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Agent {
    socket: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), app::RunError>>,
}

impl Agent {
    async fn start(dir: &TempDir, cluster: &Cluster, timeouts: AgentTimeouts) -> Self {
        let socket = dir.join("cni.sock");
        // A socket left by an earlier agent of the test is replaced; wait for the new one.
        let _ = std::fs::remove_file(&socket);
        let options = AgentOptions {
            node: NODE.into(),
            listen: socket.clone(),
            state_file: dir.join("state.json"),
            timeouts,
            link: LinkConfig {
                socket: dir.join("ztunnel.sock"),
                retry_min: Duration::from_millis(10),
                retry_max: Duration::from_millis(100),
                call_timeout: Duration::from_secs(10),
            },
            // Empty (absent) unless a test puts namespaces there: see `discovery`.
            netns_dir: dir.join(NETNS_DIR),
            exclude_namespaces: ["kube-system".to_owned()].into(),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app::run(options, cluster.client.clone(), async move {
            let _ = stopped.await;
        }));
        tokio::time::timeout(WAIT, async {
            while !socket.exists() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the agent never bound its socket");
        Self {
            socket,
            stop: Some(stop),
            task,
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = tokio::time::timeout(WAIT, &mut self.task).await;
        result.unwrap().unwrap().unwrap();
    }

    async fn call(&self, request: AgentRequest) -> Reply {
        call(self.socket.clone(), request).await
    }

    async fn add(&self, report: PodReport) -> Reply {
        self.call(AgentRequest::Add { pod: report }).await
    }
}

/// One request over a fresh connection, as the plugin makes it.
async fn call(socket: PathBuf, request: AgentRequest) -> Reply {
    tokio::task::spawn_blocking(move || {
        let mut client =
            CniClient::<AgentRequest>::connect(&socket, &ClientConfig::default()).unwrap();
        client.call(&request).unwrap()
    })
    .await
    .unwrap()
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn quick() -> AgentTimeouts {
    AgentTimeouts {
        pod_wait: Duration::from_secs(5),
        enroll_wait: Duration::from_secs(5),
    }
}

fn report(name: &str, namespace: &str, container: &str, netns: &str) -> PodReport {
    PodReport {
        container_id: container.into(),
        namespace: namespace.into(),
        name: name.into(),
        uid: None,
        service_account: None,
        netns: Some(netns.into()),
    }
}

fn enrolled(value: bool) -> Reply {
    Reply::Ack {
        enrolled: Some(value),
    }
}

/// The message of an `unavailable` error reply.
fn unavailable(reply: &Reply) -> &str {
    match reply {
        Reply::Error {
            kind: ErrorKind::Unavailable,
            message,
        } => message,
        other => panic!("not unavailable: {other:?}"),
    }
}

fn error_kind(reply: &Reply) -> Option<ErrorKind> {
    match reply {
        Reply::Error { kind, .. } => Some(*kind),
        Reply::Ack { .. } => None,
    }
}

// ---------------------------------------------------------------------------------------
// The tests.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ambient_pod_is_enrolled_before_the_add_is_answered() {
    let dir = TempDir::new();
    let (ztunnel, _zt) = start_ztunnel(&dir.join("ztunnel.sock"));
    let cluster = Cluster::start(
        vec![
            pod("web-0", "shop", UID_WEB, json!({})),
            pod("db-0", "plain", UID_DB, json!({})),
        ],
        vec![namespace("shop", ambient()), namespace("plain", json!({}))],
    );
    let agent = Agent::start(&dir, &cluster, quick()).await;
    ztunnel.wait_until(|z| !z.log().is_empty()).await.unwrap();

    let web = report("web-0", "shop", "c-web", &dir.netns("web"));
    assert_eq!(agent.add(web.clone()).await, enrolled(true));
    // Fail closed: ztunnel serves the pod by the time the plugin hears back.
    assert_eq!(ztunnel.served(), ["web-0"]);
    let served = ztunnel.pods.lock().unwrap().get(UID_WEB).cloned().unwrap();
    assert_eq!(served.service_account, "web", "resolved from the pod");
    assert_eq!(Some(served.netns), web.netns);

    let db = report("db-0", "plain", "c-db", &dir.netns("db"));
    assert_eq!(agent.add(db.clone()).await, enrolled(false));
    assert_eq!(
        agent.call(AgentRequest::Check { pod: db }).await,
        enrolled(false)
    );
    assert_eq!(
        agent.call(AgentRequest::Check { pod: web.clone() }).await,
        enrolled(true)
    );

    assert_eq!(
        agent.call(AgentRequest::Del { pod: web.clone() }).await,
        Reply::ack()
    );
    ztunnel.wait_served(&[]).await;
    let check = agent.call(AgentRequest::Check { pod: web }).await;
    assert_eq!(error_kind(&check), Some(ErrorKind::UnknownPod));
    assert_eq!(
        ztunnel.log(),
        ["snapshot []", "enroll web-0", "unenroll web-0"]
    );

    // The pod watch (list and watch) asks for this node's pods only.
    let pod_requests = cluster.api.wait_for(2, |r| r.path == PODS).await;
    for request in pod_requests {
        let selector = &request.query["fieldSelector"];
        assert!(
            selector.contains("spec.nodeName") && selector.ends_with(NODE),
            "{selector}"
        );
    }
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_add_ahead_of_the_watch_waits_for_the_pod() {
    let dir = TempDir::new();
    let (ztunnel, _zt) = start_ztunnel(&dir.join("ztunnel.sock"));
    let cluster = Cluster::start(vec![], vec![namespace("shop", ambient())]);
    let agent = Agent::start(&dir, &cluster, quick()).await;
    ztunnel.wait_until(|z| !z.log().is_empty()).await.unwrap();

    let web = report("web-0", "shop", "c-web", &dir.netns("web"));
    let add = tokio::spawn(call(agent.socket.clone(), AgentRequest::Add { pod: web }));
    // The ADD is waiting (nothing enrolled) until the watch reports the pod.
    assert!(ztunnel.served().is_empty());
    cluster.pod_event("ADDED", pod("web-0", "shop", UID_WEB, json!({})));
    let reply = tokio::time::timeout(WAIT, add).await.unwrap().unwrap();
    assert_eq!(reply, enrolled(true));
    assert_eq!(ztunnel.served(), ["web-0"]);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_the_watch_never_shows_is_unknown() {
    let dir = TempDir::new();
    let (_ztunnel, _zt) = start_ztunnel(&dir.join("ztunnel.sock"));
    let cluster = Cluster::start(vec![], vec![namespace("shop", ambient())]);
    let timeouts = AgentTimeouts {
        pod_wait: Duration::from_millis(200),
        ..quick()
    };
    let agent = Agent::start(&dir, &cluster, timeouts).await;
    let reply = agent
        .add(report("ghost", "shop", "c-ghost", &dir.netns("ghost")))
        .await;
    assert_eq!(error_kind(&reply), Some(ErrorKind::UnknownPod), "{reply:?}");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_flips_enroll_and_unenroll_live() {
    let dir = TempDir::new();
    let (ztunnel, _zt) = start_ztunnel(&dir.join("ztunnel.sock"));
    let cluster = Cluster::start(
        vec![
            pod("db-0", "plain", UID_DB, json!({})),
            pod("web-0", "shop", UID_WEB, json!({})),
        ],
        vec![namespace("plain", json!({})), namespace("shop", ambient())],
    );
    let agent = Agent::start(&dir, &cluster, quick()).await;
    let db = report("db-0", "plain", "c-db", &dir.netns("db"));
    assert_eq!(agent.add(db.clone()).await, enrolled(false));
    assert_eq!(
        agent
            .add(report("web-0", "shop", "c-web", &dir.netns("web")))
            .await,
        enrolled(true)
    );

    // The namespace joins the mesh: its running pod is enrolled without a new ADD.
    cluster.namespace_event("MODIFIED", namespace("plain", ambient()));
    ztunnel.wait_served(&["db-0", "web-0"]).await;
    assert_eq!(
        agent.call(AgentRequest::Check { pod: db }).await,
        enrolled(true)
    );

    // A pod opts out with its own label, then the namespace leaves the mesh.
    cluster.pod_event(
        "MODIFIED",
        pod(
            "web-0",
            "shop",
            UID_WEB,
            json!({"istio.io/dataplane-mode": "none"}),
        ),
    );
    ztunnel.wait_served(&["db-0"]).await;
    cluster.namespace_event("MODIFIED", namespace("plain", json!({})));
    ztunnel.wait_served(&[]).await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_deleted_from_the_api_is_unenrolled() {
    let dir = TempDir::new();
    let (ztunnel, _zt) = start_ztunnel(&dir.join("ztunnel.sock"));
    let web = pod("web-0", "shop", UID_WEB, json!({}));
    let cluster = Cluster::start(vec![web.clone()], vec![namespace("shop", ambient())]);
    let agent = Agent::start(&dir, &cluster, quick()).await;
    let report = report("web-0", "shop", "c-web", &dir.netns("web"));
    assert_eq!(agent.add(report.clone()).await, enrolled(true));
    cluster.pod_event("DELETED", web);
    ztunnel.wait_served(&[]).await;
    let check = agent.call(AgentRequest::Check { pod: report }).await;
    assert_eq!(error_kind(&check), Some(ErrorKind::UnknownPod));
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relist_after_an_expired_watch_drops_pods_deleted_meanwhile() {
    let dir = TempDir::new();
    let (ztunnel, _zt) = start_ztunnel(&dir.join("ztunnel.sock"));
    let web = pod("web-0", "shop", UID_WEB, json!({}));
    let db = pod("db-0", "shop", UID_DB, json!({}));
    let cluster = Cluster::start(vec![web.clone(), db], vec![namespace("shop", ambient())]);
    let agent = Agent::start(&dir, &cluster, quick()).await;
    for (name, netns) in [("web-0", "web"), ("db-0", "db")] {
        let reply = agent
            .add(report(
                name,
                "shop",
                &format!("c-{netns}"),
                &dir.netns(netns),
            ))
            .await;
        assert_eq!(reply, enrolled(true));
    }
    // db-0's delete is missed: the watch expires and the relist no longer has the pod.
    cluster.api.queue(
        Verb::Get,
        PODS,
        ApiReply::Json(StatusCode::OK, list("200", vec![web])),
    );
    cluster.pod_event("ERROR", status(410, "Expired", "too old resource version"));
    ztunnel.wait_served(&["web-0"]).await;
    assert!(ztunnel.log().contains(&"unenroll db-0".to_owned()));
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_ztunnel_gets_the_snapshot_again() {
    let dir = TempDir::new();
    let ztunnel_socket = dir.join("ztunnel.sock");
    let (first, first_task) = start_ztunnel(&ztunnel_socket);
    let cluster = shop(vec![pod("web-0", "shop", UID_WEB, json!({}))]);
    let agent = Agent::start(&dir, &cluster, quick()).await;
    assert_eq!(
        agent
            .add(report("web-0", "shop", "c-web", &dir.netns("web")))
            .await,
        enrolled(true)
    );
    assert_eq!(first.served(), ["web-0"]);

    // ztunnel goes away (its connections close) and a new one starts on the same socket.
    first_task.abort();
    let _ = first_task.await;
    let (second, _second_task) = start_ztunnel(&ztunnel_socket);
    second.wait_served(&["web-0"]).await;
    assert_eq!(second.log(), ["snapshot [web-0]"]);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_ztunnel_an_ambient_add_fails_closed_and_is_served_later() {
    let dir = TempDir::new();
    let cluster = shop(vec![pod("web-0", "shop", UID_WEB, json!({}))]);
    let timeouts = AgentTimeouts {
        enroll_wait: Duration::from_millis(300),
        ..quick()
    };
    let agent = Agent::start(&dir, &cluster, timeouts).await;
    let reply = agent
        .add(report("web-0", "shop", "c-web", &dir.netns("web")))
        .await;
    let message = unavailable(&reply);
    assert!(message.contains("not connected"), "{message}");
    // The sandbox stays known: once ztunnel is up, it serves the pod.
    let (ztunnel, _zt) = start_ztunnel(&dir.join("ztunnel.sock"));
    ztunnel.wait_served(&["web-0"]).await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_ztunnel_refuses_fails_the_add_with_its_reason() {
    let dir = TempDir::new();
    let (ztunnel, _zt) = start_ztunnel(&dir.join("ztunnel.sock"));
    let cluster = shop(vec![pod("refused-0", "shop", UID_WEB, json!({}))]);
    let agent = Agent::start(&dir, &cluster, quick()).await;
    let reply = agent
        .add(report("refused-0", "shop", "c-r", &dir.netns("r")))
        .await;
    let message = unavailable(&reply);
    assert!(message.contains("netns cannot be entered"), "{message}");
    // Retried with backoff.
    ztunnel
        .wait_until(|z| z.log().iter().filter(|l| *l == "enroll refused-0").count() >= 2)
        .await
        .unwrap();
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_reloads_its_pods_and_drops_vanished_ones() {
    let dir = TempDir::new();
    let (ztunnel, _zt) = start_ztunnel(&dir.join("ztunnel.sock"));
    let cluster = Cluster::start(
        vec![
            pod("db-0", "shop", UID_DB, json!({})),
            pod("web-0", "shop", UID_WEB, json!({})),
        ],
        vec![namespace("shop", ambient())],
    );
    let agent = Agent::start(&dir, &cluster, quick()).await;
    let db_netns = dir.netns("db");
    let db = report("db-0", "shop", "c-db", &db_netns);
    let web = report("web-0", "shop", "c-web", &dir.netns("web"));
    assert_eq!(agent.add(db).await, enrolled(true));
    assert_eq!(agent.add(web.clone()).await, enrolled(true));
    agent.stop().await;
    let state: Value =
        serde_json::from_slice(&std::fs::read(dir.join("state.json")).unwrap()).unwrap();
    assert_eq!(state["pods"].as_array().unwrap().len(), 2, "{state}");

    // db-0's sandbox disappeared while no agent ran. The new agent cannot reach the API,
    // and still serves ztunnel the pods it knew.
    std::fs::remove_file(&db_netns).unwrap();
    let unreachable = Cluster::unreachable();
    let restarted = Agent::start(&dir, &unreachable, quick()).await;
    ztunnel
        .wait_until(|z| z.log().last().map(String::as_str) == Some("snapshot [web-0]"))
        .await
        .unwrap_or_else(|()| panic!("{:?}", ztunnel.log()));
    assert_eq!(ztunnel.served(), ["web-0"]);
    assert_eq!(
        restarted.call(AgentRequest::Check { pod: web }).await,
        enrolled(true)
    );
    restarted.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plugin_adds_checks_and_deletes_through_the_agent() {
    let dir = TempDir::new();
    let (ztunnel, _zt) = start_ztunnel(&dir.join("ztunnel.sock"));
    let cluster = shop(vec![pod("web-0", "shop", UID_WEB, json!({}))]);
    let agent = Agent::start(&dir, &cluster, quick()).await;
    let netns = dir.netns("web");
    let run = |command: &'static str| {
        let (socket, netns) = (agent.socket.clone(), netns.clone());
        tokio::task::spawn_blocking(move || {
            let vars = [
                ("CNI_COMMAND", command.to_owned()),
                ("CNI_CONTAINERID", "c0ffee01".to_owned()),
                ("CNI_NETNS", netns),
                ("CNI_IFNAME", "eth0".to_owned()),
                ("CNI_PATH", "/opt/cni/bin".to_owned()),
                (
                    "CNI_ARGS",
                    format!(
                        "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0;K8S_POD_UID={UID_WEB}"
                    ),
                ),
            ];
            let env = CniEnv::from_os_vars(vars.map(|(k, v)| (k.into(), v.into())));
            let conf = json!({
                "cniVersion": "1.0.0",
                "name": "k8s-pod-network",
                "type": "ambit-cni",
                "agentSocket": socket,
                "prevResult": {"cniVersion": "1.0.0", "interfaces": [], "ips": []},
            });
            plugin::run(&env, conf.to_string().as_bytes(), &mut SocketAgent)
        })
    };
    let add = run("ADD").await.unwrap();
    assert_eq!(add.exit_code, 0, "{:?}", add.diagnostics);
    assert!(
        add.diagnostics.iter().any(|d| d.contains("enrolled=true")),
        "{:?}",
        add.diagnostics
    );
    assert_eq!(ztunnel.served(), ["web-0"]);
    let check = run("CHECK").await.unwrap();
    assert_eq!(check.exit_code, 0, "{:?}", check.diagnostics);
    let del = run("DEL").await.unwrap();
    assert_eq!(del.exit_code, 0, "{:?}", del.diagnostics);
    ztunnel.wait_served(&[]).await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_state_file_is_replaced_not_fatal() {
    let dir = TempDir::new();
    let (ztunnel, _zt) = start_ztunnel(&dir.join("ztunnel.sock"));
    std::fs::write(dir.join("state.json"), "{\"version\":1,\"pods\":[").unwrap();
    let cluster = shop(vec![pod("web-0", "shop", UID_WEB, json!({}))]);
    let agent = Agent::start(&dir, &cluster, quick()).await;
    let reply = agent
        .add(report("web-0", "shop", "c-web", &dir.netns("web")))
        .await;
    assert_eq!(reply, enrolled(true));
    assert_eq!(ztunnel.served(), ["web-0"]);
    let state: Value =
        serde_json::from_slice(&std::fs::read(dir.join("state.json")).unwrap()).unwrap();
    assert_eq!(state["pods"][0]["uid"], UID_WEB, "{state}");
    agent.stop().await;
}
