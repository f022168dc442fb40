//! Names outside the mesh: forwarded to the upstream resolvers and relayed back.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ambit_ztunnel::dns::Failure;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::support::{
    CountingSockets, FakeUpstream, Mode, Proxy, UPSTREAM_V4, WAIT, addresses, ask_tcp, ask_udp,
    assert_code, config, mesh_names, query, read_framed, with_edns, write_framed,
};

#[tokio::test]
async fn unknown_name_is_forwarded_and_relayed_with_the_clients_id() {
    let upstream = FakeUpstream::start(Mode::Answer).await.unwrap();
    let proxy = Proxy::start(config(vec![upstream.addr])).await.unwrap();
    for id in [0, 0x1234, u16::MAX] {
        let reply = ask_udp(proxy.udp, &query(id, "www.Example.com.", RecordType::A))
            .await
            .unwrap();
        assert_code(&reply, ResponseCode::NoError);
        assert!(!reply.metadata.authoritative);
        assert_eq!(addresses(&reply), vec![UPSTREAM_V4]);
    }
    assert_eq!(upstream.udp_queries.load(Ordering::SeqCst), 3);
    assert_eq!(upstream.tcp_queries.load(Ordering::SeqCst), 0);
    assert_eq!(proxy.metrics.forwarded(), 3);
    assert_eq!(proxy.metrics.requests(), 3);
}

#[tokio::test]
async fn upstream_sockets_come_from_the_factory() {
    let upstream = FakeUpstream::start(Mode::Answer).await.unwrap();
    let sockets = Arc::new(CountingSockets::default());
    let proxy = Proxy::start_with(
        config(vec![upstream.addr]),
        Arc::new(mesh_names()),
        sockets.clone(),
    )
    .await
    .unwrap();
    ask_udp(proxy.udp, &query(1, "a.example.", RecordType::A))
        .await
        .unwrap();
    ask_tcp(proxy.tcp, &query(2, "b.example.", RecordType::A))
        .await
        .unwrap();
    assert_eq!(sockets.made.load(Ordering::SeqCst), 2);
    assert_eq!(upstream.queries(), 2);
}

#[tokio::test]
async fn upstream_timeout_is_servfail_in_bounded_time() {
    let upstream = FakeUpstream::start(Mode::Silent).await.unwrap();
    let mut config = config(vec![upstream.addr]);
    config.upstream_timeout = Duration::from_millis(200);
    let proxy = Proxy::start(config).await.unwrap();
    let started = Instant::now();
    let reply = ask_udp(proxy.udp, &query(77, "slow.example.", RecordType::A))
        .await
        .unwrap();
    let took = started.elapsed();
    assert_code(&reply, ResponseCode::ServFail);
    assert!(took >= Duration::from_millis(200), "{took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert_eq!(proxy.metrics.failures(Failure::UpstreamTimeout), 1);
    assert_eq!(upstream.queries(), 1);
}

#[tokio::test]
async fn next_upstream_answers_when_the_first_is_silent() {
    let silent = FakeUpstream::start(Mode::Silent).await.unwrap();
    let good = FakeUpstream::start(Mode::Answer).await.unwrap();
    let mut config = config(vec![silent.addr, good.addr]);
    config.upstream_timeout = Duration::from_millis(200);
    let proxy = Proxy::start(config).await.unwrap();
    let reply = ask_udp(proxy.udp, &query(5, "www.example.com.", RecordType::A))
        .await
        .unwrap();
    assert_eq!(addresses(&reply), vec![UPSTREAM_V4]);
    assert_eq!((silent.queries(), good.queries()), (1, 1));
}

#[tokio::test]
async fn unreachable_upstream_is_servfail() {
    // A port nothing listens on: loopback refuses at once.
    let closed = {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.local_addr().unwrap()
    };
    let proxy = Proxy::start(config(vec![closed])).await.unwrap();
    let reply = ask_udp(proxy.udp, &query(6, "www.example.com.", RecordType::A))
        .await
        .unwrap();
    assert_code(&reply, ResponseCode::ServFail);
    assert_eq!(proxy.metrics.failures(Failure::UpstreamError), 1);

    let proxy = Proxy::start(config(Vec::new())).await.unwrap();
    let reply = ask_udp(proxy.udp, &query(7, "www.example.com.", RecordType::A))
        .await
        .unwrap();
    assert_code(&reply, ResponseCode::ServFail);
}

#[tokio::test]
async fn truncated_udp_answer_is_retried_over_tcp() {
    let upstream = FakeUpstream::start(Mode::TruncateUdp { records: 3 })
        .await
        .unwrap();
    let proxy = Proxy::start(config(vec![upstream.addr])).await.unwrap();
    let reply = ask_udp(proxy.udp, &query(0xabcd, "big.example.", RecordType::A))
        .await
        .unwrap();
    assert!(!reply.metadata.truncation, "{reply}");
    assert_eq!(addresses(&reply).len(), 3);
    assert_eq!(upstream.udp_queries.load(Ordering::SeqCst), 1);
    assert_eq!(upstream.tcp_queries.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn answer_too_big_for_the_client_is_truncated_and_whole_over_tcp() {
    let upstream = FakeUpstream::start(Mode::TruncateUdp { records: 60 })
        .await
        .unwrap();
    let proxy = Proxy::start(config(vec![upstream.addr])).await.unwrap();
    // 60 A records do not fit the 512 bytes of a client without EDNS.
    let plain = query(1, "huge.example.", RecordType::A);
    let reply = ask_udp(proxy.udp, &plain).await.unwrap();
    assert!(reply.metadata.truncation);
    assert!(reply.answers.is_empty());
    // ...but do fit a client with a large EDNS buffer, and TCP.
    let reply = ask_udp(
        proxy.udp,
        &with_edns(query(2, "huge.example.", RecordType::A), 4096),
    )
    .await
    .unwrap();
    assert!(!reply.metadata.truncation);
    assert_eq!(addresses(&reply).len(), 60);
    let reply = ask_tcp(proxy.tcp, &plain).await.unwrap();
    assert_eq!(addresses(&reply).len(), 60);
}

#[tokio::test]
async fn tcp_queries_are_forwarded_over_tcp() {
    let upstream = FakeUpstream::start(Mode::Answer).await.unwrap();
    let proxy = Proxy::start(config(vec![upstream.addr])).await.unwrap();
    let reply = ask_tcp(proxy.tcp, &query(0x4242, "www.example.com.", RecordType::A))
        .await
        .unwrap();
    assert_eq!(addresses(&reply), vec![UPSTREAM_V4]);
    assert_eq!(upstream.tcp_queries.load(Ordering::SeqCst), 1);
    assert_eq!(upstream.udp_queries.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn one_tcp_connection_carries_several_queries() {
    let upstream = FakeUpstream::start(Mode::Answer).await.unwrap();
    let proxy = Proxy::start(config(vec![upstream.addr])).await.unwrap();
    let mut stream = TcpStream::connect(proxy.tcp).await.unwrap();
    for (id, name) in [(1, "reviews."), (2, "www.example.com.")] {
        write_framed(&mut stream, &query(id, name, RecordType::A))
            .await
            .unwrap();
        let reply = timeout(WAIT, read_framed(&mut stream))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(reply.metadata.id, id);
        assert_eq!(addresses(&reply).len(), 1, "{reply}");
    }
    assert_eq!(upstream.tcp_queries.load(Ordering::SeqCst), 1);
}
