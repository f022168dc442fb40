use super::*;

fn ms(values: &[u64]) -> Vec<Duration> {
    values.iter().map(|v| Duration::from_millis(*v)).collect()
}

#[test]
fn header_flags_parse_and_repeat() {
    let flags = vec![
        "end-user: jason".to_owned(),
        "x-a:1".to_owned(),
        "x-a:2".to_owned(),
        "x-empty:".to_owned(),
    ];
    let headers = parse_headers(&flags).unwrap();
    assert_eq!(headers["end-user"], "jason");
    assert_eq!(headers.get_all("x-a").iter().count(), 2);
    assert_eq!(headers["x-empty"], "");
}

#[test]
fn bad_header_flags_say_why() {
    for (flag, reason) in [
        ("no-colon", "missing ':'"),
        ("bad name:1", "invalid header name"),
        (":1", "invalid header name"),
        ("x:a\nb", "invalid header value"),
    ] {
        let error = parse_headers(&[flag.to_owned()]).unwrap_err();
        assert_eq!(error.reason, reason, "{flag}");
    }
}

#[test]
fn percentiles_use_the_nearest_rank() {
    let samples = ms(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    assert_eq!(percentile(&samples, 0.5), Some(Duration::from_millis(5)));
    assert_eq!(percentile(&samples, 0.99), Some(Duration::from_millis(10)));
    assert_eq!(percentile(&samples, 0.0), Some(Duration::from_millis(1)));
    assert_eq!(percentile(&ms(&[7]), 0.99), Some(Duration::from_millis(7)));
    assert_eq!(percentile(&[], 0.5), None);
}

#[test]
fn versions_come_from_the_echo_json() {
    let top = VersionField::default();
    assert_eq!(top.extract(br#"{"version":"v2","status":200}"#), "v2");
    assert_eq!(top.extract(br#"{"status":200}"#), NO_VERSION);
    assert_eq!(top.extract(b"upstream connect error"), NO_VERSION);
    assert_eq!(top.extract(br#"{"version":3}"#), NO_VERSION);

    let called = VersionField::parse("calls.0.body.version").unwrap();
    let body = br#"{"version":"v1","calls":[{"status":200,"body":{"version":"v3"}}]}"#;
    assert_eq!(called.extract(body), "v3");
    assert_eq!(
        called.extract(br#"{"version":"v1","calls":[]}"#),
        NO_VERSION
    );
    assert_eq!(
        called.extract(br#"{"calls":{"0":{"body":{"version":"v2"}}}}"#),
        "v2"
    );
}

#[test]
fn version_fields_need_non_empty_segments() {
    for bad in ["", "calls..version", ".version", "version."] {
        assert!(VersionField::parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn reports_count_statuses_versions_and_errors() {
    let mut report = LoadReport::default();
    report.record_response(200, "v1".to_owned(), Duration::from_millis(2));
    report.record_response(200, "v2".to_owned(), Duration::from_millis(4));
    let mut other = LoadReport::default();
    other.record_response(503, "v1".to_owned(), Duration::from_millis(1));
    other.record_error("connecting to x: refused".to_owned());
    report.merge(other);
    report.latencies.sort_unstable();

    assert_eq!(report.requests(), 4);
    assert_eq!(report.statuses, BTreeMap::from([(200, 2), (503, 1)]));
    assert_eq!(report.versions["v1"], 2);
    assert_eq!(report.versions["v2"], 1);
    assert_eq!(report.percentile(0.5), Some(Duration::from_millis(2)));

    let json = report.to_json();
    assert_eq!(json["requests"], 4);
    assert_eq!(json["statuses"]["503"], 1);
    assert_eq!(json["versions"]["v2"], 1);
    assert_eq!(json["transportErrors"], 1);
    assert_eq!(json["latencyMs"]["max"], 4.0);
    assert_eq!(json["latencyMs"]["min"], 1.0);

    let table = report.render();
    assert!(table.contains("transport errors 1"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().eq(["503", "1", "25.0%"])),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().eq(["v1", "2", "50.0%"])),
        "{table}"
    );
    assert!(table.contains("error: connecting to x: refused"), "{table}");
}
