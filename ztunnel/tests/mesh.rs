//! End to end through the real `ztunnel` binary, one per node, in the netns test bed (root):
//! client pod on node a → ztunnel a (15001) → HBONE → ztunnel b (15008) → server pod; then a
//! DENY policy written into the watched config closes the client's connection without data.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use ambit_cni::client::{Client, ClientConfig};
use ambit_cni::protocol::{PodInfo, Reply, ZtunnelRequest};
use ambit_identity::{CaOptions, CertificateAuthority};
use ambit_localnet::{Node, Pod};
use anyhow::{Context, Result, bail, ensure};
use support::{APP_PORT, Bed, app_connect, bounded, echo_at, plain_ip, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Child;

/// A ztunnel process in a node's namespace; killed when dropped.
struct Ztunnel {
    _child: Child,
    socket: PathBuf,
}

fn workload_yaml(pod: &Pod, uid: &str) -> String {
    format!(
        "  - {{uid: {uid}, name: {name}, namespace: {ns}, serviceAccount: {name}, node: {node}, ips: [{ip}], protocol: HBONE}}\n",
        name = pod.name(),
        ns = pod.namespace(),
        node = pod.node(),
        ip = pod.ip(),
    )
}

fn config(bed: &Bed, deny: bool) -> String {
    let mut yaml = String::from("workloads:\n");
    yaml.push_str(&workload_yaml(&bed.a, "uid-a"));
    yaml.push_str(&workload_yaml(&bed.b, "uid-b"));
    if deny {
        yaml.push_str(
            "authorizationPolicies:\n  - name: deny-demo\n    namespace: demo\n    spec:\n      action: DENY\n      rules: [{from: [{source: {namespaces: [demo]}}]}]\n",
        );
    }
    yaml
}

async fn start_ztunnel(node: &Node, dir: &Path) -> Result<Ztunnel> {
    let socket = dir.join(format!("{}.sock", node.name()));
    let log = std::fs::File::create(dir.join(format!("{}.log", node.name())))?;
    let child = node
        .netns()
        .command(env!("CARGO_BIN_EXE_ztunnel"))
        .arg("--config")
        .arg(dir.join("config.yaml"))
        .args(["--node", node.name()])
        .arg("--ca-dir")
        .arg(dir.join("ca"))
        .arg("--node-agent-socket")
        .arg(&socket)
        .env("RUST_LOG", "debug")
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
async fn enroll(ztunnel: &Ztunnel, pod: &Pod, uid: &str) -> Result<()> {
    let socket = ztunnel.socket.clone();
    let info = PodInfo {
        uid: uid.to_owned(),
        namespace: pod.namespace().to_owned(),
        name: pod.name().to_owned(),
        service_account: pod.name().to_owned(),
        netns: pod.netns().path().display().to_string(),
    };
    let reply = tokio::task::spawn_blocking(move || {
        let config = ClientConfig {
            connect_timeout: Duration::from_secs(5),
            call_timeout: Duration::from_secs(30),
        };
        let mut client = Client::<ZtunnelRequest>::connect(&socket, &config)?;
        client.call(&ZtunnelRequest::Snapshot { pods: vec![info] })
    })
    .await??;
    match reply {
        Reply::Ack { .. } => Ok(()),
        Reply::Error { kind, message } => bail!("enroll refused ({kind}): {message}"),
    }
}

/// Connects from the client pod as an app; returns what arrives before EOF/reset (at most
/// `greeting_len` bytes) after sending `ping`.
async fn exchange(from: &Pod, to: SocketAddr, greeting_len: usize) -> Result<Vec<u8>> {
    let mut stream = app_connect(from.netns(), to).await?;
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

#[tokio::test]
async fn pod_to_pod_across_nodes_through_hbone_then_denied_by_policy() -> Result<()> {
    bounded(async {
        let bed = Bed::new("zt-mesh").await?;
        let dir = std::env::temp_dir().join(format!("ambit-zt-mesh-{}", bed.cluster.prefix()));
        std::fs::create_dir_all(&dir)?;
        let ca = CertificateAuthority::generate("cluster.local", CaOptions::default())?;
        ambit_ztunnel::certs::write_ca(&ca, &dir.join("ca"))?;
        std::fs::write(dir.join("config.yaml"), config(&bed, false))?;

        let node_a = bed.cluster.node("a").context("node a")?;
        let node_b = bed.cluster.node("b").context("node b")?;
        let zt_a = start_ztunnel(&node_a, &dir).await?;
        let zt_b = start_ztunnel(&node_b, &dir).await?;
        enroll(&zt_a, &bed.a, "uid-a").await?;
        enroll(&zt_b, &bed.b, "uid-b").await?;

        let server = SocketAddr::from((bed.b.ip(), APP_PORT));
        let echo = echo_at(bed.b.netns(), server, b"hello from b")?;
        let got = exchange(&bed.a, server, 12).await?;
        ensure!(got == b"hello from b", "through the mesh: got {got:?}");
        ensure!(
            echo.count() == 1,
            "server accepted {} connections",
            echo.count()
        );
        ensure!(
            plain_ip(echo.peers()[0]) == IpAddr::V4(bed.a.ip()),
            "the server app sees the client pod's IP, got {}",
            echo.peers()[0]
        );
        // Ztunnel a routed it over HBONE to b's 15008 (logged when the route is chosen).
        let log_a = std::fs::read_to_string(dir.join("a.log"))?;
        let hbone_route = format!("route=Hbone {{ next_hop: {}:15008", bed.b.ip());
        ensure!(
            log_a.contains(&hbone_route),
            "ztunnel a must send the connection over HBONE to ztunnel b"
        );

        // DENY for the client's namespace: once the config is reloaded, the connection closes
        // without a byte from the server.
        std::fs::write(dir.join("config.yaml"), config(&bed, true))?;
        let accepted_before = echo.count();
        within("policy reload", async {
            loop {
                match exchange(&bed.a, server, 12).await {
                    Ok(got) if got.is_empty() => break,
                    _ => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        })
        .await?;
        let accepted_after = echo.count();
        let denied_again = exchange(&bed.a, server, 12).await?;
        ensure!(
            denied_again.is_empty(),
            "denied connection got {denied_again:?}"
        );
        ensure!(
            echo.count() == accepted_after,
            "a denied connection never reaches the app"
        );
        ensure!(accepted_after >= accepted_before);

        drop((zt_a, zt_b));
        std::fs::remove_dir_all(&dir)?;
        bed.teardown().await
    })
    .await
}
