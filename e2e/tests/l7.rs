//! L7 scenarios with the sample manifests of `e2e/samples/` (root): the bookinfo-shaped app and
//! a curl pod in a two-node local mesh, the `load` client run inside the curl pod, names
//! resolved by ztunnel's DNS proxy. An L7 policy without a waypoint fails safe (denies); a
//! waypoint deployed on demand by applying a Gateway; a header route to v2; a 90/10 split; an
//! L7 deny by path through the waypoint; retries masking 50 % failures; a route timeout → 504.

use std::path::Path;

use ambit_e2e::{LoadReport, bounded, eventually, mesh, pod};
use ambit_localmesh::LocalMesh;
use anyhow::{Context, Result, ensure};

const REVIEWS: &str = "http://reviews.bookinfo.svc.cluster.local:9080";
const RATINGS: &str = "http://ratings.bookinfo.svc.cluster.local:9080";
const FLAKY: &str = "http://flaky.bookinfo.svc.cluster.local:9080";

fn sample(name: &str) -> Result<(String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("samples")
        .join(name);
    let text = std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
    Ok((path.display().to_string(), text))
}

async fn apply(mesh: &LocalMesh, name: &str) -> Result<()> {
    let (origin, text) = sample(name)?;
    let report = mesh.apply(&origin, &text).await;
    ensure!(report.errors.is_empty(), "{name}: {:?}", report.errors);
    Ok(())
}

/// Runs `load get URL -n N [-H …] --json` inside the curl pod.
async fn load(mesh: &LocalMesh, url: &str, requests: u32, headers: &[&str]) -> Result<LoadReport> {
    ambit_e2e::load(&pod(mesh, "client", "curl-0")?, url, requests, headers).await
}

#[tokio::test]
async fn waypoint_on_demand_routes_splits_and_denies() -> Result<()> {
    bounded(async {
        let mesh = mesh("l7", 2).await?;
        for name in [
            "00-namespaces.yaml",
            "10-bookinfo.yaml",
            "11-curl.yaml",
            "14-flaky.yaml",
            "20-enable-ambient.yaml",
        ] {
            apply(&mesh, name).await?;
        }
        eventually("reviews answers through the mesh", || async {
            Ok(load(&mesh, REVIEWS, 5, &[]).await?.all(200, 5))
        })
        .await?;

        // An L7 rule with no waypoint to enforce it: ztunnel fails safe and DENY matches all.
        let l7_deny_without_waypoint = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ratings-no-delete, namespace: bookinfo}
spec:
  selector: {matchLabels: {app: ratings}}
  action: DENY
  rules: [{to: [{operation: {methods: [DELETE]}}]}]
"#;
        let report = mesh.apply("l7-deny.yaml", l7_deny_without_waypoint).await;
        ensure!(report.errors.is_empty(), "{:?}", report.errors);
        eventually("the L7 DENY denies everything at L4", || async {
            let load = load(&mesh, RATINGS, 3, &[]).await?;
            Ok(load.transport_errors == 3 || load.count(200) == 0)
        })
        .await?;
        let report = mesh.delete("l7-deny.yaml", l7_deny_without_waypoint).await;
        ensure!(report.errors.is_empty(), "{:?}", report.errors);

        // A waypoint on demand, then a header route only it can apply.
        apply(&mesh, "40-waypoint.yaml").await?;
        let waypoints = mesh.waypoints().await;
        ensure!(
            waypoints.iter().any(|w| w.name == "waypoint" && w.running),
            "the Gateway started a waypoint: {waypoints:?}"
        );
        apply(&mesh, "50-route-reviews-header-v2.yaml").await?;
        eventually("end-user: jason goes to v2", || async {
            let jason = load(&mesh, REVIEWS, 10, &["end-user:jason"]).await?;
            let others = load(&mesh, REVIEWS, 10, &[]).await?;
            Ok(jason.versions.get("v2") == Some(&10) && others.versions.get("v1") == Some(&10))
        })
        .await?;

        // 90/10 over 200 requests, within a generous tolerance (binomial sd is about 4).
        apply(&mesh, "51-route-reviews-canary-90-10.yaml").await?;
        eventually("the canary split applies", || async {
            let split = load(&mesh, REVIEWS, 20, &[]).await?;
            Ok(split.versions.get("v1").copied().unwrap_or(0) < 20 || split.versions.len() > 1)
        })
        .await?;
        let split = load(&mesh, REVIEWS, 200, &[]).await?;
        ensure!(split.all(200, 200), "every request answered: {split:?}");
        let v2 = split.versions.get("v2").copied().unwrap_or(0);
        let v1 = split.versions.get("v1").copied().unwrap_or(0);
        ensure!(v1 + v2 == 200, "only v1 and v2: {split:?}");
        ensure!((5..=40).contains(&v2), "about 10 % to v2, got {v2} of 200");

        // L7 deny by path, enforced by the waypoint (403), other paths still served.
        let deny_admin = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-no-admin, namespace: bookinfo}
spec:
  targetRefs: [{group: "", kind: Service, name: reviews}]
  action: DENY
  rules: [{to: [{operation: {paths: ["/admin*"]}}]}]
"#;
        let report = mesh.apply("deny-admin.yaml", deny_admin).await;
        ensure!(report.errors.is_empty(), "{:?}", report.errors);
        eventually("the waypoint denies /admin with 403", || async {
            Ok(load(&mesh, &format!("{REVIEWS}/admin/x"), 3, &[])
                .await?
                .all(403, 3))
        })
        .await?;
        ensure!(
            load(&mesh, REVIEWS, 5, &[]).await?.all(200, 5),
            "other paths are still served"
        );

        // Retries hide a backend failing half of the requests.
        let before = load(&mesh, FLAKY, 100, &[]).await?;
        let failed_before = 100 - before.count(200);
        ensure!(failed_before >= 25, "flaky fails about half: {before:?}");
        apply(&mesh, "60-route-flaky-retry.yaml").await?;
        eventually("retries apply", || async {
            Ok(load(&mesh, FLAKY, 20, &[]).await?.all(200, 20))
        })
        .await?;
        let after = load(&mesh, FLAKY, 100, &[]).await?;
        ensure!(
            after.count(200) >= 97,
            "retries mask the failures: {after:?}"
        );

        // A route timeout: a backend slower than it gets 504 from the waypoint.
        let timeout_route = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: reviews, namespace: bookinfo}
spec:
  parentRefs: [{group: "", kind: Service, name: reviews, port: 9080}]
  rules:
  - backendRefs: [{name: reviews-v1, port: 9080}]
    timeouts: {request: 200ms}
"#;
        let report = mesh.apply("timeout.yaml", timeout_route).await;
        ensure!(report.errors.is_empty(), "{:?}", report.errors);
        eventually("a slow answer times out with 504", || async {
            Ok(load(&mesh, &format!("{REVIEWS}/?delay=1s"), 2, &[])
                .await?
                .all(504, 2))
        })
        .await?;
        ensure!(
            load(&mesh, REVIEWS, 5, &[]).await?.all(200, 5),
            "fast answers still pass"
        );
        mesh.down().await?;
        Ok(())
    })
    .await
}
