//! The manifests in `e2e/samples/` are what the demo and the e2e suite apply, so they are
//! checked here: the controller's own parser accepts every mesh and core object, Deployments
//! are valid `apps/v1` objects whose selectors, Services and accounts line up, routes name
//! real backends, and every container command actually starts with its arguments.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Helpers outside #[test] fns panic on purpose.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use ambit_sample_apps::client::Protocol;
use http::HeaderMap;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Container;
use serde::Deserialize;
use serde_yaml_ng::Value;

const PROGRAMS: &[&str] = &["echo-server", "tcp-echo", "load", "sleep"];

struct Sample {
    path: PathBuf,
    text: String,
    documents: Vec<Value>,
}

fn samples() -> Vec<Sample> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 12, "samples missing in {}", dir.display());
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let documents = serde_yaml_ng::Deserializer::from_str(&text)
                .map(|document| Value::deserialize(document).unwrap())
                .filter(|value| !value.is_null())
                .collect();
            Sample {
                path,
                text,
                documents,
            }
        })
        .collect()
}

fn kind(document: &Value) -> &str {
    document["kind"].as_str().unwrap()
}

fn deployments() -> Vec<Deployment> {
    samples()
        .iter()
        .flat_map(|sample| sample.documents.clone())
        .filter(|document| kind(document) == "Deployment")
        .map(|document| serde_yaml_ng::from_value(document).unwrap())
        .collect()
}

fn container(deployment: &Deployment) -> &Container {
    let pod = deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    assert_eq!(pod.containers.len(), 1);
    &pod.containers[0]
}

#[test]
fn the_controller_parses_every_object_but_deployments() {
    for sample in samples() {
        let (resources, errors) = ambit_controller::local::parse_file(&sample.path, &sample.text);
        let deployments = sample
            .documents
            .iter()
            .filter(|d| kind(d) == "Deployment")
            .count();
        let unexpected: Vec<String> = errors
            .iter()
            .filter(|error| !(error.is_unknown_kind() && error.kind() == Some("Deployment")))
            .map(ToString::to_string)
            .collect();
        assert!(
            unexpected.is_empty(),
            "{}: {unexpected:?}",
            sample.path.display()
        );
        // Local mode expands Deployments to Pods; everything else reaches the controller.
        assert_eq!(
            resources.len() + deployments,
            sample.documents.len(),
            "{}",
            sample.path.display()
        );
    }
}

#[test]
fn deployments_services_accounts_and_routes_line_up() {
    let all: Vec<Value> = samples().into_iter().flat_map(|s| s.documents).collect();
    let named = |wanted: &str| -> BTreeSet<(String, String)> {
        all.iter()
            .filter(|d| kind(d) == wanted)
            .map(|d| {
                let meta = &d["metadata"];
                let namespace = meta["namespace"].as_str().unwrap_or("").to_owned();
                (namespace, meta["name"].as_str().unwrap().to_owned())
            })
            .collect()
    };
    let accounts = named("ServiceAccount");
    let namespaces = named("Namespace");

    let mut pod_labels: Vec<(String, BTreeMap<String, String>)> = Vec::new();
    for deployment in deployments() {
        let namespace = deployment.metadata.namespace.clone().unwrap();
        assert!(namespaces.contains(&(String::new(), namespace.clone())));
        let spec = deployment.spec.as_ref().unwrap();
        let labels = spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .clone()
            .unwrap();
        for (key, value) in spec.selector.match_labels.as_ref().unwrap() {
            assert_eq!(
                labels.get(key),
                Some(value),
                "selector of {:?}",
                deployment.metadata.name
            );
        }
        let account = spec
            .template
            .spec
            .as_ref()
            .unwrap()
            .service_account_name
            .clone()
            .unwrap();
        assert!(
            accounts.contains(&(namespace.clone(), account.clone())),
            "no account {account}"
        );
        let command = container(&deployment).command.clone().unwrap();
        assert!(
            PROGRAMS.contains(&command[0].as_str()),
            "unknown program {command:?}"
        );
        pod_labels.push((namespace, labels));
    }

    let mut service_ports: BTreeSet<(String, String, i64)> = BTreeSet::new();
    for service in all.iter().filter(|d| kind(d) == "Service") {
        let namespace = service["metadata"]["namespace"].as_str().unwrap();
        let name = service["metadata"]["name"].as_str().unwrap();
        let selector: BTreeMap<String, String> =
            serde_yaml_ng::from_value(service["spec"]["selector"].clone()).unwrap();
        let selected = pod_labels.iter().any(|(ns, labels)| {
            ns == namespace && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
        });
        assert!(selected, "Service {namespace}/{name} selects no pod");
        for port in service["spec"]["ports"].as_sequence().unwrap() {
            let number = port["port"].as_i64().unwrap();
            service_ports.insert((namespace.to_owned(), name.to_owned(), number));
        }
    }

    let routes: Vec<&Value> = all.iter().filter(|d| kind(d) == "HTTPRoute").collect();
    assert_eq!(routes.len(), 3);
    for route in routes {
        let namespace = route["metadata"]["namespace"].as_str().unwrap();
        let refs = route["spec"]["parentRefs"]
            .as_sequence()
            .unwrap()
            .iter()
            .chain(
                route["spec"]["rules"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .flat_map(|rule| rule["backendRefs"].as_sequence().unwrap()),
            );
        for reference in refs {
            let key = (
                namespace.to_owned(),
                reference["name"].as_str().unwrap().to_owned(),
                reference["port"].as_i64().unwrap(),
            );
            assert!(
                service_ports.contains(&key),
                "route names a missing service port {key:?}"
            );
        }
    }
}

#[test]
fn routes_are_valid_for_the_mesh_model() {
    // The controller does not translate HTTPRoutes yet; the model type the waypoint consumes
    // validates them (matches, weights, retry codes and backoff) the way it will.
    let mut checked = 0;
    for document in samples().into_iter().flat_map(|s| s.documents) {
        if kind(&document) != "HTTPRoute" {
            continue;
        }
        let meta = &document["metadata"];
        let spec: ambit_model::route::HttpRouteSpec =
            serde_yaml_ng::from_value(document["spec"].clone()).unwrap();
        let name = meta["name"].as_str().unwrap();
        let route = ambit_model::HttpRoute::new(name, meta["namespace"].as_str().unwrap(), spec);
        assert!(route.is_ok(), "HTTPRoute {name}: {}", route.unwrap_err());
        checked += 1;
    }
    assert_eq!(checked, 3);
}

#[tokio::test]
async fn every_container_command_starts_with_its_arguments() {
    let mut started = 0;
    for deployment in deployments() {
        let container = container(&deployment);
        let command = container.command.clone().unwrap();
        let program = match command[0].as_str() {
            "echo-server" => env!("CARGO_BIN_EXE_echo-server"),
            "tcp-echo" => env!("CARGO_BIN_EXE_tcp-echo"),
            _ => continue,
        };
        // The manifests listen on 0.0.0.0:<port>; here the same flags listen on a free
        // loopback port instead.
        let mut args = container.args.clone().unwrap_or_default();
        let addr = args
            .iter()
            .position(|arg| arg == "--addr")
            .expect("--addr given");
        args[addr + 1] = "127.0.0.1:0".to_owned();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (_child, listening) = support::spawn_server(program, &args).await;
        if command[0] == "echo-server" {
            let expected = args[args.iter().position(|a| *a == "--version").unwrap() + 1];
            // `?status=200` keeps fan-out failures (the called hosts do not exist here) from
            // turning the answer into 502; the version is what is checked.
            let reply = support::client(listening, "/?status=200", Protocol::Http1)
                .get(&HeaderMap::new())
                .await
                .unwrap();
            let body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
            assert_eq!(body["version"], expected);
        }
        started += 1;
    }
    assert_eq!(
        started, 8,
        "productpage, reviews ×3, ratings, httpbin, tcp-echo, flaky"
    );
}
