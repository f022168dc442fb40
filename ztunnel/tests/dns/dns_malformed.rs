//! Bad input and floods: answered FORMERR or dropped, counted, and never in the way of other
//! queries.

use std::sync::Arc;
use std::time::Duration;

use ambit_ztunnel::dns::Failure;
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::Notify;
use tokio::time::timeout;

use crate::support::{
    FakeUpstream, Mode, Proxy, REVIEWS_V4, UPSTREAM_V4, WAIT, addresses, ask_tcp, ask_udp,
    assert_code, client, config, query, read_framed, recv, write_framed,
};

/// A query whose question count is not one.
fn with_questions(id: u16, count: usize) -> anyhow::Result<Vec<u8>> {
    let mut message = query(id, "a.example.", RecordType::A);
    message.queries.clear();
    for i in 0..count {
        let name = Name::from_ascii(format!("q{i}.example."))?;
        message.add_query(Query::query(name, RecordType::A));
    }
    Ok(message.to_vec()?)
}

/// Sends a mesh query from `socket` and checks that its answer is the next message there,
/// i.e. that everything the proxy got from `socket` before was answered or dropped.
async fn mesh_query_answered_next(
    socket: &UdpSocket,
    proxy: &Proxy,
    id: u16,
) -> anyhow::Result<()> {
    let mesh = query(id, "reviews.bookinfo.", RecordType::A);
    socket.send_to(&mesh.to_vec()?, proxy.udp).await?;
    let reply = recv(socket).await?;
    anyhow::ensure!(reply.metadata.id == id, "unexpected message: {reply}");
    anyhow::ensure!(
        addresses(&reply) == vec![REVIEWS_V4],
        "wrong answer: {reply}"
    );
    Ok(())
}

#[tokio::test]
async fn malformed_udp_gets_formerr_or_nothing_beside_a_pending_query() {
    let open = Arc::new(Notify::new());
    let upstream = FakeUpstream::start(Mode::Gated { open: open.clone() })
        .await
        .unwrap();
    let proxy = Proxy::start(config(vec![upstream.addr])).await.unwrap();

    // A valid query waits upstream while the bad ones arrive.
    let pending_client = client().await;
    let pending = query(0x5151, "www.example.com.", RecordType::A);
    pending_client
        .send_to(&pending.to_vec().unwrap(), proxy.udp)
        .await
        .unwrap();
    timeout(WAIT, upstream.received.notified()).await.unwrap();

    let bad = client().await;
    // Shorter than a header: dropped without a word.
    bad.send_to(&[0x12, 0x34, 0x01, 0x00, 0x00], proxy.udp)
        .await
        .unwrap();
    mesh_query_answered_next(&bad, &proxy, 1).await.unwrap();

    // Zero and two questions: FORMERR under the query's id.
    for (id, questions) in [(0x0a0a, 0), (0x0b0b, 2)] {
        bad.send_to(&with_questions(id, questions).unwrap(), proxy.udp)
            .await
            .unwrap();
        let reply = recv(&bad).await.unwrap();
        assert_eq!(reply.metadata.id, id);
        assert_code(&reply, ResponseCode::FormErr);
    }

    // Random bytes: FORMERR under their first two bytes as id, or nothing.
    let mut rng = StdRng::seed_from_u64(0xd15);
    for round in 0..20u16 {
        let mut packet = vec![0; rng.random_range(12..300)];
        rng.fill(&mut packet[..]);
        bad.send_to(&packet, proxy.udp).await.unwrap();
        let mesh_id = 1000 + round;
        let mesh = query(mesh_id, "reviews.bookinfo.", RecordType::A);
        bad.send_to(&mesh.to_vec().unwrap(), proxy.udp)
            .await
            .unwrap();
        let mut reply = recv(&bad).await.unwrap();
        if reply.metadata.id != mesh_id {
            assert_eq!(
                reply.metadata.id,
                u16::from_be_bytes([packet[0], packet[1]])
            );
            assert_code(&reply, ResponseCode::FormErr);
            reply = recv(&bad).await.unwrap();
        }
        assert_eq!(reply.metadata.id, mesh_id);
        assert_eq!(addresses(&reply), vec![REVIEWS_V4]);
    }

    // The pending query was not disturbed.
    open.notify_one();
    let reply = recv(&pending_client).await.unwrap();
    assert_eq!(reply.metadata.id, 0x5151);
    assert_eq!(addresses(&reply), vec![UPSTREAM_V4]);
    assert!(proxy.metrics.failures(Failure::Malformed) >= 3);
    assert!(proxy.is_running());
}

#[tokio::test]
async fn malformed_tcp_gets_formerr_or_a_closed_connection() {
    let upstream = FakeUpstream::start(Mode::Answer).await.unwrap();
    let mut config = config(vec![upstream.addr]);
    config.tcp_idle_timeout = Duration::from_millis(300);
    let proxy = Proxy::start(config).await.unwrap();

    // Two questions: FORMERR, and the connection goes on serving.
    let mut stream = TcpStream::connect(proxy.tcp).await.unwrap();
    let bad = with_questions(0x0c0c, 2).unwrap();
    stream.write_u16(bad.len() as u16).await.unwrap();
    stream.write_all(&bad).await.unwrap();
    let reply = timeout(WAIT, read_framed(&mut stream))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply.metadata.id, 0x0c0c);
    assert_code(&reply, ResponseCode::FormErr);
    write_framed(&mut stream, &query(2, "reviews.", RecordType::A))
        .await
        .unwrap();
    let reply = timeout(WAIT, read_framed(&mut stream))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(addresses(&reply), vec![REVIEWS_V4]);

    // No readable header: the connection is closed.
    let mut garbage = TcpStream::connect(proxy.tcp).await.unwrap();
    garbage.write_all(&[0, 5, 1, 2, 3, 4, 5]).await.unwrap();
    assert_closed(&mut garbage).await;

    // A client that stalls in the middle of a message holds nobody up, and is cut off.
    let mut stalled = TcpStream::connect(proxy.tcp).await.unwrap();
    stalled.write_all(&[0, 40, 1, 2]).await.unwrap();
    let reply = ask_tcp(proxy.tcp, &query(3, "www.example.com.", RecordType::A))
        .await
        .unwrap();
    assert_eq!(addresses(&reply), vec![UPSTREAM_V4]);
    assert_closed(&mut stalled).await;
    assert!(proxy.is_running());
}

#[tokio::test]
async fn flood_of_random_datagrams_leaves_the_proxy_serving() {
    let upstream = FakeUpstream::start(Mode::Answer).await.unwrap();
    let proxy = Proxy::start(config(vec![upstream.addr])).await.unwrap();
    let flood = client().await;
    let mut rng = StdRng::seed_from_u64(0xf100d);
    for _ in 0..3000 {
        let mut packet = vec![0; rng.random_range(0..600)];
        rng.fill(&mut packet[..]);
        flood.send_to(&packet, proxy.udp).await.unwrap();
    }
    // The kernel may drop datagrams while the proxy catches up: retry like a real client.
    let probe = query(0x7777, "reviews.bookinfo.", RecordType::A);
    let reply = timeout(WAIT, async {
        loop {
            if let Ok(Ok(reply)) =
                timeout(Duration::from_millis(200), ask_udp(proxy.udp, &probe)).await
            {
                return reply;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(addresses(&reply), vec![REVIEWS_V4]);
    assert!(proxy.metrics.failures(Failure::Malformed) > 0);
    assert!(proxy.is_running());
}

#[tokio::test]
async fn forwarding_beyond_the_limit_is_dropped_while_mesh_answers_go_on() {
    let open = Arc::new(Notify::new());
    let upstream = FakeUpstream::start(Mode::Gated { open: open.clone() })
        .await
        .unwrap();
    let mut config = config(vec![upstream.addr]);
    config.max_in_flight = 1;
    config.upstream_timeout = WAIT;
    let proxy = Proxy::start(config).await.unwrap();

    let first = client().await;
    first
        .send_to(
            &query(1, "one.example.", RecordType::A).to_vec().unwrap(),
            proxy.udp,
        )
        .await
        .unwrap();
    timeout(WAIT, upstream.received.notified()).await.unwrap();

    let second = client().await;
    second
        .send_to(
            &query(2, "two.example.", RecordType::A).to_vec().unwrap(),
            proxy.udp,
        )
        .await
        .unwrap();
    // Answered in order, so the dropped query was handled before this one.
    mesh_query_answered_next(&second, &proxy, 3).await.unwrap();
    assert_eq!(proxy.metrics.failures(Failure::Overloaded), 1);
    assert_eq!(upstream.queries(), 1);

    open.notify_one();
    let reply: Message = recv(&first).await.unwrap();
    assert_eq!(reply.metadata.id, 1);
    assert_eq!(addresses(&reply), vec![UPSTREAM_V4]);
}

async fn assert_closed(stream: &mut TcpStream) {
    let mut buffer = [0; 64];
    match timeout(WAIT, stream.read(&mut buffer)).await {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        other => panic!("connection still open: {other:?}"),
    }
}
