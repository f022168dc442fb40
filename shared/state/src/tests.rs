//! Snapshot indexes, destination resolution, waypoints, endpoints, policies and mTLS modes.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ambit_identity::SpiffeId;
use ambit_model::peer_auth::PeerMtls;
use ambit_model::{
    AuthorizationPolicy, AuthorizationPolicySpec, Endpoint, MtlsMode, PeerAuthentication,
    PeerAuthenticationSpec, Service, ServicePort, ServiceSpec, TransportProtocol, WaypointRef,
    Workload, WorkloadSelector, WorkloadSpec,
};

use crate::{Destination, Snapshot, StateStore};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn workload(uid: &str, name: &str, ips: &[&str], labels: &[(&str, &str)]) -> Workload {
    Workload::new(WorkloadSpec {
        uid: uid.into(),
        name: name.into(),
        namespace: "shop".into(),
        service_account: name.into(),
        node: "node-a".into(),
        ips: ips.iter().map(|s| ip(s)).collect(),
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        protocol: TransportProtocol::Hbone,
        ..WorkloadSpec::default()
    })
    .unwrap()
}

fn waypoint(ip: &str) -> WaypointRef {
    WaypointRef {
        addresses: vec![SocketAddr::new(self::ip(ip), 15008)],
        identity: SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/waypoint").unwrap(),
    }
}

fn service(endpoints: &[(&str, Option<u16>)], waypoint: Option<WaypointRef>) -> Service {
    Service::new(ServiceSpec {
        name: "cart".into(),
        namespace: "shop".into(),
        vips: vec![ip("10.96.0.20")],
        ports: vec![ServicePort {
            name: Some("http".into()),
            port: 80,
            target_port: Some(8080),
            app_protocol: None,
        }],
        endpoints: endpoints
            .iter()
            .map(|(uid, target)| {
                let ports = target.map(|t| [(80, t)].into()).unwrap_or_default();
                ((*uid).to_owned(), Endpoint { ports })
            })
            .collect(),
        waypoint,
        subject_alt_names: vec![],
    })
    .unwrap()
}

fn selector(pairs: &[(&str, &str)]) -> Option<WorkloadSelector> {
    Some(WorkloadSelector {
        match_labels: pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    })
}

fn policy(name: &str, namespace: &str, select: Option<WorkloadSelector>) -> AuthorizationPolicy {
    AuthorizationPolicy::new(
        name,
        namespace,
        AuthorizationPolicySpec {
            selector: select,
            ..AuthorizationPolicySpec::default()
        },
    )
    .unwrap()
}

fn peer_auth(
    name: &str,
    namespace: &str,
    select: Option<WorkloadSelector>,
    mode: MtlsMode,
) -> PeerAuthentication {
    PeerAuthentication::new(
        name,
        namespace,
        PeerAuthenticationSpec {
            selector: select,
            mtls: Some(PeerMtls { mode }),
            ..PeerAuthenticationSpec::default()
        },
    )
    .unwrap()
}

fn shop() -> Snapshot {
    Snapshot::new(
        vec![
            workload("u1", "web-0", &["10.1.0.5", "fd00::5"], &[("app", "web")]),
            workload("u2", "web-1", &["10.1.0.6"], &[("app", "web")]),
            workload("u3", "db-0", &["10.1.0.7"], &[("app", "db")]),
        ],
        vec![service(
            &[("u1", None), ("u2", Some(9000)), ("gone", None)],
            None,
        )],
        vec![],
        vec![],
    )
    .unwrap()
}

#[test]
fn indexes_find_workloads_and_services() {
    let snapshot = shop();
    assert_eq!(snapshot.workload_by_ip(ip("10.1.0.6")).unwrap().uid(), "u2");
    assert_eq!(snapshot.workload_by_ip(ip("fd00::5")).unwrap().uid(), "u1");
    assert_eq!(
        snapshot
            .workload_by_ip(ip("::ffff:10.1.0.7"))
            .unwrap()
            .uid(),
        "u3",
        "IPv4-mapped addresses are found as IPv4"
    );
    assert!(snapshot.workload_by_ip(ip("10.1.0.99")).is_none());
    assert_eq!(snapshot.workload_by_uid("u3").unwrap().name(), "db-0");
    assert_eq!(
        snapshot.service_by_vip(ip("10.96.0.20")).unwrap().name(),
        "cart"
    );
    assert!(
        snapshot
            .service_by_hostname("cart.shop.svc.cluster.local")
            .is_some()
    );
    assert!(
        snapshot
            .service_by_hostname("cart.other.svc.cluster.local")
            .is_none()
    );
}

#[test]
fn resolves_vips_pod_ips_and_unknown_addresses() {
    let snapshot = shop();
    match snapshot.resolve(addr("10.96.0.20:80")) {
        Destination::Service { service, port } => {
            assert_eq!(service.name(), "cart");
            assert_eq!(port.port, 80);
        }
        other => panic!("expected the service, got {other:?}"),
    }
    assert!(matches!(
        snapshot.resolve(addr("10.96.0.20:81")),
        Destination::Unknown
    ));
    assert!(matches!(
        snapshot.resolve(addr("10.1.0.5:8080")),
        Destination::Workload(w) if w.uid() == "u1"
    ));
    assert!(matches!(
        snapshot.resolve(addr("192.0.2.1:80")),
        Destination::Unknown
    ));
}

#[test]
fn healthy_endpoints_translate_ports_and_round_robin() {
    let snapshot = shop();
    let cart = snapshot.service_by_vip(ip("10.96.0.20")).unwrap().clone();
    let endpoints = snapshot.endpoints(&cart, 80, ip("10.96.0.20"));
    // The endpoint whose workload is unknown ("gone") is not healthy.
    let found: Vec<_> = endpoints
        .iter()
        .map(|u| (u.workload.uid().to_owned(), u.ip, u.port))
        .collect();
    assert_eq!(
        found,
        vec![
            ("u1".to_owned(), ip("10.1.0.5"), 8080),
            ("u2".to_owned(), ip("10.1.0.6"), 9000)
        ]
    );
    // An IPv6 client gets the IPv6 address of a dual-stack endpoint.
    assert_eq!(
        snapshot.endpoints(&cart, 80, ip("fd00::1"))[0].ip,
        ip("fd00::5")
    );
    let picks: Vec<_> = (0..4)
        .map(|n| {
            snapshot
                .pick_endpoint(&cart, 80, ip("10.96.0.20"), n)
                .unwrap()
                .workload
                .uid()
                .to_owned()
        })
        .collect();
    assert_eq!(picks, ["u1", "u2", "u1", "u2"]);
    let empty = service(&[("gone", None)], None);
    assert!(
        snapshot
            .pick_endpoint(&empty, 80, ip("10.96.0.20"), 0)
            .is_none()
    );
}

#[test]
fn waypoints_follow_how_the_destination_was_addressed() {
    let mut bound = workload("u1", "web-0", &["10.1.0.5"], &[]).spec().clone();
    bound.waypoint = Some(waypoint("10.1.0.50"));
    let snapshot = Snapshot::new(
        vec![
            Workload::new(bound).unwrap(),
            workload("u2", "web-1", &["10.1.0.6"], &[]),
            workload("wp", "waypoint", &["10.1.0.60"], &[]),
        ],
        vec![service(&[("u2", None)], Some(waypoint("10.1.0.60")))],
        vec![],
        vec![],
    )
    .unwrap();
    let by_pod = snapshot.resolve(addr("10.1.0.5:80"));
    assert_eq!(
        snapshot.waypoint(&by_pod).unwrap().addresses[0],
        addr("10.1.0.50:15008")
    );
    let by_vip = snapshot.resolve(addr("10.96.0.20:80"));
    assert_eq!(
        snapshot.waypoint(&by_vip).unwrap().addresses[0],
        addr("10.1.0.60:15008")
    );
    // The service's endpoint addressed directly has no waypoint of its own.
    assert!(
        snapshot
            .waypoint(&snapshot.resolve(addr("10.1.0.6:80")))
            .is_none()
    );
    let wp = snapshot.workload_by_uid("wp").unwrap();
    assert!(snapshot.is_waypoint_for(wp, addr("10.96.0.20:80")));
    assert!(!snapshot.is_waypoint_for(wp, addr("10.1.0.6:80")));
}

#[test]
fn policies_apply_by_namespace_selector_and_root_namespace() {
    let target_refs = AuthorizationPolicy::new(
        "l7",
        "shop",
        AuthorizationPolicySpec {
            target_refs: vec![ambit_model::authz::PolicyTargetReference {
                group: "".into(),
                kind: "Service".into(),
                name: "cart".into(),
                namespace: None,
            }],
            ..AuthorizationPolicySpec::default()
        },
    )
    .unwrap();
    let snapshot = Snapshot::new(
        shop().workloads().iter().map(|w| (**w).clone()).collect(),
        vec![],
        vec![
            policy("ns-wide", "shop", None),
            policy("web-only", "shop", selector(&[("app", "web")])),
            policy("other-ns", "bank", None),
            policy("mesh", "istio-system", None),
            policy("mesh-db", "istio-system", selector(&[("app", "db")])),
            target_refs,
        ],
        vec![],
    )
    .unwrap();
    let names = |uid: &str| {
        let mut names: Vec<_> = snapshot
            .policies_for(snapshot.workload_by_uid(uid).unwrap())
            .iter()
            .map(|p| p.name().to_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(names("u1"), ["mesh", "ns-wide", "web-only"]);
    assert_eq!(names("u3"), ["mesh", "mesh-db", "ns-wide"]);
}

#[test]
fn mtls_mode_resolves_with_root_namespace_fallback() {
    let workloads: Vec<_> = shop().workloads().iter().map(|w| (**w).clone()).collect();
    let none = Snapshot::new(workloads.clone(), vec![], vec![], vec![]).unwrap();
    let web = none.workload_by_uid("u1").unwrap().clone();
    assert_eq!(none.mtls_mode(&web, 8080), MtlsMode::Permissive);

    let mesh_strict = Snapshot::new(
        workloads.clone(),
        vec![],
        vec![],
        vec![peer_auth("default", "istio-system", None, MtlsMode::Strict)],
    )
    .unwrap();
    assert_eq!(mesh_strict.mtls_mode(&web, 8080), MtlsMode::Strict);

    let workload_permissive = Snapshot::new(
        workloads,
        vec![],
        vec![],
        vec![
            peer_auth("default", "istio-system", None, MtlsMode::Strict),
            peer_auth(
                "web",
                "shop",
                selector(&[("app", "web")]),
                MtlsMode::Permissive,
            ),
        ],
    )
    .unwrap()
    .with_root_namespace("istio-system");
    assert_eq!(
        workload_permissive.mtls_mode(&web, 8080),
        MtlsMode::Permissive
    );
    let db = workload_permissive.workload_by_uid("u3").unwrap();
    assert_eq!(workload_permissive.mtls_mode(db, 8080), MtlsMode::Strict);
}

#[test]
fn conflicts_name_the_object_and_field() {
    let cases: Vec<(Result<Snapshot, _>, &str, &str)> = vec![
        (
            Snapshot::new(
                vec![
                    workload("u1", "a", &["10.1.0.5"], &[]),
                    workload("u1", "b", &["10.1.0.6"], &[]),
                ],
                vec![],
                vec![],
                vec![],
            ),
            "Workload shop/b",
            "uid",
        ),
        (
            Snapshot::new(
                vec![
                    workload("u1", "a", &["10.1.0.5"], &[]),
                    workload("u2", "b", &["10.1.0.6", "10.1.0.5"], &[]),
                ],
                vec![],
                vec![],
                vec![],
            ),
            "Workload shop/b",
            "ips[1]",
        ),
        (
            Snapshot::new(
                vec![],
                vec![service(&[], None), service(&[], None)],
                vec![],
                vec![],
            ),
            "Service shop/cart",
            "name",
        ),
        (
            Snapshot::new(
                vec![workload("u1", "a", &["10.96.0.20"], &[])],
                vec![service(&[], None)],
                vec![],
                vec![],
            ),
            "Service shop/cart",
            "vips[0]",
        ),
        (
            Snapshot::new(
                vec![],
                vec![],
                vec![policy("p", "shop", None), policy("p", "shop", None)],
                vec![],
            ),
            "AuthorizationPolicy shop/p",
            "name",
        ),
    ];
    for (result, object, field) in cases {
        let err = result.unwrap_err();
        assert_eq!((err.object(), err.field()), (object, field), "{err}");
    }
}

#[test]
fn readers_keep_their_snapshot_while_a_new_one_is_published() {
    let store = StateStore::new(Snapshot::default());
    let before = store.snapshot();
    assert!(before.workload_by_uid("u1").is_none());
    assert_eq!(store.replace(shop()), 1);
    assert!(store.load().workload_by_uid("u1").is_some());
    assert!(
        before.workload_by_uid("u1").is_none(),
        "a loaded snapshot never changes"
    );
    assert_eq!(store.version(), 1);

    // Many readers and a writer at once: every read sees one whole snapshot.
    let store = Arc::new(StateStore::new(shop()));
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            for _ in 0..200 {
                store.replace(Snapshot::default());
                store.replace(shop());
            }
        })
    };
    for _ in 0..2000 {
        let snapshot = store.load();
        let count = snapshot.workloads().len();
        assert!(count == 0 || count == 3);
        assert_eq!(snapshot.workload_by_uid("u1").is_some(), count == 3);
    }
    writer.join().unwrap();
}
