//! `ambit ztunnel-config …` against a cluster: a real kube client talks to a fake API server
//! that upgrades the port-forward request to the Kubernetes port-forward WebSocket protocol and
//! relays it to a real admin server on loopback, the way the kubelet reaches ztunnel's
//! loopback-only admin port inside the pod.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Helpers outside #[test] fns panic on purpose.

mod kube_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use ambit_cli::cluster::ClusterError;
use ambit_cli::cluster::ztunnel::{self, ZtunnelOn};
use ambit_cli::ztunnel_config::{Output, Resource, render};
use http::StatusCode;
use kube_support::portforward::{AdminStub, FakeApi, Forward, PORT_FORWARD_PROTOCOL, closed_port};
use serde_json::{Value, json};

const ZTUNNEL_PODS: &str = "/api/v1/namespaces/ambit-system/pods";
const LIMIT: Duration = Duration::from_secs(10);

fn config_dump() -> Value {
    json!({
        "version": 4,
        "workloads": [{
            "uid": "uid-reviews-v1",
            "name": "reviews-v1",
            "namespace": "bookinfo",
            "serviceAccount": "bookinfo-reviews",
            "node": "node-a",
            "ips": ["10.244.1.3"],
            "labels": {"app": "reviews"},
            "trustDomain": "cluster.local",
            "protocol": "HBONE",
        }],
        "services": [{
            "name": "reviews",
            "namespace": "bookinfo",
            "vips": ["10.96.0.20"],
            "ports": [{"name": "http", "port": 9080, "targetPort": 8080}],
            "endpoints": {"uid-reviews-v1": {}},
        }],
        "authorizationPolicies": [],
    })
}

fn certs() -> Value {
    json!({"identities": ["spiffe://cluster.local/ns/default/sa/curl"]})
}

/// ztunnel's documents by endpoint, as its admin server serves them.
fn ztunnel_admin(path: &str) -> (StatusCode, String) {
    match path {
        "/config_dump" => (StatusCode::OK, config_dump().to_string()),
        "/certs" => (StatusCode::OK, certs().to_string()),
        _ => (StatusCode::NOT_FOUND, "not found\n".to_owned()),
    }
}

fn ztunnel_pod(namespace: &str, name: &str, node: &str, phase: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/name": "ztunnel"},
        },
        "spec": {"nodeName": node, "containers": [{"name": "ztunnel"}]},
        "status": {"phase": phase},
    })
}

fn pod_list(items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "5"}, "items": items})
}

/// One running ztunnel, `ztunnel-c` on node-c, forwarded as `forward` says.
async fn one_ztunnel(forward: Forward) -> FakeApi {
    let pods = pod_list(vec![ztunnel_pod(
        "ambit-system",
        "ztunnel-c",
        "node-c",
        "Running",
    )]);
    FakeApi::start(vec![(ZTUNNEL_PODS.to_owned(), pods)], forward).await
}

async fn show_on(
    api: &FakeApi,
    on: &ZtunnelOn,
    resource: Resource,
    output: Output,
    timeout: Duration,
) -> Result<String, ClusterError> {
    tokio::time::timeout(
        LIMIT,
        ztunnel::show(&api.client(), "ambit-system", on, resource, output, timeout),
    )
    .await
    .expect("ztunnel::show is not bounded by its timeout")
}

#[tokio::test]
async fn workloads_come_through_a_port_forward_to_the_admin_port() {
    let admin = AdminStub::start(ztunnel_admin).await;
    let pods = pod_list(vec![
        ztunnel_pod("ambit-system", "ztunnel-old", "node-a", "Failed"),
        ztunnel_pod("ambit-system", "ztunnel-abcde", "node-a", "Running"),
    ]);
    let api = FakeApi::start(
        vec![(ZTUNNEL_PODS.to_owned(), pods)],
        Forward::To(admin.addr),
    )
    .await;
    let on = ZtunnelOn::Node("node-a".to_owned());

    let table = show_on(&api, &on, Resource::Workloads, Output::Table, LIMIT)
        .await
        .unwrap();
    // The same rendering as local mode's, of the same document.
    assert_eq!(
        table,
        render(Resource::Workloads, Output::Table, config_dump()).unwrap()
    );
    assert!(
        table.contains("reviews-v1") && table.contains("10.244.1.3"),
        "{table}"
    );
    let json = show_on(&api, &on, Resource::Workloads, Output::Json, LIMIT)
        .await
        .unwrap();
    assert_eq!(
        json,
        render(Resource::Workloads, Output::Json, config_dump()).unwrap()
    );
    let parsed: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(parsed[0]["name"], "reviews-v1", "{json}");

    let seen = api.seen();
    let lines: Vec<String> = seen.iter().map(|seen| seen.line()).collect();
    let list = format!(
        "GET {ZTUNNEL_PODS}?&fieldSelector=spec.nodeName%3Dnode-a\
         &labelSelector=app.kubernetes.io%2Fname%3Dztunnel"
    );
    let forward = format!("GET {ZTUNNEL_PODS}/ztunnel-abcde/portforward?&ports=15000");
    assert_eq!(lines, [list.clone(), forward.clone(), list, forward]);
    assert!(
        seen[1]
            .protocols
            .as_deref()
            .is_some_and(|offered| offered.contains(PORT_FORWARD_PROTOCOL)),
        "{:?}",
        seen[1]
    );
    // One plain GET per document reached the admin server, addressed as its loopback port.
    let host = "127.0.0.1:15000".to_owned();
    assert_eq!(
        admin.seen(),
        [
            ("/config_dump".to_owned(), host.clone()),
            ("/config_dump".to_owned(), host)
        ]
    );
}

#[tokio::test]
async fn a_pods_node_picks_the_ztunnel_port_forwarded_to() {
    let admin = AdminStub::start(ztunnel_admin).await;
    let routes = vec![
        (
            "/api/v1/namespaces/default/pods/curl".to_owned(),
            ztunnel_pod("default", "curl", "node-b", "Running"),
        ),
        (
            ZTUNNEL_PODS.to_owned(),
            pod_list(vec![ztunnel_pod(
                "ambit-system",
                "ztunnel-b",
                "node-b",
                "Running",
            )]),
        ),
    ];
    let api = FakeApi::start(routes, Forward::To(admin.addr)).await;
    let on = ZtunnelOn::PodsNode("default".to_owned(), "curl".to_owned());
    let out = show_on(&api, &on, Resource::Certificates, Output::Json, LIMIT)
        .await
        .unwrap();
    assert_eq!(
        out,
        "[\n  \"spiffe://cluster.local/ns/default/sa/curl\"\n]\n"
    );
    let paths: Vec<String> = api.seen().into_iter().map(|seen| seen.path).collect();
    assert_eq!(
        paths,
        [
            "/api/v1/namespaces/default/pods/curl",
            ZTUNNEL_PODS,
            "/api/v1/namespaces/ambit-system/pods/ztunnel-b/portforward"
        ]
    );
    assert!(api.seen()[1].query.contains("spec.nodeName%3Dnode-b"));
    assert_eq!(admin.seen()[0].0, "/certs");
}

#[tokio::test]
async fn a_refused_port_forward_names_the_permission_it_needs() {
    let api = one_ztunnel(Forward::Refuse(StatusCode::FORBIDDEN)).await;
    let on = ZtunnelOn::Node("node-c".to_owned());
    let error = show_on(&api, &on, Resource::Workloads, Output::Table, LIMIT)
        .await
        .unwrap_err();
    assert!(matches!(error, ClusterError::Admin { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        "GET /config_dump from ztunnel pod ambit-system/ztunnel-c (node node-c) through a \
         port-forward to port 15000: the API server refused the port-forward (403 Forbidden): \
         the CLI's credentials need `create` on `pods/portforward` in namespace ambit-system"
    );
}

#[tokio::test]
async fn the_kubelets_error_is_shown_when_the_admin_port_is_closed() {
    let api = one_ztunnel(Forward::To(closed_port().await)).await;
    let on = ZtunnelOn::Node("node-c".to_owned());
    let error = show_on(&api, &on, Resource::Connections, Output::Table, LIMIT)
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.starts_with(
            "GET /connections from ztunnel pod ambit-system/ztunnel-c (node node-c) through a \
             port-forward to port 15000: the kubelet could not forward to port 15000: an error \
             occurred forwarding 15000 -> 15000:"
        ) && message.contains("connect: Connection refused")
            && message
                .ends_with("(is ztunnel's admin server listening on 127.0.0.1:15000 in the pod?)"),
        "{message}"
    );
}

#[tokio::test]
async fn an_admin_error_status_shows_the_status_and_the_first_line() {
    let admin = AdminStub::start(|_| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "config dump failed: snapshot poisoned\nat app.rs:120\n".to_owned(),
        )
    })
    .await;
    let api = one_ztunnel(Forward::To(admin.addr)).await;
    let on = ZtunnelOn::Node("node-c".to_owned());
    let error = show_on(&api, &on, Resource::Services, Output::Table, LIMIT)
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "GET /config_dump from ztunnel pod ambit-system/ztunnel-c (node node-c) through a \
         port-forward to port 15000: ztunnel's admin server answered 500 Internal Server Error: \
         config dump failed: snapshot poisoned"
    );
}

#[tokio::test]
async fn a_non_json_answer_is_an_error() {
    let admin = AdminStub::start(|_| (StatusCode::OK, "<html>hello</html>".to_owned())).await;
    let api = one_ztunnel(Forward::To(admin.addr)).await;
    let on = ZtunnelOn::Node("node-c".to_owned());
    let error = show_on(&api, &on, Resource::Policies, Output::Table, LIMIT)
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.starts_with(
            "GET /config_dump from ztunnel pod ambit-system/ztunnel-c (node node-c) through a \
             port-forward to port 15000: the answer is not JSON:"
        ),
        "{message}"
    );
}

#[tokio::test]
async fn a_silent_admin_server_is_bounded_by_the_timeout() {
    // Accepts the connection, never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            open.push(stream);
        }
    });
    let api = one_ztunnel(Forward::To(addr)).await;
    let on = ZtunnelOn::Node("node-c".to_owned());
    let bound = Duration::from_millis(300);
    let error = show_on(&api, &on, Resource::Workloads, Output::Table, bound)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, ClusterError::Timeout { timeout, .. } if *timeout == bound),
        "{error:?}"
    );
    assert!(
        error.to_string().ends_with("no answer within 300ms"),
        "{error}"
    );
    held.abort();
}

fn kubeconfig(dir: &Path, server: &str) -> PathBuf {
    let path = dir.join("kubeconfig.yaml");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\n\
             clusters:\n- name: fake\n  cluster: {{server: \"{server}\"}}\n\
             users:\n- name: dev\n  user: {{}}\n\
             contexts:\n- name: fake\n  context: {{cluster: fake, user: dev}}\n"
        ),
    )
    .unwrap();
    path
}

/// The binary end to end: kubeconfig, flags, port-forward, rendering, exit codes.
#[tokio::test]
async fn the_binary_reads_a_clusters_ztunnel_through_the_port_forward() {
    let dir = std::env::temp_dir().join(format!("ambit-cluster-ztunnel-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let admin = AdminStub::start(ztunnel_admin).await;
    let pods = pod_list(vec![ztunnel_pod("mesh", "ztunnel-x", "node-a", "Running")]);
    let api = FakeApi::start(
        vec![("/api/v1/namespaces/mesh/pods".to_owned(), pods)],
        Forward::To(admin.addr),
    )
    .await;
    let config = kubeconfig(&dir, &api.url());
    let ambit = |args: &'static str| {
        let config = config.clone();
        let dir = dir.clone();
        async move {
            let output = tokio::time::timeout(
                LIMIT,
                tokio::process::Command::new(env!("CARGO_BIN_EXE_ambit"))
                    .arg("--kubeconfig")
                    .arg(&config)
                    .args(args.split_whitespace())
                    .env("AMBIT_LOCAL_DIR", dir.join("state"))
                    .env("HOME", &dir)
                    .output(),
            )
            .await
            .expect("ambit did not finish in time")
            .unwrap();
            (
                output.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&output.stdout).into_owned(),
                String::from_utf8_lossy(&output.stderr).into_owned(),
            )
        }
    };
    let (code, stdout, stderr) =
        ambit("ztunnel-config certificates --node node-a --ztunnel-namespace mesh").await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(
        stdout,
        "IDENTITY\nspiffe://cluster.local/ns/default/sa/curl\n"
    );
    assert_eq!(
        api.seen().last().unwrap().line(),
        "GET /api/v1/namespaces/mesh/pods/ztunnel-x/portforward?&ports=15000"
    );

    // An endpoint the admin server does not serve: exit 1, the status on stderr.
    let (code, stdout, stderr) =
        ambit("ztunnel-config connections --node node-a --ztunnel-namespace mesh").await;
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains("ztunnel's admin server answered 404 Not Found: not found"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
