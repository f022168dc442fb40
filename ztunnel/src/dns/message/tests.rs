use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, CNAME};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};

use super::{
    MESH_TTL, Rejection, encode_udp, error_reply, mesh_answer, parse_query, query_message, relayed,
    udp_limit, upstream_answer, upstream_query,
};
use crate::dns::metrics::Failure;
use crate::dns::names::MeshMatch;

const V4: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 20);
const V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x20);

fn bytes(message: &Message) -> Vec<u8> {
    message.to_vec().unwrap()
}

fn with_payload(mut query: Message, payload: u16) -> Message {
    let mut edns = Edns::new();
    edns.set_max_payload(payload);
    query.set_edns(edns);
    query
}

fn rejected_with(bytes: &[u8]) -> (Message, Failure) {
    match parse_query(bytes) {
        Err(Rejection::Reply { reply, failure }) => (*reply, failure),
        other => panic!("expected a reply, got {other:?}"),
    }
}

#[test]
fn accepts_a_plain_query() {
    let query = query_message(7, "reviews.bookinfo.", RecordType::A);
    let parsed = parse_query(&bytes(&query)).unwrap();
    assert_eq!(parsed.metadata.id, 7);
    assert_eq!(parsed.queries, query.queries);
}

#[test]
fn drops_what_has_no_query_header() {
    assert!(matches!(parse_query(&[]), Err(Rejection::Drop)));
    assert!(matches!(parse_query(&[0x12; 11]), Err(Rejection::Drop)));
    let mut response = query_message(7, "a.example.", RecordType::A);
    response.metadata.message_type = MessageType::Response;
    assert!(matches!(
        parse_query(&bytes(&response)),
        Err(Rejection::Drop)
    ));
}

#[test]
fn unreadable_body_gets_formerr_with_the_id() {
    let mut packet = bytes(&query_message(0xbeef, "a.example.", RecordType::A));
    packet.truncate(packet.len() - 3);
    let (reply, failure) = rejected_with(&packet);
    assert_eq!(failure, Failure::Malformed);
    assert_eq!(reply.metadata.id, 0xbeef);
    assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
    assert_eq!(reply.metadata.message_type, MessageType::Response);
}

#[test]
fn question_count_other_than_one_is_formerr() {
    let mut none = query_message(1, "a.example.", RecordType::A);
    none.queries.clear();
    let mut two = query_message(2, "a.example.", RecordType::A);
    two.add_query(Query::query(
        Name::from_str("b.example.").unwrap(),
        RecordType::A,
    ));
    for query in [none, two] {
        let (reply, failure) = rejected_with(&bytes(&query));
        assert_eq!(failure, Failure::Malformed);
        assert_eq!(reply.metadata.id, query.metadata.id);
        assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
    }
}

#[test]
fn header_counts_are_checked_before_decoding() {
    // A bare header that claims 65535 questions.
    let packet = [0x77, 0x77, 0x01, 0x00, 0xff, 0xff, 0, 0, 0, 0, 0, 0];
    let (reply, failure) = rejected_with(&packet);
    assert_eq!(failure, Failure::Malformed);
    assert_eq!(reply.metadata.id, 0x7777);
    assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
}

#[test]
fn upstream_query_caps_the_advertised_payload() {
    let client = with_payload(query_message(1, "a.example.", RecordType::A), 65000);
    let upstream = upstream_query(&client, 2);
    assert_eq!(upstream.metadata.id, 2);
    assert_eq!(upstream.max_payload(), 4096);
    let client = with_payload(query_message(1, "a.example.", RecordType::A), 1232);
    assert_eq!(upstream_query(&client, 2).max_payload(), 1232);
}

#[test]
fn trailing_bytes_and_answers_in_a_query_are_formerr() {
    let mut trailing = bytes(&query_message(3, "a.example.", RecordType::A));
    trailing.push(0);
    assert_eq!(rejected_with(&trailing).1, Failure::Malformed);

    let mut with_answer = query_message(4, "a.example.", RecordType::A);
    with_answer.add_answer(hickory_proto::rr::Record::from_rdata(
        Name::from_str("a.example.").unwrap(),
        1,
        RData::A(A(V4)),
    ));
    assert_eq!(rejected_with(&bytes(&with_answer)).1, Failure::Malformed);
}

#[test]
fn other_classes_and_opcodes_are_notimp() {
    let mut chaos = query_message(5, "version.bind.", RecordType::TXT);
    chaos.queries[0].set_query_class(DNSClass::CH);
    let mut status = query_message(6, "a.example.", RecordType::A);
    status.metadata.op_code = OpCode::Status;
    for query in [chaos, status] {
        let (reply, failure) = rejected_with(&bytes(&query));
        assert_eq!(failure, Failure::Unsupported);
        assert_eq!(reply.metadata.response_code, ResponseCode::NotImp);
        assert_eq!(reply.metadata.id, query.metadata.id);
    }
}

#[test]
fn mesh_answer_returns_the_asked_family_only() {
    let found = MeshMatch {
        addresses: vec![IpAddr::V4(V4), IpAddr::V6(V6)],
        canonical: None,
    };
    let query = query_message(9, "Reviews.bookinfo.", RecordType::A);
    let reply = mesh_answer(&query, &found);
    assert!(reply.metadata.authoritative);
    assert_eq!(reply.metadata.id, 9);
    assert_eq!(reply.answers.len(), 1);
    assert_eq!(reply.answers[0].data, RData::A(A(V4)));
    assert_eq!(reply.answers[0].ttl, MESH_TTL);
    assert_eq!(reply.answers[0].name.to_ascii(), "Reviews.bookinfo.");
}

#[test]
fn missing_family_is_an_empty_noerror_answer() {
    let found = MeshMatch {
        addresses: vec![IpAddr::V4(V4)],
        canonical: None,
    };
    let reply = mesh_answer(&query_message(9, "a.example.", RecordType::AAAA), &found);
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert!(reply.metadata.authoritative);
    assert!(reply.answers.is_empty());
}

#[test]
fn alias_match_answers_with_a_cname_first() {
    let canonical = Name::from_str("reviews.bookinfo.").unwrap();
    let found = MeshMatch {
        addresses: vec![IpAddr::V4(V4)],
        canonical: Some(canonical.clone()),
    };
    let query = query_message(
        9,
        "reviews.bookinfo.bookinfo.svc.cluster.local.",
        RecordType::A,
    );
    let reply = mesh_answer(&query, &found);
    assert_eq!(reply.answers.len(), 2);
    assert_eq!(
        reply.answers[0].data,
        RData::CNAME(CNAME(canonical.clone()))
    );
    assert_eq!(reply.answers[1].name, canonical);
}

#[test]
fn oversized_udp_reply_is_truncated() {
    let found = MeshMatch {
        addresses: (0..100u8)
            .map(|i| IpAddr::V4(Ipv4Addr::new(10, 0, 0, i)))
            .collect(),
        canonical: None,
    };
    let query = query_message(9, "many.example.", RecordType::A);
    let reply = mesh_answer(&query, &found);
    let sent = Message::from_vec(&encode_udp(&reply, udp_limit(&query)).unwrap()).unwrap();
    assert!(sent.metadata.truncation);
    assert!(sent.answers.is_empty());
    assert_eq!(sent.queries, query.queries);

    // The same reply fits a client that advertises a large EDNS buffer.
    let edns_query = with_payload(query.clone(), 4096);
    let reply = mesh_answer(&edns_query, &found);
    let sent = Message::from_vec(&encode_udp(&reply, udp_limit(&edns_query)).unwrap()).unwrap();
    assert!(!sent.metadata.truncation);
    assert_eq!(sent.answers.len(), 100);
    assert!(sent.edns.is_some());
}

#[test]
fn upstream_answers_must_match_id_and_question() {
    let client = query_message(0x1111, "Example.COM.", RecordType::A);
    let sent = upstream_query(&client, 0x2222);
    let mut answer = error_reply(&sent, ResponseCode::NXDomain);
    answer.queries[0].set_name(Name::from_str("example.com.").unwrap());

    let accepted = upstream_answer(&bytes(&answer), &sent).unwrap();
    let relayed = relayed(accepted, &client);
    assert_eq!(relayed.metadata.id, 0x1111);
    assert_eq!(relayed.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(relayed.queries[0].name().to_ascii(), "Example.COM.");

    let mut wrong_id = answer.clone();
    wrong_id.metadata.id = 0x3333;
    assert!(upstream_answer(&bytes(&wrong_id), &sent).is_none());
    let mut wrong_name = answer.clone();
    wrong_name.queries[0].set_name(Name::from_str("example.org.").unwrap());
    assert!(upstream_answer(&bytes(&wrong_name), &sent).is_none());
    assert!(upstream_answer(&bytes(&sent), &sent).is_none());
    assert!(upstream_answer(&[1, 2, 3], &sent).is_none());
}
