//! L4 scenarios through the real binaries in a two-node local mesh (root): a client pod on
//! node-1 reaches a service backed by a pod on node-2 over HBONE; an AuthorizationPolicy
//! applied as YAML denies it live; the namespace label enrolls and unenrolls live; a killed
//! ztunnel fails closed and recovers; a killed controller leaves traffic flowing.

use std::net::{IpAddr, SocketAddr};

use ambit_e2e::{Echo, bounded, eventually, exchange, mesh};
use anyhow::{Context, Result, ensure};

const APP: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: demo, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: demo}
spec: {nodeName: node-1, serviceAccountName: client, containers: [{name: app}]}
---
apiVersion: v1
kind: Pod
metadata: {name: server, namespace: demo, labels: {app: server}}
spec: {nodeName: node-2, serviceAccountName: server, containers: [{name: app}]}
---
apiVersion: v1
kind: Service
metadata: {name: server, namespace: demo}
spec: {selector: {app: server}, ports: [{name: tcp-echo, port: 80, targetPort: 7000}]}
"#;

const DENY: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-demo, namespace: demo}
spec:
  action: DENY
  rules: [{from: [{source: {namespaces: [demo]}}]}]
"#;

const GREETING: &[u8] = b"hello from server";

#[tokio::test]
async fn service_over_hbone_policy_label_and_failures() -> Result<()> {
    bounded(async {
        let mesh = mesh("l4", 2).await?;
        let report = mesh.apply("app.yaml", APP).await;
        ensure!(report.errors.is_empty(), "apply: {:?}", report.errors);
        let client = mesh.pod("demo", "client").context("client pod")?;
        let server = mesh.pod("demo", "server").context("server pod")?;
        let echo = Echo::start(
            server.netns(),
            SocketAddr::from(([0, 0, 0, 0], 7000)),
            GREETING,
        )?;
        let vip = mesh
            .services()
            .await
            .into_iter()
            .find(|s| s.name == "server")
            .and_then(|s| s.cluster_ip)
            .context("the service got a cluster IP")?;
        let service = SocketAddr::from((vip, 80));
        let connects =
            || async { Ok(exchange(client.netns(), service, GREETING.len()).await? == GREETING) };
        let refused = || async {
            Ok(exchange(client.netns(), service, GREETING.len())
                .await?
                .is_empty())
        };

        eventually("the VIP reaches the server through the mesh", connects).await?;
        let peer = echo.peers().last().copied().context("a peer")?;
        ensure!(
            peer.ip() == IpAddr::V4(client.ip()),
            "the server sees the client pod's address, got {peer}"
        );
        let log = std::fs::read_to_string(mesh.ztunnel_log_path("node-1"))?;
        ensure!(
            log.contains(&format!("next_hop: {}:15008", server.ip())),
            "ztunnel on node-1 sends the connection over HBONE to the server's node"
        );

        // L4 deny, applied and removed as YAML, live.
        let report = mesh.apply("deny.yaml", DENY).await;
        ensure!(report.errors.is_empty(), "apply deny: {:?}", report.errors);
        eventually("the DENY policy takes effect", refused).await?;
        let report = mesh.delete("deny.yaml", DENY).await;
        ensure!(report.errors.is_empty(), "delete deny: {:?}", report.errors);
        eventually("traffic flows again without the policy", connects).await?;

        // Unenroll the namespace live: pods are out of the mesh, traffic goes direct.
        mesh.label_namespace("demo", "istio.io/dataplane-mode", None)
            .await?;
        ensure!(
            mesh.pods().await.iter().all(|p| !p.enrolled),
            "no pod is enrolled after the label is removed"
        );
        mesh.stop_ztunnel("node-1").await?;
        ensure!(
            exchange(client.netns(), service, GREETING.len())
                .await
                .is_ok(),
            "an unenrolled pod does not depend on ztunnel"
        );
        mesh.start_ztunnel("node-1").await?;

        // Enroll again, then kill the client's ztunnel: captured traffic fails closed.
        mesh.label_namespace("demo", "istio.io/dataplane-mode", Some("ambient"))
            .await?;
        eventually("enrolled again", connects).await?;
        mesh.stop_ztunnel("node-1").await?;
        ensure!(
            exchange(client.netns(), service, GREETING.len())
                .await?
                .is_empty(),
            "with ztunnel gone, an enrolled pod's traffic must fail, never bypass the mesh"
        );
        mesh.start_ztunnel("node-1").await?;
        eventually("ztunnel back: served again", connects).await?;

        // The controller goes away: proxies keep their last config.
        mesh.stop_controller().await;
        for _ in 0..3 {
            ensure!(
                exchange(client.netns(), service, GREETING.len()).await? == GREETING,
                "traffic keeps flowing without the controller"
            );
        }
        mesh.start_controller().await?;
        drop(echo);
        mesh.down().await?;
        Ok(())
    })
    .await
}
