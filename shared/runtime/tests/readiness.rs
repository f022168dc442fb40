//! The readiness server over real loopback HTTP.

mod support;

use std::time::Duration;

use ambit_runtime::{Ready, Shutdown, serve_readiness};
use support::{BOUND, bind, request};

#[tokio::test]
async fn not_ready_until_every_token_is_done() {
    let shutdown = Shutdown::without_signals(Duration::from_secs(1));
    let ready = Ready::new();
    let certificates = ready.register("certificates");
    let config = ready.register("config");
    let (listener, addr) = bind();
    tokio::spawn(serve_readiness(listener, ready.clone(), shutdown.watch()));

    let reply = request(addr, "GET", "/healthz/ready").await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.body, "not ready, pending: certificates, config\n");

    config.done();
    let reply = request(addr, "GET", "/healthz/ready").await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.body, "not ready, pending: certificates\n");

    drop(certificates);
    let reply = request(addr, "GET", "/healthz/ready").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "ready\n"));

    assert_eq!(request(addr, "GET", "/healthz").await.status, 404);
    assert_eq!(request(addr, "POST", "/healthz/ready").await.status, 405);
}

#[tokio::test]
async fn draining_is_not_ready_and_stop_ends_the_server() {
    let shutdown = Shutdown::without_signals(Duration::from_secs(30));
    let mut watch = shutdown.watch();
    let ready = Ready::new();
    let (listener, addr) = bind();
    let server = tokio::spawn(serve_readiness(listener, ready, shutdown.watch()));
    assert_eq!(request(addr, "GET", "/healthz/ready").await.status, 200);

    // A tracked task holds the shutdown in the draining phase.
    let task = watch.track("inbound");
    let trigger = shutdown.trigger();
    let run = tokio::spawn(shutdown.run());
    trigger.start();
    tokio::time::timeout(BOUND, watch.draining()).await.unwrap();
    let reply = request(addr, "GET", "/healthz/ready").await;
    assert_eq!((reply.status, reply.body.as_str()), (503, "draining\n"));

    drop(task);
    let report = tokio::time::timeout(BOUND, run).await.unwrap().unwrap();
    assert!(report.unfinished.is_empty());
    tokio::time::timeout(BOUND, server)
        .await
        .expect("server did not stop")
        .unwrap()
        .unwrap();
}
