//! `ambit demo`: the mesh on this machine, end to end, with a short report. Brings a two-node
//! local mesh up in this process, applies the sample app of `e2e/samples/` (compiled in), and
//! checks each step: ambient enrollment with SPIFFE identities, an L4 deny, a waypoint on
//! demand, a header route, a 90/10 canary over 200 requests, retries hiding 50 % failures.
//! Exits 0 only if every step behaved as expected.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use ambit_localmesh::{LocalMesh, MeshOptions};
use anyhow::{Context, Result, bail, ensure};

use crate::local::bin_dir;

/// The sample manifests, in the order the demo applies them.
const SAMPLES: &[(&str, &str)] = &[
    (
        "00-namespaces.yaml",
        include_str!("../../e2e/samples/00-namespaces.yaml"),
    ),
    (
        "10-bookinfo.yaml",
        include_str!("../../e2e/samples/10-bookinfo.yaml"),
    ),
    (
        "11-curl.yaml",
        include_str!("../../e2e/samples/11-curl.yaml"),
    ),
    (
        "12-httpbin.yaml",
        include_str!("../../e2e/samples/12-httpbin.yaml"),
    ),
    (
        "14-flaky.yaml",
        include_str!("../../e2e/samples/14-flaky.yaml"),
    ),
];
const ENABLE_AMBIENT: &str = include_str!("../../e2e/samples/20-enable-ambient.yaml");
const DENY_CURL: &str = include_str!("../../e2e/samples/30-deny-curl-to-httpbin.yaml");
const WAYPOINT: &str = include_str!("../../e2e/samples/40-waypoint.yaml");
const HEADER_ROUTE: &str = include_str!("../../e2e/samples/50-route-reviews-header-v2.yaml");
const CANARY: &str = include_str!("../../e2e/samples/51-route-reviews-canary-90-10.yaml");
const RETRY: &str = include_str!("../../e2e/samples/60-route-flaky-retry.yaml");

const REVIEWS: &str = "http://reviews.bookinfo.svc.cluster.local:9080/";
const HTTPBIN: &str = "http://httpbin.bookinfo.svc.cluster.local:8000/";
const FLAKY: &str = "http://flaky.bookinfo.svc.cluster.local:9080/";
/// Bound on waiting for one change to reach the proxies.
const SETTLE: Duration = Duration::from_secs(30);

/// What `load get --json` reported.
#[derive(Debug, Default)]
struct Load {
    statuses: BTreeMap<String, u64>,
    versions: BTreeMap<String, u64>,
    transport_errors: u64,
}

/// Runs the demo; `keep` leaves the mesh running (then the process waits for Ctrl-C).
pub fn run(keep: bool) -> Result<u8> {
    if !nix::unistd::geteuid().is_root() {
        bail!("ambit demo needs root (it creates network namespaces and nftables rules); try sudo");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(demo(keep))
}

async fn demo(keep: bool) -> Result<u8> {
    let state = std::env::temp_dir().join(format!("ambit-demo-{}", std::process::id()));
    let mut options = MeshOptions::new(&state, bin_dir()?);
    options.nodes = 2;
    options.name = "ambit-demo".to_owned();
    println!(
        "Ambit demo: a two-node mesh on this machine (state and logs in {})",
        state.display()
    );
    let mesh = LocalMesh::up(options)
        .await
        .context("bringing the mesh up")?;
    let outcome = steps(&mesh).await;
    match &outcome {
        Ok(()) => println!("\nevery step behaved as expected"),
        Err(err) => println!(
            "\nFAILED: {err:#}\n(logs: {})",
            state.join("logs").display()
        ),
    }
    if keep {
        println!("the mesh stays up; press Ctrl-C to stop it");
        let _ = tokio::signal::ctrl_c().await;
    }
    mesh.down().await.context("tearing the mesh down")?;
    Ok(u8::from(outcome.is_err()))
}

async fn steps(mesh: &LocalMesh) -> Result<()> {
    step(
        "1. apply the sample app (bookinfo, curl, httpbin, flaky)",
        async {
            for (name, text) in SAMPLES {
                apply(mesh, name, text).await?;
            }
            let pods = mesh.pods().await;
            Ok(format!("{} pods running on {} nodes", pods.len(), 2))
        },
    )
    .await?;

    step("2. enable ambient on both namespaces", async {
        apply(mesh, "20-enable-ambient.yaml", ENABLE_AMBIENT).await?;
        settle("reviews answers through the mesh", || async {
            Ok(all_ok(&load(mesh, REVIEWS, 5, &[]).await?, 5))
        })
        .await?;
        let enrolled: Vec<String> = mesh
            .pods()
            .await
            .into_iter()
            .filter(|p| p.enrolled)
            .map(|p| format!("{}/{}", p.namespace, p.name))
            .collect();
        let identities = ztunnel_identities(mesh)?;
        Ok(format!(
            "{} pods enrolled; identities ztunnel holds:\n{}",
            enrolled.len(),
            identities
                .iter()
                .map(|id| format!("       {id}"))
                .collect::<Vec<_>>()
                .join("\n")
        ))
    })
    .await?;

    step("3. L4 deny: curl may not reach httpbin", async {
        ensure!(
            all_ok(&load(mesh, HTTPBIN, 3, &[]).await?, 3),
            "httpbin answers before the policy"
        );
        apply(mesh, "30-deny-curl-to-httpbin.yaml", DENY_CURL).await?;
        settle("the connection is refused", || async {
            let load = load(mesh, HTTPBIN, 3, &[]).await?;
            Ok(load.transport_errors == 3)
        })
        .await?;
        ensure!(
            all_ok(&load(mesh, REVIEWS, 3, &[]).await?, 3),
            "reviews must still answer curl"
        );
        Ok("curl → httpbin refused by httpbin's ztunnel; reviews still answers".to_owned())
    })
    .await?;

    step("4. deploy a waypoint for bookinfo", async {
        apply(mesh, "40-waypoint.yaml", WAYPOINT).await?;
        let waypoints = mesh.waypoints().await;
        let waypoint = waypoints
            .iter()
            .find(|w| w.name == "waypoint" && w.running)
            .context("no running waypoint")?;
        Ok(format!(
            "waypoint bookinfo/waypoint running at {}",
            waypoint
                .address
                .map_or_else(|| "-".to_owned(), |ip| ip.to_string())
        ))
    })
    .await?;

    step("5. header route: end-user: jason → reviews v2", async {
        apply(mesh, "50-route-reviews-header-v2.yaml", HEADER_ROUTE).await?;
        settle("jason reaches v2, others v1", || async {
            let jason = load(mesh, REVIEWS, 10, &["end-user:jason"]).await?;
            let others = load(mesh, REVIEWS, 10, &[]).await?;
            Ok(jason.versions.get("v2") == Some(&10) && others.versions.get("v1") == Some(&10))
        })
        .await?;
        Ok("10/10 jason requests on v2, 10/10 others on v1".to_owned())
    })
    .await?;

    step("6. canary: 90 % v1, 10 % v2 over 200 requests", async {
        apply(mesh, "51-route-reviews-canary-90-10.yaml", CANARY).await?;
        settle("the split applies", || async {
            Ok(load(mesh, REVIEWS, 20, &[]).await?.versions.len() > 1)
        })
        .await?;
        let split = load(mesh, REVIEWS, 200, &[]).await?;
        let v1 = split.versions.get("v1").copied().unwrap_or(0);
        let v2 = split.versions.get("v2").copied().unwrap_or(0);
        ensure!(all_ok(&split, 200), "not every request answered: {split:?}");
        ensure!(
            v1 + v2 == 200 && (5..=40).contains(&v2),
            "split off: v1 {v1}, v2 {v2}"
        );
        Ok(format!("v1 {v1}, v2 {v2} (expected about 180/20)"))
    })
    .await?;

    step("7. retries hide 50 % injected failures", async {
        let before = load(mesh, FLAKY, 100, &[]).await?;
        let failed_before = 100 - before.statuses.get("200").copied().unwrap_or(0);
        ensure!(
            failed_before > 20,
            "flaky should fail about half: {before:?}"
        );
        apply(mesh, "60-route-flaky-retry.yaml", RETRY).await?;
        settle("retries apply", || async {
            Ok(load(mesh, FLAKY, 20, &[]).await?.statuses.get("200") == Some(&20))
        })
        .await?;
        let after = load(mesh, FLAKY, 100, &[]).await?;
        let ok_after = after.statuses.get("200").copied().unwrap_or(0);
        ensure!(ok_after >= 97, "retries should hide failures: {after:?}");
        Ok(format!(
            "without retries {failed_before}/100 failed; with retries {}/100 failed",
            100 - ok_after
        ))
    })
    .await
}

/// Runs one step, printing its title, its result and how long it took.
async fn step(title: &str, body: impl Future<Output = Result<String>>) -> Result<()> {
    println!("\n{title}");
    let started = Instant::now();
    match body.await {
        Ok(summary) => {
            println!(
                "   ok ({:.1} s): {summary}",
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Err(err) => Err(err.context(title.to_owned())),
    }
}

async fn apply(mesh: &LocalMesh, name: &str, text: &str) -> Result<()> {
    let report = mesh.apply(name, text).await;
    ensure!(
        report.errors.is_empty(),
        "{name}: {}",
        report.errors.join("; ")
    );
    Ok(())
}

/// Polls until `check` holds: changes reach the proxies asynchronously.
async fn settle<F, Fut>(what: &str, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool>>,
{
    let started = Instant::now();
    loop {
        if matches!(check().await, Ok(true)) {
            return Ok(());
        }
        if started.elapsed() > SETTLE {
            bail!("{what}: not within {SETTLE:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn all_ok(load: &Load, requests: u64) -> bool {
    load.statuses.get("200") == Some(&requests)
}

/// `load get URL -n N --json` run inside the curl pod.
async fn load(mesh: &LocalMesh, url: &str, requests: u32, headers: &[&str]) -> Result<Load> {
    let curl = mesh.pod("client", "curl-0").context("the curl pod")?;
    let mut command = curl.netns().command(bin_dir()?.join("load"));
    command.args([
        "get",
        url,
        "-n",
        &requests.to_string(),
        "--json",
        "--timeout",
        "5s",
    ]);
    for header in headers {
        command.args(["-H", header]);
    }
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .context("load timed out")??;
    let report: serde_json::Value = serde_json::from_slice(&output.stdout)
        .with_context(|| format!("load: {}", String::from_utf8_lossy(&output.stderr)))?;
    let counts = |field: &str| -> BTreeMap<String, u64> {
        report[field]
            .as_object()
            .map(|map| {
                map.iter()
                    .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(Load {
        statuses: counts("statuses"),
        versions: counts("versions"),
        transport_errors: report["transportErrors"].as_u64().unwrap_or(0),
    })
}

/// The identities ztunnels hold certificates for, from their logs of issued certificates.
fn ztunnel_identities(mesh: &LocalMesh) -> Result<Vec<String>> {
    let mut identities = std::collections::BTreeSet::new();
    for node in ["node-1", "node-2"] {
        let log = std::fs::read_to_string(mesh.ztunnel_log_path(node)).unwrap_or_default();
        for line in log.lines().filter(|l| l.contains("enrolled")) {
            if let Some(start) = line.find("spiffe://") {
                let id: String = line[start..]
                    .chars()
                    .take_while(|c| !c.is_whitespace() && *c != '"' && *c != ',')
                    .collect();
                identities.insert(format!("{node}: {id}"));
            }
        }
    }
    Ok(identities.into_iter().collect())
}
