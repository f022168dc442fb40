//! L4 authorization at the destination ztunnel, through the real binary in the netns test bed
//! (root). One bed and one config cover every row: pods `demo/a` and `other/c` on node a call
//! pod `demo/b` on node b, whose ALLOW/DENY policies key on principal, namespace, ipBlock and
//! port, plus an ALLOW rule with an L7 field (never matches at ztunnel) and the kubelet probe
//! address (exempt from capture, so policy never sees it). Denials show up in b's metrics and
//! JSON access log with `response_flags="DENY"`.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use support::ztunnel::{
    access_records, exchange, http_get, prepare_dir, snapshot, start_ztunnel, start_ztunnel_with,
    workload_yaml,
};
use support::{Bed, bounded, echo_at, read_exact, run_ok, within};

const GREETING: &[u8] = b"hello from b";
const PROBE: Ipv4Addr = Ipv4Addr::new(169, 254, 7, 127);
const METRICS: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 15020);
const C_IDENTITY: &str = "spiffe://cluster.local/ns/other/sa/c";

/// Ports of b's echo servers and which of a (`demo/a`) and c (`other/c`) may reach each.
const MATRIX: [(u16, &str, bool, bool); 6] = [
    (7000, "principal demo/sa/a", true, false),
    (7001, "namespace other", false, true),
    (7002, "ipBlock of a", true, false),
    (7003, "ALLOW rule with an L7 field", false, false),
    (7004, "open port, DENY principal other/sa/c", true, false),
    (7005, "no rule for the port", false, false),
];

fn config(bed: &Bed, c: &ambit_localnet::Pod) -> String {
    let mut yaml = String::from("workloads:\n");
    yaml.push_str(&workload_yaml(&bed.a, "uid-a"));
    yaml.push_str(&workload_yaml(c, "uid-c"));
    yaml.push_str(&workload_yaml(&bed.b, "uid-b"));
    let allow = |name: &str, rule: &str| {
        format!("  - {{name: {name}, namespace: demo, spec: {{action: ALLOW, rules: [{rule}]}}}}\n")
    };
    yaml.push_str("authorizationPolicies:\n");
    yaml.push_str(&allow(
        "by-principal",
        r#"{from: [{source: {principals: ["cluster.local/ns/demo/sa/a"]}}], to: [{operation: {ports: ["7000"]}}]}"#,
    ));
    yaml.push_str(&allow(
        "by-namespace",
        r#"{from: [{source: {namespaces: [other]}}], to: [{operation: {ports: ["7001"]}}]}"#,
    ));
    yaml.push_str(&allow(
        "by-ip-block",
        &format!(
            r#"{{from: [{{source: {{ipBlocks: ["{}/32"]}}}}], to: [{{operation: {{ports: ["7002"]}}}}]}}"#,
            bed.a.ip()
        ),
    ));
    yaml.push_str(&allow(
        "l7-only",
        r#"{to: [{operation: {ports: ["7003"], methods: [GET]}}]}"#,
    ));
    yaml.push_str(&allow(
        "open-7004",
        r#"{to: [{operation: {ports: ["7004"]}}]}"#,
    ));
    yaml.push_str(
        "  - {name: deny-c, namespace: demo, spec: {action: DENY, rules: [{from: [{source: {principals: [\"cluster.local/ns/other/sa/c\"]}}], to: [{operation: {ports: [\"7004\"]}}]}]}}\n",
    );
    yaml
}

#[tokio::test]
async fn l4_policies_by_principal_namespace_ip_block_and_port_with_probe_exempt() -> Result<()> {
    bounded(async {
        let bed = Bed::new("zt-authz").await?;
        let c = bed.cluster.add_pod("a", "other", "c").await?;
        let (dir, _ca) = prepare_dir(&bed, "zt-authz", &config(&bed, &c))?;
        let node_a = bed.cluster.node("a").context("node a")?;
        let node_b = bed.cluster.node("b").context("node b")?;
        let zt_a = start_ztunnel(&node_a, &dir).await?;
        let zt_b = start_ztunnel_with(&node_b, &dir, "info", &["--log-json"]).await?;
        snapshot(&zt_a, &[(&bed.a, "uid-a"), (&c, "uid-c")]).await?;
        snapshot(&zt_b, &[(&bed.b, "uid-b")]).await?;

        let mut echoes = Vec::new();
        for (port, ..) in MATRIX {
            let addr = SocketAddr::from((bed.b.ip(), port));
            echoes.push(echo_at(bed.b.netns(), addr, GREETING)?);
        }
        for ((port, row, a_allowed, c_allowed), echo) in MATRIX.into_iter().zip(&echoes) {
            let server = SocketAddr::from((bed.b.ip(), port));
            for (client, allowed) in [(&bed.a, a_allowed), (&c, c_allowed)] {
                let got = exchange(client, server, GREETING.len()).await?;
                let expected: &[u8] = if allowed { GREETING } else { b"" };
                ensure!(
                    got == expected,
                    "{row}: {}/{} to :{port} got {got:?}, expected {}",
                    client.namespace(),
                    client.name(),
                    if allowed { "allowed" } else { "denied" }
                );
            }
            let reached = usize::from(a_allowed) + usize::from(c_allowed);
            ensure!(
                echo.count() == reached,
                "{row}: a denied connection never reaches the app ({} accepted)",
                echo.count()
            );
        }

        // Kubelet probes come from the node with the probe address and skip capture, so the
        // ALLOW policies (which would deny an unauthenticated caller) never see them.
        run_ok(
            node_b.netns(),
            "ip",
            &["addr", "add", "169.254.7.127/32", "dev", "cbr0"],
        )
        .await?;
        let closed_port = SocketAddr::from((bed.b.ip(), 7005));
        let socket = node_b.netns().tcp_socket(closed_port)?;
        socket.bind(SocketAddr::from((PROBE, 0)))?;
        let mut probe = within("probe connect", socket.connect(closed_port)).await??;
        ensure!(read_exact(&mut probe, GREETING.len()).await? == GREETING);
        ensure!(echoes[5].count() == 1, "the probe reached the app");
        // The same call from the node's ordinary address is captured and denied.
        let socket = node_b.netns().tcp_socket(closed_port)?;
        let mut rest = Vec::new();
        // A reset may land before the connect is reported: refused all the same.
        if let Ok(mut plain) = within("plain connect", socket.connect(closed_port)).await? {
            let _ = within(
                "denied plaintext to close",
                tokio::io::AsyncReadExt::read_to_end(&mut plain, &mut rest),
            )
            .await?;
        }
        ensure!(rest.is_empty(), "plaintext from the node got {rest:?}");
        ensure!(echoes[5].count() == 1);

        // The denials are visible: metrics on b, labelled with the caller, and access logs.
        let denied = [
            "reporter=\"destination\"",
            "source_principal=\"cluster.local/ns/other/sa/c\"",
            "destination_workload=\"b\"",
            "response_flags=\"DENY\"",
            "connection_security_policy=\"mutual_tls\"",
        ];
        within("denial metrics", async {
            loop {
                let metrics = http_get(node_b.netns(), METRICS, "/metrics").await?;
                let found = metrics.lines().any(|line| {
                    line.starts_with("istio_tcp_connections_closed_total{")
                        && denied.iter().all(|label| line.contains(label))
                });
                if found {
                    return Ok::<_, anyhow::Error>(());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await??;
        let log_b = std::fs::read_to_string(dir.join("b.log"))?;
        let records = access_records(
            &log_b,
            &[
                ("src.identity", C_IDENTITY),
                ("direction", "inbound"),
                ("response_flags", "DENY"),
                ("dst.workload", "b"),
            ],
        );
        // c was denied on 7000, 7002, 7003, 7004 and 7005.
        ensure!(
            records.len() == 5,
            "access log on b: {} DENY records from c",
            records.len()
        );
        let allowed = access_records(
            &log_b,
            &[
                ("src.identity", C_IDENTITY),
                ("response_flags", "-"),
                ("dst.addr", &format!("{}:7001", bed.b.ip())),
            ],
        );
        ensure!(allowed.len() == 1, "c's allowed call is logged once");

        drop((zt_a, zt_b));
        std::fs::remove_dir_all(&dir)?;
        bed.teardown().await
    })
    .await
}
