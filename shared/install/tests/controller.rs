//! The ambit-controller chart: RBAC is exactly the controller's API calls, the waypoint
//! template renders into valid objects, and the CA options mount what the controller reads.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::ClusterRole;
use serde_json::Value;
use support::{find, render, render_with, strict};

/// Every API call the controller makes, as `(group, resource, verbs)`: the controller's own
/// list, which its mocked-API tests check every request against.
fn api_permissions() -> Vec<(&'static str, &'static str, &'static [&'static str])> {
    ambit_controller::kube::API_PERMISSIONS
        .iter()
        .map(|p| (p.group, p.resource, p.verbs))
        .collect()
}

type Grant = (String, String, String);

fn expand(permissions: &[(&str, &str, &[&str])]) -> BTreeSet<Grant> {
    permissions
        .iter()
        .flat_map(|(group, resource, verbs)| {
            verbs
                .iter()
                .map(|verb| (group.to_string(), resource.to_string(), verb.to_string()))
        })
        .collect()
}

/// Every (group, resource, verb) the rendered ClusterRole grants; no wildcards allowed.
fn grants(role: &ClusterRole) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for rule in role.rules.as_deref().unwrap_or_default() {
        assert!(rule.resource_names.is_none() && rule.non_resource_urls.is_none());
        for group in rule.api_groups.as_deref().unwrap_or_default() {
            for resource in rule.resources.as_deref().unwrap_or_default() {
                for verb in &rule.verbs {
                    for name in [group, resource, verb] {
                        assert_ne!(name, "*", "wildcard in {rule:?}");
                    }
                    out.insert((group.clone(), resource.clone(), verb.clone()));
                }
            }
        }
    }
    out
}

fn cluster_role(values_yaml: &str) -> ClusterRole {
    let manifests = render_with("ambit-controller", values_yaml).unwrap();
    strict(find(&manifests, "ClusterRole", "ambit-controller")).unwrap()
}

#[test]
fn the_cluster_role_grants_exactly_the_api_calls_the_controller_makes() {
    let granted = grants(&cluster_role("{}"));
    let needed = expand(&api_permissions());
    let missing: Vec<_> = needed.difference(&granted).collect();
    let extra: Vec<_> = granted.difference(&needed).collect();
    assert!(
        missing.is_empty(),
        "the controller calls, the chart does not grant: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "the chart grants, the controller never calls: {extra:?}"
    );
}

#[test]
fn waypoint_autoscaling_and_pdb_add_only_their_own_grants() {
    let values = "waypoint: {autoscaling: {enabled: true}, podDisruptionBudget: {enabled: true}}";
    let granted = grants(&cluster_role(values));
    let mut needed = expand(&api_permissions());
    let optional: Vec<_> = ambit_controller::kube::OPTIONAL_WAYPOINT_PERMISSIONS
        .iter()
        .map(|p| (p.group, p.resource, p.verbs))
        .collect();
    needed.extend(expand(&optional));
    assert_eq!(granted, needed);
}

/// The ConfigMap's files, as the controller reads them from `--waypoint-template-dir`.
fn waypoint_template_files(values_yaml: &str) -> Vec<(String, String)> {
    let manifests = render_with("ambit-controller", values_yaml).unwrap();
    let config_map = find(&manifests, "ConfigMap", "ambit-waypoint-template");
    config_map["data"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(file, text)| (file.clone(), text.as_str().unwrap().to_owned()))
        .collect()
}

#[test]
fn the_controller_accepts_the_waypoint_template_with_every_option() {
    for values in [
        "{}",
        "waypoint: {autoscaling: {enabled: true}}",
        "waypoint: {podDisruptionBudget: {enabled: true}}",
        "waypoint: {autoscaling: {enabled: true}, podDisruptionBudget: {enabled: true}}",
        "waypoint: {tracing: {otlpEndpoint: 'http://collector:4317', sampling: '0.5'}}",
    ] {
        let template =
            ambit_controller::kube::WaypointTemplate::from_files(waypoint_template_files(values))
                .unwrap_or_else(|(file, message)| panic!("{values}: {file}: {message}"));
        assert!(template.files().len() >= 3, "{values}");
    }
}

/// The waypoint template's files with the Gateway's values put in, as the controller does.
fn waypoint_objects(values_yaml: &str) -> Vec<(String, Value)> {
    let manifests = render_with("ambit-controller", values_yaml).unwrap();
    let config_map = find(&manifests, "ConfigMap", "ambit-waypoint-template");
    let data = config_map["data"].as_object().unwrap();
    data.iter()
        .map(|(file, text)| {
            let text = text
                .as_str()
                .unwrap()
                .replace("{name}", "waypoint")
                .replace("{namespace}", "shop")
                .replace("{service_account}", "waypoint")
                .replace("{identity}", "spiffe://cluster.local/ns/shop/sa/waypoint");
            (file.clone(), serde_yaml_ng::from_str(&text).unwrap())
        })
        .collect()
}

#[test]
fn the_waypoint_template_renders_typed_objects_that_select_the_gateway_pods() {
    let objects = waypoint_objects("{}");
    let files: Vec<_> = objects.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        files,
        ["deployment.yaml", "service.yaml", "serviceaccount.yaml"]
    );
    let deployment: Deployment = strict(&objects[0].1).unwrap();
    let service: Service = strict(&objects[1].1).unwrap();
    let _: ServiceAccount = strict(&objects[2].1).unwrap();
    let spec = deployment.spec.unwrap();
    assert_eq!(spec.replicas, Some(1));
    let pod_labels = spec.template.metadata.unwrap().labels.unwrap();
    let selector = service.spec.unwrap().selector.unwrap();
    for (key, value) in &selector {
        assert_eq!(pod_labels.get(key), Some(value), "service selects {key}");
    }
    assert_eq!(
        selector["gateway.networking.k8s.io/gateway-name"],
        "waypoint"
    );
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some("waypoint"));
    let args = pod.containers[0].args.clone().unwrap();
    assert!(args.contains(&"--identity=spiffe://cluster.local/ns/shop/sa/waypoint".to_owned()));
    // TLS to the controller, trusting the roots ConfigMap the controller publishes in the
    // waypoint's namespace.
    assert!(
        args.contains(&"--controller=https://ambit-controller.ambit-system.svc:15012".to_owned())
    );
    assert!(args.contains(&"--controller-ca-file=/var/run/ambit/ca/root-cert.pem".to_owned()));
    let mount = pod.containers[0]
        .volume_mounts
        .as_deref()
        .unwrap()
        .iter()
        .find(|m| m.mount_path == "/var/run/ambit/ca")
        .unwrap();
    let volume = pod
        .volumes
        .as_deref()
        .unwrap()
        .iter()
        .find(|v| v.name == mount.name)
        .unwrap();
    assert_eq!(
        volume.config_map.as_ref().unwrap().name,
        ambit_controller::kube::ROOT_CONFIGMAP
    );
}

fn waypoint_args(values_yaml: &str) -> Vec<String> {
    let objects = waypoint_objects(values_yaml);
    let deployment = &objects
        .iter()
        .find(|(file, _)| file == "deployment.yaml")
        .unwrap()
        .1;
    let deployment: Deployment = strict(deployment).unwrap();
    let pod = deployment.spec.unwrap().template.spec.unwrap();
    pod.containers[0].args.clone().unwrap()
}

#[test]
fn waypoint_tracing_flags_are_passed_only_when_set() {
    let default = waypoint_args("{}");
    assert!(
        !default
            .iter()
            .any(|a| a.starts_with("--otlp-endpoint") || a.starts_with("--trace-sampling")),
        "{default:?}"
    );
    let traced = waypoint_args(
        "waypoint: {tracing: {otlpEndpoint: 'http://otel-collector.observability.svc:4317', sampling: '1'}}",
    );
    assert!(
        traced.contains(&"--otlp-endpoint=http://otel-collector.observability.svc:4317".to_owned()),
        "{traced:?}"
    );
    assert!(
        traced.contains(&"--trace-sampling=1".to_owned()),
        "{traced:?}"
    );
}

#[test]
fn waypoint_hpa_and_pdb_are_in_the_template_only_when_enabled() {
    let values = "waypoint: {replicas: 3, autoscaling: {enabled: true, minReplicas: 2, maxReplicas: 7}, podDisruptionBudget: {enabled: true, minAvailable: 1}}";
    let objects = waypoint_objects(values);
    let by_file = |name: &str| &objects.iter().find(|(f, _)| f == name).unwrap().1;
    let hpa: HorizontalPodAutoscaler = strict(by_file("hpa.yaml")).unwrap();
    let hpa = hpa.spec.unwrap();
    assert_eq!((hpa.min_replicas, hpa.max_replicas), (Some(2), 7));
    assert_eq!(hpa.scale_target_ref.name, "waypoint");
    let pdb: PodDisruptionBudget = strict(by_file("pdb.yaml")).unwrap();
    assert!(pdb.spec.unwrap().selector.is_some());
    // With an HPA the Deployment leaves replicas to it.
    let deployment: Deployment = strict(by_file("deployment.yaml")).unwrap();
    assert_eq!(deployment.spec.unwrap().replicas, None);
}

fn controller_args(manifests: &[ambit_install::Manifest]) -> Vec<String> {
    let deployment: Deployment = strict(find(manifests, "Deployment", "ambit-controller")).unwrap();
    let pod = deployment.spec.unwrap().template.spec.unwrap();
    pod.containers[0].args.clone().unwrap()
}

#[test]
fn the_grpc_certificate_names_the_service_proxies_dial() {
    let default = render("ambit-controller", &[]).unwrap();
    let names: Vec<String> = controller_args(&default)
        .into_iter()
        .filter(|a| a.starts_with("--grpc-dns-name=") || a.starts_with("--grpc-plaintext"))
        .collect();
    assert_eq!(
        names,
        [
            "--grpc-dns-name=ambit-controller.ambit-system.svc",
            "--grpc-dns-name=ambit-controller.ambit-system.svc.cluster.local"
        ]
    );
    let extra = render_with("ambit-controller", "extraGrpcDnsNames: [ctl.example.com]").unwrap();
    assert!(controller_args(&extra).contains(&"--grpc-dns-name=ctl.example.com".to_owned()));
}

#[test]
fn user_cacerts_are_mounted_and_created_only_when_asked() {
    let default = render("ambit-controller", &[]).unwrap();
    assert!(
        !controller_args(&default)
            .iter()
            .any(|a| a.starts_with("--ca-dir"))
    );
    assert!(!default.iter().any(|m| m.kind() == "Secret"));

    let created = render_with(
        "ambit-controller",
        "ca: {source: cacerts, cacerts: {create: true, caCert: C, caKey: K, rootCert: R}}",
    )
    .unwrap();
    assert!(controller_args(&created).contains(&"--ca-dir=/etc/cacerts".to_owned()));
    let secret = find(&created, "Secret", "cacerts");
    // "C" base64-encoded; an absent chain is an empty file.
    assert_eq!(secret["data"]["ca-cert.pem"], "Qw==");
    assert_eq!(secret["data"]["cert-chain.pem"], "");

    let missing_key = render_with(
        "ambit-controller",
        "ca: {source: cacerts, cacerts: {create: true, caCert: C, rootCert: R}}",
    );
    let message = format!("{:#}", missing_key.unwrap_err());
    assert!(
        message.contains("ca.cacerts.caKey is required"),
        "{message}"
    );
}

#[test]
fn values_outside_the_schema_are_refused_with_their_path() {
    for (values, path) in [
        ("ca: {source: vault}", "ca.source"),
        ("replicas: -1", "replicas"),
        (
            "waypoint: {image: {pullPolicy: Sometimes}}",
            "waypoint.image",
        ),
        ("typoed: true", "(root)"),
    ] {
        let error = format!("{:#}", render_with("ambit-controller", values).unwrap_err());
        assert!(
            error.contains("values.schema.json") && error.contains(path),
            "{values}: {error}"
        );
    }
}
