//! The TCP echo server over loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Helpers outside #[test] fns panic on purpose.

mod support;

use support::LIMIT;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

async fn start(banner: Option<&str>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(ambit_sample_apps::tcp_echo::serve(
        listener,
        banner.map(str::to_owned),
    ));
    addr
}

#[tokio::test]
async fn bytes_come_back_after_the_banner_and_half_close_is_passed_on() {
    let addr = start(Some("v2 ")).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"hello\0world").await.unwrap();
    stream.shutdown().await.unwrap();
    let mut received = Vec::new();
    timeout(LIMIT, stream.read_to_end(&mut received))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(received, b"v2 hello\0world");
}

#[tokio::test]
async fn without_a_banner_only_the_bytes_come_back() {
    let addr = start(None).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let (mut reader, mut writer) = stream.split();
    let write = async {
        writer.write_all(&payload).await.unwrap();
        writer.shutdown().await.unwrap();
    };
    let mut received = Vec::new();
    let read = reader.read_to_end(&mut received);
    let ((), read) = timeout(LIMIT, async { tokio::join!(write, read) })
        .await
        .unwrap();
    read.unwrap();
    assert_eq!(received, payload);
}

#[tokio::test]
async fn the_binary_serves_with_its_banner() {
    let (_child, addr) = support::spawn_server(
        env!("CARGO_BIN_EXE_tcp-echo"),
        &["--addr", "127.0.0.1:0", "--banner", "hi:"],
    )
    .await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"x").await.unwrap();
    stream.shutdown().await.unwrap();
    let mut received = Vec::new();
    timeout(LIMIT, stream.read_to_end(&mut received))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(received, b"hi:x");
}
