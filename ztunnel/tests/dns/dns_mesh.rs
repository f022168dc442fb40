//! Mesh names answered by the proxy itself, without asking upstream.

use std::sync::atomic::Ordering;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};

use crate::support::{
    EXTERNAL_V4, FakeUpstream, Mode, Proxy, RATINGS_V4, REVIEWS_V4, REVIEWS_V6, addresses, ask_tcp,
    ask_udp, assert_code, config, query,
};

const SERVICE_FORMS: [&str; 4] = [
    "reviews.bookinfo.svc.cluster.local.",
    "reviews.bookinfo.svc.",
    "reviews.bookinfo.",
    "reviews.",
];

#[tokio::test]
async fn a_and_aaaa_for_a_service_under_every_form() {
    let upstream = FakeUpstream::start(Mode::Answer).await.unwrap();
    let proxy = Proxy::start(config(vec![upstream.addr])).await.unwrap();
    let mut id = 100;
    for name in SERVICE_FORMS {
        for (kind, expected) in [(RecordType::A, REVIEWS_V4), (RecordType::AAAA, REVIEWS_V6)] {
            id += 1;
            let reply = ask_udp(proxy.udp, &query(id, name, kind)).await.unwrap();
            assert_code(&reply, ResponseCode::NoError);
            assert!(reply.metadata.authoritative, "{name} {kind}");
            assert_eq!(addresses(&reply), vec![expected], "{name} {kind}");
            assert_eq!(reply.answers[0].ttl, 30);
            assert_eq!(reply.answers[0].name.to_ascii(), name);
        }
    }
    assert_eq!(upstream.queries(), 0, "mesh names never go upstream");
    assert_eq!(proxy.metrics.mesh_answers(), 8);
    assert_eq!(proxy.metrics.forwarded(), 0);
}

#[tokio::test]
async fn ipv4_only_service_answers_aaaa_with_no_records() {
    let upstream = FakeUpstream::start(Mode::Answer).await.unwrap();
    let proxy = Proxy::start(config(vec![upstream.addr])).await.unwrap();
    let reply = ask_udp(
        proxy.udp,
        &query(7, "ratings.bookinfo.svc.cluster.local.", RecordType::AAAA),
    )
    .await
    .unwrap();
    assert_code(&reply, ResponseCode::NoError);
    assert!(reply.metadata.authoritative);
    assert!(reply.answers.is_empty());

    let reply = ask_udp(proxy.udp, &query(8, "ratings.", RecordType::A))
        .await
        .unwrap();
    assert_eq!(addresses(&reply), vec![RATINGS_V4]);
    assert_eq!(upstream.queries(), 0);
}

#[tokio::test]
async fn search_path_expansion_answers_through_a_cname() {
    let upstream = FakeUpstream::start(Mode::Answer).await.unwrap();
    let proxy = Proxy::start(config(vec![upstream.addr])).await.unwrap();
    // What glibc sends first for `reviews.bookinfo` with ndots:5 in namespace bookinfo.
    let name = "reviews.bookinfo.bookinfo.svc.cluster.local.";
    let reply = ask_udp(proxy.udp, &query(9, name, RecordType::A))
        .await
        .unwrap();
    assert_code(&reply, ResponseCode::NoError);
    assert_eq!(reply.answers.len(), 2);
    let RData::CNAME(target) = &reply.answers[0].data else {
        panic!("first record is not a CNAME: {reply}");
    };
    assert_eq!(target.0.to_ascii(), "reviews.bookinfo.");
    assert_eq!(reply.answers[1].name.to_ascii(), "reviews.bookinfo.");
    assert_eq!(addresses(&reply), vec![REVIEWS_V4]);
    assert_eq!(upstream.queries(), 0);
}

#[tokio::test]
async fn service_entry_host_is_answered() {
    let upstream = FakeUpstream::start(Mode::Answer).await.unwrap();
    let proxy = Proxy::start(config(vec![upstream.addr])).await.unwrap();
    let reply = ask_udp(
        proxy.udp,
        &query(10, "API.external.example.", RecordType::A),
    )
    .await
    .unwrap();
    assert_eq!(addresses(&reply), vec![EXTERNAL_V4]);
    assert_eq!(reply.answers[0].name.to_ascii(), "API.external.example.");
    assert_eq!(upstream.queries(), 0);
}

#[tokio::test]
async fn mesh_names_over_tcp() {
    let upstream = FakeUpstream::start(Mode::Answer).await.unwrap();
    let proxy = Proxy::start(config(vec![upstream.addr])).await.unwrap();
    for (id, name) in (20..).zip(SERVICE_FORMS) {
        let reply = ask_tcp(proxy.tcp, &query(id, name, RecordType::AAAA))
            .await
            .unwrap();
        assert!(reply.metadata.authoritative);
        assert_eq!(addresses(&reply), vec![REVIEWS_V6], "{name}");
    }
    assert_eq!(upstream.queries(), 0);
}

#[tokio::test]
async fn bare_names_only_match_the_pods_own_namespace() {
    let upstream = FakeUpstream::start(Mode::Answer).await.unwrap();
    let mut other = config(vec![upstream.addr]);
    other.namespace = "default".to_owned();
    other.search_domains = vec!["default.svc.cluster.local".to_owned()];
    let proxy = Proxy::start(other).await.unwrap();
    let reply = ask_udp(proxy.udp, &query(11, "reviews.", RecordType::A))
        .await
        .unwrap();
    assert!(!reply.metadata.authoritative, "went upstream: {reply}");
    assert_eq!(upstream.udp_queries.load(Ordering::SeqCst), 1);
    // The qualified form still works from another namespace.
    let reply = ask_udp(proxy.udp, &query(12, "reviews.bookinfo.", RecordType::A))
        .await
        .unwrap();
    assert_eq!(addresses(&reply), vec![REVIEWS_V4]);
}

#[tokio::test]
async fn other_record_types_of_mesh_names_go_upstream() {
    let upstream = FakeUpstream::start(Mode::Answer).await.unwrap();
    let proxy = Proxy::start(config(vec![upstream.addr])).await.unwrap();
    let reply = ask_udp(proxy.udp, &query(13, "reviews.bookinfo.", RecordType::TXT))
        .await
        .unwrap();
    assert_code(&reply, ResponseCode::NoError);
    assert_eq!(upstream.queries(), 1);
    assert_eq!(proxy.metrics.forwarded(), 1);
}
