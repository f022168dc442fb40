//! The real `ambit-cni` binary against a node-agent server on a temporary socket.
#![allow(
    clippy::unwrap_used,
    reason = "test handlers: a failure is a test failure"
)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use ambit_cni::protocol::{AgentRequest, PodReport};
use ambit_cni::server::{BoxFuture, HandlerError, PodEventHandler, Server};
use common::{TempDir, WAIT};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

const UID: &str = "6b1f0c2e-0000-4000-8000-000000000001";

/// A node agent that enrolls pods of the `shop` namespace and remembers what it heard.
#[derive(Default)]
struct RecordingAgent {
    requests: Mutex<Vec<AgentRequest>>,
    known: Mutex<BTreeMap<String, bool>>,
}

impl PodEventHandler for RecordingAgent {
    fn add(&self, pod: PodReport) -> BoxFuture<'_, Result<bool, HandlerError>> {
        Box::pin(async move {
            let enrolled = pod.namespace == "shop";
            self.known
                .lock()
                .unwrap()
                .insert(pod.container_id.clone(), enrolled);
            self.requests
                .lock()
                .unwrap()
                .push(AgentRequest::Add { pod });
            Ok(enrolled)
        })
    }

    fn del(&self, pod: PodReport) -> BoxFuture<'_, Result<(), HandlerError>> {
        Box::pin(async move {
            self.known.lock().unwrap().remove(&pod.container_id);
            self.requests
                .lock()
                .unwrap()
                .push(AgentRequest::Del { pod });
            Ok(())
        })
    }

    fn check(&self, pod: PodReport) -> BoxFuture<'_, Result<bool, HandlerError>> {
        Box::pin(async move {
            let known = self.known.lock().unwrap().get(&pod.container_id).copied();
            self.requests
                .lock()
                .unwrap()
                .push(AgentRequest::Check { pod });
            known.ok_or_else(|| HandlerError::unknown_pod("no such sandbox"))
        })
    }
}

struct Outcome {
    code: i32,
    stdout: Vec<u8>,
    stderr: String,
}

impl Outcome {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}); stderr: {}", self.stderr))
    }
}

fn prev_result() -> Value {
    json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "sandbox": "/var/run/netns/cni-77"}],
        "ips": [{"address": "10.244.1.7/24", "interface": 0}],
    })
}

fn net_conf(socket: &Path) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": "k8s-pod-network",
        "type": "ambit-cni",
        "agentSocket": socket,
        "agentConnectTimeoutMs": 2000,
        "prevResult": prev_result(),
    })
}

async fn plugin(command: &str, namespace: &str, conf: &Value) -> Outcome {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ambit-cni"))
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", "c0ffee01")
        .env("CNI_NETNS", "/var/run/netns/cni-77")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/opt/cni/bin")
        .env(
            "CNI_ARGS",
            format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME=web-0;K8S_POD_UID={UID}"
            ),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(conf.to_string().as_bytes()).await.unwrap();
    drop(stdin);
    let output = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    Outcome {
        code: output.status.code().unwrap(),
        stdout: output.stdout,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_check_del_through_the_agent() {
    let dir = TempDir::new();
    let server = Server::bind(dir.join("agent.sock")).unwrap();
    let socket = server.path().to_owned();
    let agent = Arc::new(RecordingAgent::default());
    let serving = tokio::spawn(server.serve_agent(agent.clone()));
    let conf = net_conf(&socket);

    let add = plugin("ADD", "shop", &conf).await;
    assert_eq!(add.code, 0, "stderr: {}", add.stderr);
    assert_eq!(add.json(), prev_result());
    assert!(add.stderr.contains("enrolled=true"), "{}", add.stderr);

    let check = plugin("CHECK", "shop", &conf).await;
    assert_eq!(check.code, 0, "stderr: {}", check.stderr);
    assert!(check.stdout.is_empty());

    let del = plugin("DEL", "shop", &conf).await;
    assert_eq!(del.code, 0, "stderr: {}", del.stderr);
    assert!(del.stdout.is_empty());

    // After DEL the agent no longer knows the sandbox, and CHECK says so.
    let check = plugin("CHECK", "shop", &conf).await;
    assert_eq!(check.code, 1);
    assert_eq!(check.json()["code"], 101);

    let expected = PodReport {
        container_id: "c0ffee01".into(),
        namespace: "shop".into(),
        name: "web-0".into(),
        uid: Some(UID.into()),
        service_account: None,
        netns: Some("/var/run/netns/cni-77".into()),
    };
    let requests = agent.requests.lock().unwrap().clone();
    assert_eq!(
        requests,
        [
            AgentRequest::Add {
                pod: expected.clone()
            },
            AgentRequest::Check {
                pod: expected.clone()
            },
            AgentRequest::Del {
                pod: expected.clone()
            },
            AgentRequest::Check { pod: expected },
        ]
    );
    serving.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_outside_the_mesh_and_excluded_namespaces() {
    let dir = TempDir::new();
    let server = Server::bind(dir.join("agent.sock")).unwrap();
    let socket = server.path().to_owned();
    let agent = Arc::new(RecordingAgent::default());
    let serving = tokio::spawn(server.serve_agent(agent.clone()));
    let mut conf = net_conf(&socket);

    let add = plugin("ADD", "batch", &conf).await;
    assert_eq!(add.code, 0, "stderr: {}", add.stderr);
    assert_eq!(add.json(), prev_result());
    assert!(add.stderr.contains("enrolled=false"), "{}", add.stderr);
    assert_eq!(agent.requests.lock().unwrap().len(), 1);

    conf["excludeNamespaces"] = json!(["kube-system"]);
    let add = plugin("ADD", "kube-system", &conf).await;
    assert_eq!(add.code, 0, "stderr: {}", add.stderr);
    assert_eq!(add.json(), prev_result());
    assert_eq!(
        agent.requests.lock().unwrap().len(),
        1,
        "excluded pod was reported"
    );
    serving.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_down_fails_add_and_tolerates_del() {
    let dir = TempDir::new();
    let conf = net_conf(&dir.join("nobody-listens.sock"));

    let add = plugin("ADD", "shop", &conf).await;
    assert_eq!(add.code, 1, "stderr: {}", add.stderr);
    let body = add.json();
    assert_eq!(body["code"], 11, "{body}");
    assert_eq!(body["cniVersion"], "1.0.0");
    assert!(
        body["msg"].is_string() && body["details"].is_string(),
        "{body}"
    );

    let del = plugin("DEL", "shop", &conf).await;
    assert_eq!(del.code, 0, "stderr: {}", del.stderr);
    assert!(del.stdout.is_empty());
    assert!(del.stderr.contains("not reached"), "{}", del.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_and_bad_input() {
    let dir = TempDir::new();
    let version = plugin("VERSION", "shop", &json!({"cniVersion": "0.4.0"})).await;
    assert_eq!(version.code, 0);
    assert_eq!(
        version.json(),
        json!({"cniVersion": "0.4.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]})
    );
    let bad = plugin("ADD", "shop", &json!("not an object")).await;
    assert_eq!(bad.code, 1);
    assert_eq!(bad.json()["code"], 6);
    let mut conf = net_conf(&dir.join("agent.sock"));
    conf["cniVersion"] = json!("0.2.0");
    let old = plugin("ADD", "shop", &conf).await;
    assert_eq!(old.code, 1);
    assert_eq!(old.json()["code"], 1);
}
