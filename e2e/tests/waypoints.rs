//! Which waypoint serves a service (root, local mesh): the namespace's `istio.io/use-waypoint`
//! applies until the Service names its own, which wins. Told apart by a DENY that only one
//! waypoint enforces (`targetRefs` to its Gateway).

use ambit_e2e::{bin_dir, bounded, eventually, mesh};
use ambit_localmesh::LocalMesh;
use anyhow::{Context, Result, ensure};

const URL: &str = "http://echo.prec.svc.cluster.local:8000";

const APP: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: prec, labels: {istio.io/dataplane-mode: ambient, istio.io/use-waypoint: wp-ns}}
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: prec}
spec: {selector: {app: echo}, ports: [{name: http, port: 8000, targetPort: 8000}]}
---
apiVersion: v1
kind: Pod
metadata: {name: echo, namespace: prec, labels: {app: echo}}
spec:
  nodeName: node-2
  containers: [{name: echo, command: [echo-server], args: [--addr, "0.0.0.0:8000"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: prec}
spec: {nodeName: node-1, containers: [{name: client, command: [sleep, infinity]}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: wp-ns, namespace: prec}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: wp-svc, namespace: prec}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: wp-svc-denies, namespace: prec}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: wp-svc}]
  action: DENY
  rules: [{}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: wp-ns-marks, namespace: prec}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: wp-ns}]
  action: DENY
  rules: [{to: [{operation: {paths: [/via-ns]}}]}]
"#;

const SERVICE_LABELLED: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: prec, labels: {istio.io/use-waypoint: wp-svc}}
spec: {selector: {app: echo}, ports: [{name: http, port: 8000, targetPort: 8000}]}
"#;

/// The status of one GET from the client pod (0 when nothing answered).
async fn status(mesh: &LocalMesh, path: &str) -> Result<u16> {
    let client = mesh.pod("prec", "client").context("client pod")?;
    let output = client
        .netns()
        .command(bin_dir()?.join("load"))
        .args([
            "get",
            &format!("{URL}{path}"),
            "-n",
            "1",
            "--json",
            "--timeout",
            "5s",
        ])
        .output()
        .await?;
    let report: serde_json::Value = serde_json::from_slice(&output.stdout)
        .with_context(|| String::from_utf8_lossy(&output.stderr).into_owned())?;
    Ok(report["statuses"]
        .as_object()
        .and_then(|s| s.keys().next())
        .and_then(|code| code.parse().ok())
        .unwrap_or(0))
}

#[tokio::test]
async fn the_service_label_wins_over_the_namespace_label() -> Result<()> {
    bounded(async {
        let mesh = mesh("waypoints", 2).await?;
        let report = mesh.apply("app.yaml", APP).await;
        ensure!(report.errors.is_empty(), "apply: {:?}", report.errors);
        eventually("the namespace's waypoint serves the service", || async {
            Ok(status(&mesh, "/").await? == 200 && status(&mesh, "/via-ns").await? == 403)
        })
        .await?;

        let report = mesh.apply("service.yaml", SERVICE_LABELLED).await;
        ensure!(report.errors.is_empty(), "apply: {:?}", report.errors);
        eventually(
            "the service's own waypoint wins (its DENY: 403)",
            || async { Ok(status(&mesh, "/").await? == 403) },
        )
        .await?;
        mesh.down().await?;
        Ok(())
    })
    .await
}
