//! Connection reuse, stream limits, drain/GOAWAY, idle release, keepalive and connect errors.
// Helpers outside `#[test]` functions fail the test by panicking, like the tests themselves.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use ambit_hbone::{Keepalive, PoolConfig, ServerConfig};
use futures_util::future::join_all;
use support::*;
use tokio::net::TcpListener;

fn pool_config(configure: impl FnOnce(&mut PoolConfig)) -> PoolConfig {
    let mut config = PoolConfig::default();
    configure(&mut config);
    config
}

fn server_config(max_concurrent_streams: u32) -> ServerConfig {
    let mut config = ServerConfig::default();
    config.max_concurrent_streams = max_concurrent_streams;
    config
}

/// Waits until `condition` holds, polling; bounded by [`TIMEOUT`].
async fn eventually(mut condition: impl FnMut() -> bool) {
    within(async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn hundred_concurrent_streams_share_one_connection() {
    let mesh = Mesh::new("cluster.local");
    let server = TestServer::start(
        mesh.server_tls(&server_id()),
        echo_handler(),
        ServerConfig::default(),
    )
    .await;
    let pool = mesh.pool(&mesh.bundle, PoolConfig::default());

    // All 100 open at the same time: concurrent first callers share one handshake.
    let connects = (0..100).map(|_| pool.connect(server.request("10.0.0.1:80")));
    let mut streams: Vec<_> = within(join_all(connects))
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(server.connections(), 1);
    assert_eq!(pool.connection_count(), 1);
    let echoes = streams
        .iter_mut()
        .enumerate()
        .map(|(i, stream)| async move {
            let data = payload(1000 + i);
            assert_eq!(echo_round_trip(stream, &data).await, data);
        });
    join_all(echoes).await;
    assert_eq!(server.connections(), 1);
}

#[tokio::test]
async fn streams_beyond_the_servers_limit_open_another_connection() {
    let mesh = Mesh::new("cluster.local");
    let server = TestServer::start(
        mesh.server_tls(&server_id()),
        echo_handler(),
        server_config(5),
    )
    .await;
    let pool = mesh.pool(&mesh.bundle, PoolConfig::default());

    let first: Vec<_> = within(join_all(
        (0..5).map(|_| pool.connect(server.request("10.0.0.1:80"))),
    ))
    .await
    .into_iter()
    .collect::<Result<_, _>>()
    .unwrap();
    assert_eq!(server.connections(), 1);
    let mut more: Vec<_> = within(join_all(
        (0..3).map(|_| pool.connect(server.request("10.0.0.1:80"))),
    ))
    .await
    .into_iter()
    .collect::<Result<_, _>>()
    .unwrap();
    assert_eq!(server.connections(), 2);
    assert_eq!(pool.connection_count(), 2);
    for stream in &mut more {
        assert_eq!(echo_round_trip(stream, b"second").await, b"second");
    }
    drop(first);
}

#[tokio::test]
async fn configured_stream_limit_caps_each_connection() {
    let mesh = Mesh::new("cluster.local");
    let server = TestServer::start(
        mesh.server_tls(&server_id()),
        echo_handler(),
        ServerConfig::default(),
    )
    .await;
    let pool = mesh.pool(
        &mesh.bundle,
        pool_config(|c| c.max_streams_per_connection = 3),
    );

    let streams: Vec<_> = within(join_all(
        (0..7).map(|_| pool.connect(server.request("10.0.0.1:80"))),
    ))
    .await
    .into_iter()
    .collect::<Result<_, _>>()
    .unwrap();
    assert_eq!(streams.len(), 7);
    assert_eq!(server.connections(), 3);
}

#[tokio::test]
async fn finished_streams_free_their_slot() {
    let mesh = Mesh::new("cluster.local");
    let server = TestServer::start(
        mesh.server_tls(&server_id()),
        echo_handler(),
        ServerConfig::default(),
    )
    .await;
    let pool = mesh.pool(
        &mesh.bundle,
        pool_config(|c| c.max_streams_per_connection = 1),
    );
    for round in 0..5u8 {
        let mut stream = within(pool.connect(server.request("10.0.0.1:80")))
            .await
            .unwrap();
        assert_eq!(echo_round_trip(&mut stream, &[round]).await, [round]);
    }
    assert_eq!(server.connections(), 1);
}

#[tokio::test]
async fn different_keys_get_different_connections() {
    let mesh = Mesh::new("cluster.local");
    let server = TestServer::start(
        mesh.server_tls(&server_id()),
        echo_handler(),
        ServerConfig::default(),
    )
    .await;
    let pool = mesh.pool(&mesh.bundle, PoolConfig::default());
    let _a = within(pool.connect(server.request("10.0.0.1:80")))
        .await
        .unwrap();
    // Same key, expected identities given in another order and duplicated: reused.
    let same = ambit_hbone::ConnectRequest::new(
        client_id(),
        vec![id("cluster.local", "other"), server_id(), server_id()],
        server.addr,
        "10.0.0.2:80".parse().unwrap(),
    );
    let same2 = ambit_hbone::ConnectRequest::new(
        client_id(),
        vec![server_id(), id("cluster.local", "other")],
        server.addr,
        "10.0.0.2:80".parse().unwrap(),
    );
    let _b = within(pool.connect(same)).await.unwrap();
    let _c = within(pool.connect(same2)).await.unwrap();
    assert_eq!(server.connections(), 2);
    // Another source identity: its own connection (and certificate).
    let other_source = ambit_hbone::ConnectRequest::new(
        id("cluster.local", "client-two"),
        vec![server_id()],
        server.addr,
        "10.0.0.1:80".parse().unwrap(),
    );
    let _d = within(pool.connect(other_source)).await.unwrap();
    assert_eq!(server.connections(), 3);
}

#[tokio::test]
async fn drained_server_keeps_open_streams_and_pool_moves_on() {
    let mesh = Mesh::new("cluster.local");
    let server = TestServer::start(
        mesh.server_tls(&server_id()),
        echo_handler(),
        ServerConfig::default(),
    )
    .await;
    let pool = mesh.pool(&mesh.bundle, PoolConfig::default());

    let mut open = within(pool.connect(server.request("10.0.0.1:80")))
        .await
        .unwrap();
    server.drain_connections();
    // Streams the server had not yet refused may still land on the old connection; once the
    // GOAWAY is in, new streams must go to a new one.
    within(async {
        while server.connections() < 2 {
            let mut stream = pool.connect(server.request("10.0.0.1:80")).await.unwrap();
            assert_eq!(echo_round_trip(&mut stream, b"new").await, b"new");
        }
    })
    .await;
    assert_eq!(server.connections(), 2);
    // The stream opened before the drain is untouched.
    let data = payload(256 * 1024);
    assert_eq!(echo_round_trip(&mut open, &data).await, data);
    // With its last stream done, the drained connection goes away.
    drop(open);
    eventually(|| pool.connection_count() == 1).await;
}

#[tokio::test]
async fn idle_connections_are_released() {
    let mesh = Mesh::new("cluster.local");
    let server = TestServer::start(
        mesh.server_tls(&server_id()),
        echo_handler(),
        ServerConfig::default(),
    )
    .await;
    let pool = mesh.pool(
        &mesh.bundle,
        pool_config(|c| c.idle_timeout = Duration::from_millis(200)),
    );

    let mut stream = within(pool.connect(server.request("10.0.0.1:80")))
        .await
        .unwrap();
    assert_eq!(echo_round_trip(&mut stream, b"x").await, b"x");
    assert_eq!(pool.connection_count(), 1);
    drop(stream);
    eventually(|| pool.connection_count() == 0).await;
    let mut stream = within(pool.connect(server.request("10.0.0.1:80")))
        .await
        .unwrap();
    assert_eq!(echo_round_trip(&mut stream, b"y").await, b"y");
    assert_eq!(server.connections(), 2);
}

#[tokio::test]
async fn connection_to_a_hung_peer_is_dropped_by_keepalive() {
    let mesh = Mesh::new("cluster.local");
    let server = TestServer::start(
        mesh.server_tls(&server_id()),
        echo_handler(),
        ServerConfig::default(),
    )
    .await;
    let relay = FreezableRelay::start(server.addr).await;
    let keepalive = Keepalive {
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(200),
    };
    let pool = mesh.pool(&mesh.bundle, pool_config(|c| c.keepalive = keepalive));
    let request = ambit_hbone::ConnectRequest::new(
        client_id(),
        vec![server_id()],
        relay.addr,
        "10.0.0.1:80".parse().unwrap(),
    );

    let mut stream = within(pool.connect(request.clone())).await.unwrap();
    assert_eq!(echo_round_trip(&mut stream, b"alive").await, b"alive");
    let mut idle_stream = within(pool.connect(request)).await.unwrap();
    relay.freeze();
    eventually(|| pool.connection_count() == 0).await;
    // The open stream fails rather than hanging forever.
    let mut buf = [0u8; 1];
    let read = within(tokio::io::AsyncReadExt::read(&mut idle_stream, &mut buf)).await;
    assert!(read.is_err(), "expected an error, got {read:?}");
}

#[tokio::test]
async fn connect_errors_are_classified() {
    let mesh = Mesh::new("cluster.local");
    // Nothing listens here.
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let pool = mesh.pool(
        &mesh.bundle,
        pool_config(|c| c.connect_timeout = Duration::from_millis(300)),
    );
    let request = |addr| {
        ambit_hbone::ConnectRequest::new(
            client_id(),
            vec![server_id()],
            addr,
            "10.0.0.1:80".parse().unwrap(),
        )
    };
    let err = within(pool.connect(request(closed))).await.unwrap_err();
    assert!(err.is_connect(), "{err}");
    assert!(!err.is_tls() && !err.is_timeout() && err.status().is_none());

    // Accepts TCP, never speaks TLS.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let _hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = silent.accept().await {
            held.push(tcp);
        }
    });
    let err = within(pool.connect(request(silent_addr)))
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(!err.is_connect() && !err.is_tls());
    assert_eq!(pool.connection_count(), 0);
}

#[tokio::test]
async fn serve_stops_accepting_on_drain_and_waits_for_open_streams() {
    let mesh = Mesh::new("cluster.local");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = ambit_hbone::Server::new(
        mesh.server_tls(&server_id()),
        echo_handler(),
        ServerConfig::default(),
    );
    let drain = ambit_hbone::Drain::new();
    let signal = drain.signal();
    let serving = tokio::spawn(async move { server.serve(listener, signal).await });
    let pool = mesh.pool(&mesh.bundle, PoolConfig::default());
    let request = || {
        ambit_hbone::ConnectRequest::new(
            client_id(),
            vec![server_id()],
            addr,
            "10.0.0.1:80".parse().unwrap(),
        )
    };

    let mut open = within(pool.connect(request())).await.unwrap();
    drain.start();
    // Once the GOAWAY is in, the next stream needs a new connection, and nobody accepts it.
    let err = within(async {
        loop {
            match pool.connect(request()).await {
                Ok(mut stream) => assert_eq!(echo_round_trip(&mut stream, b"x").await, b"x"),
                Err(err) => break err,
            }
        }
    })
    .await;
    assert!(err.is_connect(), "{err}");
    assert!(!serving.is_finished(), "serve waits for the open stream");
    let data = payload(100_000);
    assert_eq!(echo_round_trip(&mut open, &data).await, data);
    drop(open);
    within(serving).await.unwrap();
}

#[tokio::test]
async fn connections_are_opened_through_the_configured_connector() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let mesh = Mesh::new("cluster.local");
    let server = TestServer::start(
        mesh.server_tls(&server_id()),
        echo_handler(),
        ServerConfig::default(),
    )
    .await;
    // The connector ignores the next hop it is given and dials the real server, so the
    // tunnel only works if the pool really went through it.
    let dialled = Arc::new(std::sync::Mutex::new(Vec::new()));
    let calls = Arc::new(AtomicUsize::new(0));
    let (seen, count, real) = (dialled.clone(), calls.clone(), server.addr);
    let connector = move |next_hop: std::net::SocketAddr| {
        seen.lock().unwrap().push(next_hop);
        count.fetch_add(1, Ordering::SeqCst);
        tokio::net::TcpStream::connect(real)
    };
    let pool = ambit_hbone::Pool::with_connector(
        Arc::new(TestTls::new(&mesh, mesh.bundle.clone())),
        PoolConfig::default(),
        Arc::new(connector),
    );
    let unroutable: std::net::SocketAddr = "192.0.2.1:15008".parse().unwrap();
    let request = |target: &str| {
        ambit_hbone::ConnectRequest::new(
            client_id(),
            vec![server_id()],
            unroutable,
            target.parse().unwrap(),
        )
    };
    let mut first = within(pool.connect(request("10.0.0.1:80"))).await.unwrap();
    let data = payload(100);
    assert_eq!(echo_round_trip(&mut first, &data).await, data);
    let _second = within(pool.connect(request("10.0.0.2:80"))).await.unwrap();
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the second stream reuses the connection"
    );
    assert_eq!(*dialled.lock().unwrap(), vec![unroutable]);

    // A failing connector surfaces as a connect error.
    let failing = ambit_hbone::Pool::with_connector(
        Arc::new(TestTls::new(&mesh, mesh.bundle.clone())),
        PoolConfig::default(),
        Arc::new(|_| async { Err(std::io::Error::other("no route from this netns")) }),
    );
    let err = within(failing.connect(request("10.0.0.1:80")))
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err}");
}
