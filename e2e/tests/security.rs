//! Security scenarios through the real binaries in a two-node local mesh (root): mTLS on the
//! wire (a packet capture between the nodes never shows the payload), PERMISSIVE vs STRICT
//! PeerAuthentication for a client outside the mesh, and L4 authorization by principal, by
//! port and by source namespace.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use ambit_e2e::{Echo, bounded, eventually, exchange, mesh, within};
use anyhow::{Context, Result, ensure};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

const APP: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: demo, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Namespace
metadata: {name: legacy}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: demo}
spec: {nodeName: node-1, serviceAccountName: client, containers: [{name: app}]}
---
apiVersion: v1
kind: Pod
metadata: {name: other, namespace: demo}
spec: {nodeName: node-1, serviceAccountName: other, containers: [{name: app}]}
---
apiVersion: v1
kind: Pod
metadata: {name: server, namespace: demo, labels: {app: server}}
spec: {nodeName: node-2, serviceAccountName: server, containers: [{name: app}]}
---
apiVersion: v1
kind: Pod
metadata: {name: old, namespace: legacy}
spec: {nodeName: node-1, containers: [{name: app}]}
"#;

const STRICT: &str = r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict, namespace: demo}
spec: {mtls: {mode: STRICT}}
"#;

const ONLY_CLIENT_ON_7000: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: only-client, namespace: demo}
spec:
  selector: {matchLabels: {app: server}}
  action: ALLOW
  rules:
  - from: [{source: {principals: [cluster.local/ns/demo/sa/client]}}]
    to: [{operation: {ports: ["7000"]}}]
"#;

const GREETING: &[u8] = b"hello from server";
const SECRET: &[u8] = b"SECRET-PAYLOAD-4242";

#[tokio::test]
async fn mtls_on_the_wire_peer_authentication_and_l4_authorization() -> Result<()> {
    bounded(async {
        let mesh = mesh("security", 2).await?;
        let report = mesh.apply("app.yaml", APP).await;
        ensure!(report.errors.is_empty(), "apply: {:?}", report.errors);
        let pod = |ns: &str, name: &str| mesh.pod(ns, name).context(format!("pod {ns}/{name}"));
        let (client, other, server, old) = (
            pod("demo", "client")?,
            pod("demo", "other")?,
            pod("demo", "server")?,
            pod("legacy", "old")?,
        );
        let any = |port: u16| SocketAddr::from(([0, 0, 0, 0], port));
        let _echo = Echo::start(server.netns(), any(7000), GREETING)?;
        let _echo2 = Echo::start(server.netns(), any(7001), GREETING)?;
        let to = |port: u16| SocketAddr::from((server.ip(), port));
        let reaches = |from: &ambit_localnet::Pod, port: u16| {
            let netns = from.netns().clone();
            async move { Ok(exchange(&netns, to(port), GREETING.len()).await? == GREETING) }
        };
        eventually("client reaches server through the mesh", || {
            reaches(&client, 7000)
        })
        .await?;

        // mTLS on the wire: capture on node-2's uplink while the client sends a secret.
        let node2 = mesh.cluster().node("node-2").context("node-2")?;
        let mut capture = node2
            .netns()
            .command("tcpdump")
            .args(["-i", "eth0", "-nn", "-l", "-A", "-s", "0", "tcp"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting tcpdump")?;
        let mut stderr = BufReader::new(capture.stderr.take().context("tcpdump stderr")?).lines();
        within("tcpdump listening", async {
            while let Ok(Some(line)) = stderr.next_line().await {
                if line.contains("listening on") {
                    break;
                }
            }
        })
        .await?;
        {
            let socket = client.netns().tcp_socket(to(7000))?;
            let mut stream = within("connect", socket.connect(to(7000))).await??;
            let mut greeting = vec![0; GREETING.len()];
            within("greeting", stream.read_exact(&mut greeting)).await??;
            tokio::io::AsyncWriteExt::write_all(&mut stream, SECRET).await?;
            let mut echoed = vec![0; SECRET.len()];
            within("echo", stream.read_exact(&mut echoed)).await??;
            ensure!(echoed == SECRET, "the secret round-trips");
        }
        // Let the capture flush what it saw, then stop it.
        tokio::time::sleep(Duration::from_millis(300)).await;
        capture.start_kill()?;
        let mut captured = Vec::new();
        capture
            .stdout
            .take()
            .context("tcpdump stdout")?
            .read_to_end(&mut captured)
            .await?;
        let captured = String::from_utf8_lossy(&captured);
        ensure!(
            captured.contains(&format!("{}.15008", server.ip())),
            "the capture saw the HBONE connection to {}:15008",
            server.ip()
        );
        ensure!(
            !captured.contains(std::str::from_utf8(SECRET)?),
            "the payload must never cross the wire in clear"
        );
        ensure!(
            !captured.contains(std::str::from_utf8(GREETING)?),
            "nor the server's greeting"
        );

        // PERMISSIVE (the default): a client outside the mesh gets through in plaintext.
        ensure!(reaches(&old, 7000).await?, "PERMISSIVE accepts plaintext");
        let report = mesh.apply("strict.yaml", STRICT).await;
        ensure!(report.errors.is_empty(), "{:?}", report.errors);
        eventually("STRICT refuses plaintext", || async {
            Ok(!reaches(&old, 7000).await?)
        })
        .await?;
        ensure!(reaches(&client, 7000).await?, "mesh traffic passes STRICT");

        // L4 ALLOW by principal and port: only client, only 7000.
        let report = mesh.apply("allow.yaml", ONLY_CLIENT_ON_7000).await;
        ensure!(report.errors.is_empty(), "{:?}", report.errors);
        eventually("another principal is refused", || async {
            Ok(!reaches(&other, 7000).await?)
        })
        .await?;
        ensure!(
            reaches(&client, 7000).await?,
            "the allowed principal passes"
        );
        ensure!(
            !reaches(&client, 7001).await?,
            "a port outside the rule is refused"
        );
        mesh.down().await?;
        Ok(())
    })
    .await
}

/// A server, and one client in each of two other namespaces, all in the mesh.
const NAMESPACES_APP: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: backend, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Namespace
metadata: {name: friend, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Namespace
metadata: {name: stranger, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Pod
metadata: {name: server, namespace: backend, labels: {app: server}}
spec: {nodeName: node-2, containers: [{name: app}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: friend}
spec: {nodeName: node-1, containers: [{name: app}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: stranger}
spec: {nodeName: node-1, containers: [{name: app}]}
"#;

const ONLY_FRIEND_NAMESPACE: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: only-friend, namespace: backend}
spec:
  selector: {matchLabels: {app: server}}
  action: ALLOW
  rules: [{from: [{source: {namespaces: [friend]}}]}]
"#;

#[tokio::test]
async fn l4_authorization_by_source_namespace() -> Result<()> {
    bounded(async {
        let mesh = mesh("authz-namespaces", 2).await?;
        let report = mesh.apply("app.yaml", NAMESPACES_APP).await;
        ensure!(report.errors.is_empty(), "apply: {:?}", report.errors);
        let pod = |ns: &str, name: &str| mesh.pod(ns, name).context(format!("pod {ns}/{name}"));
        let (server, friend, stranger) = (
            pod("backend", "server")?,
            pod("friend", "client")?,
            pod("stranger", "client")?,
        );
        let _echo = Echo::start(
            server.netns(),
            SocketAddr::from(([0, 0, 0, 0], 7000)),
            GREETING,
        )?;
        let to = SocketAddr::from((server.ip(), 7000));
        let reaches = |from: &ambit_localnet::Pod| {
            let netns = from.netns().clone();
            async move { Ok(exchange(&netns, to, GREETING.len()).await? == GREETING) }
        };
        // Both namespaces get through before any policy.
        eventually("the friend reaches the server", || reaches(&friend)).await?;
        eventually("the stranger reaches the server", || reaches(&stranger)).await?;

        let report = mesh.apply("allow.yaml", ONLY_FRIEND_NAMESPACE).await;
        ensure!(report.errors.is_empty(), "{:?}", report.errors);
        eventually("a client from another namespace is refused", || async {
            Ok(!reaches(&stranger).await?)
        })
        .await?;
        ensure!(
            reaches(&friend).await?,
            "the allowed namespace still passes"
        );
        mesh.down().await?;
        Ok(())
    })
    .await
}
