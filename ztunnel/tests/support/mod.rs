//! Helpers for the in-pod tests: a two-node cluster, counting echo servers, bounded waits.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use ambit_localnet::{Cluster, Netns, Pod};

use ambit_ztunnel::inpod::{PodNetns, original_destination};
use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub(crate) mod ztunnel;

/// Upper bound for a whole test; a cluster takes well under a second to build.
pub(crate) const TEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Upper bound for one network exchange.
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// The app port of the echo servers inside pods.
pub(crate) const APP_PORT: u16 = 7000;

/// Runs a test body within [`TEST_TIMEOUT`].
pub(crate) async fn bounded<F: Future<Output = Result<()>>>(body: F) -> Result<()> {
    tokio::time::timeout(TEST_TIMEOUT, body)
        .await
        .context("test timed out")?
}

/// Bounds one wait by [`IO_TIMEOUT`], naming what was awaited.
pub(crate) async fn within<T>(what: &str, wait: impl Future<Output = T>) -> Result<T> {
    tokio::time::timeout(IO_TIMEOUT, wait)
        .await
        .with_context(|| format!("timed out: {what}"))
}

/// A cluster with pod `demo/a` on node `a` and pod `demo/b` on node `b`.
pub(crate) struct Bed {
    pub(crate) cluster: Cluster,
    pub(crate) a: Pod,
    pub(crate) b: Pod,
}

impl Bed {
    pub(crate) async fn new(name: &str) -> Result<Self> {
        let cluster = Cluster::create(name).await?;
        cluster.add_node("a").await?;
        cluster.add_node("b").await?;
        let a = cluster.add_pod("a", "demo", "a").await?;
        let b = cluster.add_pod("b", "demo", "b").await?;
        Ok(Self { cluster, a, b })
    }

    pub(crate) async fn teardown(self) -> Result<()> {
        Ok(self.cluster.teardown().await?)
    }
}

/// Our handle on a localnet pod's namespace.
pub(crate) fn pod_netns(pod: &Pod) -> Result<PodNetns> {
    Ok(PodNetns::open(pod.netns().path())?)
}

/// An echo server: greets with `greeting`, echoes, and counts the connections it accepted.
pub(crate) struct Echo {
    pub(crate) accepted: Arc<AtomicUsize>,
    pub(crate) peers: Arc<std::sync::Mutex<Vec<SocketAddr>>>,
    _task: tokio::task::JoinHandle<()>,
}

impl Echo {
    pub(crate) fn count(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    pub(crate) fn peers(&self) -> Vec<SocketAddr> {
        self.peers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Starts an [`Echo`] on `addr` inside `netns`.
pub(crate) fn echo_at(netns: &Netns, addr: SocketAddr, greeting: &'static [u8]) -> Result<Echo> {
    let listener = netns.bind_tcp(addr)?;
    Ok(serve_echo(listener, greeting))
}

pub(crate) fn serve_echo(listener: TcpListener, greeting: &'static [u8]) -> Echo {
    let accepted = Arc::new(AtomicUsize::new(0));
    let peers = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (count, seen) = (accepted.clone(), peers.clone());
    let task = tokio::spawn(async move {
        while let Ok((mut stream, peer)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            seen.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(peer);
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                if write.write_all(greeting).await.is_ok() {
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                }
            });
        }
    });
    Echo {
        accepted,
        peers,
        _task: task,
    }
}

/// An app connection: a plain, unmarked socket made inside `from`, connected to `to`.
pub(crate) async fn app_connect(from: &Netns, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = from
        .tcp_socket(to)
        .map_err(|err| std::io::Error::other(err.to_string()))?;
    match tokio::time::timeout(IO_TIMEOUT, socket.connect(to)).await {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("connect to {to} timed out"),
        )),
    }
}

/// Reads exactly `len` bytes from `stream`, bounded.
pub(crate) async fn read_exact(stream: &mut TcpStream, len: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0; len];
    within("reading", stream.read_exact(&mut buf)).await??;
    Ok(buf)
}

/// Connects from `from` as an app and expects the echo server's `greeting` directly.
pub(crate) async fn expect_direct(from: &Netns, to: SocketAddr, greeting: &[u8]) -> Result<()> {
    let mut stream = app_connect(from, to)
        .await
        .with_context(|| format!("app connect to {to}"))?;
    let got = read_exact(&mut stream, greeting.len()).await?;
    if got != greeting {
        bail!("expected greeting {greeting:?} from {to}, got {got:?}");
    }
    stream.write_all(b"ping").await?;
    let echoed = read_exact(&mut stream, 4).await?;
    if echoed != b"ping" {
        bail!("echo from {to} returned {echoed:?}");
    }
    Ok(())
}

/// Accepts one connection on `listener` and returns it with its original destination.
pub(crate) async fn accept_captured(
    listener: &TcpListener,
    what: &str,
) -> Result<(TcpStream, SocketAddr, SocketAddr)> {
    let (stream, peer) = within(what, listener.accept()).await??;
    let original = original_destination(&stream).context("SO_ORIGINAL_DST")?;
    Ok((stream, peer, original))
}

/// The IP of a peer address with IPv4-mapped IPv6 turned back into IPv4.
pub(crate) fn plain_ip(addr: SocketAddr) -> IpAddr {
    match addr.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Output of `program args` run inside `netns`, failing on a non-zero exit.
pub(crate) async fn run_ok(netns: &Netns, program: &str, args: &[&str]) -> Result<String> {
    let out = netns.run(program, args).await?;
    if !out.status.success() {
        bail!(
            "{program} {args:?} in {}: {}",
            netns.name(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}
