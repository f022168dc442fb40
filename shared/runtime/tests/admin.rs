//! The admin server over real loopback HTTP.

mod support;

use std::time::Duration;

use ambit_runtime::{AdminServer, Shutdown, ShutdownReason};
use serde_json::json;
use support::{BOUND, Captured, bind, request};

#[tokio::test]
async fn json_endpoints_return_the_sources_documents() {
    let shutdown = Shutdown::without_signals(Duration::from_secs(1));
    let (listener, addr) = bind();
    let admin = AdminServer::new(shutdown.trigger())
        .config_dump(|| json!({"workloads": [{"name": "sleep", "namespace": "default"}]}))
        .certs(|| json!([{"identity": "spiffe://cluster.local/ns/default/sa/sleep"}]))
        .connections(|| json!({"inbound": 2}));
    tokio::spawn(admin.serve(listener, shutdown.watch()));

    let reply = request(addr, "GET", "/config_dump").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(body["workloads"][0]["name"], "sleep");

    let reply = request(addr, "GET", "/certs").await;
    let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(
        body[0]["identity"],
        "spiffe://cluster.local/ns/default/sa/sleep"
    );

    let reply = request(addr, "GET", "/connections").await;
    let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(body, json!({"inbound": 2}));

    assert_eq!(request(addr, "POST", "/config_dump").await.status, 405);
    assert_eq!(request(addr, "GET", "/nope").await.status, 404);
    assert_eq!(request(addr, "GET", "/").await.status, 404);
    assert_eq!(request(addr, "GET", "/quitquitquit").await.status, 405);
}

#[tokio::test]
async fn unset_sources_and_logging_are_not_found() {
    let shutdown = Shutdown::without_signals(Duration::from_secs(1));
    let (listener, addr) = bind();
    tokio::spawn(AdminServer::new(shutdown.trigger()).serve(listener, shutdown.watch()));
    for path in ["/config_dump", "/certs", "/connections", "/logging"] {
        assert_eq!(request(addr, "GET", path).await.status, 404, "{path}");
    }
}

#[tokio::test]
async fn logging_changes_the_level() {
    let captured = Captured::default();
    let (subscriber, handle) =
        ambit_telemetry::logging::subscriber("info", false, captured.clone()).unwrap();
    let shutdown = Shutdown::without_signals(Duration::from_secs(1));
    let (listener, addr) = bind();
    let admin = AdminServer::new(shutdown.trigger()).logging(handle.clone());
    tokio::spawn(admin.serve(listener, shutdown.watch()));

    // The subscriber is the default for this test's thread only.
    let _guard = tracing::subscriber::set_default(subscriber);
    tracing::debug!("hidden before");

    let reply = request(addr, "GET", "/logging").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "info\n"));

    let reply = request(addr, "POST", "/logging?level=debug").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(handle.level().unwrap(), "debug");
    tracing::debug!("shown after");

    let reply = request(addr, "POST", "/logging?level=warn%2Cambit_runtime%3Dtrace").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(handle.level().unwrap(), "ambit_runtime=trace,warn");

    // Bad filters and missing parameters are refused; the filter stays.
    let reply = request(addr, "POST", "/logging?level=info,x=loud").await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_eq!(request(addr, "POST", "/logging").await.status, 400);
    assert_eq!(
        request(addr, "POST", "/logging?level=%zz").await.status,
        400
    );
    assert_eq!(
        request(addr, "PUT", "/logging?level=debug").await.status,
        405
    );
    assert_eq!(handle.level().unwrap(), "ambit_runtime=trace,warn");

    let text = captured.text();
    assert!(!text.contains("hidden before"), "{text}");
    assert!(text.contains("shown after"), "{text}");
}

#[tokio::test]
async fn quitquitquit_starts_the_drain() {
    let shutdown = Shutdown::without_signals(Duration::from_secs(5));
    let (listener, addr) = bind();
    let mut watch = shutdown.watch();
    tokio::spawn(AdminServer::new(shutdown.trigger()).serve(listener, shutdown.watch()));
    let run = tokio::spawn(shutdown.run());

    assert!(!watch.is_draining());
    let reply = request(addr, "POST", "/quitquitquit").await;
    assert_eq!(reply.status, 200);
    tokio::time::timeout(BOUND, watch.draining()).await.unwrap();
    let report = tokio::time::timeout(BOUND, run).await.unwrap().unwrap();
    assert_eq!(report.reason, ShutdownReason::Requested);
    tokio::time::timeout(BOUND, watch.stopped()).await.unwrap();

    // Stopped: the server no longer accepts.
    let refused = tokio::time::timeout(BOUND, async {
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_err() {
                break;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(refused.is_ok(), "admin still accepting after stop");
}
