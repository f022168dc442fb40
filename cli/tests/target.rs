//! The `ambit` binary picks its target: a running local mesh daemon, else the kubeconfig's
//! cluster, else a clear error. The daemon and the API server here are small fakes (a unix
//! socket answering one JSON line, a plain HTTP server answering canned JSON) so the real
//! flag parsing, kubeconfig loading and HTTP client are exercised.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Helpers outside #[test] fns panic on purpose.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use serde_json::{Value, json};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ambit-target-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the binary with no ambient cluster configuration: `HOME` and `KUBECONFIG` point into
/// `dir`, in-cluster variables are removed.
fn ambit(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_ambit"))
        .args(args)
        .env("AMBIT_LOCAL_DIR", dir.join("state"))
        .env("HOME", dir)
        .env("KUBECONFIG", dir.join("no-kubeconfig"))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn without_a_local_mesh_or_a_kubeconfig_the_error_names_both() {
    let dir = scratch("neither");
    let (code, stdout, stderr) = ambit(&dir, &["waypoint", "list"]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stderr.contains("no local mesh is running"), "{stderr}");
    assert!(stderr.contains("no cluster is configured"), "{stderr}");
    assert!(stderr.contains("ambit local up"), "{stderr}");
    assert!(stderr.contains("--kubeconfig"), "{stderr}");

    // Asked for a cluster explicitly: only the kubeconfig is the problem.
    let missing = dir.join("missing.yaml");
    let (code, _, stderr) = ambit(
        &dir,
        &[
            "--kubeconfig",
            missing.to_str().unwrap(),
            "waypoint",
            "list",
        ],
    );
    assert_eq!(code, 1);
    assert!(
        stderr.contains("loading the cluster configuration: reading") && !stderr.contains("local"),
        "{stderr}"
    );

    // Asked for local mode explicitly: the daemon's own message.
    let (code, _, stderr) = ambit(&dir, &["--local", "waypoint", "list"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("start one with `ambit local up`"),
        "{stderr}"
    );

    // Target flags on a verb that has no cluster side are a usage error.
    let (code, _, stderr) = ambit(&dir, &["--cluster", "local", "get", "pods"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("not to `local`"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A fake local mesh daemon answering every request with `answer`; sends each request it
/// reads.
fn fake_daemon(state: &Path, answer: Value) -> mpsc::Receiver<Value> {
    std::fs::create_dir_all(state).unwrap();
    let listener = UnixListener::bind(state.join("ambit-local.sock")).unwrap();
    let (requests, received) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let mut line = String::new();
            BufReader::new(&stream).read_line(&mut line).unwrap();
            // The target probe connects and closes without a request.
            if line.is_empty() {
                continue;
            }
            let _ = requests.send(serde_json::from_str(&line).unwrap());
            writeln!(stream, "{answer}").unwrap();
        }
    });
    received
}

#[test]
fn a_running_local_mesh_is_the_default_target() {
    let dir = scratch("local");
    let table = json!({
        "result": "table",
        "header": ["NAMESPACE", "NAME", "FOR", "ADDRESS", "PROCESS"],
        "rows": [["shop", "wp", "service", "10.0.1.9", "running"]],
    });
    let daemon = fake_daemon(&dir.join("state"), table);
    let (code, stdout, stderr) = ambit(&dir, &["waypoint", "list"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(
        stdout,
        "NAMESPACE  NAME  FOR      ADDRESS   PROCESS\nshop       wp    service  10.0.1.9  running\n"
    );
    let request = daemon.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(request, json!({"op": "getWaypoints"}));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_local_delete_of_a_missing_waypoint_fails_unless_told_to_ignore_it() {
    let dir = scratch("local-delete");
    // What the daemon reports for an object it does not hold.
    let missing =
        json!({"result": "report", "done": [], "errors": ["Gateway shop/gone: not found"]});
    let daemon = fake_daemon(&dir.join("state"), missing);
    let delete = ["waypoint", "delete", "-n", "shop", "--name", "gone"];
    let (code, _, stderr) = ambit(&dir, &delete);
    assert_eq!(code, 1);
    assert_eq!(stderr, "ambit: Gateway shop/gone: not found\n");
    let request = daemon.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(request["op"], "delete");
    assert!(
        request["text"].as_str().unwrap().contains("name: gone"),
        "{request}"
    );
    let (code, stdout, stderr) = ambit(&dir, &[&delete[..], &["--ignore-not-found"]].concat());
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(stdout, "waypoint shop/gone not found; nothing to delete\n");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A plain-HTTP API server answering GETs by path from `routes`; records request lines.
fn fake_api_server(routes: Vec<(String, Value)>) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if stream.read(&mut byte).unwrap_or(0) == 0 {
                    break;
                }
                head.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&head).into_owned();
            let request_line = head.lines().next().unwrap_or_default().to_owned();
            let target = request_line.split(' ').nth(1).unwrap_or_default();
            let path = target.split('?').next().unwrap_or_default();
            log.lock().unwrap().push(request_line.clone());
            let (status, body) = match routes.iter().find(|(route, _)| route == path) {
                Some((_, body)) => ("200 OK", body.to_string()),
                None => (
                    "404 Not Found",
                    json!({"kind": "Status", "code": 404}).to_string(),
                ),
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (address, seen)
}

fn kubeconfig(dir: &Path, server: &str) -> PathBuf {
    let path = dir.join("kubeconfig.yaml");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: other\n\
             clusters:\n- name: fake\n  cluster: {{server: \"{server}\"}}\n\
             - name: elsewhere\n  cluster: {{server: \"http://127.0.0.1:1\"}}\n\
             users:\n- name: dev\n  user: {{}}\n\
             contexts:\n- name: fake\n  context: {{cluster: fake, user: dev}}\n\
             - name: other\n  context: {{cluster: elsewhere, user: dev}}\n"
        ),
    )
    .unwrap();
    path
}

#[test]
fn the_kubeconfig_and_context_flags_reach_that_cluster() {
    let dir = scratch("cluster");
    let gateways = json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "GatewayList",
        "metadata": {"resourceVersion": "3"},
        "items": [{
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": "wp", "namespace": "shop", "labels": {"istio.io/waypoint-for": "workload"}},
            "spec": {"gatewayClassName": "istio-waypoint", "listeners": []},
            "status": {
                "addresses": [{"value": "10.244.1.9"}],
                "conditions": [{"type": "Programmed", "status": "True", "reason": "Programmed",
                                "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
            },
        }],
    });
    let ztunnels = json!({
        "apiVersion": "v1",
        "kind": "PodList",
        "metadata": {"resourceVersion": "3"},
        "items": [{
            "metadata": {"name": "ztunnel-x", "namespace": "mesh"},
            "spec": {"nodeName": "node-a", "containers": [{"name": "ztunnel"}]},
            "status": {"phase": "Running"},
        }],
    });
    let (server, seen) = fake_api_server(vec![
        (
            "/apis/gateway.networking.k8s.io/v1/namespaces/shop/gateways".to_owned(),
            gateways,
        ),
        ("/api/v1/namespaces/mesh/pods".to_owned(), ztunnels),
    ]);
    let config = kubeconfig(&dir, &server);
    let config = config.to_str().unwrap();

    let fake = ["--kubeconfig", config, "--context", "fake"];
    let (code, stdout, stderr) = ambit(
        &dir,
        &[&fake[..], &["waypoint", "list", "-n", "shop"]].concat(),
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(
        stdout,
        "NAMESPACE  NAME  FOR       ADDRESS     PROGRAMMED\nshop       wp    workload  10.244.1.9  True\n"
    );

    // ztunnel-config finds the ztunnel there (reading it takes a port-forward, which this
    // fake cannot do: see cluster_ztunnel.rs for the whole path).
    let ztunnel = "ztunnel-config certificates --node node-a --ztunnel-namespace mesh";
    let args: Vec<&str> = fake.into_iter().chain(ztunnel.split_whitespace()).collect();
    let (code, stdout, stderr) = ambit(&dir, &args);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains("ztunnel pod mesh/ztunnel-x (node node-a) through a port-forward")
            && stderr.contains("refused the port-forward (404 Not Found)"),
        "{stderr}"
    );

    let lines = seen.lock().unwrap().clone();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        lines[0].starts_with("GET /apis/gateway.networking.k8s.io/v1/namespaces/shop/gateways"),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with("GET /api/v1/namespaces/mesh/pods?")
            && lines[1].contains("fieldSelector=spec.nodeName%3Dnode-a"),
        "{lines:?}"
    );
    assert!(
        lines[2].starts_with("GET /api/v1/namespaces/mesh/pods/ztunnel-x/portforward?"),
        "{lines:?}"
    );

    // A missing waypoint: exit 1 and say so, or 0 with --ignore-not-found.
    let delete = ["waypoint", "delete", "-n", "shop", "--name", "gone"];
    let (code, stdout, stderr) = ambit(&dir, &[&fake[..], &delete].concat());
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert_eq!(stderr, "ambit: waypoint shop/gone not found\n");
    let ignoring = [&fake[..], &delete, &["--ignore-not-found"]].concat();
    let (code, stdout, stderr) = ambit(&dir, &ignoring);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(stdout, "waypoint shop/gone not found; nothing to delete\n");

    // Without --context, the current context (`other`, nothing listening) is used.
    let (code, _, stderr) = ambit(&dir, &["--kubeconfig", config, "waypoint", "list"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("listing Gateways"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}
