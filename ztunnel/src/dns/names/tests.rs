use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use hickory_proto::rr::Name;

use super::{MeshMatch, MeshNames, NameExpander, StaticMeshNames};

const VIP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 96, 0, 20));
const VIP6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd00, 0x10, 0x96, 0, 0, 0, 0, 0x20));
const EXTERNAL: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));

fn names() -> StaticMeshNames {
    StaticMeshNames::new()
        .with("reviews.bookinfo.svc.cluster.local", [VIP, VIP6])
        .with("Address.Internal.", [EXTERNAL])
        .with("*.wild.example", [EXTERNAL])
}

fn expander() -> NameExpander {
    let search = [
        "bookinfo.svc.cluster.local".to_owned(),
        "svc.cluster.local".to_owned(),
        "cluster.local".to_owned(),
    ];
    NameExpander::new("cluster.local", "bookinfo", &search).unwrap()
}

fn resolve(query: &str) -> Option<MeshMatch> {
    expander().resolve(&names(), &Name::from_str(query).unwrap(), "bookinfo")
}

fn name(text: &str) -> Name {
    Name::from_str(text).unwrap()
}

#[test]
fn full_service_name_matches_without_alias() {
    let found = resolve("reviews.bookinfo.svc.cluster.local.").unwrap();
    assert_eq!(found.addresses, vec![VIP, VIP6]);
    assert_eq!(found.canonical, None);
}

#[test]
fn matching_ignores_case() {
    let found = resolve("Reviews.BookInfo.SVC.cluster.local.").unwrap();
    assert_eq!(found.addresses, vec![VIP, VIP6]);
}

#[test]
fn short_forms_expand_to_the_service() {
    for short in ["reviews.", "reviews.bookinfo.", "reviews.bookinfo.svc."] {
        let found = resolve(short).unwrap_or_else(|| panic!("{short} did not match"));
        assert_eq!(found.addresses, vec![VIP, VIP6], "{short}");
        assert_eq!(found.canonical, None, "{short}");
    }
}

#[test]
fn bare_name_uses_the_pods_namespace() {
    let other_namespace = NameExpander::new("cluster.local", "default", &[]).unwrap();
    assert_eq!(
        other_namespace.resolve(&names(), &name("reviews."), "default"),
        None
    );
}

#[test]
fn search_path_expansion_answers_through_an_alias() {
    // `reviews.bookinfo` asked by a pod with ndots:5 arrives with its first search domain.
    let found = resolve("reviews.bookinfo.bookinfo.svc.cluster.local.").unwrap();
    assert_eq!(found.addresses, vec![VIP, VIP6]);
    assert_eq!(found.canonical, Some(name("reviews.bookinfo.")));

    let found = resolve("address.internal.svc.cluster.local.").unwrap();
    assert_eq!(found.addresses, vec![EXTERNAL]);
    assert_eq!(found.canonical, Some(name("address.internal.")));
}

#[test]
fn service_entry_hosts_and_wildcards() {
    assert_eq!(
        resolve("address.internal.").unwrap().addresses,
        vec![EXTERNAL]
    );
    let found = resolve("api.wild.example.").unwrap();
    assert_eq!(found.addresses, vec![EXTERNAL]);
    assert_eq!(found.canonical, None);
    // Through a search domain, a wildcard match keeps the queried name: no alias.
    let found = resolve("deep.api.wild.example.cluster.local.").unwrap();
    assert_eq!(found.canonical, None);
}

#[test]
fn unknown_names_do_not_match() {
    for query in [
        "example.com.",
        "ratings.bookinfo.svc.cluster.local.",
        "reviews.other.svc.cluster.local.",
        "reviews.bookinfo.svc.cluster.remote.",
        "wild.example.",
        "cluster.local.",
        ".",
    ] {
        assert_eq!(resolve(query), None, "{query}");
    }
}

#[test]
fn static_names_normalise_hosts_and_merge_addresses() {
    let mut names = StaticMeshNames::new();
    names.insert("A.Example.", [VIP]);
    names.insert("a.example", [VIP6]);
    assert_eq!(names.lookup("a.example", "any"), Some(vec![VIP, VIP6]));
    assert_eq!(names.lookup("b.example", "any"), None);
}

#[test]
fn invalid_domains_are_rejected() {
    assert_eq!(NameExpander::new("", "ns", &[]).unwrap_err(), "");
    assert_eq!(
        NameExpander::new("cluster.local", "a.b", &[]).unwrap_err(),
        "a.b"
    );
    assert_eq!(
        NameExpander::new("cluster.local", "ns", &["a..b".to_owned()]).unwrap_err(),
        "a..b"
    );
}
