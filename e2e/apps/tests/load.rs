//! The load client against real echo servers: counts, versions, transport errors, exit codes.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Helpers outside #[test] fns panic on purpose.

mod support;

use std::collections::BTreeMap;

use ambit_sample_apps::client::{Protocol, Target};
use ambit_sample_apps::echo::EchoConfig;
use ambit_sample_apps::load::{LoadOptions, VersionField, parse_headers, run};
use http::StatusCode;
use support::{LIMIT, closed_port, echo};

fn options(url: &str, requests: u32, concurrency: u32) -> LoadOptions {
    LoadOptions {
        target: Target::parse(url).unwrap(),
        headers: parse_headers(&["end-user:jason".to_owned()]).unwrap(),
        requests,
        concurrency,
        timeout: LIMIT,
        protocol: Protocol::Http1,
        keepalive: true,
        version_field: VersionField::default(),
    }
}

#[tokio::test]
async fn every_request_is_counted_by_status_and_version() {
    let addr = echo(EchoConfig {
        version: "v3".to_owned(),
        fail_ratio: 0.3,
        fail_status: StatusCode::INTERNAL_SERVER_ERROR,
        seed: Some(1),
        ..EchoConfig::default()
    })
    .await;
    let report = run(options(&format!("http://{addr}/"), 120, 6)).await;
    assert_eq!(report.requests(), 120);
    assert_eq!(report.transport_errors, 0);
    assert_eq!(report.versions, BTreeMap::from([("v3".to_owned(), 120)]));
    assert_eq!(report.latencies.len(), 120);
    let failed = report.statuses.get(&500).copied().unwrap_or(0);
    assert_eq!(failed + report.statuses[&200], 120);
    assert!(
        (10..=70).contains(&failed),
        "{failed} of 120 failed at ratio 0.3"
    );
    assert!(report.percentile(0.5) <= report.percentile(0.99));
}

#[tokio::test]
async fn h2c_and_one_connection_per_request_work_too() {
    let addr = echo(EchoConfig::default()).await;
    let mut h2 = options(&format!("http://{addr}/"), 20, 2);
    h2.protocol = Protocol::H2c;
    assert_eq!(run(h2).await.statuses, BTreeMap::from([(200, 20)]));
    let mut fresh = options(&format!("http://{addr}/"), 20, 2);
    fresh.keepalive = false;
    assert_eq!(run(fresh).await.statuses, BTreeMap::from([(200, 20)]));
}

#[tokio::test]
async fn the_version_table_can_count_a_called_services_version() {
    let reviews = echo(EchoConfig {
        version: "v3".to_owned(),
        ..EchoConfig::default()
    })
    .await;
    let productpage = echo(EchoConfig {
        calls: vec![Target::parse(&format!("http://{reviews}/reviews/0")).unwrap()],
        ..EchoConfig::default()
    })
    .await;
    let mut through = options(&format!("http://{productpage}/"), 10, 2);
    through.version_field = VersionField::parse("calls.0.body.version").unwrap();
    let report = run(through).await;
    assert_eq!(report.versions, BTreeMap::from([("v3".to_owned(), 10)]));
}

#[tokio::test]
async fn refused_connections_are_transport_errors() {
    let dead = closed_port().await;
    let report = run(options(&format!("http://{dead}/"), 5, 2)).await;
    assert_eq!(report.transport_errors, 5);
    assert!(report.statuses.is_empty());
    assert!(
        report.error_samples[0].contains("connecting to"),
        "{:?}",
        report.error_samples
    );
}

#[tokio::test]
async fn the_binary_prints_reports_and_sets_exit_codes() {
    let program = env!("CARGO_BIN_EXE_load");
    let addr = echo(EchoConfig {
        version: "v2".to_owned(),
        ..EchoConfig::default()
    })
    .await;
    let url = format!("http://{addr}/x");

    let (code, stdout, _) =
        support::run(program, &["get", &url, "-n", "10", "-c", "3", "--json"]).await;
    assert_eq!(code, 0, "{stdout}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["statuses"]["200"], 10);
    assert_eq!(report["versions"]["v2"], 10);

    let (code, stdout, _) = support::run(program, &["get", &url, "-n", "4"]).await;
    assert_eq!(code, 0);
    assert!(
        stdout
            .lines()
            .any(|l| l.split_whitespace().eq(["v2", "4", "100.0%"])),
        "{stdout}"
    );

    let (code, stdout, _) = support::run(program, &["once", &url, "-H", "end-user: jason"]).await;
    assert_eq!(code, 0);
    let body: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(body["headers"]["end-user"], "jason");

    let failing = format!("http://{addr}/?status=503");
    assert_eq!(support::run(program, &["once", &failing]).await.0, 0);
    assert_eq!(
        support::run(program, &["once", &failing, "--fail"]).await.0,
        3
    );

    let dead = format!("http://{}/", closed_port().await);
    let (code, _, stderr) = support::run(program, &["get", &dead, "-n", "2"]).await;
    assert_eq!(code, 1);
    let (code, _, stderr_once) = support::run(program, &["once", &dead]).await;
    assert_eq!(code, 1);
    assert!(stderr_once.contains("connecting to"), "{stderr_once}");
    drop(stderr);

    let (code, _, stderr) = support::run(program, &["once", &url, "-H", "nocolon"]).await;
    assert_eq!(code, 2);
    assert!(stderr.contains("missing ':'"), "{stderr}");
}
