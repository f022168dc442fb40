//! Creating and removing clusters, nodes and pods; crash cleanup through the state file.
//! Needs root (CI runs as root).

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ambit_localnet::{Cluster, cleanup_stale};
use anyhow::{Context, Result, bail, ensure};
use support::{ECHO_PORT, bounded, echo_in, exchange, netns_with_prefix, two_node_cluster};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Set in the child process that `crashed_owner_is_removed_by_cleanup_stale` starts.
const CRASH_CHILD_ENV: &str = "AMBIT_LOCALNET_CRASH_CHILD";
const CRASH_CHILD_TEST: &str = "crash_child_builds_a_cluster_and_waits_to_be_killed";

#[tokio::test]
async fn teardown_removes_every_namespace_and_the_state_file() -> Result<()> {
    bounded(async {
        let (cluster, _, _) = two_node_cluster("teardown").await?;
        let prefix = format!("{}-", cluster.prefix());
        let state_path = cluster.state_path().to_owned();
        let created = netns_with_prefix(&prefix).await?;
        // underlay + 2 nodes + 2 pods
        assert_eq!(created.len(), 5, "{created:?}");
        let recorded = std::fs::read_to_string(&state_path)?;
        for name in &created {
            ensure!(recorded.contains(name.as_str()), "{name} not in state file");
        }
        cluster.teardown().await?;
        assert_eq!(netns_with_prefix(&prefix).await?, Vec::<String>::new());
        ensure!(!state_path.exists(), "state file left behind");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn drop_tears_down_too() -> Result<()> {
    bounded(async {
        let (cluster, _, _) = two_node_cluster("dropped").await?;
        let prefix = format!("{}-", cluster.prefix());
        let state_path = cluster.state_path().to_owned();
        drop(cluster);
        assert_eq!(netns_with_prefix(&prefix).await?, Vec::<String>::new());
        ensure!(!state_path.exists(), "state file left behind");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn pods_and_nodes_are_removed_individually() -> Result<()> {
    bounded(async {
        let (cluster, client, server) = two_node_cluster("remove").await?;
        let c = cluster.add_node("c").await?;
        let extra = cluster.add_pod("c", "demo", "extra").await?;
        let server_ip = server.ip();

        cluster.remove_pod("demo", "server").await?;
        ensure!(!server.netns().exists(), "pod netns still mounted");
        ensure!(cluster.pod("demo", "server").is_none());
        let state = std::fs::read_to_string(cluster.state_path())?;
        ensure!(
            !state.contains(server.netns().name()),
            "state still lists the pod"
        );

        // The freed address and port name are reused, and the new pod is reachable.
        let again = cluster.add_pod("b", "demo", "server").await?;
        assert_eq!(again.ip(), server_ip);
        let _echo = echo_in(&again, b"")?;
        let to = SocketAddr::from((again.ip(), ECHO_PORT));
        assert_eq!(exchange(client.netns(), to, b"again", 5).await?, b"again");

        // Removing node c takes its pod and the other nodes' routes to it.
        cluster.remove_node("c").await?;
        ensure!(!c.netns().exists() && !extra.netns().exists());
        ensure!(cluster.node("c").is_none() && cluster.pod("demo", "extra").is_none());
        let a = cluster.node("a").context("node a")?;
        let routes = a.netns().run("ip", ["route", "show"]).await?;
        let routes = String::from_utf8(routes.stdout)?;
        ensure!(!routes.contains(&c.pod_cidr().to_string()), "{routes}");
        assert_eq!(cluster.nodes().len(), 2);

        // A node added later takes the free index and is routed from the others.
        let d = cluster.add_node("d").await?;
        assert_eq!(d.pod_cidr(), c.pod_cidr());
        let far = cluster.add_pod("d", "demo", "far").await?;
        let _far_echo = echo_in(&far, b"d:")?;
        let to = SocketAddr::from((far.ip(), ECHO_PORT));
        assert_eq!(exchange(client.netns(), to, b"x", 3).await?, b"d:x");
        cluster.teardown().await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn bad_requests_are_refused_with_clear_errors() -> Result<()> {
    bounded(async {
        let cluster = Cluster::create("errors").await?;
        cluster.add_node("a").await?;
        let err = cluster.add_node("a").await.unwrap_err();
        ensure!(err.is_already_exists(), "{err}");
        let err = cluster.add_pod("zz", "demo", "p").await.unwrap_err();
        ensure!(
            err.is_not_found() && err.to_string().contains("node zz"),
            "{err}"
        );
        let err = cluster.add_node("Bad_Name").await.unwrap_err();
        ensure!(
            err.is_invalid() && err.to_string().contains("Bad_Name"),
            "{err}"
        );
        cluster.add_pod("a", "demo", "p").await?;
        let err = cluster.add_pod("a", "demo", "p").await.unwrap_err();
        ensure!(err.is_already_exists(), "{err}");
        let err = cluster.remove_pod("demo", "missing").await.unwrap_err();
        ensure!(err.is_not_found(), "{err}");
        // Failed requests left nothing half-made behind.
        assert_eq!(
            netns_with_prefix(&format!("{}-", cluster.prefix()))
                .await?
                .len(),
            3
        );
        cluster.teardown().await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn concurrent_clusters_do_not_interfere() -> Result<()> {
    bounded(async {
        let (first, second) = tokio::join!(
            two_node_cluster("concurrent-1"),
            two_node_cluster("concurrent-2")
        );
        let (first, first_client, first_server) = first?;
        let (second, second_client, second_server) = second?;
        assert_ne!(first.prefix(), second.prefix());
        // Same address plan in both: isolation comes from the namespaces alone.
        assert_eq!(first_server.ip(), second_server.ip());
        let _one = echo_in(&first_server, b"1:")?;
        let _two = echo_in(&second_server, b"2:")?;
        let to = SocketAddr::from((first_server.ip(), ECHO_PORT));
        let (one, two) = tokio::join!(
            exchange(first_client.netns(), to, b"a", 3),
            exchange(second_client.netns(), to, b"b", 3)
        );
        assert_eq!(one?, b"1:a");
        assert_eq!(two?, b"2:b");

        let first_prefix = format!("{}-", first.prefix());
        first.teardown().await?;
        assert!(netns_with_prefix(&first_prefix).await?.is_empty());
        assert_eq!(exchange(second_client.netns(), to, b"c", 3).await?, b"2:c");
        second.teardown().await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn forgotten_cluster_is_removed_from_its_state_file() -> Result<()> {
    bounded(async {
        let (cluster, _, _) = two_node_cluster("forgotten").await?;
        let prefix = format!("{}-", cluster.prefix());
        let state_path = cluster.state_path().to_owned();
        // Simulates an owner that vanished without running any teardown.
        std::mem::forget(cluster);
        assert_eq!(netns_with_prefix(&prefix).await?.len(), 5);

        // Our process is alive, so the cluster is not stale and must survive a sweep.
        cleanup_stale().await?;
        assert_eq!(netns_with_prefix(&prefix).await?.len(), 5);

        Cluster::teardown_from_state(&state_path).await?;
        assert!(netns_with_prefix(&prefix).await?.is_empty());
        ensure!(!state_path.exists(), "state file left behind");
        let err = Cluster::teardown_from_state(&state_path).await.unwrap_err();
        ensure!(err.is_not_found(), "{err}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn crashed_owner_is_removed_by_cleanup_stale() -> Result<()> {
    bounded(async {
        let mut child = tokio::process::Command::new(std::env::current_exe()?)
            .args(["--exact", CRASH_CHILD_TEST, "--ignored", "--nocapture"])
            .env(CRASH_CHILD_ENV, "1")
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().context("child stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let (mut state_path, mut sleeper) = (None, None);
        while let Some(line) = lines.next_line().await? {
            if let Some(path) = line.strip_prefix("STATE=") {
                state_path = Some(PathBuf::from(path));
            } else if let Some(pid) = line.strip_prefix("SLEEPER=") {
                sleeper = Some(pid.parse::<u32>()?);
            } else if line == "READY" {
                break;
            }
        }
        let (Some(state_path), Some(sleeper)) = (state_path, sleeper) else {
            bail!("child exited before building its cluster");
        };
        child.kill().await?;
        let state = std::fs::read_to_string(&state_path)?;
        let prefix = state_prefix(&state)?;
        assert_eq!(
            netns_with_prefix(&prefix).await?.len(),
            3,
            "crash left netns"
        );
        ensure!(
            process_running(sleeper),
            "the pod's process should outlive its owner"
        );

        let cleaned = cleanup_stale().await?;
        ensure!(cleaned.contains(&state_path), "{cleaned:?}");
        assert!(netns_with_prefix(&prefix).await?.is_empty());
        ensure!(!state_path.exists(), "state file left behind");
        // Killed by the cleanup; it may linger briefly as a zombie until reaped.
        tokio::time::timeout(Duration::from_secs(10), async {
            while process_running(sleeper) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .context("process in the pod was not killed")?;
        Ok(())
    })
    .await
}

/// Not a test: the child half of `crashed_owner_is_removed_by_cleanup_stale`.
#[tokio::test]
#[ignore = "helper process for crashed_owner_is_removed_by_cleanup_stale"]
async fn crash_child_builds_a_cluster_and_waits_to_be_killed() -> Result<()> {
    if std::env::var_os(CRASH_CHILD_ENV).is_none() {
        return Ok(());
    }
    let cluster = Cluster::create("crashed").await?;
    cluster.add_node("a").await?;
    let pod = cluster.add_pod("a", "demo", "sleeper").await?;
    let sleeper = pod
        .command("sleep")
        .arg("600")
        .kill_on_drop(false)
        .spawn()?;
    println!("STATE={}", cluster.state_path().display());
    println!("SLEEPER={}", sleeper.id().context("sleeper pid")?);
    println!("READY");
    // The parent kills this process now; nothing after this point is meant to run.
    std::mem::forget(cluster);
    tokio::time::sleep(Duration::from_secs(60)).await;
    bail!("the parent test never killed this helper")
}

fn state_prefix(state: &str) -> Result<String> {
    let json: serde_json::Value = serde_json::from_str(state)?;
    let prefix = json["prefix"].as_str().context("prefix in state")?;
    Ok(format!("{prefix}-"))
}

/// True if `pid` exists and is not a zombie.
fn process_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}
