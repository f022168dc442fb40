//! Support for the end-to-end scenarios in `tests/`: a local mesh started from the workspace's
//! built binaries, plain app sockets inside pod namespaces, and bounded waits.
//!
//! The scenarios need root (network namespaces, nftables) and the workspace's binaries
//! (`cargo build --workspace`, which `cargo nextest run --workspace` does first).

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ambit_localmesh::{LocalMesh, MeshOptions};
use ambit_localnet::{Netns, Pod};
use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// Bound on one wait (a config push, a connection).
pub const WAIT: Duration = Duration::from_secs(20);
/// Bound on a whole scenario.
pub const SCENARIO: Duration = Duration::from_secs(180);

/// The directory holding the workspace's binaries: `$AMBIT_BIN_DIR` if set, else the build
/// directory (the test executable lives in its `deps/`).
pub fn bin_dir() -> Result<PathBuf> {
    let dir = match std::env::var_os("AMBIT_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => std::env::current_exe()
            .context("locating the test executable")?
            .parent()
            .and_then(|deps| deps.parent())
            .context("the test executable has no grandparent directory")?
            .to_owned(),
    };
    for binary in ["ambit-controller", "ztunnel", "waypoint"] {
        if !dir.join(binary).is_file() {
            bail!(
                "{} is missing: build the workspace first (cargo build --workspace)",
                dir.join(binary).display()
            );
        }
    }
    Ok(dir)
}

/// Starts a local mesh with `nodes` nodes in a fresh state folder named after `scenario`.
pub async fn mesh(scenario: &str, nodes: usize) -> Result<LocalMesh> {
    mesh_with(scenario, nodes, |_| {}).await
}

/// Like [`mesh`], with `configure` adjusting the options first (e.g. waypoint tracing).
pub async fn mesh_with(
    scenario: &str,
    nodes: usize,
    configure: impl FnOnce(&mut MeshOptions),
) -> Result<LocalMesh> {
    let state = std::env::temp_dir().join(format!("ambit-e2e-{scenario}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let mut options = MeshOptions::new(&state, bin_dir()?);
    options.name = format!("e2e-{scenario}");
    options.nodes = nodes;
    options.log_level = "info,ambit=debug".to_owned();
    configure(&mut options);
    Ok(LocalMesh::up(options).await?)
}

/// Applies a YAML stream and fails on any refused object.
pub async fn apply(mesh: &LocalMesh, origin: &str, yaml: &str) -> Result<()> {
    let report = mesh.apply(origin, yaml).await;
    if !report.errors.is_empty() {
        bail!("applying {origin}: {:?}", report.errors);
    }
    Ok(())
}

/// The pod `namespace/name`, or an error naming it.
pub fn pod(mesh: &LocalMesh, namespace: &str, name: &str) -> Result<Pod> {
    mesh.pod(namespace, name)
        .with_context(|| format!("no pod {namespace}/{name}"))
}

/// What `load get --json` reports.
#[derive(Debug, Default, Clone)]
pub struct LoadReport {
    /// Responses per status code.
    pub statuses: BTreeMap<u16, u64>,
    /// Responses per `version` the echo servers reported.
    pub versions: BTreeMap<String, u64>,
    /// Requests that got no response.
    pub transport_errors: u64,
    /// Fastest answered request (`None` when none was answered).
    pub latency_min: Option<Duration>,
    /// Slowest answered request.
    pub latency_max: Option<Duration>,
}

impl LoadReport {
    /// Responses with `status`.
    pub fn count(&self, status: u16) -> u64 {
        self.statuses.get(&status).copied().unwrap_or(0)
    }

    /// Whether all `requests` were answered with `status`.
    pub fn all(&self, status: u16, requests: u64) -> bool {
        self.count(status) == requests && self.transport_errors == 0
    }
}

/// Runs `load get URL -n N --json [-H …]` inside `pod` (a plain app, so ztunnel captures it).
pub async fn load(pod: &Pod, url: &str, requests: u32, headers: &[&str]) -> Result<LoadReport> {
    let mut command = pod.netns().command(bin_dir()?.join("load"));
    command.args([
        "get",
        url,
        "-n",
        &requests.to_string(),
        "--json",
        "--timeout",
        "5s",
    ]);
    for header in headers {
        command.args(["-H", header]);
    }
    let output = within("load", command.output()).await??;
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "load printed no JSON: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })?;
    let counts = |field: &str| -> BTreeMap<String, u64> {
        report[field]
            .as_object()
            .map(|map| {
                map.iter()
                    .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default()
    };
    let millis = |field: &str| {
        report["latencyMs"][field]
            .as_f64()
            .map(|ms| Duration::from_secs_f64(ms / 1e3))
    };
    Ok(LoadReport {
        statuses: counts("statuses")
            .into_iter()
            .filter_map(|(status, count)| Some((status.parse().ok()?, count)))
            .collect(),
        versions: counts("versions"),
        transport_errors: report["transportErrors"].as_u64().unwrap_or(0),
        latency_min: millis("min"),
        latency_max: millis("max"),
    })
}

/// Runs `load once URL [-H …]` inside `pod` and returns the echo server's JSON answer (which
/// describes the request as received, headers included).
pub async fn echo_once(pod: &Pod, url: &str, headers: &[&str]) -> Result<serde_json::Value> {
    let mut command = pod.netns().command(bin_dir()?.join("load"));
    command.args(["once", url, "--timeout", "5s"]);
    for header in headers {
        command.args(["-H", header]);
    }
    let output = within("load once", command.output()).await??;
    if !output.status.success() {
        bail!(
            "load once {url}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "{url} answered no JSON: {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// Runs a scenario body within [`SCENARIO`].
pub async fn bounded<F: Future<Output = Result<()>>>(body: F) -> Result<()> {
    tokio::time::timeout(SCENARIO, body)
        .await
        .context("scenario timed out")?
}

/// Bounds one wait by [`WAIT`].
pub async fn within<T>(what: &str, wait: impl Future<Output = T>) -> Result<T> {
    tokio::time::timeout(WAIT, wait)
        .await
        .with_context(|| format!("timed out: {what}"))
}

/// Polls `check` until it returns `Ok(true)`, bounded by [`WAIT`]; config pushes and
/// enrollment are asynchronous, and there is no event to await from outside the processes.
pub async fn eventually<F, Fut>(what: &str, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool>>,
{
    let mut last = None;
    let done = tokio::time::timeout(WAIT, async {
        loop {
            match check().await {
                Ok(true) => return,
                Ok(false) => last = None,
                Err(err) => last = Some(err),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    match (done, last) {
        (Ok(()), _) => Ok(()),
        (Err(_), Some(err)) => Err(err.context(format!("timed out: {what}"))),
        (Err(_), None) => bail!("timed out: {what}"),
    }
}

/// A TCP echo server inside a pod: greets with `greeting`, then echoes; counts connections.
#[derive(Debug)]
pub struct Echo {
    accepted: Arc<AtomicUsize>,
    peers: Arc<std::sync::Mutex<Vec<SocketAddr>>>,
    task: JoinHandle<()>,
}

impl Echo {
    /// Listens on `addr` inside `netns`.
    pub fn start(netns: &Netns, addr: SocketAddr, greeting: &'static [u8]) -> Result<Self> {
        let listener = netns.bind_tcp(addr)?;
        let accepted = Arc::new(AtomicUsize::new(0));
        let peers = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (count, seen) = (accepted.clone(), peers.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut stream, peer)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                if let Ok(mut peers) = seen.lock() {
                    peers.push(peer);
                }
                tokio::spawn(async move {
                    let (mut read, mut write) = stream.split();
                    if write.write_all(greeting).await.is_ok() {
                        let _ = tokio::io::copy(&mut read, &mut write).await;
                    }
                });
            }
        });
        Ok(Self {
            accepted,
            peers,
            task,
        })
    }

    /// Connections accepted so far.
    pub fn count(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// The peer addresses seen so far.
    pub fn peers(&self) -> Vec<SocketAddr> {
        self.peers.lock().map(|p| p.clone()).unwrap_or_default()
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Connects from inside `from` as an app would (a plain socket, so ztunnel captures it), sends
/// `ping` after the greeting, and returns the greeting bytes received (empty when the
/// connection was refused, reset or closed before any byte).
pub async fn exchange(from: &Netns, to: SocketAddr, greeting_len: usize) -> Result<Vec<u8>> {
    let socket = from.tcp_socket(to)?;
    let mut stream: TcpStream = match within("connect", socket.connect(to)).await? {
        Ok(stream) => stream,
        Err(_) => return Ok(Vec::new()),
    };
    let mut got = vec![0; greeting_len];
    let mut read = 0;
    while read < greeting_len {
        match within("reading the greeting", stream.read(&mut got[read..])).await? {
            Ok(0) | Err(_) => break,
            Ok(n) => read += n,
        }
    }
    got.truncate(read);
    if read == greeting_len {
        stream.write_all(b"ping").await?;
        let mut echoed = [0; 4];
        within("reading the echo", stream.read_exact(&mut echoed)).await??;
        if &echoed != b"ping" {
            bail!("echo returned {echoed:?}");
        }
    }
    Ok(got)
}
