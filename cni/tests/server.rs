//! The node-agent server against the blocking client and raw sockets.
#![allow(
    clippy::unwrap_used,
    reason = "test handlers: a failure is a test failure"
)]

mod common;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ambit_cni::client::{Client, ClientConfig, ClientError};
use ambit_cni::protocol::{
    AgentRequest, ErrorKind, MAX_MESSAGE_BYTES, PodInfo, PodReport, Reply, ZtunnelRequest,
};
use ambit_cni::server::{BoxFuture, EnrollmentHandler, HandlerError, PodEventHandler, Server};
use ambit_cni::snapshot::{PodSet, SnapshotPlan};
use common::{RawConn, TempDir, WAIT};
use serde_json::json;
use tokio::task::JoinHandle;

/// ztunnel's side, reduced to bookkeeping: the set of enrolled pods and every plan applied.
#[derive(Default)]
struct Recorder {
    pods: Mutex<PodSet>,
    plans: Mutex<Vec<SnapshotPlan>>,
}

impl EnrollmentHandler for Recorder {
    fn enroll(&self, pod: PodInfo) -> BoxFuture<'_, Result<(), HandlerError>> {
        Box::pin(async move {
            match pod.name.as_str() {
                "fails" => Err(HandlerError::unavailable("netns not ready")),
                "hangs" => std::future::pending().await,
                _ => {
                    self.pods.lock().unwrap().enroll(pod);
                    Ok(())
                }
            }
        })
    }

    fn unenroll(&self, uid: String) -> BoxFuture<'_, Result<(), HandlerError>> {
        Box::pin(async move {
            self.pods.lock().unwrap().unenroll(&uid);
            Ok(())
        })
    }

    fn snapshot(&self, pods: Vec<PodInfo>) -> BoxFuture<'_, Result<(), HandlerError>> {
        Box::pin(async move {
            let mut set = self.pods.lock().unwrap();
            let plan = set.plan(&pods);
            set.apply(&plan);
            self.plans.lock().unwrap().push(plan);
            Ok(())
        })
    }
}

impl Recorder {
    fn uids(&self) -> Vec<String> {
        self.pods
            .lock()
            .unwrap()
            .iter()
            .map(|p| p.uid.clone())
            .collect()
    }
}

struct Running {
    path: PathBuf,
    task: JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn pod(uid: &str, name: &str) -> PodInfo {
    PodInfo {
        uid: uid.into(),
        namespace: "shop".into(),
        name: name.into(),
        service_account: "web".into(),
        netns: format!("/var/run/netns/{uid}"),
    }
}

fn start(path: &Path, handler: Arc<Recorder>) -> Running {
    let server = Server::bind(path).unwrap();
    Running {
        path: server.path().to_owned(),
        task: tokio::spawn(server.serve_ztunnel(handler)),
    }
}

fn config(call_timeout: Duration) -> ClientConfig {
    ClientConfig {
        connect_timeout: Duration::from_secs(5),
        call_timeout,
    }
}

/// Runs blocking client code off the runtime, bounded in time.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::time::timeout(WAIT, tokio::task::spawn_blocking(f))
        .await
        .unwrap()
        .unwrap()
}

fn call(
    path: &Path,
    requests: Vec<ZtunnelRequest>,
) -> impl FnOnce() -> Result<Vec<Reply>, ClientError> + Send + 'static {
    let path = path.to_owned();
    move || {
        let mut client = Client::<ZtunnelRequest>::connect(&path, &config(WAIT))?;
        requests.iter().map(|r| client.call(r)).collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_after_reconnect_replaces_the_set() {
    let dir = TempDir::new();
    let recorder = Arc::new(Recorder::default());
    let server = start(&dir.join("zt.sock"), recorder.clone());

    let replies = blocking(call(
        &server.path,
        vec![
            ZtunnelRequest::Enroll {
                pod: pod("a", "web-a"),
            },
            ZtunnelRequest::Enroll {
                pod: pod("b", "web-b"),
            },
            ZtunnelRequest::Unenroll {
                uid: "never-enrolled".into(),
            },
        ],
    ))
    .await
    .unwrap();
    assert_eq!(replies, vec![Reply::ack(); 3]);
    assert_eq!(recorder.uids(), ["a", "b"]);

    // A new connection (the agent reconnecting after a restart) starts with a snapshot.
    let replies = blocking(call(
        &server.path,
        vec![ZtunnelRequest::Snapshot {
            pods: vec![pod("b", "web-b"), pod("c", "web-c")],
        }],
    ))
    .await
    .unwrap();
    assert_eq!(replies, [Reply::ack()]);
    assert_eq!(recorder.uids(), ["b", "c"]);
    let plans = recorder.plans.lock().unwrap().clone();
    assert_eq!(plans.len(), 1);
    assert_eq!(plans[0].unenroll, ["a"]);
    assert_eq!(plans[0].enroll, [pod("c", "web-c")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_close_only_their_connection() {
    let dir = TempDir::new();
    let recorder = Arc::new(Recorder::default());
    let server = start(&dir.join("zt.sock"), recorder.clone());
    let bad_inputs: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"not json\n".to_vec()),
        ("unknown type", b"{\"type\":\"reboot\"}\n".to_vec()),
        ("unknown field", b"{\"type\":\"unenroll\",\"uid\":\"a\",\"x\":1}\n".to_vec()),
        ("wrong type", b"{\"type\":\"unenroll\",\"uid\":5}\n".to_vec()),
        (
            "invalid field",
            br#"{"type":"enroll","pod":{"uid":"a","namespace":"Shop","name":"p","service_account":"s","netns":"/x"}}"#
                .iter()
                .chain(b"\n")
                .copied()
                .collect(),
        ),
        // Exactly the limit without a newline: the server has read every byte when it refuses.
        ("oversize", vec![b'x'; MAX_MESSAGE_BYTES]),
    ];
    // A well-behaved client stays connected throughout.
    let path = server.path.clone();
    let mut good = blocking(move || Client::<ZtunnelRequest>::connect(&path, &config(WAIT)))
        .await
        .unwrap();
    for (label, bytes) in bad_inputs {
        let mut raw = RawConn::connect(&server.path).await;
        raw.send(b"{\"type\":\"hello\",\"version\":1}\n").await;
        assert_eq!(raw.recv().await, Some(json!({"type": "ack"})), "{label}");
        raw.send(&bytes).await;
        let reply = raw.recv().await.unwrap();
        assert_eq!(reply["type"], "error", "{label}: {reply}");
        assert_eq!(reply["kind"], "invalid", "{label}: {reply}");
        assert_eq!(raw.recv().await, None, "{label}: connection must be closed");

        let (client, reply) = blocking(move || {
            let reply = good.call(&ZtunnelRequest::Unenroll { uid: "z".into() });
            (good, reply)
        })
        .await;
        good = client;
        assert_eq!(reply.unwrap(), Reply::ack(), "{label}");
    }
    assert!(recorder.uids().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_message_gets_an_error() {
    let dir = TempDir::new();
    let server = start(&dir.join("zt.sock"), Arc::new(Recorder::default()));
    let mut raw = RawConn::connect(&server.path).await;
    raw.send(b"{\"type\":\"hello\",\"version\":1}\n{\"type\":\"unen")
        .await;
    assert_eq!(raw.recv().await, Some(json!({"type": "ack"})));
    raw.shutdown_write().await;
    let reply = raw.recv().await.unwrap();
    assert_eq!(reply["kind"], "invalid", "{reply}");
    assert!(
        reply["message"].as_str().unwrap().contains("unterminated"),
        "{reply}"
    );
    assert_eq!(raw.recv().await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_comes_first_once_with_our_version() {
    let dir = TempDir::new();
    let server = start(&dir.join("zt.sock"), Arc::new(Recorder::default()));
    let cases: [(&[u8], &str); 3] = [
        (b"{\"type\":\"unenroll\",\"uid\":\"a\"}\n", "expected hello"),
        (b"{\"type\":\"hello\",\"version\":2}\n", "version 2"),
        (
            b"{\"type\":\"hello\",\"version\":1}\n{\"type\":\"hello\",\"version\":1}\n",
            "twice",
        ),
    ];
    for (bytes, mentions) in cases {
        let mut raw = RawConn::connect(&server.path).await;
        raw.send(bytes).await;
        let mut reply = raw.recv().await.unwrap();
        if reply["type"] == "ack" {
            reply = raw.recv().await.unwrap();
        }
        assert_eq!(reply["kind"], "invalid", "{reply}");
        assert!(
            reply["message"].as_str().unwrap().contains(mentions),
            "{reply}"
        );
        assert_eq!(raw.recv().await, None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_errors_keep_the_connection_open() {
    let dir = TempDir::new();
    let recorder = Arc::new(Recorder::default());
    let server = start(&dir.join("zt.sock"), recorder.clone());
    let replies = blocking(call(
        &server.path,
        vec![
            ZtunnelRequest::Enroll {
                pod: pod("f", "fails"),
            },
            ZtunnelRequest::Enroll {
                pod: pod("a", "web-a"),
            },
        ],
    ))
    .await
    .unwrap();
    assert_eq!(
        replies,
        [
            Reply::error(ErrorKind::Unavailable, "netns not ready"),
            Reply::ack()
        ]
    );
    assert_eq!(recorder.uids(), ["a"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reports_timeouts_and_absent_servers() {
    let dir = TempDir::new();
    let missing = dir.join("missing.sock");
    let err = blocking(move || {
        Client::<ZtunnelRequest>::connect(&missing, &ClientConfig::default()).map(|_| ())
    })
    .await
    .unwrap_err();
    assert!(err.is_unavailable(), "{err}");

    let server = start(&dir.join("zt.sock"), Arc::new(Recorder::default()));
    let path = server.path.clone();
    let err = blocking(move || {
        let mut client =
            Client::<ZtunnelRequest>::connect(&path, &config(Duration::from_millis(200)))?;
        client.call(&ZtunnelRequest::Enroll {
            pod: pod("h", "hangs"),
        })?;
        Ok::<_, ClientError>(())
    })
    .await
    .unwrap_err();
    assert!(err.is_timeout(), "{err}");

    // The client refuses to send an invalid request at all.
    let path = server.path.clone();
    let err = blocking(move || {
        let mut client = Client::<ZtunnelRequest>::connect(&path, &config(WAIT))?;
        client.call(&ZtunnelRequest::Unenroll { uid: String::new() })?;
        Ok::<_, ClientError>(())
    })
    .await
    .unwrap_err();
    assert!(err.is_invalid_request(), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_is_private_and_stale_files_are_replaced() {
    let dir = TempDir::new();
    let path = dir.join("zt.sock");
    let first = start(&path, Arc::new(Recorder::default()));
    let metadata = std::fs::symlink_metadata(&path).unwrap();
    assert!(metadata.file_type().is_socket());
    assert_eq!(metadata.permissions().mode() & 0o777, 0o600);
    // Nothing but the socket is left in the directory.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

    // A live server is never replaced.
    let err = Server::bind(&path).unwrap_err();
    assert!(err.is_in_use(), "{err}");

    // Once it is gone the file is stale, and the next server takes over.
    drop(first);
    let recorder = Arc::new(Recorder::default());
    let second = tokio::time::timeout(WAIT, async {
        loop {
            match Server::bind(&path) {
                Ok(server) => break server,
                // The aborted task may not have released the listener yet.
                Err(e) if e.is_in_use() => tokio::task::yield_now().await,
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await
    .unwrap();
    let _second = Running {
        path: path.clone(),
        task: tokio::spawn(second.serve_ztunnel(recorder.clone())),
    };
    let replies = blocking(call(
        &path,
        vec![ZtunnelRequest::Enroll {
            pod: pod("a", "web-a"),
        }],
    ))
    .await
    .unwrap();
    assert_eq!(replies, [Reply::ack()]);
    assert_eq!(recorder.uids(), ["a"]);

    // Something that is not a socket is left alone.
    let file = dir.join("not-a-socket");
    std::fs::write(&file, b"keep me").unwrap();
    let err = Server::bind(&file).unwrap_err();
    assert!(!err.is_in_use());
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
}

/// The node agent's side of the CNI conversation.
struct Agent;

impl PodEventHandler for Agent {
    fn add(&self, pod: PodReport) -> BoxFuture<'_, Result<bool, HandlerError>> {
        Box::pin(async move { Ok(pod.namespace == "shop") })
    }

    fn del(&self, _pod: PodReport) -> BoxFuture<'_, Result<(), HandlerError>> {
        Box::pin(async { Ok(()) })
    }

    fn check(&self, pod: PodReport) -> BoxFuture<'_, Result<bool, HandlerError>> {
        Box::pin(async move { Err(HandlerError::unknown_pod(pod.name)) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_server_answers_cni_requests() {
    let dir = TempDir::new();
    let server = Server::bind(dir.join("agent.sock")).unwrap();
    let path = server.path().to_owned();
    let _running = Running {
        path: path.clone(),
        task: tokio::spawn(server.serve_agent(Arc::new(Agent))),
    };
    let report = PodReport {
        container_id: "abc123".into(),
        namespace: "shop".into(),
        name: "web-0".into(),
        uid: None,
        service_account: None,
        netns: Some("/proc/1/ns/net".into()),
    };
    let replies = blocking(move || {
        let mut client = Client::<AgentRequest>::connect(&path, &config(WAIT)).unwrap();
        [
            AgentRequest::Add {
                pod: report.clone(),
            },
            AgentRequest::Check {
                pod: report.clone(),
            },
            AgentRequest::Del { pod: report },
        ]
        .iter()
        .map(|r| client.call(r).unwrap())
        .collect::<Vec<_>>()
    })
    .await;
    assert_eq!(
        replies,
        [
            Reply::Ack {
                enrolled: Some(true)
            },
            Reply::error(ErrorKind::UnknownPod, "web-0"),
            Reply::ack(),
        ]
    );
    // A ztunnel request is not accepted by the agent server.
    let mut raw = RawConn::connect(&_running.path).await;
    raw.send(b"{\"type\":\"hello\",\"version\":1}\n{\"type\":\"unenroll\",\"uid\":\"a\"}\n")
        .await;
    assert_eq!(raw.recv().await, Some(json!({"type": "ack"})));
    assert_eq!(raw.recv().await.unwrap()["kind"], "invalid");
}
