//! Which waypoint serves a request (root, local mesh): the namespace's `istio.io/use-waypoint`
//! applies until the Service names its own, which wins for traffic to the Service; for traffic
//! addressed to a pod, the pod's own label wins over the namespace's (and the Service's label
//! does not apply). Told apart by a DENY that only one waypoint enforces (`targetRefs` to its
//! Gateway).

use ambit_e2e::{apply, bounded, eventually, load, mesh, pod};
use ambit_localmesh::LocalMesh;
use anyhow::{Result, ensure};

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

/// The status of one GET of `base` + each path from the client pod of `namespace`, in order
/// (0 when nothing answered).
async fn statuses(
    mesh: &LocalMesh,
    namespace: &str,
    base: &str,
    paths: &[&str],
) -> Result<Vec<u16>> {
    let client = pod(mesh, namespace, "client")?;
    let mut statuses = Vec::with_capacity(paths.len());
    for path in paths {
        let report = load(&client, &format!("{base}{path}"), 1, &[]).await?;
        statuses.push(report.statuses.keys().next().copied().unwrap_or(0));
    }
    Ok(statuses)
}

/// The status of one GET of `path` on the `prec` echo service.
async fn status(mesh: &LocalMesh, path: &str) -> Result<u16> {
    let statuses = statuses(mesh, "prec", URL, &[path]).await?;
    Ok(statuses.first().copied().unwrap_or(0))
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

/// Namespace, Service and Pod each name a different waypoint; each waypoint denies one path,
/// so the 403 tells which one served a request. `wp-ns` serves all traffic, `wp-pod`
/// workload (pod-addressed) traffic.
const LAYERED: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: layers, labels: {istio.io/dataplane-mode: ambient, istio.io/use-waypoint: wp-ns}}
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: layers, labels: {istio.io/use-waypoint: wp-svc}}
spec: {selector: {app: echo}, ports: [{name: http, port: 8000, targetPort: 8000}]}
---
apiVersion: v1
kind: Pod
metadata: {name: plain, namespace: layers, labels: {app: echo}}
spec:
  nodeName: node-2
  containers: [{name: echo, command: [echo-server], args: [--addr, "0.0.0.0:8000"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: bound, namespace: layers, labels: {app: echo, istio.io/use-waypoint: wp-pod}}
spec:
  nodeName: node-2
  containers: [{name: echo, command: [echo-server], args: [--addr, "0.0.0.0:8000"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: layers}
spec: {nodeName: node-1, containers: [{name: client, command: [sleep, infinity]}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: wp-ns, namespace: layers, labels: {istio.io/waypoint-for: all}}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: wp-svc, namespace: layers}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: wp-pod, namespace: layers, labels: {istio.io/waypoint-for: workload}}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: wp-ns-marks, namespace: layers}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: wp-ns}]
  action: DENY
  rules: [{to: [{operation: {paths: [/via-ns]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: wp-svc-marks, namespace: layers}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: wp-svc}]
  action: DENY
  rules: [{to: [{operation: {paths: [/via-svc]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: wp-pod-marks, namespace: layers}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: wp-pod}]
  action: DENY
  rules: [{to: [{operation: {paths: [/via-pod]}}]}]
"#;

const LAYERED_URL: &str = "http://echo.layers.svc.cluster.local:8000";

#[tokio::test]
async fn the_pod_label_wins_for_traffic_addressed_to_the_pod() -> Result<()> {
    bounded(async {
        let mesh = mesh("pod-waypoint", 2).await?;
        apply(&mesh, "app.yaml", LAYERED).await?;
        let at = |name: &str| -> Result<String> {
            let ip = pod(&mesh, "layers", name)?.ip();
            Ok(format!("http://{ip}:8000"))
        };
        let (plain, bound) = (at("plain")?, at("bound")?);
        // `get waypoints` says which traffic each takes (the label, Istio's default without).
        let mut taken: Vec<(String, String)> = mesh
            .waypoints()
            .await
            .into_iter()
            .map(|waypoint| (waypoint.name, waypoint.waypoint_for))
            .collect();
        taken.sort();
        ensure!(
            taken
                == [
                    ("wp-ns".to_owned(), "all".to_owned()),
                    ("wp-pod".to_owned(), "workload".to_owned()),
                    ("wp-svc".to_owned(), "service".to_owned()),
                ],
            "{taken:?}"
        );
        let paths = ["/via-pod", "/via-svc", "/via-ns"];
        // Without a label of its own, a pod's traffic goes through the namespace's waypoint:
        // the Service's label is for traffic addressed to the Service.
        eventually(
            "the namespace's waypoint serves the unlabelled pod",
            || async { Ok(statuses(&mesh, "layers", &plain, &paths).await? == [200, 200, 403]) },
        )
        .await?;
        eventually("the pod's own waypoint serves the labelled pod", || async {
            Ok(statuses(&mesh, "layers", &bound, &paths).await? == [403, 200, 200])
        })
        .await?;
        // Traffic addressed to the Service still goes through the Service's waypoint.
        eventually("the service's waypoint serves the service", || async {
            Ok(
                statuses(&mesh, "layers", LAYERED_URL, &["/via-svc", "/via-pod"]).await?
                    == [403, 200],
            )
        })
        .await?;
        mesh.down().await?;
        Ok(())
    })
    .await
}
