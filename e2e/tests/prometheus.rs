//! A real Prometheus (the Debian package; `scripts/install-prereqs.sh` installs it) scrapes the
//! ztunnels and the waypoint of a local mesh (root), and a query for Istio's metric names
//! returns the series a dashboard built for Istio expects.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use ambit_e2e::{bin_dir, bounded, eventually, mesh, within};
use ambit_localmesh::LocalMesh;
use ambit_localnet::Netns;
use anyhow::{Context, Result, bail, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const REVIEWS: &str = "http://reviews.bookinfo.svc.cluster.local:9080/";
const PROMETHEUS_PORT: u16 = 9090;

async fn apply_sample(mesh: &LocalMesh, name: &str) -> Result<()> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("samples")
        .join(name);
    let text = std::fs::read_to_string(&path)?;
    let report = mesh.apply(name, &text).await;
    ensure!(report.errors.is_empty(), "{name}: {:?}", report.errors);
    Ok(())
}

/// `GET path` on `addr` from inside `netns`; the body of a 200.
async fn get(netns: &Netns, addr: SocketAddr, path: &str) -> Result<String> {
    let mut stream = within("connect", netns.connect_tcp(addr)).await??;
    // HTTP/1.0: the answer ends with the connection and is never chunked.
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    within("response", stream.read_to_end(&mut response)).await??;
    let response = String::from_utf8(response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("no end of headers")?;
    if !(head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200")) {
        bail!("GET {path}: {head}");
    }
    Ok(body.to_owned())
}

/// The series of an instant query, as JSON objects with `metric` and `value`.
async fn query(netns: &Netns, addr: SocketAddr, promql: &str) -> Result<Vec<serde_json::Value>> {
    let encoded: String = promql
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let body = get(netns, addr, &format!("/api/v1/query?query={encoded}")).await?;
    let answer: serde_json::Value = serde_json::from_str(&body)?;
    Ok(answer["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

#[tokio::test]
async fn prometheus_scrapes_istio_metrics_from_ztunnel_and_waypoint() -> Result<()> {
    bounded(async {
        let mesh = mesh("prometheus", 2).await?;
        for name in [
            "00-namespaces.yaml",
            "10-bookinfo.yaml",
            "11-curl.yaml",
            "20-enable-ambient.yaml",
            "40-waypoint.yaml",
        ] {
            apply_sample(&mesh, name).await?;
        }
        let curl = mesh.pod("client", "curl-0").context("curl pod")?;
        let traffic = || async {
            let output = curl
                .netns()
                .command(bin_dir()?.join("load"))
                .args(["get", REVIEWS, "-n", "20", "--timeout", "5s", "--fail"])
                .output()
                .await?;
            Ok(output.status.success())
        };
        eventually("reviews answers through the waypoint", traffic).await?;

        // Prometheus in the underlay namespace: it reaches every node and pod.
        let waypoint = mesh.pod("bookinfo", "waypoint-0").context("waypoint pod")?;
        let mut targets: Vec<String> = mesh
            .cluster()
            .nodes()
            .iter()
            .map(|node| format!("\"{}:15020\"", node.underlay_ip()))
            .collect();
        let waypoint_target = format!("\"{}:15020\"", waypoint.ip());
        targets.push(waypoint_target);
        let dir = std::env::temp_dir().join(format!("ambit-e2e-prom-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(
            dir.join("prometheus.yml"),
            format!(
                "global: {{scrape_interval: 1s}}\nscrape_configs:\n- job_name: ambit\n  static_configs:\n  - targets: [{}]\n",
                targets.join(", ")
            ),
        )?;
        let underlay = mesh.cluster().underlay();
        let listen = SocketAddr::from((mesh.cluster().underlay_gateway(), PROMETHEUS_PORT));
        let log = std::fs::File::create(dir.join("prometheus.log"))?;
        let _prometheus = underlay
            .command("prometheus")
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={listen}"))
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .context("starting prometheus (apt install prometheus)")?;
        // Scrapes happen every second; keep traffic flowing meanwhile.
        let mut waited = Duration::ZERO;
        let (requests, tcp) = loop {
            traffic().await?;
            let requests = query(
                &underlay,
                listen,
                r#"istio_requests_total{reporter="waypoint",response_code="200"}"#,
            )
            .await
            .unwrap_or_default();
            let tcp = query(&underlay, listen, "istio_tcp_connections_opened_total")
                .await
                .unwrap_or_default();
            if !requests.is_empty() && !tcp.is_empty() {
                break (requests, tcp);
            }
            if waited > Duration::from_secs(40) {
                let names = query(&underlay, listen, "count by (__name__) ({job=\"ambit\"})").await;
                let targets = get(&underlay, listen, "/api/v1/targets").await;
                bail!(
                    "no series after {waited:?} (requests {requests:?}, tcp {tcp:?}); names: {names:?}; targets: {targets:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            waited += Duration::from_millis(500);
        };
        ensure!(
            requests.iter().any(|series| {
                let labels = &series["metric"];
                labels["destination_service"] == "reviews.bookinfo.svc.cluster.local"
                    && labels["source_principal"] == "cluster.local/ns/client/sa/curl"
                    && labels["connection_security_policy"] == "mutual_tls"
            }),
            "a series for curl → reviews with Istio's labels: {requests:?}"
        );
        ensure!(
            tcp.iter()
                .any(|s| s["metric"]["reporter"] == "source" || s["metric"]["reporter"] == "destination"),
            "ztunnel reports TCP connections: {tcp:?}"
        );
        mesh.down().await?;
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    })
    .await
}
