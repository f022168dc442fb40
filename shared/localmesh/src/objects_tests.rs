use super::*;

const BOOK: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
---
# an empty document is skipped
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews-v1, namespace: shop}
spec:
  replicas: 2
  selector: {matchLabels: {app: reviews}}
  template:
    metadata: {labels: {app: reviews, version: v1}}
    spec:
      serviceAccountName: reviews
      containers:
      - name: app
        command: [echo-server]
        args: [--version, v1, --port, 8080]
        env: [{name: MODE, value: fast}, {name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]
---
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec: {selector: {app: reviews}, ports: [{port: 80, targetPort: 8080}]}
"#;

#[test]
fn documents_are_identified_and_the_default_namespace_is_filled_in() {
    let (objects, errors) = parse_documents("book.yaml", BOOK);
    assert!(errors.is_empty(), "{errors:?}");
    let keys: Vec<String> = objects.iter().map(|o| o.key().to_string()).collect();
    assert_eq!(
        keys,
        [
            "Namespace shop",
            "Deployment shop/reviews-v1",
            "Service default/reviews"
        ]
    );
    assert_eq!(objects[2].body["metadata"]["namespace"], "default");
    assert_eq!(
        objects[0].labels().get(DATAPLANE_MODE).map(String::as_str),
        Some("ambient")
    );
}

#[test]
fn a_deployment_expands_into_its_replicas_with_the_template() {
    let (objects, _) = parse_documents("book.yaml", BOOK);
    let pods = pod_plans(&objects[1]).unwrap();
    assert_eq!(pods.len(), 2);
    assert_eq!(pods[0].name, "reviews-v1-0");
    assert_eq!(pods[1].name, "reviews-v1-1");
    assert_eq!(pods[0].service_account, "reviews");
    assert_eq!(
        pods[0].labels.get("version").map(String::as_str),
        Some("v1")
    );
    assert_eq!(
        pods[0].command,
        ["echo-server", "--version", "v1", "--port", "8080"]
    );
    assert_eq!(
        pods[0].env,
        [
            ("MODE".to_owned(), EnvValue::Value("fast".to_owned())),
            (
                "POD".to_owned(),
                EnvValue::Field("metadata.name".to_owned())
            ),
        ]
    );
    let running = running_pod(&pods[0], "uid-1", "node-2", Ipv4Addr::new(10, 244, 2, 5));
    assert_eq!(running["status"]["phase"], "Running");
    assert_eq!(running["status"]["podIP"], "10.244.2.5");
    assert_eq!(running["spec"]["nodeName"], "node-2");
    assert_eq!(running["metadata"]["uid"], "uid-1");
    assert!(
        pod_plans(&objects[2]).unwrap().is_empty(),
        "a Service has no pods"
    );
}

#[test]
fn every_bad_document_is_reported_with_its_index_and_field_and_the_rest_kept() {
    let text = r#"
apiVersion: v1
kind: Pod
metadata: {name: Bad_Name}
---
kind: Service
metadata: {name: no-version}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: fine, labels: {count: 3}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: fine, namespace: shop}
"#;
    let (objects, errors) = parse_documents("bad.yaml", text);
    let described: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(described.len(), 3, "{described:?}");
    assert!(described[0].starts_with("bad.yaml: document 0: metadata.name:"));
    assert!(described[1].starts_with("bad.yaml: document 1: apiVersion: is required"));
    assert!(described[2].starts_with("bad.yaml: document 2: metadata.labels:"));
    assert_eq!(objects.len(), 1);
    assert_eq!(objects[0].key().to_string(), "ServiceAccount shop/fine");

    let (objects, errors) = parse_documents("broken.yaml", "kind: [unclosed\n");
    assert!(objects.is_empty());
    assert_eq!(errors[0].field, "(document)");
}

#[test]
fn deployments_and_pods_with_bad_specs_are_refused_by_field() {
    let deployment = |spec: &str| {
        let text =
            format!("apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: d}}\nspec: {spec}\n");
        let (objects, errors) = parse_documents("d.yaml", &text);
        assert!(errors.is_empty(), "{errors:?}");
        pod_plans(&objects[0]).unwrap_err().0
    };
    assert_eq!(deployment("{replicas: -1, template: {}}"), "spec.replicas");
    assert_eq!(
        deployment("{replicas: 1000, template: {}}"),
        "spec.replicas"
    );
    assert_eq!(deployment("{replicas: 1}"), "spec.template");
    assert_eq!(
        deployment(
            "{selector: {matchLabels: {app: x}}, template: {metadata: {labels: {app: y}}, spec: {containers: [{name: c}]}}}"
        ),
        "spec.selector.matchLabels"
    );
    assert_eq!(
        deployment("{template: {spec: {containers: []}}}"),
        "spec.template.spec.containers"
    );
    assert_eq!(
        deployment("{template: {spec: {containers: [{name: c, command: [1, {a: b}]}]}}}"),
        "spec.template.spec.containers[0].command"
    );
    assert_eq!(
        deployment(
            "{template: {spec: {containers: [{name: c, env: [{name: A, valueFrom: {secretKeyRef: {}}}]}]}}}"
        ),
        "spec.template.spec.containers[0].env[0].valueFrom"
    );
}

#[test]
fn the_pod_label_wins_over_the_namespace_label() {
    let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let ambient = map(&[(DATAPLANE_MODE, "ambient")]);
    let none = map(&[(DATAPLANE_MODE, "none")]);
    let empty = map(&[]);
    assert!(enrolled(&ambient, &empty));
    assert!(!enrolled(&ambient, &none));
    assert!(enrolled(&empty, &ambient));
    assert!(!enrolled(&empty, &empty));
    assert!(!enrolled(&none, &empty));
}

#[test]
fn cluster_ips_are_allocated_once_and_given_ones_are_respected() {
    let mut vips = VipAllocator::default();
    let mut plain = json!({"spec": {"ports": []}});
    let first = assign_cluster_ip(&mut plain, &mut vips).unwrap();
    assert_eq!(first, Some(Ipv4Addr::new(10, 96, 0, 11)));
    assert_eq!(plain["spec"]["clusterIP"], "10.96.0.11");
    let mut fixed = json!({"spec": {"clusterIP": "10.96.0.12"}});
    assert_eq!(
        assign_cluster_ip(&mut fixed, &mut vips).unwrap(),
        Some(Ipv4Addr::new(10, 96, 0, 12))
    );
    let mut next = json!({});
    assert_eq!(
        assign_cluster_ip(&mut next, &mut vips).unwrap(),
        Some(Ipv4Addr::new(10, 96, 0, 13))
    );
    let mut headless = json!({"spec": {"clusterIP": "None"}});
    assert_eq!(assign_cluster_ip(&mut headless, &mut vips).unwrap(), None);
    let mut bad = json!({"spec": {"clusterIP": "ten"}});
    assert_eq!(
        assign_cluster_ip(&mut bad, &mut vips).unwrap_err().0,
        "spec.clusterIP"
    );
    vips.release(Ipv4Addr::new(10, 96, 0, 11));
    assert_eq!(vips.allocate(), Some(Ipv4Addr::new(10, 96, 0, 11)));
}

#[test]
fn a_waypoint_gateway_gets_an_unenrolled_pod_and_a_service_on_15008() {
    let text = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: shop, annotations: {gateway.istio.io/service-account: wp-sa}}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
"#;
    let (objects, errors) = parse_documents("gw.yaml", text);
    assert!(errors.is_empty());
    assert!(objects[0].is_waypoint_gateway());
    let (pod, service) = waypoint_objects(&objects[0]);
    assert_eq!(pod.name, "waypoint-0");
    assert_eq!(pod.service_account, "wp-sa");
    assert!(!enrolled(
        &BTreeMap::from([(DATAPLANE_MODE.to_owned(), "ambient".to_owned())]),
        &pod.labels
    ));
    assert_eq!(service["metadata"]["name"], "waypoint");
    assert_eq!(service["spec"]["ports"][0]["port"], 15008);
    assert_eq!(service["spec"]["selector"][GATEWAY_NAME_LABEL], "waypoint");
}
