use super::*;

fn pod(uid: &str) -> PodInfo {
    PodInfo {
        uid: uid.into(),
        namespace: "shop".into(),
        name: "web-0".into(),
        service_account: "web".into(),
        netns: "/var/run/netns/cni-1".into(),
    }
}

fn report() -> PodReport {
    PodReport {
        container_id: "0123abcd".into(),
        namespace: "shop".into(),
        name: "web-0".into(),
        uid: Some("6b1f0c2e-0000-4000-8000-000000000001".into()),
        service_account: None,
        netns: Some("/proc/42/ns/net".into()),
    }
}

fn decode_str<M: Message>(s: &str) -> Result<M, ProtocolError> {
    decode(s.as_bytes())
}

#[test]
fn round_trips_every_message() {
    let requests = [
        ZtunnelRequest::hello(),
        ZtunnelRequest::Enroll { pod: pod("a") },
        ZtunnelRequest::Unenroll { uid: "a".into() },
        ZtunnelRequest::Snapshot {
            pods: vec![pod("a"), pod("b")],
        },
        ZtunnelRequest::Snapshot { pods: vec![] },
    ];
    for request in requests {
        let line = encode(&request).unwrap();
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
        let back: ZtunnelRequest = decode(&line[..line.len() - 1]).unwrap();
        assert_eq!(back, request);
    }
    for request in [
        AgentRequest::hello(),
        AgentRequest::Add { pod: report() },
        AgentRequest::Check { pod: report() },
        AgentRequest::Del {
            pod: PodReport {
                netns: None,
                uid: None,
                ..report()
            },
        },
    ] {
        let line = encode(&request).unwrap();
        let back: AgentRequest = decode(&line[..line.len() - 1]).unwrap();
        assert_eq!(back, request);
    }
    for reply in [
        Reply::ack(),
        Reply::Ack {
            enrolled: Some(false),
        },
        Reply::error(ErrorKind::UnknownPod, "no such pod"),
    ] {
        let line = encode(&reply).unwrap();
        let back: Reply = decode(&line[..line.len() - 1]).unwrap();
        assert_eq!(back, reply);
    }
}

#[test]
fn wire_format_is_stable() {
    let line = encode(&ZtunnelRequest::Unenroll { uid: "u1".into() }).unwrap();
    assert_eq!(line, b"{\"type\":\"unenroll\",\"uid\":\"u1\"}\n");
    let line = encode(&Reply::ack()).unwrap();
    assert_eq!(line, b"{\"type\":\"ack\"}\n");
    let reply: Reply = decode_str(r#"{"type":"ack","enrolled":true}"#).unwrap();
    assert_eq!(
        reply,
        Reply::Ack {
            enrolled: Some(true)
        }
    );
    let err: Reply = decode_str(r#"{"type":"error","kind":"unavailable","message":"m"}"#).unwrap();
    assert_eq!(err, Reply::error(ErrorKind::Unavailable, "m"));
}

#[test]
fn rejects_unknown_message_types_and_fields() {
    let e = decode_str::<ZtunnelRequest>(r#"{"type":"reboot"}"#).unwrap_err();
    assert!(e.is_malformed(), "{e}");
    assert!(e.to_string().contains("reboot"), "{e}");
    // An agent request is not a ztunnel request, and vice versa.
    let e = decode_str::<ZtunnelRequest>(r#"{"type":"add","pod":{}}"#).unwrap_err();
    assert!(e.is_malformed(), "{e}");
    let e =
        decode_str::<ZtunnelRequest>(r#"{"type":"unenroll","uid":"a","force":true}"#).unwrap_err();
    assert!(e.is_malformed() && e.to_string().contains("force"), "{e}");
    let e = decode_str::<ZtunnelRequest>(
        r#"{"type":"enroll","pod":{"uid":"a","namespace":"n","name":"p","service_account":"s","netns":"/x","ip":"1.2.3.4"}}"#,
    )
    .unwrap_err();
    assert!(e.is_malformed() && e.to_string().contains("ip"), "{e}");
    let e = decode_str::<Reply>(r#"{"type":"error","kind":"weird","message":"m"}"#).unwrap_err();
    assert!(e.is_malformed(), "{e}");
    let e = decode_str::<ZtunnelRequest>(r#"{"uid":"a"}"#).unwrap_err();
    assert!(e.is_malformed(), "{e}");
}

#[test]
fn rejects_wrong_types_and_bad_json() {
    for bad in [
        r#"{"type":"hello","version":"1"}"#,
        r#"{"type":"hello","version":-1}"#,
        r#"{"type":"unenroll","uid":7}"#,
        r#"{"type":"snapshot","pods":{}}"#,
        r#"{"type":"enroll","pod":null}"#,
        r#"{"type":"enroll"}"#,
        r#"["hello"]"#,
        r#"{"type":"hello","version":1"#,
        "",
        "\u{0}",
        r#"{"type":"hello","version":1}{"type":"hello","version":1}"#,
    ] {
        let e = decode_str::<ZtunnelRequest>(bad).unwrap_err();
        assert!(e.is_malformed(), "{bad:?}: {e}");
    }
    let e = decode::<ZtunnelRequest>(b"{\"type\":\"unenroll\",\"uid\":\"\xff\"}").unwrap_err();
    assert!(e.is_malformed(), "{e}");
}

#[test]
fn validates_every_field() {
    type Mutation = fn(&mut PodInfo);
    let cases: [(Mutation, &str); 9] = [
        (|p| p.uid.clear(), "pod.uid"),
        (|p| p.uid = "x".repeat(200), "pod.uid"),
        (|p| p.namespace = "Shop".into(), "pod.namespace"),
        (|p| p.namespace = "a.b".into(), "pod.namespace"),
        (|p| p.name = "web_0".into(), "pod.name"),
        (|p| p.service_account = "".into(), "pod.service_account"),
        (|p| p.netns = "netns/x".into(), "pod.netns"),
        (|p| p.netns = "/var/run/netns/../../etc".into(), "pod.netns"),
        (|p| p.netns = "/a\u{0}b".into(), "pod.netns"),
    ];
    for (mutate, field) in cases {
        let mut bad = pod("a");
        mutate(&mut bad);
        let json = serde_json::to_string(&ZtunnelRequest::Enroll { pod: bad }).unwrap();
        let e = decode_str::<ZtunnelRequest>(&json).unwrap_err();
        assert!(e.is_invalid(), "{json}: {e}");
        assert!(
            e.to_string().starts_with(&format!("enroll: {field}:")),
            "{e}"
        );
        // Encoding refuses the same message, so a client never sends it.
        let mut again = pod("a");
        mutate(&mut again);
        assert!(
            encode(&ZtunnelRequest::Enroll { pod: again })
                .unwrap_err()
                .is_invalid()
        );
    }
    let e = decode_str::<ZtunnelRequest>(r#"{"type":"unenroll","uid":""}"#).unwrap_err();
    assert!(
        e.is_invalid() && e.to_string().contains("unenroll.uid"),
        "{e}"
    );
}

#[test]
fn snapshot_rejects_duplicates_and_bad_entries() {
    let dup = ZtunnelRequest::Snapshot {
        pods: vec![pod("a"), pod("b"), pod("a")],
    };
    let e = encode(&dup).unwrap_err();
    assert!(
        e.is_invalid() && e.to_string().contains("pods[2].uid"),
        "{e}"
    );
    let mut bad = pod("b");
    bad.namespace = "-x".into();
    let json = serde_json::to_string(&ZtunnelRequest::Snapshot {
        pods: vec![pod("a"), bad],
    })
    .unwrap();
    let e = decode_str::<ZtunnelRequest>(&json).unwrap_err();
    assert!(
        e.is_invalid() && e.to_string().contains("pods[1].namespace"),
        "{e}"
    );
}

#[test]
fn agent_requests_need_netns_except_del() {
    let no_netns = PodReport {
        netns: None,
        ..report()
    };
    for request in [
        AgentRequest::Add {
            pod: no_netns.clone(),
        },
        AgentRequest::Check {
            pod: no_netns.clone(),
        },
    ] {
        let e = encode(&request).unwrap_err();
        assert!(e.is_invalid() && e.to_string().contains("netns"), "{e}");
    }
    assert!(encode(&AgentRequest::Del { pod: no_netns }).is_ok());
    let bad_container = PodReport {
        container_id: "-x".into(),
        ..report()
    };
    assert!(
        encode(&AgentRequest::Add { pod: bad_container })
            .unwrap_err()
            .is_invalid()
    );
}

#[test]
fn oversize_messages_are_refused() {
    let huge = format!(
        r#"{{"type":"unenroll","uid":"{}"}}"#,
        "a".repeat(MAX_MESSAGE_BYTES)
    );
    assert!(
        decode_str::<ZtunnelRequest>(&huge)
            .unwrap_err()
            .is_oversize()
    );
    let many = ZtunnelRequest::Snapshot {
        pods: (0..10_000).map(|i| pod(&format!("uid-{i}"))).collect(),
    };
    assert!(encode(&many).unwrap_err().is_oversize());
}

#[test]
fn scanner_frames_lines() {
    let mut scanner = FrameScanner::default();
    let input = b"{\"a\":1}\n{\"b\"";
    let used = scanner.feed(input).unwrap();
    assert_eq!(used, 8);
    assert!(scanner.is_complete());
    assert_eq!(scanner.take(), b"{\"a\":1}");
    let used = scanner.feed(&input[8..]).unwrap();
    assert_eq!(used, 4);
    assert!(!scanner.is_complete());
    // End of stream inside a frame is truncation; between frames it is a clean close.
    assert!(scanner.finish().unwrap_err().is_truncated());
    scanner.feed(b":2}\n").unwrap();
    assert_eq!(scanner.take(), b"{\"b\":2}");
    assert!(scanner.finish().is_ok());
}

#[test]
fn scanner_limits_frame_size_across_chunks() {
    let mut scanner = FrameScanner::default();
    let chunk = vec![b'x'; 64 * 1024];
    let mut fed = 0;
    let err = loop {
        match scanner.feed(&chunk) {
            Ok(n) => fed += n,
            Err(e) => break e,
        }
        assert!(fed < 2 * MAX_MESSAGE_BYTES, "no limit");
    };
    assert!(err.is_oversize(), "{err}");
    // Exactly at the limit, newline included, is accepted.
    let mut scanner = FrameScanner::default();
    let mut exact = vec![b'x'; MAX_MESSAGE_BYTES - 1];
    exact.push(b'\n');
    assert_eq!(scanner.feed(&exact).unwrap(), MAX_MESSAGE_BYTES);
    assert!(scanner.is_complete());
}
