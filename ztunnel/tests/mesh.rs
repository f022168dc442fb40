//! End to end through the real `ztunnel` binary, one per node, in the netns test bed (root):
//! client pod on node a → ztunnel a (15001) → HBONE → ztunnel b (15008) → server pod; then a
//! DENY policy written into the watched config closes the client's connection without data.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ambit_identity::{CaOptions, CertificateAuthority};
use anyhow::{Context, Result, ensure};
use support::ztunnel::{enroll, exchange, start_ztunnel, workload_yaml};
use support::{APP_PORT, Bed, bounded, echo_at, plain_ip, within};

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
