//! Runs the real `ambit-controller` binary on 127.0.0.1 ephemeral ports, with a temporary
//! config folder, state folder and token file, and talks to it as proxies do.

// Test helpers outside #[test] functions may panic on setup failures too.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, unreachable_pub)]

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ambit_api::{ConfigClient, ConfigClientOptions, ControllerEndpoint, ScopeKey};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

/// Upper bound for every wait on the controller.
pub const WAIT: Duration = Duration::from_secs(20);
const TRUST_DOMAIN: &str = "cluster.local";

/// The folders one controller (and its restarts) uses.
pub struct Dirs {
    root: tempfile::TempDir,
}

/// A running controller process; killed (SIGKILL) on drop.
pub struct Controller {
    child: Child,
    pub addrs: Addrs,
    log: PathBuf,
    /// The root the gRPC serving certificate chains to.
    roots: PathBuf,
}

/// What `--ready-file` says.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Addrs {
    pub grpc: SocketAddr,
    pub metrics: SocketAddr,
    pub readiness: SocketAddr,
}

impl Dirs {
    pub fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        for dir in ["config", "state"] {
            std::fs::create_dir(root.path().join(dir)).unwrap();
        }
        Self { root }
    }

    pub fn config(&self) -> PathBuf {
        self.root.path().join("config")
    }

    pub fn state(&self) -> PathBuf {
        self.root.path().join("state")
    }

    pub fn tokens(&self) -> PathBuf {
        self.root.path().join("tokens.yaml")
    }

    /// Writes a config file atomically (temporary file + rename), as editors and `kubectl`-like
    /// tools do, so the watcher never reads half a file.
    pub fn write_config(&self, name: &str, text: &str) {
        let temporary = self.root.path().join(format!(".{name}.tmp"));
        std::fs::write(&temporary, text).unwrap();
        std::fs::rename(&temporary, self.config().join(name)).unwrap();
    }
}

impl Controller {
    /// Starts the binary on ephemeral ports and waits until it is ready (first translation
    /// published).
    pub async fn start(dirs: &Dirs, extra: &[&str]) -> Self {
        Self::start_at(dirs, "127.0.0.1:0", extra).await
    }

    /// Like [`start`](Self::start) with a fixed gRPC address (a restart on the same port).
    pub async fn start_at(dirs: &Dirs, grpc: &str, extra: &[&str]) -> Self {
        let ready_file = dirs.root.path().join("ready.json");
        let _ = std::fs::remove_file(&ready_file);
        let log = dirs.root.path().join(format!(
            "controller-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let mut command = Command::new(env!("CARGO_BIN_EXE_ambit-controller"));
        command
            .arg("--config-dir")
            .arg(dirs.config())
            .arg("--state-dir")
            .arg(dirs.state())
            .arg("--ready-file")
            .arg(&ready_file)
            .args(["--grpc-addr", grpc, "--grpc-ip-san", "127.0.0.1"])
            .args(["--metrics-addr", "127.0.0.1:0"])
            .args(["--readiness-addr", "127.0.0.1:0"])
            .args(["--debounce-ms", "50", "--log-json"])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::inherit());
        if dirs.tokens().exists() {
            command.arg("--node-tokens").arg(dirs.tokens());
        }
        let mut child = command.spawn().unwrap();
        let addrs = tokio::time::timeout(WAIT, async {
            loop {
                if let Ok(text) = std::fs::read_to_string(&ready_file) {
                    return serde_json::from_str::<Addrs>(&text).unwrap();
                }
                if let Some(status) = child.try_wait().unwrap() {
                    panic!(
                        "controller exited early ({status}): {}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
                // A child process gives no event to await; poll its ready file.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("controller did not write its ready file");
        let roots = match extra.iter().position(|arg| *arg == "--ca-dir") {
            Some(index) => PathBuf::from(extra[index + 1]),
            None => dirs.state().join("ca"),
        }
        .join("root-cert.pem");
        let controller = Self {
            child,
            addrs,
            log,
            roots,
        };
        controller.wait_ready().await;
        controller
    }

    /// The gRPC port as the proxies reach it: TLS, trusting the controller's root.
    pub fn endpoint(&self) -> ControllerEndpoint {
        ControllerEndpoint::tls(
            format!("https://{}", self.addrs.grpc).parse().unwrap(),
            &self.roots,
            None,
        )
        .unwrap()
    }

    /// Waits for `/healthz/ready` to answer 200.
    pub async fn wait_ready(&self) {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Ok((200, _)) = http_get(self.addrs.readiness, "/healthz/ready").await {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("controller never became ready");
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        let (status, body) = http_get(self.addrs.metrics, "/metrics").await.unwrap();
        assert_eq!(status, 200);
        body
    }

    /// The JSON log lines written so far.
    pub fn log_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// Waits until a log line satisfies `pred`, and returns it.
    pub async fn wait_for_log(
        &self,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(line) = self.log_lines().into_iter().find(|l| pred(l)) {
                    return line;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no log line: {what}"))
    }

    /// SIGKILL: no graceful shutdown, as in a crash.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 GET; returns status and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
        .await
        .map_err(|_| std::io::Error::other("timeout"))??;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status line"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// The value of an unlabelled sample in Prometheus text.
pub fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let (key, value) = line.split_once(' ')?;
        (key == name).then(|| value.trim().parse().ok())?
    })
}

/// A ztunnel-like config client for node `index` ([`node_name`]), with its [`token`] (the
/// token file must be [`token_file`]).
pub fn node_client(controller: &Controller, index: usize) -> ConfigClient {
    client_with_token(controller, ScopeKey::node(node_name(index)), &token(index))
}

/// A config client for `scope` presenting `token`.
pub fn client_with_token(controller: &Controller, scope: ScopeKey, token: &str) -> ConfigClient {
    ConfigClient::start(
        controller.endpoint(),
        scope.clone(),
        ConfigClientOptions::new(format!("test/{scope}"))
            .with_backoff(Duration::from_millis(50), Duration::from_millis(200))
            .with_token(token)
            .unwrap(),
    )
}

/// Waits until `pred` holds for the watched value, bounded by [`WAIT`].
pub async fn wait_for<T>(rx: &mut watch::Receiver<T>, what: &str, pred: impl FnMut(&T) -> bool) {
    tokio::time::timeout(WAIT, rx.wait_for(pred))
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .expect("client dropped");
}

pub fn node_name(index: usize) -> String {
    format!("node-{index:02}")
}

/// A 16+ character token per node (and the waypoint's).
pub fn token(index: usize) -> String {
    format!("bootstrap-token-{index:04}")
}

pub const WAYPOINT_TOKEN: &str = "bootstrap-token-waypoint";

/// `nodes` nodes with one token each, and the token of the waypoint `shop/waypoint`.
pub fn token_file(nodes: usize) -> String {
    let mut text = String::from("nodes:\n");
    for index in 0..nodes {
        writeln!(text, "  {}: {}", node_name(index), token(index)).unwrap();
    }
    writeln!(text, "waypoints:\n  shop/waypoint: {WAYPOINT_TOKEN}").unwrap();
    text
}

/// The enrolled namespace `shop` and one pod `web-NN` (service account `sa-NN`, label
/// `app: web-NN`) on each of `nodes` nodes.
pub fn pods_yaml(nodes: usize) -> String {
    let mut text = String::from(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}\n",
    );
    for index in 0..nodes {
        pod_yaml(
            &mut text,
            &format!("web-{index:02}"),
            index,
            &node_name(index),
        );
    }
    text
}

/// Appends a running pod document.
pub fn pod_yaml(text: &mut String, name: &str, ip_index: usize, node: &str) {
    write!(
        text,
        "---\napiVersion: v1\nkind: Pod\n\
         metadata: {{name: {name}, namespace: shop, labels: {{app: {name}}}}}\n\
         spec: {{nodeName: {node}, serviceAccountName: sa-{name}, containers: [{{name: c, image: x}}]}}\n\
         status: {{phase: Running, podIP: 10.244.{}.{}}}\n",
        ip_index / 200,
        ip_index % 200 + 10
    )
    .unwrap();
}

/// An L4 ALLOW policy selecting `app: <app>` in `shop`.
pub fn policy_yaml(name: &str, app: &str) -> String {
    format!(
        "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
         metadata: {{name: {name}, namespace: shop}}\n\
         spec:\n  selector: {{matchLabels: {{app: {app}}}}}\n  action: ALLOW\n\
         \x20 rules: [{{from: [{{source: {{principals: [{TRUST_DOMAIN}/ns/shop/sa/client]}}}}]}}]\n"
    )
}

/// The identity of `sa` in `shop`.
pub fn identity(sa: &str) -> ambit_identity::SpiffeId {
    ambit_identity::SpiffeId::new(TRUST_DOMAIN, "shop", sa).unwrap()
}

/// The path of a file in the config folder, as the controller logs it.
pub fn config_file(dirs: &Dirs, name: &str) -> PathBuf {
    dirs.config().join(name)
}

pub fn file_name(path: &Path) -> &str {
    path.file_name().unwrap().to_str().unwrap()
}
