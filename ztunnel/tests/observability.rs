//! Through the real `ztunnel` binary in the netns test bed (root): Istio metrics and the live
//! `/connections` table on the destination node, STRICT vs PERMISSIVE plaintext into an
//! enrolled pod, and a service VIP reaching its backend.
//!
//! Ztunnel's metrics and admin servers are reached from inside the node's namespace, never
//! from the host.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ambit_identity::{CaOptions, CertificateAuthority};
use ambit_localnet::Node;
use anyhow::{Context, Result, ensure};
use support::ztunnel::{Ztunnel, enroll, exchange, http_get, start_ztunnel, workload_yaml};
use support::{APP_PORT, Bed, app_connect, bounded, echo_at, plain_ip, read_exact, within};
use tokio::io::AsyncWriteExt;

const METRICS: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 15020);
const ADMIN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 15000);
const CLIENT_PRINCIPAL: &str = "cluster.local/ns/demo/sa/a";
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);

/// A bed with its config directory and CA.
struct Mesh {
    bed: Bed,
    dir: PathBuf,
}

impl Mesh {
    async fn new(name: &str, config: impl Fn(&Bed) -> String) -> Result<Self> {
        let bed = Bed::new(name).await?;
        let dir = std::env::temp_dir().join(format!("ambit-{name}-{}", bed.cluster.prefix()));
        std::fs::create_dir_all(&dir)?;
        let ca = CertificateAuthority::generate("cluster.local", CaOptions::default())?;
        ambit_ztunnel::certs::write_ca(&ca, &dir.join("ca"))?;
        std::fs::write(dir.join("config.yaml"), config(&bed))?;
        Ok(Self { bed, dir })
    }

    fn node(&self, name: &str) -> Result<Node> {
        self.bed.cluster.node(name).context("node")
    }

    /// Starts ztunnel on `node` and enrolls its pod of the bed.
    async fn serve(&self, node: &str) -> Result<Ztunnel> {
        let ztunnel = start_ztunnel(&self.node(node)?, &self.dir).await?;
        let (pod, uid) = match node {
            "a" => (&self.bed.a, "uid-a"),
            _ => (&self.bed.b, "uid-b"),
        };
        enroll(&ztunnel, pod, uid).await?;
        Ok(ztunnel)
    }

    fn log(&self, node: &str) -> Result<String> {
        Ok(std::fs::read_to_string(
            self.dir.join(format!("{node}.log")),
        )?)
    }

    async fn teardown(self) -> Result<()> {
        std::fs::remove_dir_all(&self.dir)?;
        self.bed.teardown().await
    }
}

fn workloads(bed: &Bed) -> String {
    format!(
        "workloads:\n{}{}",
        workload_yaml(&bed.a, "uid-a"),
        workload_yaml(&bed.b, "uid-b")
    )
}

fn peer_authentication(bed: &Bed, mode: &str) -> String {
    // Only b is in the mesh: a stays a plain, non-enrolled client.
    format!(
        "workloads:\n{}peerAuthentications:\n  - {{name: default, namespace: demo, spec: {{mtls: {{mode: {mode}}}}}}}\n",
        workload_yaml(&bed.b, "uid-b")
    )
}

/// The first sample line of `family` in `metrics` that carries every label in `labels`.
fn sample<'m>(metrics: &'m str, family: &str, labels: &[&str]) -> Option<&'m str> {
    metrics.lines().find(|line| {
        line.starts_with(&format!("{family}{{")) && labels.iter().all(|l| line.contains(l))
    })
}

/// Scrapes `node`'s `/metrics` until a `family` sample with `labels` shows up.
async fn wait_for_sample(node: &Node, family: &str, labels: &[&str]) -> Result<String> {
    within(&format!("{family} with {labels:?}"), async {
        loop {
            let metrics = http_get(node.netns(), METRICS, "/metrics").await?;
            if let Some(line) = sample(&metrics, family, labels) {
                return Ok::<_, anyhow::Error>(line.to_owned());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await?
}

#[tokio::test]
async fn destination_reports_istio_metrics_live_connections_and_an_access_log() -> Result<()> {
    bounded(async {
        let mesh = Mesh::new("zt-obs", workloads).await?;
        let _zt_a = mesh.serve("a").await?;
        let _zt_b = mesh.serve("b").await?;
        let node_b = mesh.node("b")?;
        let server = SocketAddr::from((mesh.bed.b.ip(), APP_PORT));
        let _echo = echo_at(mesh.bed.b.netns(), server, b"hello from b")?;

        let mut stream = app_connect(mesh.bed.a.netns(), server).await?;
        ensure!(read_exact(&mut stream, 12).await? == b"hello from b");
        stream.write_all(b"ping").await?;
        ensure!(read_exact(&mut stream, 4).await? == b"ping");

        // While open, ztunnel b lists it, with the authenticated client and its bytes.
        let dump = http_get(node_b.netns(), ADMIN, "/connections").await?;
        let dump: serde_json::Value = serde_json::from_str(&dump)?;
        let live = dump["connections"]
            .as_array()
            .context("connections array")?
            .iter()
            .find(|c| c["srcIdentity"] == CLIENT_PRINCIPAL)
            .with_context(|| format!("no live connection from a in {dump}"))?;
        ensure!(live["dst"] == server.to_string(), "{live}");
        ensure!(live["securityPolicy"] == "mutual_tls", "{live}");
        ensure!(live["bytesClientToServer"] == 4, "{live}");
        ensure!(live["bytesServerToClient"] == 16, "{live}");
        drop(stream);

        let opened = [
            "reporter=\"destination\"",
            "source_principal=\"cluster.local/ns/demo/sa/a\"",
            "source_workload=\"a\"",
            "destination_workload=\"b\"",
            "destination_workload_namespace=\"demo\"",
            "destination_principal=\"cluster.local/ns/demo/sa/b\"",
            "connection_security_policy=\"mutual_tls\"",
        ];
        let line = wait_for_sample(&node_b, "istio_tcp_connections_opened_total", &opened).await?;
        ensure!(line.ends_with(" 1"), "one connection opened: {line}");
        // Closed after the client went away, with the bytes each way.
        let mut closed = opened.to_vec();
        closed.push("response_flags=\"-\"");
        wait_for_sample(&node_b, "istio_tcp_connections_closed_total", &closed).await?;
        let metrics = http_get(node_b.netns(), METRICS, "/metrics").await?;
        let received = sample(&metrics, "istio_tcp_received_bytes_total", &opened)
            .context("received bytes")?;
        ensure!(received.ends_with(" 4"), "{received}");
        let sent = sample(&metrics, "istio_tcp_sent_bytes_total", &opened).context("sent bytes")?;
        ensure!(sent.ends_with(" 16"), "{sent}");
        // Ztunnel a reports the same connection as its source.
        let node_a = mesh.node("a")?;
        wait_for_sample(
            &node_a,
            "istio_tcp_connections_closed_total",
            &[
                "reporter=\"source\"",
                "destination_workload=\"b\"",
                "connection_security_policy=\"mutual_tls\"",
            ],
        )
        .await?;

        // One access-log line per connection, naming both identities.
        let access_line = |log: &str| {
            log.lines()
                .filter(|line| line.contains("connection complete"))
                .find(|line| line.contains("spiffe://cluster.local/ns/demo/sa/a"))
                .map(str::to_owned)
        };
        let line = access_line(&mesh.log("b")?).context("no access log line on b")?;
        ensure!(
            line.contains("spiffe://cluster.local/ns/demo/sa/b"),
            "{line}"
        );
        ensure!(line.contains("inbound"), "{line}");
        mesh.teardown().await
    })
    .await
}

#[tokio::test]
async fn strict_refuses_plaintext_into_an_enrolled_pod_and_permissive_accepts_it() -> Result<()> {
    bounded(async {
        let mesh = Mesh::new("zt-pa", |bed| peer_authentication(bed, "STRICT")).await?;
        let _zt_b = mesh.serve("b").await?;
        let node_b = mesh.node("b")?;
        let server = SocketAddr::from((mesh.bed.b.ip(), APP_PORT));
        let echo = echo_at(mesh.bed.b.netns(), server, b"hello from b")?;

        let got = exchange(&mesh.bed.a, server, 12).await?;
        ensure!(got.is_empty(), "STRICT let plaintext through: {got:?}");
        ensure!(
            echo.count() == 0,
            "a refused connection never reaches the app"
        );
        wait_for_sample(
            &node_b,
            "istio_tcp_connections_closed_total",
            &[
                "reporter=\"destination\"",
                "destination_workload=\"b\"",
                "response_flags=\"DENY\"",
                "connection_security_policy=\"unknown\"",
            ],
        )
        .await?;

        std::fs::write(
            mesh.dir.join("config.yaml"),
            peer_authentication(&mesh.bed, "PERMISSIVE"),
        )?;
        within("PERMISSIVE to take effect", async {
            loop {
                match exchange(&mesh.bed.a, server, 12).await {
                    Ok(got) if got == b"hello from b" => break,
                    _ => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        })
        .await?;
        ensure!(echo.count() >= 1);
        ensure!(
            echo.peers()
                .iter()
                .all(|peer| plain_ip(*peer) == IpAddr::V4(mesh.bed.a.ip())),
            "the app sees the plaintext client's own IP: {:?}",
            echo.peers()
        );
        wait_for_sample(
            &node_b,
            "istio_tcp_connections_opened_total",
            &[
                "reporter=\"destination\"",
                "response_flags=\"-\"",
                "source_principal=\"unknown\"",
                "connection_security_policy=\"unknown\"",
            ],
        )
        .await?;
        mesh.teardown().await
    })
    .await
}

#[tokio::test]
async fn a_service_vip_reaches_its_backend_across_nodes() -> Result<()> {
    let config = |bed: &Bed| {
        format!(
            "{}services:\n  - name: web\n    namespace: demo\n    vips: [{VIP}]\n    ports: [{{port: 80, targetPort: {APP_PORT}}}]\n    endpoints: {{uid-b: {{}}}}\n",
            workloads(bed)
        )
    };
    bounded(async {
        let mesh = Mesh::new("zt-vip", config).await?;
        let _zt_a = mesh.serve("a").await?;
        let _zt_b = mesh.serve("b").await?;
        let backend = SocketAddr::from((mesh.bed.b.ip(), APP_PORT));
        let echo = echo_at(mesh.bed.b.netns(), backend, b"hello from b")?;

        let got = exchange(&mesh.bed.a, SocketAddr::from((VIP, 80)), 12).await?;
        ensure!(got == b"hello from b", "through the VIP: got {got:?}");
        ensure!(
            echo.count() == 1,
            "backend accepted {} connections",
            echo.count()
        );
        // Source side: reported against the service the client addressed.
        wait_for_sample(
            &mesh.node("a")?,
            "istio_tcp_connections_opened_total",
            &[
                "reporter=\"source\"",
                "destination_service=\"web.demo.svc.cluster.local\"",
                "destination_workload=\"b\"",
                "connection_security_policy=\"mutual_tls\"",
            ],
        )
        .await?;
        // Destination side: the service arrives in the HBONE `forwarded` header.
        wait_for_sample(
            &mesh.node("b")?,
            "istio_tcp_connections_opened_total",
            &[
                "reporter=\"destination\"",
                "destination_service=\"web.demo.svc.cluster.local\"",
                "source_principal=\"cluster.local/ns/demo/sa/a\"",
            ],
        )
        .await?;
        mesh.teardown().await
    })
    .await
}
