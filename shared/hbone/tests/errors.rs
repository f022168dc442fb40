//! HBONE error answers (driven with a raw h2 client where the pool would never send such a
//! request), handler decisions, and isolation of bad streams and connections.

// Helpers outside `#[test]` functions fail the test by panicking, like the tests themselves.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;

use ambit_hbone::{InboundRequest, PoolConfig, Responder, ServerConfig};
use ambit_identity::tls::FixedCertificate;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{Method, Request, StatusCode};
use rustls::pki_types::ServerName;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// A mutual-TLS connection to `server` as the usual client, before any HTTP/2.
async fn tls_to(mesh: &Mesh, server: &TestServer) -> TlsStream<TcpStream> {
    let config = ambit_identity::tls::client_config(
        Arc::new(FixedCertificate(mesh.cert(&client_id()))),
        &mesh.bundle,
        vec![server_id()],
    )
    .unwrap();
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let name = ServerName::IpAddress(server.addr.ip().into());
    within(TlsConnector::from(config).connect(name, tcp))
        .await
        .unwrap()
}

/// A raw h2 client (no pool) on a mutual-TLS connection to `server`.
async fn h2_client(mesh: &Mesh, server: &TestServer) -> h2::client::SendRequest<Bytes> {
    let tls = tls_to(mesh, server).await;
    let (send, connection) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    send
}

/// Sends `request` (no body) and returns the response status.
async fn status_of(send: &h2::client::SendRequest<Bytes>, request: Request<()>) -> StatusCode {
    let mut send = within(send.clone().ready()).await.unwrap();
    let (response, _body) = send.send_request(request, false).unwrap();
    within(response).await.unwrap().status()
}

fn connect_to(authority: &str) -> Request<()> {
    Request::builder()
        .method(Method::CONNECT)
        .uri(http::Uri::builder().authority(authority).build().unwrap())
        .body(())
        .unwrap()
}

async fn echo_server(mesh: &Mesh) -> TestServer {
    TestServer::start(
        mesh.server_tls(&server_id()),
        echo_handler(),
        ServerConfig::default(),
    )
    .await
}

#[tokio::test]
async fn methods_other_than_connect_get_405() {
    let mesh = Mesh::new("cluster.local");
    let server = echo_server(&mesh).await;
    let client = h2_client(&mesh, &server).await;
    for method in [Method::GET, Method::POST, Method::OPTIONS] {
        let request = Request::builder()
            .method(method.clone())
            .uri("https://10.0.0.1:80/")
            .body(())
            .unwrap();
        assert_eq!(
            status_of(&client, request).await,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method}"
        );
    }
}

#[tokio::test]
async fn bad_authorities_get_400() {
    let mesh = Mesh::new("cluster.local");
    let server = echo_server(&mesh).await;
    let client = h2_client(&mesh, &server).await;
    // All valid URI authorities as far as `http` is concerned, all refused by HBONE.
    for authority in [
        "10.0.0.1",
        "10.0.0.1:0",
        "10.0.0.1:65536",
        "user@10.0.0.1:80",
        "1.2.3.256:80",
        "-bad-:80",
        "a..b:80",
    ] {
        assert_eq!(
            status_of(&client, connect_to(authority)).await,
            StatusCode::BAD_REQUEST,
            "{authority}"
        );
    }
    // A CONNECT without any :authority never reaches us: h2 cannot build its URI and resets
    // the stream with PROTOCOL_ERROR.
    let request = Request::builder()
        .method(Method::CONNECT)
        .uri("/")
        .body(())
        .unwrap();
    let mut send = within(client.clone().ready()).await.unwrap();
    let (response, _body) = send.send_request(request, false).unwrap();
    let err = within(response).await.unwrap_err();
    assert_eq!(err.reason(), Some(h2::Reason::PROTOCOL_ERROR), "{err}");
    // The connection survives all of it.
    assert_eq!(
        status_of(&client, connect_to("10.0.0.1:80")).await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn handler_rejections_reach_the_pool() {
    let mesh = Mesh::new("cluster.local");
    // The target port picks the handler's answer.
    let handler = |request: InboundRequest, responder: Responder| async move {
        match request.target().port() {
            401 => responder.reject(StatusCode::UNAUTHORIZED),
            403 => responder.reject(StatusCode::FORBIDDEN),
            503 => responder.reject(StatusCode::SERVICE_UNAVAILABLE),
            // Not a refusal: replaced by 500, as only `accept` may say 200.
            200 => responder.reject(StatusCode::OK),
            // Dropped without a decision: 503.
            _ => drop(responder),
        }
    };
    let server = TestServer::start(
        mesh.server_tls(&server_id()),
        handler,
        ServerConfig::default(),
    )
    .await;
    let pool = mesh.pool(&mesh.bundle, PoolConfig::default());
    for (port, expected) in [(401, 401), (403, 403), (503, 503), (200, 500), (9, 503)] {
        let err = within(pool.connect(server.request(&format!("10.0.0.1:{port}"))))
            .await
            .unwrap_err();
        assert_eq!(
            err.status(),
            Some(StatusCode::from_u16(expected).unwrap()),
            "{err}"
        );
        assert!(!err.is_tls() && !err.is_connect() && !err.is_timeout());
    }
    // Refused streams did not cost the connection.
    assert_eq!(server.connections(), 1);
    assert_eq!(pool.connection_count(), 1);
}

#[tokio::test]
async fn a_bad_stream_leaves_its_neighbours_alone() {
    let mesh = Mesh::new("cluster.local");
    let server = echo_server(&mesh).await;
    let client = h2_client(&mesh, &server).await;

    let mut ready = within(client.clone().ready()).await.unwrap();
    let (response, mut body_out) = ready
        .send_request(connect_to("10.0.0.1:80"), false)
        .unwrap();
    let mut body_in = within(response).await.unwrap().into_body();
    body_out
        .send_data(Bytes::from_static(b"before"), false)
        .unwrap();
    assert_eq!(within(body_in.data()).await.unwrap().unwrap(), "before");

    let bad = Request::builder()
        .method(Method::GET)
        .uri("https://x:80/")
        .body(())
        .unwrap();
    assert_eq!(
        status_of(&client, bad).await,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(
        status_of(&client, connect_to("nope")).await,
        StatusCode::BAD_REQUEST
    );
    // A stream the client resets mid-flight.
    let mut ready = within(client.clone().ready()).await.unwrap();
    let (response, mut doomed) = ready
        .send_request(connect_to("10.0.0.2:80"), false)
        .unwrap();
    within(response).await.unwrap();
    doomed.send_reset(h2::Reason::CANCEL);

    body_out
        .send_data(Bytes::from_static(b"after"), true)
        .unwrap();
    let mut rest = BytesMut::new();
    while let Some(chunk) = within(body_in.data()).await {
        let chunk = chunk.unwrap();
        body_in
            .flow_control()
            .release_capacity(chunk.len())
            .unwrap();
        rest.put(chunk);
    }
    assert_eq!(&rest[..], b"after");
}

#[tokio::test]
async fn garbage_closes_only_that_connection() {
    let mesh = Mesh::new("cluster.local");
    let server = echo_server(&mesh).await;
    let pool = mesh.pool(&mesh.bundle, PoolConfig::default());
    let mut healthy = within(pool.connect(server.request("10.0.0.1:80")))
        .await
        .unwrap();

    // Not TLS at all.
    let mut plain = TcpStream::connect(server.addr).await.unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut sink = Vec::new();
    let _ = within(plain.read_to_end(&mut sink)).await;
    // TLS, then not HTTP/2.
    let mut tls = tls_to(&mesh, &server).await;
    tls.write_all(b"PRI * HTTP/1.1\r\n\r\nnot really h2, just noise\r\n\r\n")
        .await
        .unwrap();
    let _ = within(tls.read_to_end(&mut sink)).await;

    assert_eq!(
        echo_round_trip(&mut healthy, b"still fine").await,
        b"still fine"
    );
    let mut fresh = within(pool.connect(server.request("10.0.0.1:80")))
        .await
        .unwrap();
    assert_eq!(echo_round_trip(&mut fresh, b"and new").await, b"and new");
}

/// h2 itself refuses a CONNECT carrying `:scheme`/`:path` (RFC 9113 §8.5) with
/// RST_STREAM(PROTOCOL_ERROR) before the request reaches us; the h2 client cannot even
/// send one, so this speaks raw frames.
#[tokio::test]
async fn connect_with_a_path_is_reset_by_h2() {
    let mesh = Mesh::new("cluster.local");
    let server = echo_server(&mesh).await;
    let mut tls = tls_to(&mesh, &server).await;

    let mut out = BytesMut::new();
    out.put_slice(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    put_frame(&mut out, FRAME_SETTINGS, 0, 0, &[]);
    let block = hpack_literals(&[
        (":method", "CONNECT"),
        (":authority", "10.0.0.1:80"),
        (":path", "/"),
    ]);
    put_frame(&mut out, FRAME_HEADERS, FLAG_END_HEADERS, 1, &block);
    // And a plain CONNECT with a bad authority on stream 3, to see the 400 + RST(NO_ERROR).
    let block = hpack_literals(&[(":method", "CONNECT"), (":authority", "10.0.0.1:0")]);
    put_frame(&mut out, FRAME_HEADERS, FLAG_END_HEADERS, 3, &block);
    tls.write_all(&out).await.unwrap();

    let mut frames = FrameReader::default();
    let mut reset_1 = None;
    let mut headers_3 = None;
    let mut reset_3 = None;
    within(async {
        while reset_1.is_none() || reset_3.is_none() {
            let (kind, flags, stream, payload) = frames.next(&mut tls).await;
            match (kind, stream) {
                (FRAME_RST_STREAM, 1) => {
                    reset_1 = Some(u32::from_be_bytes(payload[..4].try_into().unwrap()))
                }
                (FRAME_HEADERS, 3) => headers_3 = Some((flags, payload)),
                (FRAME_RST_STREAM, 3) => {
                    reset_3 = Some(u32::from_be_bytes(payload[..4].try_into().unwrap()))
                }
                (FRAME_HEADERS, 1) => panic!("stream 1 got an answer instead of a reset"),
                _ => {}
            }
        }
    })
    .await;
    assert_eq!(reset_1, Some(0x1), "PROTOCOL_ERROR");
    let (flags, block) = headers_3.expect("stream 3 got HEADERS before its reset");
    assert_ne!(
        flags & FLAG_END_STREAM,
        0,
        "the error response ends the stream"
    );
    // `:status: 400` is entry 12 of the HPACK static table.
    assert_eq!(&block[..], &[0x80 | 12]);
    assert_eq!(reset_3, Some(0x0), "NO_ERROR after the error response");
}

const FRAME_HEADERS: u8 = 0x1;
const FRAME_RST_STREAM: u8 = 0x3;
const FRAME_SETTINGS: u8 = 0x4;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;

fn put_frame(out: &mut BytesMut, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = u32::try_from(payload.len()).unwrap();
    out.put_slice(&len.to_be_bytes()[1..]);
    out.put_u8(kind);
    out.put_u8(flags);
    out.put_u32(stream);
    out.put_slice(payload);
}

/// HPACK "literal header field without indexing, new name", no Huffman (RFC 7541 §6.2.2).
fn hpack_literals(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in fields {
        block.push(0x00);
        for part in [name, value] {
            block.push(u8::try_from(part.len()).unwrap());
            block.extend_from_slice(part.as_bytes());
        }
    }
    block
}

#[derive(Default)]
struct FrameReader {
    buf: BytesMut,
}

impl FrameReader {
    async fn next(&mut self, io: &mut TlsStream<TcpStream>) -> (u8, u8, u32, Bytes) {
        loop {
            if self.buf.len() >= 9 {
                let len = usize::from(self.buf[0]) << 16
                    | usize::from(self.buf[1]) << 8
                    | usize::from(self.buf[2]);
                if self.buf.len() >= 9 + len {
                    let mut head = self.buf.split_to(9);
                    let payload = self.buf.split_to(len).freeze();
                    head.advance(3);
                    let kind = head.get_u8();
                    let flags = head.get_u8();
                    let stream = head.get_u32() & 0x7fff_ffff;
                    return (kind, flags, stream, payload);
                }
            }
            let n = io.read_buf(&mut self.buf).await.unwrap();
            assert_ne!(n, 0, "server closed the connection");
        }
    }
}
