use std::str::FromStr;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};

use super::*;
use crate::dns::StaticMeshNames;

/// Runs the server side of the handshake over a pipe after the client wrote `input`;
/// returns its result and every byte the server wrote.
async fn run(input: &[u8]) -> (Result<Destination, HandshakeError>, Vec<u8>) {
    let (mut client, mut server): (DuplexStream, DuplexStream) = duplex(1024);
    client.write_all(input).await.unwrap();
    // Whatever the client did not send never comes: end of stream.
    client.shutdown().await.unwrap();
    let result = handshake(&mut server).await;
    drop(server);
    let mut written = Vec::new();
    client.read_to_end(&mut written).await.unwrap();
    (result, written)
}

fn greeting_then(request: &[u8]) -> Vec<u8> {
    let mut bytes = vec![5, 1, 0];
    bytes.extend_from_slice(request);
    bytes
}

#[tokio::test]
async fn connect_requests_for_every_address_type() {
    let cases: [(&[u8], Destination); 3] = [
        (
            &[5, 1, 0, 1, 10, 96, 0, 10, 0, 80],
            Destination::Addr("10.96.0.10:80".parse().unwrap()),
        ),
        (
            &[
                5, 1, 0, 4, 0xfd, 0, 0, 0xa, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0x1b, 0x58,
            ],
            Destination::Addr("[fd00:a::2]:7000".parse().unwrap()),
        ),
        (
            &[5, 1, 0, 3, 3, b'w', b'e', b'b', 0, 80],
            Destination::Name("web".to_owned(), 80),
        ),
    ];
    for (request, expected) in cases {
        let (result, written) = run(&greeting_then(request)).await;
        assert_eq!(result, Ok(expected));
        assert_eq!(written, [5, 0], "method selection: no authentication");
    }
}

#[tokio::test]
async fn no_auth_is_chosen_among_several_methods() {
    let (result, written) = run(&[5, 3, 2, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, 0, 1]).await;
    assert_eq!(
        result,
        Ok(Destination::Addr("127.0.0.1:1".parse().unwrap()))
    );
    assert_eq!(written, [5, 0]);
}

#[tokio::test]
async fn refusals_carry_the_rfc_reply() {
    // Username/password only: no acceptable method, nothing written by the handshake itself.
    let (result, written) = run(&[5, 1, 2]).await;
    assert_eq!(result, Err(HandshakeError::NoAcceptableMethod));
    assert!(written.is_empty());
    // BIND and UDP ASSOCIATE: command not supported, after a complete request was read.
    for command in [2, 3] {
        let (result, _) = run(&greeting_then(&[5, command, 0, 1, 10, 0, 0, 1, 0, 80])).await;
        assert_eq!(
            result,
            Err(HandshakeError::Reply(ReplyCode::CommandNotSupported))
        );
    }
    // Address type 0x05 does not exist.
    let (result, _) = run(&greeting_then(&[5, 1, 0, 5, 1, 2, 3, 4, 0, 80])).await;
    assert_eq!(
        result,
        Err(HandshakeError::Reply(ReplyCode::AddressTypeNotSupported))
    );
    // A name that is not text cannot be a mesh name.
    let (result, _) = run(&greeting_then(&[5, 1, 0, 3, 2, 0xff, 0xfe, 0, 80])).await;
    assert_eq!(
        result,
        Err(HandshakeError::Reply(ReplyCode::HostUnreachable))
    );
}

#[tokio::test]
async fn malformed_or_truncated_input_is_closed_without_a_reply() {
    let cases: [&[u8]; 9] = [
        b"",
        b"GET / HTTP/1.1\r\n\r\n",
        &[4, 1, 0],
        &[5, 0],
        &[5, 2, 0],
        &[5, 1, 0, 4, 1, 0, 1],
        &[5, 1, 0, 5, 1, 1, 1, 10, 0, 0, 1, 0, 80],
        &[5, 1, 0, 5, 1, 0, 1, 10, 0],
        &[5, 1, 0, 5, 1, 0, 3, 10, b'a'],
    ];
    for input in cases {
        let (result, _) = run(input).await;
        assert_eq!(result, Err(HandshakeError::Malformed), "{input:?}");
    }
}

#[test]
fn workload_refs_are_namespace_slash_name() {
    let parsed = WorkloadRef::from_str("demo/a-0").unwrap();
    assert_eq!(parsed.namespace, "demo");
    assert_eq!(parsed.name, "a-0");
    assert_eq!(parsed.to_string(), "demo/a-0");
    for bad in [
        "", "demo", "/a", "demo/", "Demo/a", "de.mo/a", "demo/a/b", "-x/a", "demo/a_b",
    ] {
        assert!(WorkloadRef::from_str(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn names_resolve_like_the_dns_proxy_for_the_pod_namespace() {
    let v4: IpAddr = "10.96.0.10".parse().unwrap();
    let v6: IpAddr = "fd00::10".parse().unwrap();
    let names = StaticMeshNames::new().with("web.demo.svc.cluster.local", [v6, v4]);
    for name in [
        "web.demo.svc.cluster.local",
        "web.demo.svc.cluster.local.",
        "WEB.demo.svc",
        "web.demo",
    ] {
        assert_eq!(mesh_address(&names, name, "other"), Some(v4), "{name}");
    }
    assert_eq!(mesh_address(&names, "web", "demo"), Some(v4));
    assert_eq!(mesh_address(&names, "web", "other"), None);
    assert_eq!(mesh_address(&names, "example.com", "demo"), None);
    assert_eq!(mesh_address(&names, "bad..name", "demo"), None);
}
