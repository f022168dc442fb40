use std::net::SocketAddr;

use super::*;

type IsExpected = fn(&AuthorityError) -> bool;

fn socket(s: &str) -> Target {
    Target::Socket(s.parse::<SocketAddr>().unwrap())
}

fn host(name: &str, port: u16) -> Target {
    Target::Host {
        name: name.to_owned(),
        port,
    }
}

#[test]
fn accepts_the_three_forms() {
    let long_label = "a".repeat(63);
    let long_name = [long_label.as_str(); 4].join(".")[..253].to_owned();
    let long_label_authority = format!("{long_label}:80");
    let cases: Vec<(&str, Target)> = vec![
        ("1.2.3.4:80", socket("1.2.3.4:80")),
        ("10.244.2.7:9080", socket("10.244.2.7:9080")),
        ("0.0.0.0:1", socket("0.0.0.0:1")),
        ("255.255.255.255:65535", socket("255.255.255.255:65535")),
        ("[::1]:80", socket("[::1]:80")),
        ("[fd00::7]:8080", socket("[fd00::7]:8080")),
        ("[::ffff:1.2.3.4]:443", socket("[::ffff:1.2.3.4]:443")),
        (
            "[2001:db8:0:0:0:0:0:1]:15008",
            socket("[2001:db8::1]:15008"),
        ),
        ("host.name:80", host("host.name", 80)),
        (
            "reviews.default.svc.cluster.local:9080",
            host("reviews.default.svc.cluster.local", 9080),
        ),
        ("Mixed-Case.Example:1", host("mixed-case.example", 1)),
        ("a:1", host("a", 1)),
        ("1a.2b:80", host("1a.2b", 80)),
        ("x-1.y-2:80", host("x-1.y-2", 80)),
        (&long_label_authority, host(&long_label, 80)),
    ];
    for (input, expected) in &cases {
        assert_eq!(&parse(input).unwrap(), expected, "{input:?}");
    }
    let long = format!("{long_name}:80");
    assert_eq!(parse(&long).unwrap(), host(&long_name, 80));
}

#[test]
fn rejects_garbage_with_a_specific_error() {
    use AuthorityError as E;
    let long_label = "a".repeat(64);
    let too_long_name = format!("{}.b:80", [&*"a".repeat(63); 4].join("."));
    let cases: Vec<(String, IsExpected)> = vec![
        ("".into(), |e| matches!(e, E::Empty)),
        ("1.2.3.4".into(), |e| matches!(e, E::MissingPort)),
        ("1.2.3.4:".into(), |e| matches!(e, E::MissingPort)),
        ("host".into(), |e| matches!(e, E::MissingPort)),
        ("[::1]".into(), |e| matches!(e, E::MissingPort)),
        ("[::1]:".into(), |e| matches!(e, E::MissingPort)),
        ("1.2.3.4:0".into(), |e| matches!(e, E::InvalidPort { .. })),
        ("1.2.3.4:65536".into(), |e| {
            matches!(e, E::InvalidPort { .. })
        }),
        ("1.2.3.4:99999999999".into(), |e| {
            matches!(e, E::InvalidPort { .. })
        }),
        ("1.2.3.4:080".into(), |e| matches!(e, E::InvalidPort { .. })),
        ("1.2.3.4:00".into(), |e| matches!(e, E::InvalidPort { .. })),
        ("1.2.3.4:http".into(), |e| {
            matches!(e, E::InvalidPort { .. })
        }),
        ("1.2.3.4:8a".into(), |e| matches!(e, E::InvalidPort { .. })),
        ("[::1]:-1".into(), |e| matches!(e, E::InvalidPort { .. })),
        ("::1:80".into(), |e| matches!(e, E::UnbracketedIpv6)),
        ("fd00::7:80".into(), |e| matches!(e, E::UnbracketedIpv6)),
        ("1.2.3.4:80:80".into(), |e| matches!(e, E::UnbracketedIpv6)),
        (":80".into(), |e| matches!(e, E::EmptyHost)),
        ("[]:80".into(), |e| matches!(e, E::InvalidIpv6(_))),
        ("[::1:80".into(), |e| matches!(e, E::InvalidIpv6(_))),
        ("[::1]80".into(), |e| matches!(e, E::InvalidIpv6(_))),
        ("[1.2.3.4]:80".into(), |e| matches!(e, E::InvalidIpv6(_))),
        ("[::1]]:80".into(), |e| matches!(e, E::InvalidIpv6(_))),
        ("[[::1]]:80".into(), |e| matches!(e, E::InvalidIpv6(_))),
        ("[gggg::1]:80".into(), |e| matches!(e, E::InvalidIpv6(_))),
        ("a]:80".into(), |e| matches!(e, E::InvalidCharacter(']'))),
        ("a[b]:80".into(), |e| matches!(e, E::InvalidCharacter('['))),
        ("1.2.3.256:80".into(), |e| matches!(e, E::InvalidIpv4(_))),
        ("01.2.3.4:80".into(), |e| matches!(e, E::InvalidIpv4(_))),
        ("1.2.3:80".into(), |e| matches!(e, E::InvalidIpv4(_))),
        ("1.2.3.4.5:80".into(), |e| matches!(e, E::InvalidIpv4(_))),
        ("host.123:80".into(), |e| matches!(e, E::InvalidIpv4(_))),
        ("123:80".into(), |e| matches!(e, E::InvalidIpv4(_))),
        ("user@host:80".into(), |e| {
            matches!(e, E::InvalidCharacter('@'))
        }),
        ("host:80/path".into(), |e| {
            matches!(e, E::InvalidCharacter('/'))
        }),
        ("host:80?q".into(), |e| {
            matches!(e, E::InvalidCharacter('?'))
        }),
        ("host:80#f".into(), |e| {
            matches!(e, E::InvalidCharacter('#'))
        }),
        ("http://host:80".into(), |e| {
            matches!(e, E::InvalidCharacter('/'))
        }),
        (" host:80".into(), |e| matches!(e, E::InvalidCharacter(' '))),
        ("host:80 ".into(), |e| matches!(e, E::InvalidCharacter(' '))),
        ("host :80".into(), |e| matches!(e, E::InvalidCharacter(' '))),
        ("ho\tst:80".into(), |e| {
            matches!(e, E::InvalidCharacter('\t'))
        }),
        ("[::1%eth0]:80".into(), |e| {
            matches!(e, E::InvalidCharacter('%'))
        }),
        ("1.2.3.4:+80".into(), |e| {
            matches!(e, E::InvalidCharacter('+'))
        }),
        ("hóst:80".into(), |e| matches!(e, E::InvalidCharacter('ó'))),
        ("under_score:80".into(), |e| {
            matches!(e, E::InvalidCharacter('_'))
        }),
        ("host.:80".into(), |e| {
            matches!(e, E::InvalidHostname { .. })
        }),
        (".host:80".into(), |e| {
            matches!(e, E::InvalidHostname { .. })
        }),
        ("a..b:80".into(), |e| matches!(e, E::InvalidHostname { .. })),
        ("-a:80".into(), |e| matches!(e, E::InvalidHostname { .. })),
        ("a-.b:80".into(), |e| matches!(e, E::InvalidHostname { .. })),
        (format!("{long_label}:80"), |e| {
            matches!(e, E::InvalidHostname { .. })
        }),
        (too_long_name, |e| matches!(e, E::InvalidHostname { .. })),
        ("a".repeat(400), |e| matches!(e, E::TooLong(400))),
    ];
    for (input, expected) in &cases {
        let err = parse(input).expect_err(input);
        assert!(expected(&err), "{input:?} gave unexpected error {err:?}");
        assert!(!err.to_string().is_empty());
    }
}

#[test]
fn display_round_trips_and_brackets_ipv6() {
    for input in ["1.2.3.4:80", "[::1]:80", "[fd00::7]:65535", "host.name:80"] {
        let target = parse(input).unwrap();
        assert_eq!(target.to_string(), input);
        assert_eq!(target.to_string().parse::<Target>().unwrap(), target);
    }
    // A scope id has no meaning for the peer and is never written.
    let scoped: SocketAddr = "[fe80::1%2]:80".parse().unwrap();
    assert_eq!(Target::from(scoped).to_string(), "[fe80::1]:80");
    assert_eq!(parse("host:443").unwrap().port(), 443);
}

#[test]
fn never_panics_on_awkward_input() {
    // Every prefix and suffix of some tricky strings, cut at every char boundary.
    let seeds = [
        "[::ffff:1.2.3.4]:65535",
        "a.b-c.d:1",
        "ü[]:::@/%80",
        "[:]:0x1F",
    ];
    for seed in seeds {
        for (i, _) in seed.char_indices() {
            let _ = parse(&seed[i..]);
            let _ = parse(&seed[..i]);
        }
    }
}
