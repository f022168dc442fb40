//! `ambit ztunnel-config` against a real admin server (ambit-runtime's, as ztunnel runs it)
//! serving documents built from the real model types and ztunnel's live-connection table.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Helpers outside #[test] fns panic on purpose.

use std::net::SocketAddr;
use std::time::Duration;

use ambit_model::{AuthorizationPolicy, Service, Workload};
use ambit_runtime::{AdminServer, Shutdown};
use ambit_telemetry::{MetricsRegistry, Reporter, SecurityPolicy, TrafficLabels, WorkloadLabels};
use ambit_ztunnel::observe::Telemetry;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(20);

fn workload(name: &str, ip: &str, protocol: &str) -> Workload {
    serde_json::from_value(json!({
        "uid": format!("uid-{name}"),
        "name": name,
        "namespace": "bookinfo",
        "serviceAccount": format!("bookinfo-{name}"),
        "node": "node-a",
        "ips": [ip],
        "labels": {"app": name, "version": "v1"},
        "trustDomain": "cluster.local",
        "protocol": protocol,
    }))
    .unwrap()
}

fn config_dump() -> Value {
    let workloads = vec![
        workload("reviews-v1", "10.244.1.3", "HBONE"),
        workload("productpage-v1", "10.244.1.2", "TCP"),
    ];
    let service: Service = serde_json::from_value(json!({
        "name": "reviews",
        "namespace": "bookinfo",
        "vips": ["10.96.0.20"],
        "ports": [{"name": "http", "port": 9080, "targetPort": 8080}],
        "endpoints": {"uid-reviews-v1": {}},
        "waypoint": {
            "addresses": ["10.244.1.9:15008"],
            "identity": "spiffe://cluster.local/ns/bookinfo/sa/waypoint",
        },
    }))
    .unwrap();
    let policy: AuthorizationPolicy = serde_json::from_value(json!({
        "name": "deny-curl",
        "namespace": "bookinfo",
        "spec": {
            "selector": {"matchLabels": {"app": "reviews-v1"}},
            "action": "DENY",
            "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/default/sa/curl"]}}]}],
        },
    }))
    .unwrap();
    // The same document ztunnel's app.rs builds from its snapshot.
    json!({
        "version": 4,
        "workloads": workloads,
        "services": [service],
        "authorizationPolicies": [policy],
        "peerAuthentications": [],
    })
}

fn labels() -> TrafficLabels {
    let mut labels = TrafficLabels::new(Reporter::Destination);
    labels.source = WorkloadLabels::default()
        .with_spiffe_principal("spiffe://cluster.local/ns/default/sa/curl");
    labels.destination = WorkloadLabels::default()
        .with_spiffe_principal("spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews-v1");
    labels.connection_security_policy = SecurityPolicy::MutualTls;
    labels
}

/// Starts an admin server and returns its address; the shutdown handle keeps it alive.
fn admin(telemetry: &Telemetry) -> (Shutdown, SocketAddr) {
    let shutdown = Shutdown::without_signals(Duration::from_secs(1));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let live = telemetry.live().clone();
    let server = AdminServer::new(shutdown.trigger())
        .config_dump(config_dump)
        .certs(
            || json!({"identities": ["spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews-v1"]}),
        )
        .connections(move || live.dump());
    tokio::spawn(server.serve(listener, shutdown.watch()));
    (shutdown, addr)
}

async fn ambit(args: &[&str]) -> (i32, String, String) {
    let output = timeout(
        LIMIT,
        tokio::process::Command::new(env!("CARGO_BIN_EXE_ambit"))
            .args(args)
            .output(),
    )
    .await
    .expect("ambit did not finish in time")
    .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn row<'a>(table: &'a str, first_cells: &[&str]) -> Vec<&'a str> {
    table
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.starts_with(first_cells))
        .unwrap_or_else(|| panic!("no row starting {first_cells:?} in\n{table}"))
}

#[tokio::test]
async fn config_tables_show_workloads_services_and_policies() {
    let mut registry = MetricsRegistry::new();
    let telemetry = Telemetry::new(&mut registry);
    let (_shutdown, addr) = admin(&telemetry);
    let admin_flag = addr.to_string();

    let (code, stdout, stderr) =
        ambit(&["ztunnel-config", "workloads", "--admin", &admin_flag]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("NAMESPACE  NAME"), "{stdout}");
    assert_eq!(
        row(&stdout, &["bookinfo", "reviews-v1"]),
        [
            "bookinfo",
            "reviews-v1",
            "10.244.1.3",
            "node-a",
            "HBONE",
            "-",
            "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews-v1"
        ]
    );
    // Sorted by namespace then name.
    let productpage = stdout.find("productpage-v1").unwrap();
    assert!(productpage < stdout.find("reviews-v1").unwrap());

    let (code, stdout, _) = ambit(&["ztunnel-config", "services", "--admin", &admin_flag]).await;
    assert_eq!(code, 0);
    assert_eq!(
        row(&stdout, &["bookinfo", "reviews"]),
        [
            "bookinfo",
            "reviews",
            "10.96.0.20",
            "9080->8080",
            "1",
            "10.244.1.9:15008"
        ]
    );

    let (code, stdout, _) = ambit(&["ztunnel-config", "policies", "--admin", &admin_flag]).await;
    assert_eq!(code, 0);
    assert_eq!(
        row(&stdout, &["bookinfo", "deny-curl"]),
        [
            "bookinfo",
            "deny-curl",
            "DENY",
            "selector",
            "app=reviews-v1",
            "1"
        ]
    );

    let (code, stdout, _) =
        ambit(&["ztunnel-config", "certificates", "--admin", &admin_flag]).await;
    assert_eq!(code, 0);
    assert_eq!(
        stdout,
        "IDENTITY\nspiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews-v1\n"
    );
}

#[tokio::test]
async fn json_output_is_the_admin_servers_section() {
    let mut registry = MetricsRegistry::new();
    let telemetry = Telemetry::new(&mut registry);
    let (_shutdown, addr) = admin(&telemetry);
    let (code, stdout, _) = ambit(&[
        "ztunnel-config",
        "services",
        "-o",
        "json",
        "--admin",
        &addr.to_string(),
    ])
    .await;
    assert_eq!(code, 0);
    let services: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(services, config_dump()["services"]);
}

#[tokio::test]
async fn live_connections_are_listed_with_their_bytes() {
    let mut registry = MetricsRegistry::new();
    let telemetry = Telemetry::new(&mut registry);
    let (_shutdown, addr) = admin(&telemetry);
    let admin_flag = addr.to_string();

    let tracked = telemetry.open(
        labels(),
        "10.244.2.5:40000".parse().unwrap(),
        "10.244.1.3:8080".parse().unwrap(),
    );
    // A real copy loop moves 5 bytes each way through the tracked counters, then stays open.
    let (mut client, proxy_a) = tokio::io::duplex(64);
    let (proxy_b, mut server) = tokio::io::duplex(64);
    let copy = async {
        let (mut a, mut b) = (proxy_a, proxy_b);
        let _ = ambit_hbone::copy_bidirectional(&mut a, &mut b, tracked.counters()).await;
    };
    let check = async {
        client.write_all(b"hello").await.unwrap();
        let mut got = [0; 5];
        server.read_exact(&mut got).await.unwrap();
        server.write_all(b"world").await.unwrap();
        client.read_exact(&mut got).await.unwrap();

        let (code, stdout, stderr) =
            ambit(&["ztunnel-config", "connections", "--admin", &admin_flag]).await;
        assert_eq!(code, 0, "{stderr}");
        let cells = row(&stdout, &["inbound"]);
        assert_eq!(cells[1..3], ["10.244.2.5:40000", "10.244.1.3:8080"]);
        assert_eq!(cells[3], "cluster.local/ns/default/sa/curl");
        assert_eq!(cells[4], "cluster.local/ns/bookinfo/sa/bookinfo-reviews-v1");
        assert_eq!(cells[6..8], ["mutual_tls", "5/5"]);

        let (_, json_out, _) = ambit(&[
            "ztunnel-config",
            "connections",
            "-o",
            "json",
            "--admin",
            &admin_flag,
        ])
        .await;
        let connections: Value = serde_json::from_str(&json_out).unwrap();
        assert_eq!(connections[0]["bytesClientToServer"], 5);
        drop((client, server));
    };
    timeout(LIMIT, async { tokio::join!(copy, check) })
        .await
        .unwrap();
    drop(tracked);

    let (_, stdout, _) = ambit(&["ztunnel-config", "connections", "--admin", &admin_flag]).await;
    assert_eq!(
        stdout.lines().count(),
        1,
        "only the header once closed:\n{stdout}"
    );
}

#[tokio::test]
async fn an_unreachable_admin_port_is_a_clear_failure() {
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let (code, stdout, stderr) = ambit(&["ztunnel-config", "workloads", "--admin", &dead]).await;
    assert_eq!(code, 1);
    assert!(stdout.is_empty());
    assert!(stderr.contains("cannot reach the admin server"), "{stderr}");

    // An admin server without that endpoint answers 404, reported as such.
    let shutdown = Shutdown::without_signals(Duration::from_secs(1));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(AdminServer::new(shutdown.trigger()).serve(listener, shutdown.watch()));
    let (code, _, stderr) = ambit(&["ztunnel-config", "certificates", "--admin", &addr]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("/certs answered 404"), "{stderr}");
}
