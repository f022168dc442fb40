use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

use super::*;

const TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn half_closes_each_direction_independently() {
    // client <-> a ==copy== b <-> upstream
    let (mut client, mut a) = duplex(1024);
    let (mut b, mut upstream) = duplex(1024);
    let counters = ByteCounters::default();
    let copy = copy_bidirectional(&mut a, &mut b, &counters);
    let peers = async {
        client.write_all(b"request").await.unwrap();
        client.shutdown().await.unwrap();
        // The upstream sees the client's EOF while its own direction is still open.
        let mut request = Vec::new();
        upstream.read_to_end(&mut request).await.unwrap();
        assert_eq!(request, b"request");
        upstream.write_all(b"late answer").await.unwrap();
        upstream.shutdown().await.unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"late answer");
    };
    let (transferred, ()) = tokio::time::timeout(TIMEOUT, async { tokio::join!(copy, peers) })
        .await
        .unwrap();
    let transferred = transferred.unwrap();
    assert_eq!(
        transferred,
        Transferred {
            a_to_b: 7,
            b_to_a: 11
        }
    );
    assert_eq!((counters.a_to_b(), counters.b_to_a()), (7, 11));
}

#[tokio::test]
async fn counters_are_live_and_large_transfers_are_exact() {
    let (mut client, mut a) = duplex(16 * 1024);
    let (mut b, mut upstream) = duplex(16 * 1024);
    let counters = std::sync::Arc::new(ByteCounters::default());
    let copy_counters = counters.clone();
    let copy =
        tokio::spawn(async move { copy_bidirectional(&mut a, &mut b, &copy_counters).await });
    tokio::time::timeout(TIMEOUT, async {
        client.write_all(&[7; 5000]).await.unwrap();
        let mut seen = vec![0; 5000];
        upstream.read_exact(&mut seen).await.unwrap();
        // The copy is still running and already counted what went through.
        assert_eq!(counters.a_to_b(), 5000);
        assert!(!copy.is_finished());
        let big: Vec<u8> = (0..3_000_000u32).map(|i| i as u8).collect();
        let writer = async {
            upstream.write_all(&big).await.unwrap();
            upstream.shutdown().await.unwrap();
        };
        let reader = async {
            let mut back = Vec::new();
            client.read_to_end(&mut back).await.unwrap();
            back
        };
        let ((), back) = tokio::join!(writer, reader);
        assert_eq!(back, big);
        client.shutdown().await.unwrap();
        let transferred = copy.await.unwrap().unwrap();
        assert_eq!(
            transferred,
            Transferred {
                a_to_b: 5000,
                b_to_a: 3_000_000
            }
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_failed_write_ends_the_copy_with_an_error() {
    let (mut client, mut a) = duplex(1024);
    let (mut b, upstream) = duplex(1024);
    drop(upstream);
    let counters = ByteCounters::default();
    client.write_all(b"nobody listens").await.unwrap();
    let result = tokio::time::timeout(TIMEOUT, copy_bidirectional(&mut a, &mut b, &counters))
        .await
        .unwrap();
    assert!(result.is_err());
    assert_eq!(counters.a_to_b(), 0);
}
