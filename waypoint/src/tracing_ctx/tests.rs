use super::*;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.insert(*name, HeaderValue::from_str(value).unwrap());
    }
    map
}

fn text<'h>(map: &'h HeaderMap, name: &str) -> Option<&'h str> {
    map.get(name).and_then(|v| v.to_str().ok())
}

#[test]
fn extracts_each_format() {
    let expected = |sampled| IncomingContext {
        trace_id: parse_id(TRACE).unwrap(),
        parent_span_id: parse_id(PARENT).unwrap(),
        sampled,
    };
    let w3c = headers(&[("traceparent", &format!("00-{TRACE}-{PARENT}-01"))]);
    assert_eq!(extract(&w3c), Some(expected(Some(true))));
    let b3_multi = headers(&[
        ("x-b3-traceid", TRACE),
        ("x-b3-spanid", PARENT),
        ("x-b3-sampled", "0"),
    ]);
    assert_eq!(extract(&b3_multi), Some(expected(Some(false))));
    let b3_debug = headers(&[
        ("x-b3-traceid", TRACE),
        ("x-b3-spanid", PARENT),
        ("x-b3-flags", "1"),
    ]);
    assert_eq!(extract(&b3_debug), Some(expected(Some(true))));
    let b3_single = headers(&[("b3", &format!("{TRACE}-{PARENT}"))]);
    assert_eq!(extract(&b3_single), Some(expected(None)));
    let b3_single_debug = headers(&[("b3", &format!("{TRACE}-{PARENT}-d"))]);
    assert_eq!(extract(&b3_single_debug), Some(expected(Some(true))));

    // 64-bit B3 trace ids are zero-extended on the left.
    let short = headers(&[("b3", &format!("a3ce929d0e0e4736-{PARENT}-1"))]);
    let context = extract(&short).unwrap();
    assert_eq!(hex(&context.trace_id), "0000000000000000a3ce929d0e0e4736");
}

#[test]
fn refuses_invalid_contexts() {
    let zero_trace = "0".repeat(32);
    let invalid = [
        format!("00-{zero_trace}-{PARENT}-01"),
        format!("00-{TRACE}-0000000000000000-01"),
        format!("ff-{TRACE}-{PARENT}-01"),
        format!("00-{TRACE}-{PARENT}-01-extra"),
        format!("00-{TRACE}-{PARENT}-1"),
        format!("00-{}-{PARENT}-01", &TRACE[1..]),
        format!("00-{TRACE}-{PARENT}-zz"),
    ];
    for value in invalid {
        assert_eq!(
            extract(&headers(&[("traceparent", &value)])),
            None,
            "{value}"
        );
    }
    // A future version may add fields.
    let future = format!("01-{TRACE}-{PARENT}-01-more");
    assert!(extract(&headers(&[("traceparent", &future)])).is_some());
    // A lone B3 sampling state carries no context.
    assert_eq!(extract(&headers(&[("b3", "1")])), None);
}

#[test]
fn the_server_span_is_a_child_and_is_injected() {
    let tracer = Tracer::new(0.0, None);
    let mut request = headers(&[
        ("traceparent", &format!("00-{TRACE}-{PARENT}-01")),
        ("tracestate", "vendor=x"),
        ("b3", &format!("{TRACE}-{PARENT}-1")),
    ]);
    let span = tracer.start(&request);
    assert_eq!(span.trace_id(), TRACE);
    assert_ne!(span.span_id(), PARENT);
    assert!(span.is_sampled(), "the caller's decision wins over ratio 0");
    span.inject(&mut request);
    let id = span.span_id();
    assert_eq!(
        text(&request, "traceparent"),
        Some(format!("00-{TRACE}-{id}-01").as_str())
    );
    assert_eq!(text(&request, "tracestate"), Some("vendor=x"));
    assert_eq!(text(&request, "x-b3-traceid"), Some(TRACE));
    assert_eq!(text(&request, "x-b3-spanid"), Some(id.as_str()));
    assert_eq!(text(&request, "x-b3-parentspanid"), Some(PARENT));
    assert_eq!(text(&request, "x-b3-sampled"), Some("1"));
    assert_eq!(
        text(&request, "b3"),
        Some(format!("{TRACE}-{id}-1-{PARENT}").as_str())
    );
}

#[test]
fn sampling_follows_the_caller_else_the_ratio() {
    let unsampled = headers(&[("traceparent", &format!("00-{TRACE}-{PARENT}-00"))]);
    assert!(!Tracer::new(1.0, None).start(&unsampled).is_sampled());
    let root = HeaderMap::new();
    assert!(Tracer::new(1.0, None).start(&root).is_sampled());
    assert!(!Tracer::new(0.0, None).start(&root).is_sampled());
    // Without a caller, a new trace starts: a fresh id each time, no parent.
    let (a, b) = (
        Tracer::new(1.0, None).start(&root),
        Tracer::new(1.0, None).start(&root),
    );
    assert_ne!(a.trace_id(), b.trace_id());
    let mut out = HeaderMap::new();
    a.inject(&mut out);
    assert!(out.get("x-b3-parentspanid").is_none());
    assert!(
        out.get("b3").is_none(),
        "single b3 only when the caller used it"
    );
}

#[test]
fn request_id_is_kept_or_generated() {
    let mut given = headers(&[("x-request-id", "abc")]);
    assert_eq!(ensure_request_id(&mut given), "abc");
    let mut none = HeaderMap::new();
    let id = ensure_request_id(&mut none);
    assert_eq!(text(&none, "x-request-id"), Some(id.as_str()));
    let groups: Vec<usize> = id.split('-').map(str::len).collect();
    assert_eq!(groups, [8, 4, 4, 4, 12]);
    assert_eq!(&id[14..15], "4", "UUID version 4");
    assert_ne!(ensure_request_id(&mut HeaderMap::new()), id);
}
