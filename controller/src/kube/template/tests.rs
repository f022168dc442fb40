use super::*;

const SERVICE_ACCOUNT: &str = "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: \"{service_account}\"\n  namespace: \"{namespace}\"\n";
const DEPLOYMENT: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: "{name}"
  namespace: "{namespace}"
spec:
  replicas: 2
  selector:
    matchLabels: {gateway.networking.k8s.io/gateway-name: "{name}"}
  template:
    metadata:
      labels: {gateway.networking.k8s.io/gateway-name: "{name}"}
    spec:
      serviceAccountName: "{service_account}"
      containers:
      - name: waypoint
        image: waypoint:1
        args: ["--identity={identity}", "--gateway={namespace}/{name}"]
"#;
const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: \"{name}\"}\nspec:\n  selector: {gateway.networking.k8s.io/gateway-name: \"{name}\"}\n  ports: [{name: mesh, port: 15008}]\n";
const PDB: &str = "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: \"{name}\"}\nspec: {minAvailable: 1}\n";

fn files(extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut files = vec![
        ("serviceaccount.yaml".to_owned(), SERVICE_ACCOUNT.to_owned()),
        ("deployment.yaml".to_owned(), DEPLOYMENT.to_owned()),
        ("service.yaml".to_owned(), SERVICE.to_owned()),
    ];
    files.extend(
        extra
            .iter()
            .map(|(f, t)| ((*f).to_owned(), (*t).to_owned())),
    );
    files
}

fn refused(files: Vec<(String, String)>) -> (String, String) {
    WaypointTemplate::from_files(files).unwrap_err()
}

fn replaced(file: &str, from: &str, to: &str) -> Vec<(String, String)> {
    let mut files = files(&[]);
    let entry = files.iter_mut().find(|(f, _)| f == file).unwrap();
    assert!(entry.1.contains(from), "{from} not in {file}");
    entry.1 = entry.1.replace(from, to);
    files
}

#[test]
fn a_template_fills_in_the_gateway_values_in_apply_order() {
    let template = WaypointTemplate::from_files(files(&[("pdb.yaml", PDB)])).unwrap();
    assert_eq!(
        template.files(),
        [
            "serviceaccount.yaml",
            "deployment.yaml",
            "service.yaml",
            "pdb.yaml"
        ]
    );
    let values = TemplateValues {
        name: "wp",
        namespace: "shop",
        service_account: "wp-sa",
        identity: "spiffe://example.org/ns/shop/sa/wp-sa",
    };
    let objects = template.render(&values).unwrap();
    let names: Vec<(&str, &str)> = objects
        .iter()
        .map(|o| (o.file.kind, o.name.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("ServiceAccount", "wp-sa"),
            ("Deployment", "wp"),
            ("Service", "wp"),
            ("PodDisruptionBudget", "wp")
        ]
    );
    let pod = &objects[1].body["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "wp-sa");
    assert_eq!(
        pod["containers"][0]["args"],
        serde_json::json!([
            "--identity=spiffe://example.org/ns/shop/sa/wp-sa",
            "--gateway=shop/wp"
        ])
    );
}

#[test]
fn missing_unknown_and_misshapen_files_are_refused_by_name() {
    let mut without_service = files(&[]);
    without_service.retain(|(f, _)| f != "service.yaml");
    assert_eq!(
        refused(without_service),
        ("service.yaml".to_owned(), "missing".to_owned())
    );

    let (file, message) = refused(files(&[("hpa.yml", "")]));
    assert_eq!(file, "hpa.yml");
    assert!(message.contains("unknown file"), "{message}");

    let (file, message) = refused(replaced("service.yaml", "kind: Service", "kind: Pod"));
    assert_eq!(file, "service.yaml");
    assert!(message.contains("must hold a Service"), "{message}");

    let (file, message) = refused(replaced("deployment.yaml", "{identity}", "{identiy}"));
    assert_eq!(file, "deployment.yaml");
    assert!(
        message.contains("unknown placeholder {identiy}"),
        "{message}"
    );

    let (file, message) = refused(replaced(
        "deployment.yaml",
        "name: \"{name}\"\n  namespace",
        "name: fixed\n  namespace",
    ));
    assert_eq!(file, "deployment.yaml");
    assert!(
        message.contains("metadata.name must be \"{name}\""),
        "{message}"
    );

    let (_, message) = refused(replaced(
        "serviceaccount.yaml",
        "name: \"{service_account}\"",
        "name: \"{name}\"",
    ));
    assert!(message.contains("{service_account}"), "{message}");

    let (_, message) = refused(replaced(
        "serviceaccount.yaml",
        "namespace: \"{namespace}\"",
        "namespace: kube-system",
    ));
    assert!(message.contains("metadata.namespace"), "{message}");

    // The Kubernetes type is checked, with the field's path.
    let (file, message) = refused(replaced("deployment.yaml", "replicas: 2", "replicas: two"));
    assert_eq!(file, "deployment.yaml");
    assert!(message.contains("spec.replicas"), "{message}");

    let (_, message) = refused(replaced("service.yaml", "ports: [", "ports: [["));
    assert!(message.starts_with("not YAML"), "{message}");
}

#[test]
fn loading_a_folder_skips_configmap_links_and_names_the_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    // A mounted ConfigMap: the files are links into `..data`.
    let data = dir.path().join("..2026_12_06_00_00_00.1");
    std::fs::create_dir(&data).unwrap();
    for (file, text) in files(&[]) {
        std::fs::write(data.join(&file), text).unwrap();
        std::os::unix::fs::symlink(format!("..data/{file}"), dir.path().join(&file)).unwrap();
    }
    std::os::unix::fs::symlink(data.file_name().unwrap(), dir.path().join("..data")).unwrap();
    let template = WaypointTemplate::load(dir.path()).unwrap();
    assert_eq!(template.files().len(), 3);

    std::fs::write(data.join("service.yaml"), "kind: [").unwrap();
    let error = WaypointTemplate::load(dir.path()).unwrap_err();
    assert_eq!(error.path, dir.path().join("service.yaml"));
    assert!(
        error.to_string().contains("service.yaml: not YAML"),
        "{error}"
    );

    let missing = WaypointTemplate::load(&dir.path().join("nowhere")).unwrap_err();
    assert!(
        missing.message.contains("cannot read the folder"),
        "{missing}"
    );
}

#[test]
fn leftover_placeholders_are_found_but_yaml_braces_are_not() {
    assert_eq!(leftover_placeholder("a: {nme}"), Some("{nme}"));
    assert_eq!(leftover_placeholder("a: {}\nb: {c: d}"), None);
    assert_eq!(
        leftover_placeholder("x{{service_acount}"),
        Some("{service_acount}")
    );
}
