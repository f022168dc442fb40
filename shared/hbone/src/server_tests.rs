//! The HTTP/2 layer without TLS, over in-memory pipes.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};
use tokio::sync::mpsc;

use super::*;
use crate::drain::DrainSignal;

const TIMEOUT: Duration = Duration::from_secs(10);

fn info() -> Arc<ConnectionInfo> {
    Arc::new(ConnectionInfo {
        peer: SpiffeId::new("cluster.local", "test", "client").unwrap(),
        local_addr: "127.0.0.1:15008".parse().unwrap(),
        remote_addr: "127.0.0.1:40000".parse().unwrap(),
    })
}

/// Serves plaintext HTTP/2 on one end of a pipe; returns the other end and the server task.
fn serve(
    handler: impl Handler,
    config: ServerConfig,
) -> (
    DuplexStream,
    tokio::task::JoinHandle<Result<(), ConnectionError>>,
) {
    let (client, server) = duplex(256 * 1024);
    let task = tokio::spawn(async move {
        serve_h2(
            server,
            info(),
            Arc::new(handler),
            &config,
            DrainSignal::never(),
        )
        .await
    });
    (client, task)
}

/// Opens one CONNECT stream with a plain h2 client and wraps it like the pool does.
async fn open(io: DuplexStream) -> HboneStream {
    open_keeping_client(io).await.1
}

/// Like [`open`], also returning the client's request handle (which keeps the connection).
async fn open_keeping_client(io: DuplexStream) -> (h2::client::SendRequest<Bytes>, HboneStream) {
    let (send, connection) = h2::client::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .handshake::<_, Bytes>(io)
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut ready = send.clone().ready().await.unwrap();
    let request = Request::builder()
        .method(Method::CONNECT)
        .uri(
            http::Uri::builder()
                .authority("10.0.0.1:80")
                .build()
                .unwrap(),
        )
        .body(())
        .unwrap();
    let (response, send_stream) = ready.send_request(request, false).unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let stream = HboneStream::new(send_stream, response.into_body(), MAX_FRAME_SIZE as usize);
    (send, stream)
}

/// Accepts each tunnel and hands its stream to the test.
fn handing_over() -> (impl Handler, mpsc::UnboundedReceiver<HboneStream>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let handler = move |_request: InboundRequest, responder: Responder| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(responder.accept(HeaderMap::new()).unwrap());
        }
    };
    (handler, rx)
}

/// Reads to EOF in small pieces, checking every byte against `expected`.
async fn read_slowly(stream: &mut HboneStream, expected: &[u8]) -> usize {
    let mut buf = [0u8; 7000];
    let mut offset = 0;
    loop {
        let n = stream.read(&mut buf).await.unwrap();
        if n == 0 {
            return offset;
        }
        assert_eq!(&buf[..n], &expected[offset..offset + n]);
        offset += n;
    }
}

#[tokio::test]
async fn moves_more_than_the_windows_both_ways_with_slow_readers() {
    let (handler, mut accepted) = handing_over();
    let (io, _server) = serve(handler, ServerConfig::default());
    tokio::time::timeout(TIMEOUT, async {
        let mut client = open(io).await;
        let mut server = accepted.recv().await.unwrap();
        // 40 MiB is well past the 16 MiB connection and 4 MiB stream windows, so this only
        // finishes if capacity is released as the (deliberately small) reads consume it.
        let size = 40 * 1024 * 1024;
        let data: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
        let upload = async {
            client.write_all(&data).await.unwrap();
            client.shutdown().await.unwrap();
        };
        let ((), received) = tokio::join!(upload, read_slowly(&mut server, &data));
        assert_eq!(received, size);
        let download = async {
            server.write_all(&data).await.unwrap();
            server.shutdown().await.unwrap();
        };
        let ((), received) = tokio::join!(download, read_slowly(&mut client, &data));
        assert_eq!(received, size);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_reset_is_an_io_error_on_both_sides() {
    let (handler, mut accepted) = handing_over();
    let (io, _server) = serve(handler, ServerConfig::default());
    tokio::time::timeout(TIMEOUT, async {
        let mut client = open(io).await;
        let mut server = accepted.recv().await.unwrap();
        client.write_all(b"x").await.unwrap();
        let mut byte = [0u8; 1];
        server.read_exact(&mut byte).await.unwrap();
        // Dropping an unfinished stream resets it (CANCEL).
        drop(client);
        let err = server.read(&mut byte).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
        let err = loop {
            // Writes may be queued before the reset is noticed; it must surface eventually.
            if let Err(err) = server.write_all(&[0; 64 * 1024]).await {
                break err;
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn writing_after_shutdown_fails_and_shutdown_is_idempotent() {
    let (handler, mut accepted) = handing_over();
    let (io, _server) = serve(handler, ServerConfig::default());
    tokio::time::timeout(TIMEOUT, async {
        let mut client = open(io).await;
        let mut server = accepted.recv().await.unwrap();
        client.shutdown().await.unwrap();
        client.shutdown().await.unwrap();
        let err = client.write_all(b"late").await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_peer_that_stops_answering_pings_is_dropped() {
    let config = ServerConfig {
        keepalive: Keepalive {
            interval: Duration::from_millis(50),
            timeout: Duration::from_millis(100),
        },
        ..ServerConfig::default()
    };
    let (handler, _accepted) = handing_over();
    let (mut io, server) = serve(handler, config);
    // A client preface and empty SETTINGS, then silence: no PONG will ever come.
    io.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let result = tokio::time::timeout(TIMEOUT, server)
        .await
        .unwrap()
        .unwrap();
    let err = result.unwrap_err();
    assert!(err.is_timeout(), "{err}");
    drop(io);
}

#[tokio::test]
async fn drain_sends_goaway_and_lets_open_streams_finish() {
    let (handler, mut accepted) = handing_over();
    let drain = crate::Drain::new();
    let (io, server_io) = duplex(256 * 1024);
    let signal = drain.signal();
    let server = tokio::spawn(async move {
        serve_h2(
            server_io,
            info(),
            Arc::new(handler),
            &ServerConfig::default(),
            signal,
        )
        .await
    });
    tokio::time::timeout(TIMEOUT, async {
        // The client keeps its request handle, so only the server's GOAWAY can end this.
        let (mut requests, mut client) = open_keeping_client(io).await;
        let mut stream = accepted.recv().await.unwrap();
        drain.start();
        // The open stream still carries data both ways after the GOAWAY.
        client.write_all(b"ping").await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        stream.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"ping");
        stream.write_all(b"pong").await.unwrap();
        stream.shutdown().await.unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"pong");
        drop((client, stream));
        // With its last stream done, the drained connection ends cleanly.
        server.await.unwrap().unwrap();
        let refused = std::future::poll_fn(|cx| requests.poll_ready(cx)).await;
        assert!(refused.is_err(), "the client saw the connection end");
    })
    .await
    .unwrap();
}

#[test]
fn only_plain_connect_with_a_good_authority_passes() {
    let parts = |method: Method, uri: &str| {
        let (parts, ()) = Request::builder()
            .method(method)
            .uri(uri)
            .body(())
            .unwrap()
            .into_parts();
        parts
    };
    assert_eq!(
        check_request(&parts(Method::CONNECT, "10.0.0.1:80")),
        Ok("10.0.0.1:80".parse().unwrap())
    );
    assert_eq!(
        check_request(&parts(Method::GET, "10.0.0.1:80")),
        Err(StatusCode::METHOD_NOT_ALLOWED)
    );
    assert_eq!(
        check_request(&parts(Method::CONNECT, "http://10.0.0.1:80/")),
        Err(StatusCode::BAD_REQUEST)
    );
    assert_eq!(
        check_request(&parts(Method::CONNECT, "/path")),
        Err(StatusCode::BAD_REQUEST)
    );
    assert_eq!(
        check_request(&parts(Method::CONNECT, "10.0.0.1:0")),
        Err(StatusCode::BAD_REQUEST)
    );
    let mut extended = parts(Method::CONNECT, "10.0.0.1:80");
    extended
        .extensions
        .insert(h2::ext::Protocol::from_static("websocket"));
    assert_eq!(check_request(&extended), Err(StatusCode::BAD_REQUEST));
}
