//! The real `ztunnel` binary in a node's namespace, and the node agent's side of enrollment.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use ambit_cni::client::{Client, ClientConfig};
use ambit_cni::protocol::{PodInfo, Reply, ZtunnelRequest};
use ambit_localnet::{Netns, Node, Pod};
use anyhow::{Context, Result, bail, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Child;

use super::{app_connect, within};

/// A ztunnel process in a node's namespace; killed when dropped.
pub(crate) struct Ztunnel {
    _child: Child,
    socket: PathBuf,
}

impl Ztunnel {
    /// The process id, while it runs (`ip netns exec` execs, so it is ztunnel's own).
    pub(crate) fn pid(&self) -> Option<u32> {
        self._child.id()
    }

    /// Sends SIGTERM (graceful drain).
    pub(crate) async fn terminate(&self) -> Result<()> {
        let pid = self.pid().context("ztunnel already exited")?;
        let status = tokio::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await?;
        ensure!(status.success(), "kill -TERM {pid}: {status}");
        Ok(())
    }

    /// Whether the process has exited (without waiting).
    pub(crate) fn has_exited(&mut self) -> Result<bool> {
        Ok(self._child.try_wait()?.is_some())
    }

    /// Waits (bounded) for the process to exit and returns its status.
    pub(crate) async fn wait(mut self) -> Result<std::process::ExitStatus> {
        within("ztunnel to exit", self._child.wait())
            .await?
            .map_err(Into::into)
    }

    /// Kills the process (SIGKILL) and waits for it.
    pub(crate) async fn kill(mut self) -> Result<()> {
        within("ztunnel to die", self._child.kill()).await??;
        Ok(())
    }
}

pub(crate) fn workload_yaml(pod: &Pod, uid: &str) -> String {
    format!(
        "  - {{uid: {uid}, name: {name}, namespace: {ns}, serviceAccount: {name}, node: {node}, ips: [{ip}], protocol: HBONE}}\n",
        name = pod.name(),
        ns = pod.namespace(),
        node = pod.node(),
        ip = pod.ip(),
    )
}

/// Starts ztunnel with debug logs (tests read them on failure).
pub(crate) async fn start_ztunnel(node: &Node, dir: &Path) -> Result<Ztunnel> {
    start_ztunnel_logging(node, dir, "debug").await
}

/// Starts ztunnel in `node`'s namespace with `RUST_LOG=log_level`, reading `dir/config.yaml`
/// and the CA in `dir/ca`; ready once its node-agent socket exists.
pub(crate) async fn start_ztunnel_logging(
    node: &Node,
    dir: &Path,
    log_level: &str,
) -> Result<Ztunnel> {
    start_ztunnel_with(node, dir, log_level, &[]).await
}

/// Like [`start_ztunnel_logging`], with `extra` command-line flags; a socket or log left by
/// an earlier run on this node is replaced.
pub(crate) async fn start_ztunnel_with(
    node: &Node,
    dir: &Path,
    log_level: &str,
    extra: &[&str],
) -> Result<Ztunnel> {
    let source = vec![
        "--config".into(),
        dir.join("config.yaml").into_os_string(),
        "--ca-dir".into(),
        dir.join("ca").into_os_string(),
    ];
    spawn_ztunnel(node, dir, log_level, source, extra).await
}

/// Starts ztunnel in `node`'s namespace taking config and certificates from the controller
/// that `controller` names (`--controller URL` and its TLS flags), authenticated by the token
/// in `token_file`.
pub(crate) async fn start_ztunnel_with_controller(
    node: &Node,
    dir: &Path,
    controller: &[String],
    token_file: &Path,
) -> Result<Ztunnel> {
    let mut source: Vec<std::ffi::OsString> = controller.iter().map(Into::into).collect();
    source.extend(["--token-file".into(), token_file.as_os_str().to_owned()]);
    spawn_ztunnel(node, dir, "debug", source, &[]).await
}

async fn spawn_ztunnel(
    node: &Node,
    dir: &Path,
    log_level: &str,
    source: Vec<std::ffi::OsString>,
    extra: &[&str],
) -> Result<Ztunnel> {
    let socket = dir.join(format!("{}.sock", node.name()));
    if socket.exists() {
        std::fs::remove_file(&socket)?;
    }
    let log = std::fs::File::create(dir.join(format!("{}.log", node.name())))?;
    let child = node
        .netns()
        .command(env!("CARGO_BIN_EXE_ztunnel"))
        .args(source)
        .args(["--node", node.name()])
        .arg("--node-agent-socket")
        .arg(&socket)
        .args(extra)
        .env("RUST_LOG", log_level)
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .context("starting ztunnel")?;
    // Ready to enroll once the node-agent socket exists (bounded: `bounded` wraps the test).
    within("node-agent socket", async {
        while !socket.exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await?;
    Ok(Ztunnel {
        _child: child,
        socket,
    })
}

/// Acts as the node agent: sends the node's snapshot and waits for the ack (which ztunnel
/// gives once the pods' certificates, rules and listeners are in place).
pub(crate) async fn enroll(ztunnel: &Ztunnel, pod: &Pod, uid: &str) -> Result<()> {
    snapshot(ztunnel, &[(pod, uid)]).await
}

/// Acts as the node agent: sends a snapshot of exactly `pods` (pod, uid; the service
/// account is the pod's name) and waits for the ack. An empty list unenrolls every pod.
pub(crate) async fn snapshot(ztunnel: &Ztunnel, pods: &[(&Pod, &str)]) -> Result<()> {
    let socket = ztunnel.socket.clone();
    let pods: Vec<PodInfo> = pods
        .iter()
        .map(|(pod, uid)| PodInfo {
            uid: (*uid).to_owned(),
            namespace: pod.namespace().to_owned(),
            name: pod.name().to_owned(),
            service_account: pod.name().to_owned(),
            netns: pod.netns().path().display().to_string(),
        })
        .collect();
    let reply = tokio::task::spawn_blocking(move || {
        let config = ClientConfig {
            connect_timeout: Duration::from_secs(5),
            call_timeout: Duration::from_secs(30),
        };
        let mut client = Client::<ZtunnelRequest>::connect(&socket, &config)?;
        client.call(&ZtunnelRequest::Snapshot { pods })
    })
    .await??;
    match reply {
        Reply::Ack { .. } => Ok(()),
        Reply::Error { kind, message } => bail!("enroll refused ({kind}): {message}"),
    }
}

/// `GET path` over HTTP/1.1 on `addr` from inside `netns` (ztunnel's metrics and admin
/// servers listen in the node's namespace); returns the body of a 200.
pub(crate) async fn http_get(
    netns: &Netns,
    addr: std::net::SocketAddr,
    path: &str,
) -> Result<String> {
    let mut stream = within("connecting to the node's server", netns.connect_tcp(addr)).await??;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .with_context(|| format!("sending GET {path}"))?;
    let mut response = Vec::new();
    within("reading the response", stream.read_to_end(&mut response))
        .await?
        .with_context(|| format!("reading the response to GET {path}"))?;
    let response = String::from_utf8(response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("no end of headers")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("GET {path}: {head}");
    }
    Ok(body.to_owned())
}

/// Connects from the client pod as an app; returns what arrives before EOF/reset (at most
/// `greeting_len` bytes) after sending `ping`; a connection reset while connecting counts as
/// nothing received.
pub(crate) async fn exchange(from: &Pod, to: SocketAddr, greeting_len: usize) -> Result<Vec<u8>> {
    let mut stream = match app_connect(from.netns(), to).await {
        Ok(stream) => stream,
        // A reset that lands before the connect is reported (a fast refusal) is still a
        // refusal: nothing was received.
        Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => return Ok(Vec::new()),
        Err(err) => return Err(err.into()),
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
        ensure!(&echoed == b"ping", "echo returned {echoed:?}");
    }
    Ok(got)
}

/// A fresh config directory for a bed: a new CA in `dir/ca` and `config` in
/// `dir/config.yaml`; the CA is returned so a test can issue certificates of its own.
pub(crate) fn prepare_dir(
    bed: &super::Bed,
    name: &str,
    config: &str,
) -> Result<(PathBuf, ambit_identity::CertificateAuthority)> {
    let dir = std::env::temp_dir().join(format!("ambit-{name}-{}", bed.cluster.prefix()));
    std::fs::create_dir_all(&dir)?;
    let ca = ambit_identity::CertificateAuthority::generate(
        "cluster.local",
        ambit_identity::CaOptions::default(),
    )?;
    ambit_ztunnel::certs::write_ca(&ca, &dir.join("ca"))?;
    std::fs::write(dir.join("config.yaml"), config)?;
    Ok((dir, ca))
}

/// The JSON access-log records (`--log-json`) in `log` whose fields include every
/// `(field, value)` of `wanted`.
pub(crate) fn access_records(log: &str, wanted: &[(&str, &str)]) -> Vec<serde_json::Value> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|record| {
            // Flat JSON lines: the event's fields sit beside `message`.
            let fields = record;
            fields["message"] == "connection complete"
                && wanted
                    .iter()
                    .all(|(field, value)| fields[*field].as_str() == Some(*value))
        })
        .collect()
}
