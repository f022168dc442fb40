//! DNS messages in and out: strict parsing of client queries, the replies ztunnel makes itself,
//! and the checks on upstream answers. No IO here; hickory-proto does the wire format.

use std::net::IpAddr;

use hickory_proto::op::{Edns, Header, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME};
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

use super::metrics::Failure;
use super::names::MeshMatch;

/// TTL of the records ztunnel answers itself; short, since services come and go.
pub(crate) const MESH_TTL: u32 = 30;
/// The UDP payload size ztunnel advertises in EDNS (the DNS flag day value, below common MTUs).
const ADVERTISED_PAYLOAD: u16 = 1232;
/// Largest UDP answer sent to a client, whatever it advertises.
pub(crate) const MAX_UDP_PAYLOAD: usize = 4096;

/// Why a client message gets no normal processing.
#[derive(Debug)]
pub(crate) enum Rejection {
    /// Not even a query header: nothing to answer.
    Drop,
    /// Answer with this message, and count `failure`.
    Reply {
        reply: Box<Message>,
        failure: Failure,
    },
}

/// Parses a client message strictly: one question of class IN, a standard query, nothing after
/// it but an optional EDNS record.
pub(crate) fn parse_query(bytes: &[u8]) -> Result<Message, Rejection> {
    let header = match Header::read(&mut BinDecoder::new(bytes)) {
        // Never answer a response: two confused servers would echo each other forever.
        Ok(header) if header.metadata.message_type == MessageType::Query => header,
        _ => return Err(Rejection::Drop),
    };
    let formerr = || Rejection::Reply {
        reply: Box::new(header_error(&header, ResponseCode::FormErr)),
        failure: Failure::Malformed,
    };
    // Checked on the header first: the decoder reserves room for as many questions as the
    // header claims, which a 12-byte packet could otherwise set to 65535.
    let counts = header.counts;
    if counts.queries != 1 || counts.answers != 0 || counts.authorities != 0 {
        return Err(formerr());
    }
    let mut decoder = BinDecoder::new(bytes);
    let query = Message::read(&mut decoder).map_err(|_| formerr())?;
    if !decoder.is_empty() || query.queries.len() != 1 {
        return Err(formerr());
    }
    let class = query.queries[0].query_class();
    if query.metadata.op_code != OpCode::Query || class != DNSClass::IN {
        return Err(Rejection::Reply {
            reply: Box::new(error_reply(&query, ResponseCode::NotImp)),
            failure: Failure::Unsupported,
        });
    }
    Ok(query)
}

/// The question of a query that [`parse_query`] accepted.
pub(crate) fn question(query: &Message) -> Option<&Query> {
    query.queries.first()
}

/// True for the record types ztunnel answers for mesh names; others go upstream.
pub(crate) fn is_address_query(query: &Query) -> bool {
    matches!(query.query_type(), RecordType::A | RecordType::AAAA)
}

/// The authoritative answer for a mesh name: the addresses of the asked family (possibly
/// none), under the queried name or behind a CNAME to the name the match came from.
pub(crate) fn mesh_answer(query: &Message, found: &MeshMatch) -> Message {
    let mut reply = reply_to(query);
    reply.metadata.authoritative = true;
    let Some(question) = question(query) else {
        return reply;
    };
    let mut owner = question.name().clone();
    if let Some(canonical) = &found.canonical {
        reply.add_answer(Record::from_rdata(
            owner,
            MESH_TTL,
            RData::CNAME(CNAME(canonical.clone())),
        ));
        owner = canonical.clone();
    }
    let wanted = question.query_type();
    for address in &found.addresses {
        let data = match (address, wanted) {
            (IpAddr::V4(v4), RecordType::A) => RData::A(A(*v4)),
            (IpAddr::V6(v6), RecordType::AAAA) => RData::AAAA(AAAA(*v6)),
            _ => continue,
        };
        reply.add_answer(Record::from_rdata(owner.clone(), MESH_TTL, data));
    }
    reply
}

/// A reply to `query` with `code` and no records.
pub(crate) fn error_reply(query: &Message, code: ResponseCode) -> Message {
    let mut reply = reply_to(query);
    reply.metadata.response_code = code;
    reply
}

/// The query to send upstream: the client's, under an id of our own, asking for UDP answers
/// no larger than [`MAX_UDP_PAYLOAD`] (the size of our receive buffer).
pub(crate) fn upstream_query(query: &Message, id: u16) -> Message {
    let mut upstream = query.clone();
    upstream.metadata.id = id;
    if let Some(edns) = upstream.edns.as_mut()
        && usize::from(edns.max_payload()) > MAX_UDP_PAYLOAD
    {
        edns.set_max_payload(MAX_UDP_PAYLOAD as u16);
    }
    upstream
}

/// Accepts `bytes` as the upstream answer to `sent` if it is a readable response with the same
/// id and question; anything else (stray or spoofed datagrams) is ignored by the caller.
pub(crate) fn upstream_answer(bytes: &[u8], sent: &Message) -> Option<Message> {
    let answer = Message::from_vec(bytes).ok()?;
    let matches = answer.metadata.message_type == MessageType::Response
        && answer.metadata.id == sent.metadata.id
        && answer.queries == sent.queries;
    matches.then_some(answer)
}

/// The upstream answer as the client should see it: its own id and question spelling.
pub(crate) fn relayed(mut answer: Message, client_query: &Message) -> Message {
    answer.metadata.id = client_query.metadata.id;
    answer.queries = client_query.queries.clone();
    answer
}

/// The largest UDP reply `query`'s sender takes: 512 bytes, or what it advertises in EDNS.
pub(crate) fn udp_limit(query: &Message) -> usize {
    usize::from(query.max_payload()).min(MAX_UDP_PAYLOAD)
}

/// Encodes a reply for UDP: if it is larger than `limit`, a truncated reply (no records, TC
/// set) goes instead, so the client retries over TCP. `None` if it cannot be encoded.
pub(crate) fn encode_udp(reply: &Message, limit: usize) -> Option<Vec<u8>> {
    let bytes = reply.to_vec().ok()?;
    if bytes.len() <= limit {
        return Some(bytes);
    }
    let mut truncated = reply.clone();
    truncated.answers.clear();
    truncated.authorities.clear();
    truncated.additionals.clear();
    truncated.signature = None;
    truncated.metadata.truncation = true;
    truncated.to_vec().ok()
}

/// Encodes a reply for TCP, where any size fits the 16-bit length prefix or nothing does.
pub(crate) fn encode_tcp(reply: &Message) -> Option<Vec<u8>> {
    reply
        .to_vec()
        .ok()
        .filter(|bytes| u16::try_from(bytes.len()).is_ok())
}

/// The common part of every reply ztunnel makes: the query's id, question and flags.
fn reply_to(query: &Message) -> Message {
    let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.checking_disabled = query.metadata.checking_disabled;
    // We resolve recursively through the upstream resolver.
    reply.metadata.recursion_available = true;
    reply.add_queries(query.queries.iter().cloned());
    if query.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(ADVERTISED_PAYLOAD);
        reply.set_edns(edns);
    }
    reply
}

/// An error reply built from the header alone, for messages whose body could not be read.
fn header_error(header: &Header, code: ResponseCode) -> Message {
    let mut reply = Message::error_msg(header.metadata.id, header.metadata.op_code, code);
    reply.metadata.recursion_desired = header.metadata.recursion_desired;
    reply
}

/// A standard recursive query for `name`, for tests.
#[cfg(test)]
pub(crate) fn query_message(id: u16, name: &str, kind: RecordType) -> Message {
    let mut message = Message::query();
    message.metadata.id = id;
    message.metadata.recursion_desired = true;
    if let Ok(name) = hickory_proto::rr::Name::from_ascii(name) {
        message.add_query(Query::query(name, kind));
    }
    message
}

#[cfg(test)]
#[path = "message/tests.rs"]
mod tests;
