//! Istio's own routing API through the controller and the waypoint (root, local mesh): a
//! VirtualService routes by header to DestinationRule subsets (pods picked by their
//! `version` label), and injects a fault (abort) for one header.

use std::collections::BTreeMap;
use std::path::Path;

use ambit_e2e::{bin_dir, bounded, eventually, mesh};
use ambit_localmesh::LocalMesh;
use anyhow::{Context, Result, ensure};

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
    let report = mesh.apply(name, &std::fs::read_to_string(&path)?).await;
    ensure!(report.errors.is_empty(), "{name}: {:?}", report.errors);
    Ok(())
}

/// Statuses and versions of `n` requests from the curl pod.
async fn load(
    mesh: &LocalMesh,
    n: u32,
    header: Option<&str>,
) -> Result<(BTreeMap<String, u64>, BTreeMap<String, u64>)> {
    let curl = mesh.pod("client", "curl-0").context("curl pod")?;
    let mut command = curl.netns().command(bin_dir()?.join("load"));
    command.args([
        "get",
        REVIEWS,
        "-n",
        &n.to_string(),
        "--json",
        "--timeout",
        "5s",
    ]);
    if let Some(header) = header {
        command.args(["-H", header]);
    }
    let output = command.output().await?;
    let report: serde_json::Value = serde_json::from_slice(&output.stdout)
        .with_context(|| String::from_utf8_lossy(&output.stderr).into_owned())?;
    let counts = |field: &str| -> BTreeMap<String, u64> {
        report[field]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok((counts("statuses"), counts("versions")))
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
        let report = mesh.apply("routing.yaml", ROUTING).await;
        ensure!(report.errors.is_empty(), "{:?}", report.errors);
        eventually("default traffic goes to subset v3 only", || async {
            let (statuses, versions) = load(&mesh, 10, None).await?;
            Ok(statuses.get("200") == Some(&10) && versions.get("v3") == Some(&10))
        })
        .await?;
        let (_, jason) = load(&mesh, 10, Some("end-user:jason")).await?;
        ensure!(jason.get("v2") == Some(&10), "jason goes to v2: {jason:?}");
        let (faults, _) = load(&mesh, 5, Some("x-fault:yes")).await?;
        ensure!(
            faults.get("418") == Some(&5),
            "the abort fault answers 418: {faults:?}"
        );
        mesh.down().await?;
        Ok(())
    })
    .await
}
