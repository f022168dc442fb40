use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::*;
use crate::test_support::label_pairs;

/// Encodes `labels` the way `/metrics` does and returns the label pairs in order.
fn encoded<
    S: EncodeLabelSet + Clone + std::hash::Hash + Eq + Send + Sync + fmt::Debug + 'static,
>(
    labels: &S,
) -> Vec<(String, String)> {
    let family = Family::<S, Counter>::default();
    family.get_or_create(labels).inc();
    let mut registry = Registry::default();
    registry.register("probe", "Probe", family);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("probe_total{"))
        .unwrap();
    let inner = &line["probe_total{".len()..line.rfind('}').unwrap()];
    label_pairs(inner)
}

const TCP_LABEL_NAMES: [&str; 23] = [
    "reporter",
    "source_workload",
    "source_canonical_service",
    "source_canonical_revision",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_cluster",
    "destination_service",
    "destination_service_namespace",
    "destination_service_name",
    "destination_workload",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_cluster",
    "request_protocol",
    "response_flags",
    "connection_security_policy",
];

#[test]
fn defaults_are_istio_unknowns() {
    let pairs = encoded(&TrafficLabels::default());
    let names: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, TCP_LABEL_NAMES);
    for (key, value) in &pairs {
        let expected = match key.as_str() {
            "reporter" => "source",
            "request_protocol" => "tcp",
            "response_flags" => "-",
            _ => "unknown",
        };
        assert_eq!(value, expected, "label {key}");
    }
}

#[test]
fn known_values_and_empty_strings() {
    let labels = TrafficLabels {
        reporter: Reporter::Destination,
        source: WorkloadLabels {
            workload: Some("productpage-v1".into()),
            namespace: Some(String::new()),
            ..WorkloadLabels::default()
        }
        .with_spiffe_principal("spiffe://cluster.local/ns/default/sa/productpage"),
        destination_service: ServiceLabels {
            hostname: Some("details.default.svc.cluster.local".into()),
            name: Some("details".into()),
            namespace: Some("default".into()),
        },
        connection_security_policy: SecurityPolicy::MutualTls,
        response_flags: ResponseFlags::DENIED,
        ..TrafficLabels::default()
    };
    let pairs = encoded(&labels);
    let get = |k: &str| pairs.iter().find(|(pk, _)| pk == k).unwrap().1.clone();
    assert_eq!(get("reporter"), "destination");
    assert_eq!(get("source_workload"), "productpage-v1");
    // An empty value is as good as none: Istio exports "unknown".
    assert_eq!(get("source_workload_namespace"), "unknown");
    assert_eq!(
        get("source_principal"),
        "cluster.local/ns/default/sa/productpage"
    );
    assert_eq!(
        get("destination_service"),
        "details.default.svc.cluster.local"
    );
    assert_eq!(get("destination_service_name"), "details");
    assert_eq!(get("destination_service_namespace"), "default");
    assert_eq!(get("destination_workload"), "unknown");
    assert_eq!(get("response_flags"), "DENY");
    assert_eq!(get("connection_security_policy"), "mutual_tls");
}

#[test]
fn request_labels_add_code_and_grpc_status_before_flags() {
    let mut labels = RequestLabels::new(TrafficLabels::new(Reporter::Waypoint));
    labels.traffic.request_protocol = RequestProtocol::Grpc;
    labels.response_code = Some(200);
    labels.grpc_response_status = Some(7);
    let pairs = encoded(&labels);
    let names: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
    let mut expected: Vec<&str> = TCP_LABEL_NAMES.to_vec();
    expected.splice(21..21, ["response_code", "grpc_response_status"]);
    assert_eq!(names, expected);
    let get = |k: &str| pairs.iter().find(|(pk, _)| pk == k).unwrap().1.clone();
    assert_eq!(get("reporter"), "waypoint");
    assert_eq!(get("request_protocol"), "grpc");
    assert_eq!(get("response_code"), "200");
    assert_eq!(get("grpc_response_status"), "7");

    let plain = RequestLabels::new(TrafficLabels::new(Reporter::Waypoint));
    let pairs = encoded(&plain);
    let get = |k: &str| pairs.iter().find(|(pk, _)| pk == k).unwrap().1.clone();
    assert_eq!(get("request_protocol"), "tcp");
    assert_eq!(get("response_code"), "0");
    assert_eq!(get("grpc_response_status"), "");
}

#[test]
fn spiffe_principal_without_scheme_is_kept() {
    let w = WorkloadLabels::default().with_spiffe_principal("td/ns/a/sa/b");
    assert_eq!(w.principal.as_deref(), Some("td/ns/a/sa/b"));
}
