//! Bytes and headers through pool → mutual TLS → server → handler, and half-close both ways.
// Helpers outside `#[test]` functions fail the test by panicking, like the tests themselves.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;

use ambit_hbone::{
    ByteCounters, InboundRequest, PoolConfig, Responder, ServerConfig, Target, copy_bidirectional,
};
use http::HeaderValue;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

#[tokio::test]
async fn echoes_through_pool_and_server() {
    let mesh = Mesh::new("cluster.local");
    let (handler, mut seen) = recording_echo_handler();
    let server = TestServer::start(
        mesh.server_tls(&server_id()),
        handler,
        ServerConfig::default(),
    )
    .await;
    let pool = mesh.pool(&mesh.bundle, PoolConfig::default());

    let mut stream = within(pool.connect(server.request("10.0.0.7:9080")))
        .await
        .unwrap();
    assert_eq!(
        stream.peer_headers().get("baggage").unwrap(),
        "k8s.namespace.name=test",
        "the 200's headers reach the client"
    );
    let data = payload(3 * 1024 * 1024 + 17);
    assert_eq!(echo_round_trip(&mut stream, &data).await, data);

    let request = within(seen.recv()).await.unwrap();
    assert_eq!(request.peer, client_id());
    assert_eq!(request.target, "10.0.0.7:9080".parse::<Target>().unwrap());
    assert_eq!(request.local_addr, server.addr);
    assert_eq!(request.remote_addr.ip(), server.addr.ip());
    assert_ne!(request.remote_addr.port(), server.addr.port());
}

#[tokio::test]
async fn passes_trace_baggage_and_forwarded_headers() {
    let mesh = Mesh::new("cluster.local");
    let (handler, mut seen) = recording_echo_handler();
    let server = TestServer::start(
        mesh.server_tls(&server_id()),
        handler,
        ServerConfig::default(),
    )
    .await;
    let pool = mesh.pool(&mesh.bundle, PoolConfig::default());

    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let baggage = "k8s.namespace.name=default,service.name=productpage";
    let forwarded = "for=\"10.244.1.5:41234\";host=reviews.default.svc.cluster.local";
    let request = server
        .request("[fd00::7]:9080")
        .with_traceparent(HeaderValue::from_static(traceparent))
        .with_baggage(HeaderValue::from_static(baggage))
        .with_forwarded(HeaderValue::from_static(forwarded));
    let mut stream = within(pool.connect(request)).await.unwrap();
    assert_eq!(echo_round_trip(&mut stream, b"x").await, b"x");

    let seen = within(seen.recv()).await.unwrap();
    assert_eq!(seen.target.to_string(), "[fd00::7]:9080");
    assert_eq!(seen.headers.get("traceparent").unwrap(), traceparent);
    assert_eq!(seen.headers.get("baggage").unwrap(), baggage);
    assert_eq!(seen.headers.get("forwarded").unwrap(), forwarded);
    assert_eq!(
        seen.headers.len(),
        3,
        "nothing else is sent: {:?}",
        seen.headers
    );
}

#[tokio::test]
async fn client_half_close_still_receives_the_answer() {
    let mesh = Mesh::new("cluster.local");
    // Reads the whole request first, answers only after the client's END_STREAM.
    let handler = |_request: InboundRequest, responder: Responder| async move {
        let mut stream = responder.accept(Default::default()).unwrap();
        let mut request = Vec::new();
        stream.read_to_end(&mut request).await.unwrap();
        stream
            .write_all(format!("got {} bytes", request.len()).as_bytes())
            .await
            .unwrap();
        stream.shutdown().await.unwrap();
    };
    let server = TestServer::start(
        mesh.server_tls(&server_id()),
        handler,
        ServerConfig::default(),
    )
    .await;
    let pool = mesh.pool(&mesh.bundle, PoolConfig::default());

    let mut stream = within(pool.connect(server.request("1.2.3.4:80")))
        .await
        .unwrap();
    within(async {
        stream.write_all(&payload(100_000)).await.unwrap();
        stream.shutdown().await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        assert_eq!(answer, "got 100000 bytes");
    })
    .await;
}

#[tokio::test]
async fn server_half_close_still_receives_from_the_client() {
    let mesh = Mesh::new("cluster.local");
    let (got_tx, got_rx) = oneshot::channel();
    let got_tx = std::sync::Mutex::new(Some(got_tx));
    // Says hello and half-closes at once, then keeps reading.
    let handler = move |_request: InboundRequest, responder: Responder| {
        let got_tx = got_tx.lock().unwrap().take();
        async move {
            let mut stream = responder.accept(Default::default()).unwrap();
            stream.write_all(b"hello").await.unwrap();
            stream.shutdown().await.unwrap();
            let mut rest = Vec::new();
            stream.read_to_end(&mut rest).await.unwrap();
            let _ = got_tx.unwrap().send(rest);
        }
    };
    let server = TestServer::start(
        mesh.server_tls(&server_id()),
        handler,
        ServerConfig::default(),
    )
    .await;
    let pool = mesh.pool(&mesh.bundle, PoolConfig::default());

    let mut stream = within(pool.connect(server.request("1.2.3.4:80")))
        .await
        .unwrap();
    within(async {
        let mut greeting = Vec::new();
        stream.read_to_end(&mut greeting).await.unwrap();
        assert_eq!(greeting, b"hello");
        // Our direction is still open after the server's END_STREAM.
        stream.write_all(b"still talking").await.unwrap();
        stream.shutdown().await.unwrap();
    })
    .await;
    assert_eq!(within(got_rx).await.unwrap(), b"still talking");
}

#[tokio::test]
async fn handler_proxies_to_tcp_upstream_with_counters() {
    let mesh = Mesh::new("cluster.local");
    // A plain TCP echo server as the upstream workload.
    let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut tcp, _) = upstream.accept().await.unwrap();
        let (mut reader, mut writer) = tcp.split();
        tokio::io::copy(&mut reader, &mut writer).await.unwrap();
        writer.shutdown().await.unwrap();
    });
    let counters = Arc::new(ByteCounters::default());
    let (done_tx, done_rx) = oneshot::channel();
    let done_tx = std::sync::Mutex::new(Some(done_tx));
    let handler_counters = counters.clone();
    let handler = move |request: InboundRequest, responder: Responder| {
        let counters = handler_counters.clone();
        let done_tx = done_tx.lock().unwrap().take();
        async move {
            let Target::Socket(addr) = request.target().clone() else {
                return responder.reject(http::StatusCode::BAD_REQUEST);
            };
            let Ok(mut tcp) = tokio::net::TcpStream::connect(addr).await else {
                return responder.reject(http::StatusCode::SERVICE_UNAVAILABLE);
            };
            let mut tunnel = responder.accept(Default::default()).unwrap();
            let result = copy_bidirectional(&mut tunnel, &mut tcp, &counters).await;
            let _ = done_tx.unwrap().send(result.map_err(|e| e.to_string()));
        }
    };
    let server = TestServer::start(
        mesh.server_tls(&server_id()),
        handler,
        ServerConfig::default(),
    )
    .await;
    let pool = mesh.pool(&mesh.bundle, PoolConfig::default());

    let mut stream = within(pool.connect(server.request(&upstream_addr.to_string())))
        .await
        .unwrap();
    let data = payload(2 * 1024 * 1024);
    assert_eq!(echo_round_trip(&mut stream, &data).await, data);
    let transferred = within(done_rx).await.unwrap().unwrap();
    assert_eq!(transferred.a_to_b, data.len() as u64);
    assert_eq!(transferred.b_to_a, data.len() as u64);
    assert_eq!(counters.a_to_b(), data.len() as u64);
    assert_eq!(counters.b_to_a(), data.len() as u64);
}
