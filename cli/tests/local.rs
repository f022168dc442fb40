//! `ambit local` end to end through the real binary (root): `up` leaves a daemon, the other
//! verbs reach it, `down` removes everything; without a daemon the verbs say so.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Helpers outside #[test] fns panic on purpose.

use std::path::Path;
use std::process::Command;

fn ambit(state: &Path, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_ambit"))
        .args(args)
        .env("AMBIT_LOCAL_DIR", state)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn state_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ambit-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn verbs_without_a_running_mesh_say_how_to_start_one() {
    let state = state_dir("none");
    let (code, _, stderr) = ambit(&state, &["local", "get", "pods"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("ambit local up"), "{stderr}");
    let (code, stdout, _) = ambit(&state, &["local", "down"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("no local mesh was running"), "{stdout}");
    let (code, _, stderr) = ambit(&state, &["local", "exec", "no-slash", "--", "true"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("NAMESPACE/POD"), "{stderr}");
    std::fs::remove_dir_all(&state).unwrap();
}

#[test]
fn up_apply_get_exec_label_logs_down() {
    let state = state_dir("up");
    let (code, stdout, stderr) = ambit(&state, &["local", "up", "--nodes", "1"]);
    assert_eq!(code, 0, "up: {stdout}{stderr}");
    let (code, _, stderr) = ambit(&state, &["local", "up", "--nodes", "1"]);
    assert_eq!(code, 1, "a second up is refused");
    assert!(stderr.contains("already running"), "{stderr}");

    let manifest = state.join("app.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: demo}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {name: app, namespace: demo}\n\
         spec: {containers: [{name: app, command: [sh, -c, 'echo started; sleep 300']}]}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {name: Bad, namespace: demo}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
         metadata: {name: wp, namespace: demo, labels: {istio.io/waypoint-for: workload}}\n\
         spec: {gatewayClassName: istio-waypoint, \
         listeners: [{name: mesh, port: 15008, protocol: HBONE}]}\n",
    )
    .unwrap();
    let (code, stdout, stderr) = ambit(
        &state,
        &["local", "apply", "-f", manifest.to_str().unwrap()],
    );
    assert_eq!(code, 1, "one document is invalid: {stdout}{stderr}");
    assert!(stdout.contains("Pod demo/app created"), "{stdout}");
    assert!(stderr.contains("document 2: metadata.name"), "{stderr}");

    // The cluster's `waypoint list` columns where they apply: FOR is the Gateway's label.
    let (code, stdout, stderr) = ambit(&state, &["local", "get", "waypoints", "-n", "demo"]);
    assert_eq!(code, 0, "{stderr}");
    let mut lines = stdout
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>());
    assert_eq!(
        lines.next().unwrap(),
        ["NAMESPACE", "NAME", "FOR", "ADDRESS", "PROCESS"]
    );
    assert_eq!(
        lines.next().unwrap()[..3],
        ["demo", "wp", "workload"],
        "{stdout}"
    );

    let (code, stdout, _) = ambit(&state, &["local", "get", "pods", "-n", "demo"]);
    assert_eq!(code, 0);
    let row = stdout.lines().find(|l| l.contains(" app ")).expect(&stdout);
    assert!(row.contains("node-1") && row.contains("running"), "{row}");
    assert!(!row.contains("ambient"), "not enrolled yet: {row}");

    let (code, stdout, _) = ambit(
        &state,
        &[
            "local", "exec", "demo/app", "--", "ip", "-4", "-o", "addr", "show", "eth0",
        ],
    );
    assert_eq!(code, 0);
    assert!(
        stdout.contains("10.244."),
        "the pod's own address: {stdout}"
    );
    let (code, _, _) = ambit(&state, &["local", "exec", "demo/app", "--", "false"]);
    assert_eq!(code, 1, "exec passes the command's exit code through");

    let (code, _, stderr) = ambit(
        &state,
        &[
            "local",
            "label",
            "ns",
            "demo",
            "istio.io/dataplane-mode=ambient",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    let (_, stdout, _) = ambit(&state, &["local", "get", "pods", "-n", "demo"]);
    assert!(
        stdout
            .lines()
            .any(|l| l.contains(" app ") && l.contains("ambient")),
        "{stdout}"
    );

    let (code, stdout, _) = ambit(&state, &["local", "logs", "demo/app"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("started"), "{stdout}");

    let (code, stdout, stderr) = ambit(&state, &["local", "down"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let (code, _, _) = ambit(&state, &["local", "get", "pods"]);
    assert_eq!(code, 1, "nothing runs after down");
    std::fs::remove_dir_all(&state).unwrap();
}
