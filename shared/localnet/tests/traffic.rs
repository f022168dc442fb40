//! Traffic through a real netns cluster: pods reach each other on one node and across nodes,
//! from in-process sockets and from spawned processes. Needs root (CI runs as root).

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;

use anyhow::{Context, Result, ensure};
use support::{ECHO_PORT, bounded, echo_in, exchange, two_node_cluster};

#[tokio::test]
async fn tcp_echo_across_nodes_with_in_process_sockets() -> Result<()> {
    bounded(async {
        let (cluster, client, server) = two_node_cluster("echo-across").await?;
        assert_ne!(client.node(), server.node());
        let _server = echo_in(&server, b"")?;
        let to = SocketAddr::from((server.ip(), ECHO_PORT));
        let echoed = exchange(client.netns(), to, b"hello across nodes", 18).await?;
        assert_eq!(echoed, b"hello across nodes");
        cluster.teardown().await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn pods_on_the_same_node_reach_each_other() -> Result<()> {
    bounded(async {
        let (cluster, client, _) = two_node_cluster("same-node").await?;
        let neighbour = cluster.add_pod("a", "other", "neighbour").await?;
        assert_eq!(neighbour.node(), client.node());
        assert_ne!(neighbour.ip(), client.ip());
        assert!(
            cluster
                .node("a")
                .unwrap()
                .pod_cidr()
                .contains(neighbour.ip())
        );
        let _server = echo_in(&neighbour, b"hi:")?;
        let to = SocketAddr::from((neighbour.ip(), ECHO_PORT));
        let echoed = exchange(client.netns(), to, b"ping", 7).await?;
        assert_eq!(echoed, b"hi:ping");
        cluster.teardown().await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn spawned_processes_run_inside_the_pod() -> Result<()> {
    bounded(async {
        let (cluster, client, server) = two_node_cluster("processes").await?;

        let addr = client
            .run("ip", ["-4", "-o", "addr", "show", "dev", "eth0"])
            .await?;
        ensure!(addr.status.success(), "ip addr failed: {addr:?}");
        let addr = String::from_utf8(addr.stdout)?;
        ensure!(addr.contains(&format!("{}/24", client.ip())), "{addr}");

        let routes = client.run("ip", ["route", "show", "default"]).await?;
        let routes = String::from_utf8(routes.stdout)?;
        ensure!(
            routes.contains(&format!("via {}", client.gateway())),
            "{routes}"
        );

        // A spawned process talks TCP across nodes (bash's /dev/tcp) to an in-process server.
        let _server = echo_in(&server, b"")?;
        let script = format!(
            "exec 3<>/dev/tcp/{}/{ECHO_PORT}; printf from-bash >&3; head -c 9 <&3",
            server.ip()
        );
        let out = client.run("bash", ["-c", &script]).await?;
        ensure!(out.status.success(), "bash failed: {out:?}");
        assert_eq!(out.stdout, b"from-bash");

        // A failing program's status and stderr come back unchanged.
        let out = client.run("ip", ["link", "show", "dev", "nope0"]).await?;
        ensure!(!out.status.success());
        ensure!(
            String::from_utf8_lossy(&out.stderr).contains("nope0"),
            "{out:?}"
        );

        // `command` gives a plain tokio Command placed in the pod.
        let out = client
            .command("cat")
            .arg("/proc/net/route")
            .output()
            .await?;
        let table = String::from_utf8(out.stdout)?;
        ensure!(table.lines().any(|l| l.starts_with("eth0")), "{table}");
        cluster.teardown().await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn forwarding_and_routes_live_only_inside_node_namespaces() -> Result<()> {
    bounded(async {
        let root_forwarding = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")?;
        let root_links = root_link_names().await?;
        let (cluster, _client, _server) = two_node_cluster("forwarding").await?;
        let a = cluster.node("a").unwrap();
        let b = cluster.node("b").unwrap();

        for node in [&a, &b] {
            let out = node
                .netns()
                .run("cat", ["/proc/sys/net/ipv4/ip_forward"])
                .await?;
            assert_eq!(
                String::from_utf8(out.stdout)?.trim(),
                "1",
                "{}",
                node.name()
            );
        }
        let routes = a.netns().run("ip", ["route", "show"]).await?;
        let routes = String::from_utf8(routes.stdout)?;
        let expected = format!("{} via {} dev eth0", b.pod_cidr(), b.underlay_ip());
        ensure!(routes.contains(&expected), "node a routes: {routes}");

        let out = cluster
            .underlay()
            .run("ip", ["-o", "link", "show", "master", "br0"])
            .await?;
        let ports = String::from_utf8(out.stdout)?;
        ensure!(
            ports.contains("veth-n1") && ports.contains("veth-n2"),
            "{ports}"
        );

        assert_eq!(
            std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")?,
            root_forwarding
        );
        assert_eq!(
            root_link_names().await?,
            root_links,
            "root namespace links changed"
        );
        cluster.teardown().await?;
        Ok(())
    })
    .await
}

async fn root_link_names() -> Result<BTreeSet<String>> {
    let out = tokio::process::Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .await?;
    Ok(String::from_utf8(out.stdout)?
        .lines()
        .filter_map(|line| line.split(':').nth(1))
        .map(|name| name.trim().to_owned())
        .collect())
}

/// The MAC of `link` inside `netns`.
async fn mac_of(netns: &ambit_localnet::Netns, link: &str) -> Result<String> {
    let out = netns
        .run("ip", ["-br", "link", "show", "dev", link])
        .await?;
    ensure!(out.status.success(), "ip link show {link} failed");
    let text = String::from_utf8(out.stdout)?;
    text.split_whitespace()
        .nth(2)
        .map(str::to_owned)
        .context("no MAC in `ip -br link`")
}

#[tokio::test]
async fn a_nodes_pod_bridge_keeps_one_mac_as_pods_come_and_go() -> Result<()> {
    bounded(async {
        let (cluster, _, _) = two_node_cluster("bridge-mac").await?;
        let node = cluster.node("a").context("node a")?;
        let before = mac_of(node.netns(), "cbr0").await?;
        // Pods learn their gateway's MAC once; a bridge that took each new port's lower MAC
        // would leave them sending to an address it no longer owns.
        ensure!(
            before.starts_with("02:a0:"),
            "the pod bridge's MAC is not pinned: {before}"
        );
        for name in ["m1", "m2", "m3"] {
            cluster.add_pod("a", "demo", name).await?;
        }
        cluster.remove_pod("demo", "m2").await?;
        ensure!(
            mac_of(node.netns(), "cbr0").await? == before,
            "the pod bridge's MAC changed"
        );
        let underlay = mac_of(&cluster.underlay(), "br0").await?;
        ensure!(
            underlay.starts_with("02:a0:"),
            "the underlay bridge's MAC is not pinned: {underlay}"
        );
        cluster.teardown().await?;
        Ok(())
    })
    .await
}
