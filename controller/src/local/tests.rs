use std::path::Path;

use super::*;

fn parse(text: &str) -> (Vec<LocatedResource>, Vec<SourceError>) {
    parse_file(Path::new("objects.yaml"), text)
}

const GOOD_POD: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: ok}\nspec: {containers: []}\n";

#[test]
fn splits_documents_and_defaults_the_namespace() {
    let text = format!(
        "---\n{GOOD_POD}---\n# only a comment\n---\n{}",
        GOOD_POD.replace("ok", "ok2")
    );
    let (resources, errors) = parse(&text);
    assert!(errors.is_empty(), "{errors:?}");
    let found: Vec<(usize, String)> = resources
        .iter()
        .map(|r| (r.document_index, r.resource.key().to_string()))
        .collect();
    assert_eq!(
        found,
        [
            (0, "Pod default/ok".to_owned()),
            (2, "Pod default/ok2".to_owned())
        ]
    );
}

#[test]
fn malformed_yaml_names_the_document_and_keeps_the_others() {
    let text = format!(
        "{GOOD_POD}---\nkind: Pod\nmetadata: {{name: [unclosed\n---\n{}",
        GOOD_POD.replace("ok", "after")
    );
    let (resources, errors) = parse(&text);
    assert_eq!(resources.len(), 2, "documents before and after survive");
    assert_eq!(errors.len(), 1);
    let err = &errors[0];
    assert!(err.is_malformed_yaml());
    assert_eq!(err.document_index(), Some(1));
    assert_eq!(err.file(), Path::new("objects.yaml"));
    // Line numbers are those of the whole file.
    assert!(
        err.to_string()
            .starts_with("objects.yaml document 1: malformed YAML: "),
        "{err}"
    );
    assert!(err.message().contains("line 7"), "{err}");
}

#[test]
fn unknown_kind_is_reported() {
    let (resources, errors) =
        parse("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm, namespace: a}\n");
    assert!(resources.is_empty());
    assert!(errors[0].is_unknown_kind());
    assert_eq!(
        errors[0].to_string(),
        "objects.yaml document 0: ConfigMap a/cm: unknown kind \"ConfigMap\" of apiVersion \"v1\""
    );
}

#[test]
fn invalid_fields_are_reported_with_their_path() {
    let text = "\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: p, namespace: shop}
spec:
  rules:
  - from:
    - source: {ipBlocks: [10.0.0.0/8, not-a-cidr]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: q, namespace: shop}
spec:
  rules:
  - from:
    - source: {ipBlock: [10.0.0.0/8]}
---
apiVersion: v1
kind: Pod
metadata: {name: p, namespace: shop}
spec:
  containers:
  - name: c
    ports: [{containerPort: eighty}]
---
apiVersion: v1
kind: Service
metadata: {namespace: shop}
spec: {}
";
    let (resources, errors) = parse(text);
    assert!(resources.is_empty());
    let summary: Vec<(Option<usize>, Option<&str>, Option<&str>)> = errors
        .iter()
        .map(|e| (e.document_index(), e.name(), e.field()))
        .collect();
    assert_eq!(
        summary,
        [
            (
                Some(0),
                Some("p"),
                Some("spec.rules[0].from[0].source.ipBlocks[1]")
            ),
            (
                Some(1),
                Some("q"),
                Some("spec.rules[0].from[0].source.ipBlock")
            ),
            (
                Some(2),
                Some("p"),
                Some("spec.containers[0].ports[0].containerPort")
            ),
            (Some(3), None, Some("metadata.name")),
        ]
    );
    assert!(errors.iter().all(SourceError::is_invalid_object));
    assert!(
        errors[1].message().contains("unknown field `ipBlock`"),
        "{}",
        errors[1]
    );
    assert_eq!(errors[0].kind(), Some("AuthorizationPolicy"));
}

#[test]
fn untranslated_kinds_are_kept() {
    let (resources, errors) = parse(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: vs, namespace: a}\nspec: {hosts: [x]}\n",
    );
    assert!(errors.is_empty());
    assert_eq!(resources[0].resource.kind(), Kind::VirtualService);
}

#[test]
fn duplicates_across_files_keep_the_first() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), GOOD_POD).unwrap();
    let second = format!("{}---\n{GOOD_POD}", GOOD_POD.replace("ok", "other"));
    std::fs::write(dir.path().join("b.yml"), second).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not yaml: [").unwrap();
    let snapshot = load_dir(dir.path());
    assert_eq!(snapshot.resources.len(), 2);
    assert_eq!(snapshot.errors.len(), 1, "{:?}", snapshot.errors);
    let err = &snapshot.errors[0];
    assert!(err.is_duplicate());
    assert_eq!(err.file(), dir.path().join("b.yml"));
    assert_eq!(err.document_index(), Some(1));
    assert_eq!(
        err.message(),
        format!(
            "duplicate of the object in {} document 0; the first one is kept",
            dir.path().join("a.yaml").display()
        )
    );
}

#[test]
fn missing_folder_is_an_io_error() {
    let snapshot = load_dir(Path::new("/nonexistent/ambit-folder"));
    assert!(snapshot.resources.is_empty());
    assert!(snapshot.errors[0].is_io());
}

#[test]
fn a_reread_parses_only_changed_files_and_forgets_deleted_ones() {
    let dir = tempfile::tempdir().unwrap();
    let pod = |name: &str| GOOD_POD.replace("ok", name);
    std::fs::write(dir.path().join("a.yaml"), pod("a")).unwrap();
    std::fs::write(dir.path().join("b.yaml"), pod("b")).unwrap();
    let mut parsed = ParsedFiles::default();
    let names = |snapshot: &Snapshot| -> Vec<String> {
        snapshot
            .resources
            .iter()
            .map(|r| r.key().to_string())
            .collect()
    };

    let first = load_dir_with(dir.path(), &mut parsed);
    assert_eq!(names(&first), ["Pod default/a", "Pod default/b"]);
    assert_eq!(parsed.parses(), 2);

    // Same length, new content: found by content, not by size or mtime.
    std::fs::write(dir.path().join("b.yaml"), pod("c")).unwrap();
    let second = load_dir_with(dir.path(), &mut parsed);
    assert_eq!(names(&second), ["Pod default/a", "Pod default/c"]);
    assert_eq!(parsed.parses(), 3, "only b.yaml is parsed again");

    std::fs::remove_file(dir.path().join("a.yaml")).unwrap();
    let third = load_dir_with(dir.path(), &mut parsed);
    assert_eq!(names(&third), ["Pod default/c"]);
    assert_eq!(parsed.parses(), 3);

    // A cached file's errors are reported on every reread, like a fresh read would.
    std::fs::write(dir.path().join("bad.yaml"), "kind: [").unwrap();
    for expected_parses in [4, 4] {
        let snapshot = load_dir_with(dir.path(), &mut parsed);
        assert_eq!(snapshot.errors.len(), 1, "{:?}", snapshot.errors);
        assert_eq!(parsed.parses(), expected_parses);
    }
    assert_eq!(load_dir(dir.path()), load_dir_with(dir.path(), &mut parsed));
}
