//! Helpers shared by the integration tests: a two-node cluster, echo servers, netns listing.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use ambit_localnet::{Cluster, Netns, Pod};
use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Upper bound for a whole test; building a cluster takes well under a second.
pub(crate) const TEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Upper bound for one network exchange.
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// The port the echo servers listen on inside pods (pods have their own port space).
pub(crate) const ECHO_PORT: u16 = 7000;

/// Runs a test body with the overall time bound.
pub(crate) async fn bounded<F: Future<Output = Result<()>>>(body: F) -> Result<()> {
    tokio::time::timeout(TEST_TIMEOUT, body)
        .await
        .context("test timed out")?
}

/// A cluster with nodes `a` and `b` and pods `demo/client` on `a`, `demo/server` on `b`.
pub(crate) async fn two_node_cluster(name: &str) -> Result<(Cluster, Pod, Pod)> {
    let cluster = Cluster::create(name).await?;
    cluster.add_node("a").await?;
    cluster.add_node("b").await?;
    let client = cluster.add_pod("a", "demo", "client").await?;
    let server = cluster.add_pod("b", "demo", "server").await?;
    Ok((cluster, client, server))
}

/// Names from `ip netns list` that start with `prefix`.
pub(crate) async fn netns_with_prefix(prefix: &str) -> Result<Vec<String>> {
    let output = tokio::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .await?;
    if !output.status.success() {
        bail!("ip netns list: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| name.starts_with(prefix))
        .map(str::to_owned)
        .collect())
}

/// Serves on `listener`: each connection gets `greeting`, then its own bytes echoed back.
pub(crate) fn serve_echo(listener: TcpListener, greeting: &'static [u8]) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                if write.write_all(greeting).await.is_ok() {
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                }
            });
        }
    })
}

/// Starts an echo server inside `pod` on [`ECHO_PORT`], bound with [`Netns::bind_tcp`].
pub(crate) fn echo_in(pod: &Pod, greeting: &'static [u8]) -> Result<JoinHandle<()>> {
    let listener = pod
        .netns()
        .bind_tcp(SocketAddr::from((pod.ip(), ECHO_PORT)))?;
    Ok(serve_echo(listener, greeting))
}

/// Connects from inside `from` (socket made there via `run_in`) to `to`, sends `payload`,
/// and returns everything the server sent back until `expected_len` bytes arrived.
pub(crate) async fn exchange(
    from: &Netns,
    to: SocketAddr,
    payload: &[u8],
    expected_len: usize,
) -> Result<Vec<u8>> {
    let socket = from.run_in(tokio::net::TcpSocket::new_v4)??;
    let mut stream = tokio::time::timeout(IO_TIMEOUT, socket.connect(to))
        .await
        .with_context(|| format!("connect to {to} from {} timed out", from.name()))?
        .with_context(|| format!("connect to {to} from {}", from.name()))?;
    stream.write_all(payload).await?;
    stream.shutdown().await?;
    let mut received = Vec::new();
    tokio::time::timeout(IO_TIMEOUT, stream.read_to_end(&mut received))
        .await
        .context("echo timed out")??;
    if received.len() != expected_len {
        bail!("expected {expected_len} bytes back, got {received:?}");
    }
    Ok(received)
}
