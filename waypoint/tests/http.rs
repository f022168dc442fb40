//! HTTP/1.1 and h2c through client → waypoint (HBONE in) → destination ztunnel (HBONE out)
//! → upstream, protocol selection, limits and malformed input.

mod support;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn harness() -> (Harness, Upstream) {
    let upstream = Upstream::start("echo", Behavior::Echo).await;
    let port = upstream.addr.port();
    let harness = Harness::start(|zt| {
        config(
            zt,
            vec![
                service(
                    "echo",
                    "10.96.0.10",
                    &[
                        (Some("http"), 80, port),
                        (Some("http2"), 81, port),
                        (None, 82, port),
                    ],
                    &["echo-1"],
                ),
                service("empty", "10.96.0.11", &[(Some("http"), 80, port)], &[]),
            ],
            vec![workload("echo-1")],
            vec![],
            vec![],
        )
    })
    .await;
    (harness, upstream)
}

#[tokio::test]
async fn http1_and_h2c_round_trips_by_port_protocol() {
    let (harness, upstream) = harness().await;
    // (port, client speaks h2, what the upstream must see)
    let cases = [
        (80, false, "HTTP/1.1"),
        (81, true, "HTTP/2.0"),
        (82, false, "HTTP/1.1"),
        (82, true, "HTTP/2.0"),
        // A declared HTTP/1.1 port still accepts an h2c client (h1 upstream).
        (80, true, "HTTP/1.1"),
    ];
    for (port, h2, upstream_version) in cases {
        let mut client = harness.client(&format!("10.96.0.10:{port}"), h2).await;
        for i in 0..3 {
            let answer = client
                .send(request(
                    "POST",
                    &format!("/items/{i}?q=1"),
                    &[("x-user", "alice")],
                ))
                .await;
            assert_eq!(answer.status, 200, "port {port} h2 {h2}: {answer:?}");
            assert_eq!(answer.backend(), "echo");
            assert_eq!(
                answer.header("x-version"),
                Some(upstream_version),
                "port {port} h2 {h2}"
            );
            assert_eq!(answer.header("x-method"), Some("POST"));
            assert!(
                answer
                    .header("x-uri")
                    .unwrap()
                    .ends_with(&format!("/items/{i}?q=1"))
            );
            assert_eq!(answer.header("x-echo-x-user"), Some("alice"));
            assert!(
                answer.header("server").is_none(),
                "no server header: {answer:?}"
            );
        }
    }
    assert_eq!(upstream.count(), cases.len() * 3);
}

#[tokio::test]
async fn no_endpoints_is_503_no_healthy_upstream() {
    let (harness, _upstream) = harness().await;
    let mut client = harness.client("10.96.0.11:80", false).await;
    let answer = client.get("/").await;
    assert_eq!(answer.status, 503);
    // The body is the one errors.rs gives the UH flag.
    assert_eq!(&answer.body[..], b"no healthy upstream");
    assert!(answer.header("server").is_none());
}

#[tokio::test]
async fn unknown_destination_is_refused_at_connect() {
    let (harness, _upstream) = harness().await;
    let ca = harness.ca.clone();
    let bundle = harness.bundle.clone();
    let tls = move |source: &ambit_identity::SpiffeId, expected: &[ambit_identity::SpiffeId]| {
        let cert = ca.issue_workload(source, std::time::Duration::from_secs(60))?;
        Ok(ambit_identity::tls::client_config(
            std::sync::Arc::new(ambit_identity::tls::FixedCertificate(std::sync::Arc::new(
                cert,
            ))),
            &bundle,
            expected.to_vec(),
        )?)
    };
    let pool = ambit_hbone::Pool::new(std::sync::Arc::new(tls), Default::default());
    let request = ambit_hbone::ConnectRequest::new(
        id("client"),
        vec![id("waypoint")],
        harness.waypoint.local_addr(),
        "10.96.9.9:80".parse().unwrap(),
    );
    let err = within(pool.connect(request)).await.unwrap_err();
    assert_eq!(err.status(), Some(http::StatusCode::SERVICE_UNAVAILABLE));
}

#[tokio::test]
async fn malformed_http1_gets_400_and_other_connections_continue() {
    let (harness, _upstream) = harness().await;
    let mut good = harness.client("10.96.0.10:80", false).await;
    assert_eq!(good.get("/before").await.status, 200);

    let mut bad = harness.tunnel_as("client", "10.96.0.10:80").await;
    bad.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nthis is not a header\r\n\r\n")
        .await
        .unwrap();
    let mut reply = Vec::new();
    within(bad.read_to_end(&mut reply)).await.unwrap();
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert!(!reply.to_ascii_lowercase().contains("server:"), "{reply}");

    // Oversized headers: 431.
    let mut big = harness.tunnel_as("client", "10.96.0.10:80").await;
    let huge = "a".repeat(70 * 1024);
    big.write_all(format!("GET / HTTP/1.1\r\nHost: x\r\nx-big: {huge}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut reply = Vec::new();
    let _ = within(big.read_to_end(&mut reply)).await;
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");

    // The connection opened before is unaffected, and new ones work.
    assert_eq!(good.get("/after").await.status, 200);
    let mut fresh = harness.client("10.96.0.10:80", false).await;
    assert_eq!(fresh.get("/fresh").await.status, 200);
}

#[tokio::test]
async fn unknown_port_with_non_http_bytes_is_proxied_as_tcp() {
    // A raw TCP echo server as the endpoint of an undeclared port.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (mut tcp, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut read, mut write) = tcp.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    let harness = Harness::start(|zt| {
        config(
            zt,
            vec![service(
                "raw",
                "10.96.0.20",
                &[(None, 5000, port), (Some("tcp"), 5001, port)],
                &["raw-1"],
            )],
            vec![workload("raw-1")],
            vec![],
            vec![],
        )
    })
    .await;
    for target in ["10.96.0.20:5000", "10.96.0.20:5001"] {
        let mut tunnel = harness.tunnel_as("client", target).await;
        tunnel
            .write_all(b"\x16\x03\x01 binary hello")
            .await
            .unwrap();
        let mut echoed = [0u8; 16];
        within(tunnel.read_exact(&mut echoed)).await.unwrap();
        assert_eq!(&echoed, b"\x16\x03\x01 binary hello", "{target}");
    }
}
