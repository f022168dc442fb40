//! Istio's own routing API through the controller and the waypoint (root, local mesh): a
//! VirtualService routes by header to DestinationRule subsets (pods picked by their
//! `version` label) and injects a fault (abort) for one header; a DestinationRule's
//! `outlierDetection` ejects an endpoint that answers 500 (and takes it back after
//! `baseEjectionTime`); a VirtualService `fault.delay` delays the requests it matches only.

use std::path::Path;
use std::time::Duration;

use ambit_e2e::{LoadReport, apply, bounded, eventually, mesh, pod};
use ambit_localmesh::LocalMesh;
use anyhow::{Result, ensure};

const REVIEWS: &str = "http://reviews.bookinfo.svc.cluster.local:9080/";

const ROUTING: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: bookinfo}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
  - {name: v3, labels: {version: v3}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {x-fault: {exact: "yes"}}}]
    fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
    route: [{destination: {host: reviews, subset: v1}}]
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route: [{destination: {host: reviews, subset: v3}}]
"#;

async fn apply_sample(mesh: &LocalMesh, name: &str) -> Result<()> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("samples")
        .join(name);
    apply(mesh, name, &std::fs::read_to_string(&path)?).await
}

/// `n` requests to reviews from the curl pod.
async fn load(mesh: &LocalMesh, n: u32, header: Option<&str>) -> Result<LoadReport> {
    let headers: Vec<&str> = header.into_iter().collect();
    ambit_e2e::load(&pod(mesh, "client", "curl-0")?, REVIEWS, n, &headers).await
}

#[tokio::test]
async fn virtual_service_routes_to_destination_rule_subsets_and_injects_faults() -> Result<()> {
    bounded(async {
        let mesh = mesh("istio-routing", 2).await?;
        for name in [
            "00-namespaces.yaml",
            "10-bookinfo.yaml",
            "11-curl.yaml",
            "20-enable-ambient.yaml",
            "40-waypoint.yaml",
        ] {
            apply_sample(&mesh, name).await?;
        }
        apply(&mesh, "routing.yaml", ROUTING).await?;
        eventually("default traffic goes to subset v3 only", || async {
            let report = load(&mesh, 10, None).await?;
            Ok(report.all(200, 10) && report.versions.get("v3") == Some(&10))
        })
        .await?;
        let jason = load(&mesh, 10, Some("end-user:jason")).await?.versions;
        ensure!(jason.get("v2") == Some(&10), "jason goes to v2: {jason:?}");
        let faults = load(&mesh, 5, Some("x-fault:yes")).await?;
        ensure!(
            faults.all(418, 5),
            "the abort fault answers 418: {faults:?}"
        );
        mesh.down().await?;
        Ok(())
    })
    .await
}

/// An echo service behind a namespace waypoint, its `good` endpoint, and a client.
const ECHO_APP: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: resil, labels: {istio.io/dataplane-mode: ambient, istio.io/use-waypoint: waypoint}}
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: resil}
spec: {selector: {app: echo}, ports: [{name: http, port: 8000, targetPort: 8000}]}
---
apiVersion: v1
kind: Pod
metadata: {name: echo-good, namespace: resil, labels: {app: echo}}
spec:
  nodeName: node-2
  containers: [{name: echo, command: [echo-server], args: [--addr, "0.0.0.0:8000", --version, good]}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: resil}
spec: {nodeName: node-1, containers: [{name: client, command: [sleep, infinity]}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: resil}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
"#;

/// A second endpoint of the echo service that answers every request with 500.
const BAD_ENDPOINT: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: echo-bad, namespace: resil, labels: {app: echo}}
spec:
  nodeName: node-2
  containers:
  - name: echo
    command: [echo-server]
    args: [--addr, "0.0.0.0:8000", --version, bad, --fail-ratio, "1", --fail-status, "500"]
"#;

const ECHO: &str = "http://echo.resil.svc.cluster.local:8000/";

// One 500 ejects; the ejection (3 s × ejections) outlasts a batch of requests but ends well
// within one bounded wait, so the endpoint's return can be seen too.
const OUTLIER_DETECTION: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo, namespace: resil}
spec:
  host: echo
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 3s, maxEjectionPercent: 100}
"#;

#[tokio::test]
async fn destination_rule_outlier_detection_ejects_a_failing_endpoint() -> Result<()> {
    bounded(async {
        let mesh = mesh("outlier", 2).await?;
        apply(&mesh, "app.yaml", ECHO_APP).await?;
        apply(&mesh, "bad.yaml", BAD_ENDPOINT).await?;
        let client = pod(&mesh, "resil", "client")?;
        // Through the waypoint, requests spread over both endpoints: some fail.
        eventually("both endpoints answer, the bad one with 500", || async {
            let report = ambit_e2e::load(&client, ECHO, 20, &[]).await?;
            Ok(report.count(200) > 0
                && report.count(500) > 0
                && report.versions.contains_key("bad")
                && report.versions.contains_key("good"))
        })
        .await?;

        apply(&mesh, "outlier.yaml", OUTLIER_DETECTION).await?;
        eventually(
            "the failing endpoint is ejected: every request succeeds",
            || async {
                let report = ambit_e2e::load(&client, ECHO, 20, &[]).await?;
                Ok(report.all(200, 20) && report.versions.get("good") == Some(&20))
            },
        )
        .await?;
        // The ejection is temporary: after baseEjectionTime the endpoint takes traffic again
        // (and fails, and is ejected again).
        eventually(
            "the ejected endpoint returns after baseEjectionTime",
            || async {
                let report = ambit_e2e::load(&client, ECHO, 10, &[]).await?;
                Ok(report.count(500) > 0)
            },
        )
        .await?;
        mesh.down().await?;
        Ok(())
    })
    .await
}

const FAULT_DELAY: Duration = Duration::from_secs(1);

// Requests with `x-delay: yes` wait one second at the waypoint; the others are not delayed.
const DELAY_ROUTE: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo, namespace: resil}
spec:
  hosts: [echo]
  http:
  - match: [{headers: {x-delay: {exact: "yes"}}}]
    fault: {delay: {fixedDelay: 1s, percentage: {value: 100}}}
    route: [{destination: {host: echo}}]
  - route: [{destination: {host: echo}}]
"#;

#[tokio::test]
async fn virtual_service_fault_delay_delays_matching_requests() -> Result<()> {
    bounded(async {
        let mesh = mesh("fault-delay", 2).await?;
        apply(&mesh, "app.yaml", ECHO_APP).await?;
        let client = pod(&mesh, "resil", "client")?;
        eventually("the service answers through the waypoint", || async {
            Ok(ambit_e2e::load(&client, ECHO, 5, &[]).await?.all(200, 5))
        })
        .await?;

        apply(&mesh, "delay.yaml", DELAY_ROUTE).await?;
        eventually("requests with x-delay: yes are delayed", || async {
            let report = ambit_e2e::load(&client, ECHO, 3, &["x-delay:yes"]).await?;
            Ok(report.all(200, 3) && report.latency_min.is_some_and(|min| min >= FAULT_DELAY))
        })
        .await?;
        let undelayed = ambit_e2e::load(&client, ECHO, 5, &[]).await?;
        ensure!(
            undelayed.all(200, 5) && undelayed.latency_max.is_some_and(|max| max < FAULT_DELAY),
            "requests without the header are not delayed: {undelayed:?}"
        );
        mesh.down().await?;
        Ok(())
    })
    .await
}
