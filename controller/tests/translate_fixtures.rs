//! Fixture tests: YAML in `tests/fixtures`, translated, checked rule by rule.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use ambit_controller::local::{collect, parse_file};
use ambit_controller::translate::{
    MeshConfig, TranslateError, TranslateOptions, for_node, translate,
};
use ambit_model::{AppProtocol, MtlsMode, TransportProtocol, effective_mtls_mode};

fn fixture(name: &str) -> (MeshConfig, Vec<TranslateError>) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    let (located, errors) = parse_file(&path, &text);
    assert!(errors.is_empty(), "{errors:?}");
    let (resources, duplicates) = collect(located);
    assert!(duplicates.is_empty(), "{duplicates:?}");
    translate(&resources, &TranslateOptions::default())
}

fn uid(ns: &str, name: &str) -> String {
    format!("Kubernetes//Pod/{ns}/{name}")
}

/// The errors as `Kind ns/name: field: message` strings, for exact comparison.
fn rendered(errors: &[TranslateError]) -> Vec<String> {
    errors.iter().map(ToString::to_string).collect()
}

#[test]
fn dataplane_mode_pod_label_wins_over_namespace() {
    let (config, errors) = fixture("enrollment.yaml");
    let enrolled = |ns: &str, name: &str| config.workload_by_name(ns, name).unwrap().is_enrolled();
    assert!(enrolled("amb", "inherits"));
    assert!(!enrolled("amb", "opted-out"));
    assert!(enrolled("plain", "opted-in"));
    assert!(!enrolled("plain", "not-enrolled"));
    // An invalid label value is reported and ignored: the namespace decides.
    assert!(enrolled("amb", "bad-mode"));
    // Host-network pods are workloads (services may point at them) but never enrolled.
    let host = config.workload_by_name("amb", "host-net").unwrap();
    assert_eq!(host.protocol(), TransportProtocol::Tcp);
    // Not running, or no IP yet: not a workload, and not an error.
    assert!(config.workload_by_name("amb", "pending").is_none());
    assert!(config.workload_by_name("amb", "no-ip").is_none());
    assert!(config.workload_by_name("amb", "bad-ip").is_none());
    assert_eq!(
        rendered(&errors),
        [
            "Pod amb/bad-ip: status.podIPs[1].ip: \"10.1.0.999\" is not an IP address",
            "Pod amb/bad-mode: metadata.labels[\"istio.io/dataplane-mode\"]: \"sidecar\" is not a dataplane mode (ambient or none); ignored",
        ]
    );
}

#[test]
fn workload_fields_identity_node_and_ips() {
    let (config, _) = fixture("enrollment.yaml");
    let web = config.workload_by_name("amb", "inherits").unwrap();
    assert_eq!(web.uid(), uid("amb", "inherits"));
    assert_eq!(
        web.identity().to_string(),
        "spiffe://cluster.local/ns/amb/sa/web"
    );
    assert_eq!(web.node(), "node-a");
    assert_eq!(web.labels().get("app").map(String::as_str), Some("web"));
    let default_sa = config.workload_by_name("plain", "opted-in").unwrap();
    assert_eq!(default_sa.service_account(), "default");
    assert_eq!(default_sa.ips().len(), 2);
    // Deterministic order: by UID.
    let uids: Vec<&str> = config.workloads.iter().map(|w| w.uid()).collect();
    let mut sorted = uids.clone();
    sorted.sort();
    assert_eq!(uids, sorted);
}

#[test]
fn use_waypoint_precedence_and_waypoint_for() {
    let (config, errors) = fixture("waypoints.yaml");
    let wl = |name: &str| {
        config
            .workload_by_name("shop", name)
            .unwrap()
            .waypoint()
            .map(|w| (w.addresses[0].to_string(), w.identity.to_string()))
    };
    let ns_wp = Some((
        "10.96.0.100:15008".to_owned(),
        "spiffe://cluster.local/ns/shop/sa/ns-wp".to_owned(),
    ));
    // Namespace label, inherited (waypoint-for all takes workloads).
    assert_eq!(wl("p-inherit"), ns_wp);
    // Pod `none` opts out.
    assert_eq!(wl("p-none"), None);
    // Pod label wins; the waypoint for `workload` traffic, with its annotated service account
    // and its address from status.
    assert_eq!(
        wl("p-wl"),
        Some((
            "10.96.0.102:15008".to_owned(),
            "spiffe://cluster.local/ns/shop/sa/custom-sa".to_owned()
        ))
    );
    // A waypoint for services only does not take workload traffic.
    assert_eq!(wl("p-svc"), None);
    // use-waypoint-namespace.
    assert_eq!(
        wl("p-xns").map(|w| w.1),
        Some("spiffe://cluster.local/ns/infra/sa/shared-wp".to_owned())
    );
    // The waypoint's own pods are never bound; unenrolled pods neither.
    assert_eq!(wl("ns-wp-0"), None);
    assert_eq!(wl("p-plain"), None);
    // Namespace-level use-waypoint-namespace.
    let q = config.workload_by_name("shop2", "q").unwrap();
    assert_eq!(
        q.waypoint().unwrap().addresses[0].to_string(),
        "10.96.0.102:15008"
    );
    // A namespace binding to a missing waypoint: reported once on the Namespace.
    assert!(
        config
            .workload_by_name("broken", "r")
            .unwrap()
            .waypoint()
            .is_none()
    );

    let svc = |ns: &str, name: &str| {
        config
            .service(ns, name)
            .unwrap()
            .waypoint()
            .map(|w| w.addresses[0].to_string())
    };
    assert_eq!(
        svc("shop", "s-inherit").as_deref(),
        Some("10.96.0.100:15008")
    );
    assert_eq!(svc("shop", "s-none"), None);
    // Service label wins; address from spec.addresses.
    assert_eq!(svc("shop", "s-svc").as_deref(), Some("10.96.0.101:15008"));
    // A waypoint for `workload` only is not used for service traffic.
    assert_eq!(svc("shop", "s-wl"), None);
    // waypoint-for none takes nothing.
    assert_eq!(svc("shop", "s-nowp"), None);
    assert_eq!(svc("shop", "s-missing"), None);
    // The waypoint's own Service is never bound to a waypoint.
    assert_eq!(svc("shop", "ns-wp"), None);
    // Namespace-level binding to a workload-only waypoint: services unbound, no error.
    assert_eq!(svc("shop2", "t"), None);
    assert_eq!(svc("shop2", "u").as_deref(), Some("10.96.0.100:15008"));

    let mut expected = vec![
        "Gateway shop/ingress: not yet translated: only class istio-waypoint is handled, not \"istio\"".to_owned(),
        "Gateway shop/no-hbone: spec.listeners: a waypoint needs a listener on port 15008 with protocol HBONE".to_owned(),
        "Namespace broken: metadata.labels[\"istio.io/use-waypoint\"]: no usable waypoint Gateway broken/missing".to_owned(),
        "Pod shop/p-svc: metadata.labels[\"istio.io/use-waypoint\"]: waypoint shop/svc-wp is for Service traffic, not workload traffic".to_owned(),
        "Service shop/s-missing: metadata.labels[\"istio.io/use-waypoint\"]: no usable waypoint Gateway shop/nope".to_owned(),
        "Service shop/s-nowp: metadata.labels[\"istio.io/use-waypoint\"]: waypoint shop/none-wp is for None traffic, not service traffic".to_owned(),
        "Service shop/s-wl: metadata.labels[\"istio.io/use-waypoint\"]: waypoint shop/wl-wp is for Workload traffic, not service traffic".to_owned(),
    ];
    expected.sort();
    assert_eq!(rendered(&errors), expected);
    assert_eq!(errors.iter().filter(|e| e.is_not_translated()).count(), 1);
}

#[test]
fn service_ports_endpoints_and_vips() {
    let (config, errors) = fixture("services.yaml");
    let web = config.service("shop", "web").unwrap();
    assert_eq!(web.vips().len(), 2);
    // UDP port left out.
    assert_eq!(
        web.ports().iter().map(|p| p.port).collect::<Vec<_>>(),
        [80, 9090]
    );
    assert_eq!(web.port(80).unwrap().protocol(), AppProtocol::Http);
    assert_eq!(web.port(9090).unwrap().protocol(), AppProtocol::Tcp);
    // Ready (explicit and unset) endpoints only; the unknown address is no workload.
    let endpoints: Vec<&String> = web.endpoints().keys().collect();
    assert_eq!(endpoints, [&uid("shop", "web-1"), &uid("shop", "web-2")]);
    // Named targetPort resolved per pod; numeric targetPort from the Service.
    assert_eq!(web.target_port(&uid("shop", "web-1"), 80), Some(8080));
    assert_eq!(web.target_port(&uid("shop", "web-2"), 80), Some(8081));
    assert_eq!(web.target_port(&uid("shop", "web-2"), 9090), Some(9091));

    let db = config.service("shop", "db").unwrap();
    assert!(db.vips().is_empty(), "headless");
    assert_eq!(
        db.endpoints().keys().collect::<Vec<_>>(),
        [&uid("shop", "web-3")]
    );

    // Selector fallback; pods without the named port are reported and left out.
    let admin = config.service("shop", "admin").unwrap();
    assert_eq!(
        admin.endpoints().keys().collect::<Vec<_>>(),
        [&uid("shop", "web-1")]
    );
    assert_eq!(admin.target_port(&uid("shop", "web-1"), 80), Some(9000));

    assert!(config.service("shop", "bad-vip").is_none());
    assert!(config.service("shop", "external").is_none());
    // HTTPRoutes and GRPCRoutes are translated (for waypoints).
    assert_eq!(config.http_routes.len(), 1);
    assert_eq!(config.http_routes[0].service_parents()[0].name, "web");
    assert_eq!(config.grpc_routes.len(), 1);
    assert_eq!(
        rendered(&errors),
        [
            "Service shop/admin: spec.ports[0].targetPort: pod shop/web-2 has no TCP container port named \"admin\"; it is not an endpoint",
            "Service shop/admin: spec.ports[0].targetPort: pod shop/web-3 has no TCP container port named \"admin\"; it is not an endpoint",
            "Service shop/bad-vip: spec.clusterIP: \"10.96.3.999\" is not an IP address",
            "Service shop/external: not yet translated: type ExternalName",
        ]
    );
    assert_eq!(errors.iter().filter(|e| e.is_not_translated()).count(), 1);
}

#[test]
fn policies_attach_and_scope_to_nodes() {
    let (config, errors) = fixture("policies.yaml");
    assert!(errors.is_empty(), "{errors:?}");
    let names = |c: &MeshConfig| {
        c.authorization_policies
            .iter()
            .map(|p| format!("{}/{}", p.namespace(), p.name()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(&config),
        [
            "elsewhere/other-ns",
            "istio-system/mesh-audit",
            "shop/allow-web",
            "shop/ns-deny",
            "shop/waypoint-l7",
        ]
    );
    // node-a runs web-1: its selector policy, the namespace and mesh-wide ones; never the
    // waypoint's targetRefs policy, nor another namespace's.
    let a = for_node(&config, "node-a");
    assert_eq!(
        names(&a),
        ["istio-system/mesh-audit", "shop/allow-web", "shop/ns-deny"]
    );
    let b = for_node(&config, "node-b");
    assert_eq!(names(&b), ["istio-system/mesh-audit", "shop/ns-deny"]);
    assert_eq!(a.workloads.len(), config.workloads.len());
    assert_eq!(b.peer_authentications.len(), 3);

    // Peer authentication levels: workload port > workload > namespace > mesh.
    let web = config.workload_by_name("shop", "web-1").unwrap();
    let db = config.workload_by_name("shop", "db-1").unwrap();
    let mode = |w, port| effective_mtls_mode(&config.peer_authentications, w, port, "istio-system");
    assert_eq!(mode(web, 80), MtlsMode::Permissive);
    assert_eq!(mode(db, 5432), MtlsMode::Strict);
    assert_eq!(mode(db, 9000), MtlsMode::Disable);
}

#[test]
fn translation_is_deterministic_and_serializable() {
    let (first, _) = fixture("waypoints.yaml");
    let (second, _) = fixture("waypoints.yaml");
    let json = serde_json::to_string(&first).unwrap();
    assert_eq!(json, serde_json::to_string(&second).unwrap());
    let back: MeshConfig = serde_json::from_str(&json).unwrap();
    assert_eq!(back, first);
}
