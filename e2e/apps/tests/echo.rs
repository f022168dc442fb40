//! The echo server over real loopback sockets: HTTP/1.1, h2c, gRPC-shaped, WebSocket,
//! injected failures and delays, fan-out.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Helpers outside #[test] fns panic on purpose.

mod support;

use std::time::{Duration, Instant};

use ambit_sample_apps::client::Protocol;
use ambit_sample_apps::echo::{EchoConfig, grpc};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use support::{LIMIT, client, closed_port, echo};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

fn config(version: &str) -> EchoConfig {
    EchoConfig {
        version: version.to_owned(),
        pod_name: Some("reviews-v2-0".to_owned()),
        pod_namespace: Some("bookinfo".to_owned()),
        ..EchoConfig::default()
    }
}

fn json(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap()
}

#[tokio::test]
async fn http1_answers_describe_the_server_and_the_request() {
    let addr = echo(config("v2")).await;
    let mut headers = HeaderMap::new();
    headers.insert("end-user", HeaderValue::from_static("jason"));
    let reply = client(addr, "/reviews/1?x=y", Protocol::Http1)
        .get(&headers)
        .await
        .unwrap();

    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["content-type"], "application/json");
    let body = json(&reply.body);
    assert_eq!(body["version"], "v2");
    assert_eq!(body["pod"]["name"], "reviews-v2-0");
    assert_eq!(body["pod"]["namespace"], "bookinfo");
    assert_eq!(body["method"], "GET");
    assert_eq!(body["path"], "/reviews/1");
    assert_eq!(body["query"], "x=y");
    assert_eq!(body["protocol"], "HTTP/1.1");
    assert_eq!(body["headers"]["end-user"], "jason");
    assert_eq!(body["headers"]["host"], addr.to_string());
    assert!(
        body["remoteAddr"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
}

#[tokio::test]
async fn h2c_is_served_on_the_same_port() {
    let addr = echo(config("v1")).await;
    let mut h2 = client(addr, "/h2", Protocol::H2c);
    let first = h2.get(&HeaderMap::new()).await.unwrap();
    let second = h2.get(&HeaderMap::new()).await.unwrap();
    assert_eq!(json(&first.body)["protocol"], "HTTP/2");
    assert_eq!(json(&second.body)["path"], "/h2");
    // The two requests shared one connection: same client port.
    assert_eq!(
        json(&first.body)["remoteAddr"],
        json(&second.body)["remoteAddr"]
    );

    let h1 = client(addr, "/h1", Protocol::Http1)
        .get(&HeaderMap::new())
        .await
        .unwrap();
    assert_eq!(json(&h1.body)["protocol"], "HTTP/1.1");
}

/// Sends a gRPC-shaped h2c request and returns the messages and trailers of the answer.
async fn grpc_call(
    addr: std::net::SocketAddr,
    body: Bytes,
    extra: &[(&str, &str)],
) -> (StatusCode, Vec<Bytes>, HeaderMap) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let mut request = Request::post(format!("http://{addr}/echo.Echo/Say"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    let response = timeout(
        LIMIT,
        sender.send_request(request.body(Full::new(body)).unwrap()),
    )
    .await
    .unwrap()
    .unwrap();
    let status = response.status();
    assert_eq!(response.headers()["content-type"], "application/grpc");
    let collected = timeout(LIMIT, response.into_body().collect())
        .await
        .unwrap()
        .unwrap();
    let trailers = collected
        .trailers()
        .cloned()
        .expect("gRPC answers carry trailers");
    let messages = grpc::decode_messages(&collected.to_bytes()).unwrap();
    (status, messages, trailers)
}

#[tokio::test]
async fn grpc_shaped_requests_get_a_framed_answer_and_status_trailers() {
    let addr = echo(config("v3")).await;
    let (status, messages, trailers) = grpc_call(addr, grpc::encode_message(b"ping"), &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(messages.len(), 1);
    let answer = json(&messages[0]);
    assert_eq!(answer["version"], "v3");
    assert_eq!(answer["path"], "/echo.Echo/Say");
    assert_eq!(answer["headers"]["content-type"], "application/grpc");
    assert_eq!(answer["bodyBytes"], 9);

    // An injected failure travels as a gRPC status in trailers, with no message.
    let (status, messages, trailers) = grpc_call(
        addr,
        grpc::encode_message(b"ping"),
        &[("x-echo-status", "503")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(trailers["grpc-status"], "14");
    assert!(messages.is_empty());

    // Broken framing is INVALID_ARGUMENT.
    let (_, messages, trailers) = grpc_call(addr, Bytes::from_static(&[0, 0, 0]), &[]).await;
    assert_eq!(trailers["grpc-status"], "3");
    assert!(
        trailers["grpc-message"]
            .to_str()
            .unwrap()
            .contains("truncated")
    );
    assert!(messages.is_empty());
}

#[tokio::test]
async fn websocket_messages_are_echoed_on_ws() {
    let addr = echo(config("v1")).await;
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut socket, response) = timeout(
        LIMIT,
        tokio_tungstenite::client_async(format!("ws://{addr}/ws"), stream),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);

    for message in [
        Message::text("hello mesh"),
        Message::binary(vec![0u8, 1, 2, 255]),
    ] {
        socket.send(message.clone()).await.unwrap();
        let echoed = timeout(LIMIT, socket.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(echoed, message);
    }
    socket.close(None).await.unwrap();

    // A plain request to /ws is told to upgrade.
    let plain = client(addr, "/ws", Protocol::Http1)
        .get(&HeaderMap::new())
        .await
        .unwrap();
    assert_eq!(plain.status, StatusCode::UPGRADE_REQUIRED);
}

/// Statuses of `n` sequential requests to a server failing half of them with `seed`.
async fn statuses_with_seed(seed: u64, n: usize) -> Vec<u16> {
    let addr = echo(EchoConfig {
        fail_ratio: 0.5,
        fail_status: StatusCode::SERVICE_UNAVAILABLE,
        seed: Some(seed),
        ..config("v1")
    })
    .await;
    let mut client = client(addr, "/", Protocol::Http1);
    let mut statuses = Vec::with_capacity(n);
    for _ in 0..n {
        let reply = client.get(&HeaderMap::new()).await.unwrap();
        // Failed answers still say who answered, so retries and canaries can be told apart.
        assert_eq!(json(&reply.body)["version"], "v1");
        statuses.push(reply.status.as_u16());
    }
    statuses
}

#[tokio::test]
async fn fail_ratio_fails_about_that_fraction_reproducibly_with_a_seed() {
    let first = statuses_with_seed(7, 200).await;
    let failed = first.iter().filter(|status| **status == 503).count();
    let ok = first.iter().filter(|status| **status == 200).count();
    assert_eq!(failed + ok, 200);
    // Binomial(200, 0.5) has a standard deviation near 7: this band is over 5 sigmas wide.
    assert!((65..=135).contains(&failed), "{failed} of 200 failed");

    assert_eq!(
        statuses_with_seed(7, 200).await,
        first,
        "same seed, same sequence"
    );
    assert_ne!(
        statuses_with_seed(8, 200).await,
        first,
        "another seed, another sequence"
    );
}

#[tokio::test]
async fn query_overrides_steer_single_requests() {
    let addr = echo(config("v1")).await;
    let reply = client(addr, "/?status=418", Protocol::Http1)
        .get(&HeaderMap::new())
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::IM_A_TEAPOT);
    assert_eq!(json(&reply.body)["status"], 418);

    let reply = client(addr, "/?status=nope", Protocol::Http1)
        .get(&HeaderMap::new())
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&reply.body).contains("nope"));

    let started = Instant::now();
    let reply = client(addr, "/?delay=150ms", Protocol::Http1)
        .get(&HeaderMap::new())
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn configured_delay_holds_every_answer() {
    let addr = echo(EchoConfig {
        delay: Duration::from_millis(200),
        ..config("v1")
    })
    .await;
    let started = Instant::now();
    let reply = client(addr, "/", Protocol::Http1)
        .get(&HeaderMap::new())
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(200));

    // A per-request override replaces the configured delay; the client's timeout still bites.
    let mut impatient = ambit_sample_apps::client::Client::new(
        ambit_sample_apps::client::Target::parse(&format!("http://{addr}/?delay=5s")).unwrap(),
        Protocol::Http1,
        Duration::from_millis(100),
    );
    let error = impatient.get(&HeaderMap::new()).await.unwrap_err();
    assert!(error.to_string().contains("within"), "{error}");
}

#[tokio::test]
async fn calls_fan_out_with_propagated_headers_and_report_failures() {
    let reviews = echo(config("v2")).await;
    let productpage = echo(EchoConfig {
        calls: vec![
            ambit_sample_apps::client::Target::parse(&format!("http://{reviews}/reviews/0"))
                .unwrap(),
        ],
        ..config("v1")
    })
    .await;
    let mut headers = HeaderMap::new();
    headers.insert("end-user", HeaderValue::from_static("jason"));
    headers.insert("x-not-propagated", HeaderValue::from_static("1"));
    let reply = client(productpage, "/productpage", Protocol::Http1)
        .get(&headers)
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    let body = json(&reply.body);
    assert_eq!(body["version"], "v1");
    let call = &body["calls"][0];
    assert_eq!(call["status"], 200);
    assert_eq!(call["body"]["version"], "v2");
    assert_eq!(call["body"]["path"], "/reviews/0");
    assert_eq!(call["body"]["headers"]["end-user"], "jason");
    assert!(call["body"]["headers"].get("x-not-propagated").is_none());

    let dead = closed_port().await;
    let broken = echo(EchoConfig {
        calls: vec![ambit_sample_apps::client::Target::parse(&format!("http://{dead}/")).unwrap()],
        ..config("v1")
    })
    .await;
    let reply = client(broken, "/", Protocol::Http1)
        .get(&HeaderMap::new())
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert!(
        json(&reply.body)["calls"][0]["error"]
            .as_str()
            .unwrap()
            .contains("connecting")
    );
}

#[tokio::test]
async fn the_binary_validates_its_flags_and_serves() {
    let program = env!("CARGO_BIN_EXE_echo-server");
    let (code, _, stderr) = support::run(program, &["--fail-ratio", "1.5"]).await;
    assert_ne!(code, 0);
    assert!(
        stderr.contains("--fail-ratio must be between 0 and 1"),
        "{stderr}"
    );
    let (code, _, stderr) = support::run(program, &["--delay", "10"]).await;
    assert_eq!(code, 2);
    assert!(stderr.contains("missing unit"), "{stderr}");
    let (code, _, stderr) = support::run(program, &["--call", "https://x/"]).await;
    assert_eq!(code, 2);
    assert!(stderr.contains("scheme https"), "{stderr}");

    let (_child, addr) = support::spawn_server(
        program,
        &[
            "--addr",
            "127.0.0.1:0",
            "--version",
            "v9",
            "--pod-name",
            "p",
            "--pod-namespace",
            "n",
        ],
    )
    .await;
    let reply = client(addr, "/", Protocol::Http1)
        .get(&HeaderMap::new())
        .await
        .unwrap();
    let body = json(&reply.body);
    assert_eq!(body["version"], "v9");
    assert_eq!(body["pod"]["name"], "p");
}
