//! The shell scripts (kind e2e, CNI installer) parse, pass shellcheck where it is installed,
//! and the kind samples are valid objects.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use ambit_install::Manifest;
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every shell script of the repository: the kind scripts, the CNI installer's, the
/// developer scripts and the CI entry point.
fn scripts() -> Vec<PathBuf> {
    let mut scripts: Vec<PathBuf> = ["e2e/kind", "scripts"]
        .into_iter()
        .flat_map(|dir| std::fs::read_dir(repo().join(dir)).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sh"))
        .collect();
    scripts.sort();
    scripts.push(repo().join("images/cni-installer/install-cni.sh"));
    scripts.push(repo().join(".ci/run"));
    scripts.push(repo().join("shared/install/tests/fixtures/fake-kubectl.sh"));
    scripts
}

#[test]
fn every_script_parses_and_is_executable() {
    let scripts = scripts();
    assert!(scripts.len() >= 8, "{scripts:?}");
    for script in scripts {
        let output = Command::new("bash")
            .arg("-n")
            .arg(&script)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}: {}",
            script.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&script).unwrap().permissions(),
        );
        assert!(mode & 0o111 != 0, "{} is not executable", script.display());
    }
}

#[test]
fn scripts_pass_shellcheck() {
    // scripts/install-prereqs.sh (run by scripts/test.sh and CI) installs it.
    let version = Command::new("shellcheck")
        .arg("--version")
        .output()
        .expect("shellcheck is not installed: run scripts/install-prereqs.sh");
    assert!(version.status.success());
    let output = Command::new("shellcheck")
        .arg("-x")
        .current_dir(repo())
        .args(scripts())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

/// The kind scenario rows (`e2e/kind/scenarios.sh --list`, in order) and the local tests
/// (`e2e/tests/<file>.rs`: `<file>::<test fn>`) each mirrors; kept here, in one place, so a row
/// added on one side and not on the other fails `the_kind_rows_cover_the_local_scenario_list`.
const ROWS: &[(&str, &[&str])] = &[
    // Kind only: local mode has no kubelet whose probes could be captured.
    ("probes-pass", &[]),
    ("mtls-on-the-wire", &[SECURITY_MTLS]),
    ("strict-vs-permissive", &[SECURITY_MTLS]),
    (
        "l4-authorization",
        &[
            SECURITY_MTLS,
            "security::l4_authorization_by_source_namespace",
            L4,
        ],
    ),
    ("l7-policy-without-waypoint-denies", &[L7]),
    ("waypoint-on-demand", &[L7]),
    (
        "use-waypoint-precedence",
        &[
            "waypoints::the_service_label_wins_over_the_namespace_label",
            "waypoints::the_pod_label_wins_for_traffic_addressed_to_the_pod",
        ],
    ),
    ("l7-deny-method-path", &[L7]),
    ("header-route-v2", &[L7, ISTIO_ROUTING]),
    ("canary-90-10", &[L7]),
    ("retries-mask-failures", &[L7]),
    ("timeout-504", &[L7]),
    (
        "fault-delay-abort",
        &[
            ISTIO_ROUTING,
            "istio_routing::virtual_service_fault_delay_delays_matching_requests",
        ],
    ),
    (
        "outlier-ejection",
        &["istio_routing::destination_rule_outlier_detection_ejects_a_failing_endpoint"],
    ),
    (
        "dns-proxy",
        &["dns::the_dns_proxy_answers_service_names_and_their_short_forms"],
    ),
    ("namespace-label-live", &[L4]),
    (
        "tracing-otlp",
        &["tracing::trace_context_crosses_the_waypoint_and_spans_reach_an_otlp_collector"],
    ),
    (
        "prometheus-istio-metrics",
        &["prometheus::prometheus_scrapes_istio_metrics_from_ztunnel_and_waypoint"],
    ),
    (
        "control-plane-tls",
        &["control_plane::controller_port_speaks_only_tls"],
    ),
    ("controller-killed", &[L4]),
    ("ztunnel-killed", &[L4]),
];
const SECURITY_MTLS: &str = "security::mtls_on_the_wire_peer_authentication_and_l4_authorization";
const L4: &str = "l4::service_over_hbone_policy_label_and_failures";
const L7: &str = "l7::waypoint_on_demand_routes_splits_and_denies";
const ISTIO_ROUTING: &str =
    "istio_routing::virtual_service_routes_to_destination_rule_subsets_and_injects_faults";

/// The local end-to-end tests, as `<file>::<test fn>`.
fn local_tests() -> BTreeSet<String> {
    let mut tests = BTreeSet::new();
    for entry in std::fs::read_dir(repo().join("e2e/tests")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let file = path.file_stem().unwrap().to_str().unwrap().to_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines = text.lines();
        while let Some(line) = lines.next() {
            if line.trim().starts_with("#[tokio::test") || line.trim() == "#[test]" {
                let signature = lines.next().unwrap();
                let name = signature
                    .split("fn ")
                    .nth(1)
                    .and_then(|rest| rest.split('(').next())
                    .unwrap_or_else(|| panic!("{file}: no test fn after {line}: {signature}"));
                tests.insert(format!("{file}::{name}"));
            }
        }
    }
    tests
}

fn scenarios_script() -> String {
    std::fs::read_to_string(repo().join("e2e/kind/scenarios.sh")).unwrap()
}

#[test]
fn the_kind_rows_cover_the_local_scenario_list() {
    // `--list` needs no cluster and no kubectl: run it with an empty PATH but for bash's own.
    let output = Command::new("bash")
        .arg(repo().join("e2e/kind/scenarios.sh"))
        .arg("--list")
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let listed: Vec<String> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let table: Vec<&str> = ROWS.iter().map(|(row, _)| *row).collect();
    assert_eq!(listed, table, "scenarios.sh --list and ROWS differ");

    let local = local_tests();
    assert!(local.len() >= 12, "{local:?}");
    let mirrored: BTreeSet<String> = ROWS
        .iter()
        .flat_map(|(_, tests)| tests.iter().map(|t| (*t).to_owned()))
        .collect();
    let unknown: Vec<_> = mirrored.difference(&local).collect();
    assert!(
        unknown.is_empty(),
        "rows name no such local test: {unknown:?}"
    );
    let uncovered: Vec<_> = local.difference(&mirrored).collect();
    assert!(
        uncovered.is_empty(),
        "local tests no kind row mirrors (add a row to scenarios.sh and ROWS): {uncovered:?}"
    );

    // Each row has its function, and the README documents it.
    let script = scenarios_script();
    let readme = std::fs::read_to_string(repo().join("e2e/kind/README.md")).unwrap();
    for row in table {
        let function = format!("row_{}() {{", row.replace('-', "_"));
        assert!(script.contains(&function), "scenarios.sh has no {function}");
        assert!(
            readme.contains(&format!("| {row} |")),
            "e2e/kind/README.md does not describe row {row}"
        );
    }
}

/// `(file, documents)` of every `e2e/kind/samples/*.yaml`, sorted by file.
fn kind_samples() -> Vec<(PathBuf, Vec<Value>)> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(repo().join("e2e/kind/samples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            assert!(
                path.extension().is_some_and(|e| e == "yaml"),
                "{} is not a .yaml sample",
                path.display()
            );
            let text = std::fs::read_to_string(&path).unwrap();
            let documents = serde_yaml_ng::Deserializer::from_str(&text)
                .map(|document| serde::Deserialize::deserialize(document).unwrap())
                .filter(|value: &Value| !value.is_null())
                .collect();
            (path, documents)
        })
        .collect()
}

/// The mesh kinds the controller reads; everything else is a Kubernetes core kind.
const MESH_KINDS: &[&str] = &[
    "AuthorizationPolicy",
    "PeerAuthentication",
    "VirtualService",
    "DestinationRule",
    "Gateway",
    "HTTPRoute",
];

#[test]
fn kind_samples_are_valid_objects() {
    let crds = support::crds();
    let mut kinds = BTreeSet::new();
    for (path, documents) in kind_samples() {
        for object in documents {
            let manifest = Manifest {
                template: path.display().to_string(),
                object,
            };
            let kind = manifest.kind().to_owned();
            let what = format!("{}: {kind} {}", path.display(), manifest.name());
            if MESH_KINDS.contains(&kind.as_str()) {
                // The controller's own parser, as for the local samples.
                let text = serde_yaml_ng::to_string(&manifest.object).unwrap();
                let (resources, errors) = ambit_controller::local::parse_file(&path, &text);
                assert!(errors.is_empty(), "{what}: {errors:?}");
                assert_eq!(resources.len(), 1, "{what}");
                // Istio's kinds also against ambit-base's CRD schemas: nothing pruned.
                if manifest.api_version().contains(".istio.io/") {
                    let found = support::violations(&crds, &manifest.object);
                    assert!(found.is_empty(), "{what}: {found:?}");
                }
            } else {
                support::check_typed(&manifest).unwrap_or_else(|e| panic!("{what}: {e:#}"));
            }
            kinds.insert(kind);
        }
    }
    for kind in MESH_KINDS
        .iter()
        .chain(&["Deployment", "Service", "Namespace"])
    {
        assert!(kinds.contains(*kind), "no {kind} sample");
    }
}

/// Namespace of an object applied with `kubectl -n shop apply`.
fn namespace_of(object: &Value) -> String {
    object["metadata"]["namespace"]
        .as_str()
        .unwrap_or("shop")
        .to_owned()
}

#[test]
fn kind_samples_line_up_and_every_row_file_is_used() {
    let samples = kind_samples();
    let all: Vec<&Value> = samples.iter().flat_map(|(_, docs)| docs).collect();
    let of_kind = |kind: &'static str| all.iter().copied().filter(move |o| o["kind"] == kind);

    // Pod templates: (namespace, labels, service account).
    let pods: Vec<(String, BTreeMap<String, String>, String)> = of_kind("Deployment")
        .map(|d| {
            let template = &d["spec"]["template"];
            let labels = serde_json::from_value(template["metadata"]["labels"].clone()).unwrap();
            let account = template["spec"]["serviceAccountName"]
                .as_str()
                .unwrap_or("default")
                .to_owned();
            (namespace_of(d), labels, account)
        })
        .collect();
    let accounts: BTreeSet<(String, String)> = of_kind("ServiceAccount")
        .map(|a| {
            (
                namespace_of(a),
                a["metadata"]["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for (namespace, labels, account) in &pods {
        assert!(
            account == "default" || accounts.contains(&(namespace.clone(), account.clone())),
            "{namespace}: no ServiceAccount {account} for pods {labels:?}"
        );
    }
    // Every container image is the sample apps' (built by build-images.sh) or an upstream
    // image the README lists.
    let readme = std::fs::read_to_string(repo().join("e2e/kind/README.md")).unwrap();
    for deployment in of_kind("Deployment") {
        for container in deployment["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
        {
            let image = container["image"].as_str().unwrap();
            assert!(
                image == "ambit/sample-apps:dev" || readme.contains(&format!("`{image}`")),
                "image {image} is not listed in e2e/kind/README.md"
            );
        }
    }

    // Services select pods (the DNS row's `remote` is only a name to resolve), and routes
    // name Service ports that exist.
    let mut ports = BTreeSet::new();
    for service in of_kind("Service") {
        let namespace = namespace_of(service);
        let name = service["metadata"]["name"].as_str().unwrap();
        let selector: BTreeMap<String, String> =
            serde_json::from_value(service["spec"]["selector"].clone()).unwrap();
        let selects = pods.iter().any(|(ns, labels, _)| {
            *ns == namespace && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
        });
        assert!(
            selects || (namespace == "far" && name == "remote"),
            "Service {namespace}/{name} selects no pod"
        );
        for port in service["spec"]["ports"].as_array().unwrap() {
            ports.insert((
                namespace.clone(),
                name.to_owned(),
                port["port"].as_i64().unwrap(),
            ));
        }
    }
    for route in of_kind("HTTPRoute") {
        let namespace = namespace_of(route);
        let references = route["spec"]["parentRefs"]
            .as_array()
            .unwrap()
            .iter()
            .chain(
                route["spec"]["rules"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .flat_map(|rule| rule["backendRefs"].as_array().unwrap()),
            );
        for reference in references {
            let key = (
                namespace.clone(),
                reference["name"].as_str().unwrap().to_owned(),
                reference["port"].as_i64().unwrap(),
            );
            assert!(
                ports.contains(&key),
                "route names a missing Service port {key:?}"
            );
        }
    }

    // Every row file is applied by scenarios.sh, and every file it applies exists.
    let script = scenarios_script();
    let files: BTreeSet<String> = samples
        .iter()
        .map(|(path, _)| path.file_stem().unwrap().to_str().unwrap().to_owned())
        .collect();
    let applied: BTreeSet<String> = script
        .split("apply_sample ")
        .skip(1)
        .filter_map(|rest| rest.split_whitespace().next())
        .filter(|name| !name.starts_with('"') && *name != "NAME:")
        .map(str::to_owned)
        .collect();
    let unused: Vec<_> = files
        .iter()
        .filter(|f| *f != "apps" && !applied.contains(*f))
        .collect();
    assert!(unused.is_empty(), "samples no row applies: {unused:?}");
    let missing: Vec<_> = applied.difference(&files).collect();
    assert!(
        missing.is_empty(),
        "scenarios.sh applies missing samples: {missing:?}"
    );
}

/// Runs `scenarios.sh ARGS` against `tests/fixtures/fake-kubectl.sh` (a stand-in cluster
/// whose mesh behaves as the rows expect, but for the behaviour `broken` names); returns the
/// exit code, stdout and the kubectl calls made.
fn run_scenarios_with_fake_kubectl(args: &[&str], broken: Option<&str>) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let kubectl = dir.path().join("kubectl");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake-kubectl.sh"),
        &kubectl,
    )
    .unwrap();
    std::fs::set_permissions(
        &kubectl,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let output = Command::new("bash")
        .arg(repo().join("e2e/kind/scenarios.sh"))
        .args(args)
        .env("PATH", format!("{}:/usr/bin:/bin", dir.path().display()))
        .env("FAKE_DIR", dir.path())
        .env("FAKE_BROKEN", broken.unwrap_or(""))
        // One try per check: the fake answers at once, and a broken behaviour stays broken.
        .env("EVENTUALLY_TRIES", "1")
        .output()
        .unwrap();
    let calls = std::fs::read_to_string(dir.path().join("calls")).unwrap_or_default();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8(output.stdout).unwrap(),
        calls,
    )
}

fn require_jq() {
    assert!(
        Command::new("jq").arg("--version").output().is_ok(),
        "jq is not installed: run scripts/install-prereqs.sh"
    );
}

/// For each row, a behaviour of the fake mesh whose breaking that row must detect.
const BROKEN: &[(&str, &str)] = &[
    ("probes", "probes-pass"),
    ("mtls", "mtls-on-the-wire"),
    ("strict", "strict-vs-permissive"),
    ("l4", "l4-authorization"),
    ("l7-without-waypoint", "l7-policy-without-waypoint-denies"),
    ("waypoint-metrics", "waypoint-on-demand"),
    ("precedence", "use-waypoint-precedence"),
    ("l7-method", "l7-deny-method-path"),
    ("header-route", "header-route-v2"),
    ("canary", "canary-90-10"),
    ("retries", "retries-mask-failures"),
    ("timeout", "timeout-504"),
    ("fault", "fault-delay-abort"),
    ("outlier", "outlier-ejection"),
    ("dns", "dns-proxy"),
    ("label-live", "namespace-label-live"),
    ("tracing", "tracing-otlp"),
    ("prometheus", "prometheus-istio-metrics"),
    ("control-plane-plaintext", "control-plane-tls"),
    ("controller-needed", "controller-killed"),
    ("fail-open", "ztunnel-killed"),
];

#[test]
fn every_row_passes_against_a_working_mesh() {
    require_jq();
    let (code, stdout, _) = run_scenarios_with_fake_kubectl(&[], None);
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.ends_with(&format!("{} passed, 0 failed\n", ROWS.len())),
        "{stdout}"
    );
}

#[test]
fn each_row_fails_when_the_behaviour_it_checks_breaks() {
    require_jq();
    let rows: Vec<&str> = ROWS.iter().map(|(row, _)| *row).collect();
    let checked: Vec<&str> = BROKEN.iter().map(|(_, row)| *row).collect();
    assert_eq!(checked, rows, "one broken behaviour per row, in row order");
    for (broken, row) in BROKEN {
        let (code, stdout, _) = run_scenarios_with_fake_kubectl(&[row], Some(broken));
        assert_ne!(code, 0, "{row} passed with {broken} broken: {stdout}");
        assert!(stdout.contains(&format!("FAIL {row}\n")), "{stdout}");
    }
}

/// The line numbers of the calls containing `needle`.
fn call_lines(calls: &str, needle: &str) -> Vec<usize> {
    calls
        .lines()
        .enumerate()
        .filter(|(_, line)| line.contains(needle))
        .map(|(i, _)| i)
        .collect()
}

#[test]
fn a_row_runs_alone_and_undoes_its_changes_whether_it_passes_or_fails() {
    require_jq();
    for broken in [None, Some("controller-needed")] {
        let (code, stdout, calls) = run_scenarios_with_fake_kubectl(&["controller-killed"], broken);
        let expected = if broken.is_none() {
            "PASS controller-killed"
        } else {
            "FAIL controller-killed"
        };
        assert!(stdout.contains(expected), "{stdout}");
        assert_eq!(code == 0, broken.is_none(), "{stdout}");
        // Only the row named ran, and the controller is scaled back after the scale-down,
        // also when the row failed while it was down.
        assert!(!stdout.contains("probes-pass"), "{stdout}");
        let down = call_lines(&calls, "--replicas=0");
        let up = call_lines(&calls, "--replicas=1");
        assert!(
            down.len() == 1 && up.len() == 1 && down[0] < up[0],
            "{calls}"
        );
    }

    // A row's samples are removed when it ends, also when it failed; the waypoint too.
    let (code, _, calls) =
        run_scenarios_with_fake_kubectl(&["header-route-v2"], Some("header-route"));
    assert_ne!(code, 0);
    for sample in ["header-route-v2.yaml", "waypoint.yaml"] {
        let file = format!("/e2e/kind/samples/{sample}");
        let applied = call_lines(&calls, " apply -f ");
        let deleted = call_lines(&calls, " delete -f ");
        let of_sample = |lines: Vec<usize>| -> Vec<usize> {
            lines
                .into_iter()
                .filter(|i| calls.lines().nth(*i).is_some_and(|l| l.contains(&file)))
                .collect()
        };
        let (applied, deleted) = (of_sample(applied), of_sample(deleted));
        assert!(
            applied.len() == 1 && deleted.len() == 1 && applied[0] < deleted[0],
            "{sample}: {calls}"
        );
    }
    assert!(
        calls.contains("label service server istio.io/use-waypoint-"),
        "{calls}"
    );

    // An unknown row is refused before anything runs.
    let (code, _, calls) = run_scenarios_with_fake_kubectl(&["no-such-row"], None);
    assert_ne!(code, 0);
    assert!(calls.is_empty(), "{calls}");
}
