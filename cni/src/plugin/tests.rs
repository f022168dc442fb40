use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::time::Duration;

use serde_json::{Value, json};

use super::*;

const SOCKET: &str = "/run/ambit/agent.sock";
const UID: &str = "6b1f0c2e-0000-4000-8000-000000000001";
const CONTAINER: &str = "9c0e8d7f6a5b";

/// A scripted node agent that records what it was asked.
#[derive(Default)]
struct FakeAgent {
    replies: VecDeque<Result<Reply, AgentError>>,
    calls: Vec<(AgentTarget, AgentRequest)>,
    ping: Option<Result<(), AgentError>>,
    pings: usize,
}

impl FakeAgent {
    fn answering(reply: Result<Reply, AgentError>) -> Self {
        Self {
            replies: VecDeque::from([reply]),
            ..Self::default()
        }
    }

    fn enrolled(enrolled: bool) -> Self {
        Self::answering(Ok(Reply::Ack {
            enrolled: Some(enrolled),
        }))
    }

    fn down() -> Self {
        Self::answering(Err(AgentError::unreachable("connection refused")))
    }

    fn only_request(&self) -> &AgentRequest {
        assert_eq!(self.calls.len(), 1, "expected exactly one agent call");
        &self.calls[0].1
    }
}

impl NodeAgent for FakeAgent {
    fn call(&mut self, target: &AgentTarget, request: &AgentRequest) -> Result<Reply, AgentError> {
        self.calls.push((target.clone(), request.clone()));
        self.replies
            .pop_front()
            .unwrap_or_else(|| Err(AgentError::unreachable("no scripted reply")))
    }

    fn ping(&mut self, _target: &AgentTarget) -> Result<(), AgentError> {
        self.pings += 1;
        self.ping.take().unwrap_or(Ok(()))
    }
}

fn env(command: &str) -> Vec<(String, String)> {
    [
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", CONTAINER),
        ("CNI_NETNS", "/var/run/netns/cni-1234"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
        (
            "CNI_ARGS",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=9c0e8d7f6a5b;K8S_POD_UID=6b1f0c2e-0000-4000-8000-000000000001",
        ),
        ("PATH", "/usr/bin"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn with(mut vars: Vec<(String, String)>, key: &str, value: Option<&str>) -> CniEnv {
    vars.retain(|(k, _)| k != key);
    if let Some(value) = value {
        vars.push((key.to_owned(), value.to_owned()));
    }
    CniEnv::from_vars(vars)
}

fn prev_result(version: &str) -> Value {
    json!({
        "cniVersion": version,
        "interfaces": [{"name": "eth0", "mac": "0a:58:0a:f4:01:05", "sandbox": "/var/run/netns/cni-1234"}],
        "ips": [{"address": "10.244.1.5/24", "gateway": "10.244.1.1", "interface": 0}],
        "dns": {}
    })
}

fn conf(version: &str) -> Value {
    json!({
        "cniVersion": version,
        "name": "k8s-pod-network",
        "type": "ambit-cni",
        "agentSocket": SOCKET,
        "runtimeConfig": {"portMappings": []},
        "prevResult": prev_result(version),
    })
}

fn run_with(env: &CniEnv, stdin: &Value, agent: &mut FakeAgent) -> PluginOutput {
    run(env, stdin.to_string().as_bytes(), agent)
}

fn stdout_json(output: &PluginOutput) -> Value {
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Asserts a spec-shaped error object with `code` and returns its message.
fn expect_error(output: &PluginOutput, code: u32, version: &str) -> String {
    assert_eq!(output.exit_code, 1, "{output:?}");
    let body = stdout_json(output);
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["cniVersion"], version, "{body}");
    let keys: Vec<_> = body.as_object().unwrap().keys().cloned().collect();
    for key in &keys {
        assert!(
            ["cniVersion", "code", "msg", "details"].contains(&key.as_str()),
            "{key}"
        );
    }
    body["msg"].as_str().unwrap().to_owned()
}

#[test]
fn add_passes_prev_result_through_for_every_version() {
    for version in SUPPORTED_VERSIONS {
        let mut agent = FakeAgent::enrolled(true);
        let output = run_with(&CniEnv::from_vars(env("ADD")), &conf(version), &mut agent);
        assert_eq!(output.exit_code, 0, "{version}: {output:?}");
        assert_eq!(stdout_json(&output), prev_result(version), "{version}");
        let AgentRequest::Add { pod } = agent.only_request() else {
            panic!("expected add");
        };
        assert_eq!(
            pod,
            &PodReport {
                container_id: CONTAINER.into(),
                namespace: "shop".into(),
                name: "web-0".into(),
                uid: Some(UID.into()),
                service_account: None,
                netns: Some("/var/run/netns/cni-1234".into()),
            }
        );
        assert_eq!(agent.calls[0].0.socket, PathBuf::from(SOCKET));
    }
}

#[test]
fn add_of_a_pod_outside_the_mesh_succeeds() {
    let mut agent = FakeAgent::enrolled(false);
    let output = run_with(&CniEnv::from_vars(env("ADD")), &conf("1.0.0"), &mut agent);
    assert_eq!(output.exit_code, 0);
    assert_eq!(stdout_json(&output), prev_result("1.0.0"));
    assert!(
        output
            .diagnostics
            .iter()
            .any(|d| d.contains("enrolled=false"))
    );
}

#[test]
fn add_names_the_version_when_prev_result_does_not() {
    let mut input = conf("0.4.0");
    input["prevResult"]
        .as_object_mut()
        .unwrap()
        .remove("cniVersion");
    let output = run_with(
        &CniEnv::from_vars(env("ADD")),
        &input,
        &mut FakeAgent::enrolled(true),
    );
    assert_eq!(output.exit_code, 0);
    assert_eq!(stdout_json(&output), prev_result("0.4.0"));
}

#[test]
fn add_forwards_optional_identity_and_timeouts() {
    let vars = env("ADD");
    let env = with(
        vars,
        "CNI_ARGS",
        Some("K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0;K8S_POD_SERVICE_ACCOUNT=web"),
    );
    let mut input = conf("1.1.0");
    input["agentConnectTimeoutMs"] = json!(250);
    input["agentCallTimeoutMs"] = json!(1500);
    let mut agent = FakeAgent::enrolled(true);
    assert_eq!(run_with(&env, &input, &mut agent).exit_code, 0);
    let AgentRequest::Add { pod } = agent.only_request() else {
        panic!("expected add");
    };
    assert_eq!(pod.uid, None);
    assert_eq!(pod.service_account.as_deref(), Some("web"));
    let client = &agent.calls[0].0.client;
    assert_eq!(client.connect_timeout, Duration::from_millis(250));
    assert_eq!(client.call_timeout, Duration::from_millis(1500));
}

#[test]
fn add_without_prev_result_is_invalid_config() {
    let mut input = conf("1.0.0");
    input.as_object_mut().unwrap().remove("prevResult");
    let mut agent = FakeAgent::enrolled(true);
    let output = run_with(&CniEnv::from_vars(env("ADD")), &input, &mut agent);
    let msg = expect_error(&output, code::INVALID_CONFIG, "1.0.0");
    assert!(msg.contains("prevResult"), "{msg}");
    assert!(agent.calls.is_empty());
}

#[test]
fn add_fails_closed_when_the_agent_is_down() {
    let output = run_with(
        &CniEnv::from_vars(env("ADD")),
        &conf("0.3.1"),
        &mut FakeAgent::down(),
    );
    expect_error(&output, code::TRY_AGAIN_LATER, "0.3.1");
    let body = stdout_json(&output);
    assert!(
        body["details"].as_str().unwrap().contains("refused"),
        "{body}"
    );
}

#[test]
fn add_maps_agent_answers_to_codes() {
    let cases = [
        (
            Ok(Reply::error(ErrorKind::Unavailable, "not synced")),
            code::TRY_AGAIN_LATER,
        ),
        (
            Ok(Reply::error(ErrorKind::Internal, "ztunnel down")),
            code::TRY_AGAIN_LATER,
        ),
        // The agent's pod cache may lag behind the kubelet: retry.
        (
            Ok(Reply::error(ErrorKind::UnknownPod, "not yet")),
            code::TRY_AGAIN_LATER,
        ),
        (
            Ok(Reply::error(ErrorKind::Invalid, "bad uid")),
            code::AGENT_REJECTED,
        ),
        (Ok(Reply::ack()), code::AGENT_PROTOCOL),
        (Err(AgentError::protocol("garbage")), code::AGENT_PROTOCOL),
    ];
    for (reply, expected) in cases {
        let label = format!("{reply:?}");
        let output = run_with(
            &CniEnv::from_vars(env("ADD")),
            &conf("1.0.0"),
            &mut FakeAgent::answering(reply),
        );
        assert_eq!(stdout_json(&output)["code"], expected, "{label}");
        assert_eq!(output.exit_code, 1, "{label}");
    }
}

#[test]
fn add_in_an_excluded_namespace_skips_the_agent() {
    let mut input = conf("1.0.0");
    input["excludeNamespaces"] = json!(["kube-system", "shop"]);
    let mut agent = FakeAgent::down();
    let output = run_with(&CniEnv::from_vars(env("ADD")), &input, &mut agent);
    assert_eq!(output.exit_code, 0, "{output:?}");
    assert_eq!(stdout_json(&output), prev_result("1.0.0"));
    assert!(agent.calls.is_empty());
}

#[test]
fn add_requires_each_environment_variable() {
    for var in [
        "CNI_CONTAINERID",
        "CNI_NETNS",
        "CNI_IFNAME",
        "CNI_PATH",
        "CNI_ARGS",
    ] {
        let mut agent = FakeAgent::enrolled(true);
        let output = run_with(&with(env("ADD"), var, None), &conf("1.0.0"), &mut agent);
        let msg = expect_error(&output, code::INVALID_ENV, "1.0.0");
        assert!(msg.contains(var), "{var}: {msg}");
        assert!(agent.calls.is_empty(), "{var}");
    }
    for (var, bad) in [
        ("CNI_CONTAINERID", "-abc"),
        ("CNI_NETNS", "relative/netns"),
        ("CNI_NETNS", "/var/run/netns/../x"),
        ("CNI_IFNAME", "a-very-long-interface"),
        ("CNI_IFNAME", "eth/0"),
    ] {
        let output = run_with(
            &with(env("ADD"), var, Some(bad)),
            &conf("1.0.0"),
            &mut FakeAgent::enrolled(true),
        );
        let msg = expect_error(&output, code::INVALID_ENV, "1.0.0");
        assert!(msg.contains(var), "{var}: {msg}");
    }
}

#[test]
fn bad_cni_args_are_invalid_env() {
    for (args, mentions) in [
        ("K8S_POD_NAMESPACE", "not KEY=VALUE"),
        ("=x;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=a", "empty key"),
        ("K8S_POD_NAME=web-0", "K8S_POD_NAMESPACE"),
        ("K8S_POD_NAMESPACE=shop", "K8S_POD_NAME"),
        (
            "K8S_POD_NAMESPACE=Shop;K8S_POD_NAME=web-0",
            "K8S_POD_NAMESPACE",
        ),
        ("K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web_0", "K8S_POD_NAME"),
        (
            "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=a;K8S_POD_UID=a b",
            "K8S_POD_UID",
        ),
        (
            "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=a;K8S_POD_NAME=b",
            "twice",
        ),
    ] {
        let mut agent = FakeAgent::enrolled(true);
        let output = run_with(
            &with(env("ADD"), "CNI_ARGS", Some(args)),
            &conf("1.0.0"),
            &mut agent,
        );
        let msg = expect_error(&output, code::INVALID_ENV, "1.0.0");
        assert!(
            msg.starts_with("CNI_ARGS") && msg.contains(mentions),
            "{args}: {msg}"
        );
        assert!(agent.calls.is_empty());
    }
}

#[test]
fn non_utf8_environment_is_reported() {
    let mut vars: Vec<(OsString, OsString)> = env("ADD")
        .into_iter()
        .filter(|(k, _)| k != "CNI_NETNS")
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    vars.push((
        "CNI_NETNS".into(),
        OsString::from_vec(b"/var/run/\xff".to_vec()),
    ));
    let output = run_with(
        &CniEnv::from_os_vars(vars),
        &conf("1.0.0"),
        &mut FakeAgent::enrolled(true),
    );
    let msg = expect_error(&output, code::INVALID_ENV, "1.0.0");
    assert!(msg.contains("CNI_NETNS") && msg.contains("UTF-8"), "{msg}");
}

#[test]
fn del_reports_and_succeeds_whatever_the_agent_says() {
    let outcomes = [
        Ok(Reply::ack()),
        Ok(Reply::error(ErrorKind::UnknownPod, "never heard of it")),
        Ok(Reply::error(ErrorKind::Internal, "boom")),
        Err(AgentError::unreachable("connection refused")),
        Err(AgentError::protocol("garbage")),
    ];
    for outcome in outcomes {
        let label = format!("{outcome:?}");
        let mut agent = FakeAgent::answering(outcome);
        let output = run_with(&CniEnv::from_vars(env("DEL")), &conf("1.0.0"), &mut agent);
        assert_eq!(output.exit_code, 0, "{label}: {output:?}");
        assert!(output.stdout.is_empty(), "{label}");
        assert!(matches!(agent.only_request(), AgentRequest::Del { .. }));
    }
}

#[test]
fn del_tolerates_missing_netns_prev_result_and_pod_identity() {
    let mut input = conf("0.3.0");
    input.as_object_mut().unwrap().remove("prevResult");
    let mut agent = FakeAgent::answering(Ok(Reply::ack()));
    let output = run_with(&with(env("DEL"), "CNI_NETNS", None), &input, &mut agent);
    assert_eq!(output.exit_code, 0, "{output:?}");
    let AgentRequest::Del { pod } = agent.only_request() else {
        panic!("expected del");
    };
    assert_eq!(pod.netns, None);
    assert_eq!(pod.uid.as_deref(), Some(UID));

    let mut agent = FakeAgent::down();
    let output = run_with(
        &with(env("DEL"), "CNI_ARGS", Some("garbage")),
        &input,
        &mut agent,
    );
    assert_eq!(output.exit_code, 0, "{output:?}");
    assert!(agent.calls.is_empty());

    // Running twice is fine: DEL is idempotent.
    for _ in 0..2 {
        let output = run_with(
            &CniEnv::from_vars(env("DEL")),
            &input,
            &mut FakeAgent::down(),
        );
        assert_eq!(output.exit_code, 0);
    }
}

#[test]
fn del_still_rejects_a_broken_invocation() {
    let output = run_with(
        &with(env("DEL"), "CNI_CONTAINERID", None),
        &conf("1.0.0"),
        &mut FakeAgent::down(),
    );
    expect_error(&output, code::INVALID_ENV, "1.0.0");
    let output = run(&CniEnv::from_vars(env("DEL")), b"{", &mut FakeAgent::down());
    expect_error(&output, code::DECODE, "1.1.0");
}

#[test]
fn check_asks_the_agent() {
    let mut agent = FakeAgent::enrolled(true);
    let output = run_with(&CniEnv::from_vars(env("CHECK")), &conf("1.0.0"), &mut agent);
    assert_eq!(output.exit_code, 0, "{output:?}");
    assert!(output.stdout.is_empty());
    assert!(matches!(agent.only_request(), AgentRequest::Check { .. }));

    let output = run_with(
        &CniEnv::from_vars(env("CHECK")),
        &conf("1.0.0"),
        &mut FakeAgent::answering(Ok(Reply::error(ErrorKind::UnknownPod, "no"))),
    );
    expect_error(&output, code::POD_UNKNOWN, "1.0.0");
    let output = run_with(
        &CniEnv::from_vars(env("CHECK")),
        &conf("0.4.0"),
        &mut FakeAgent::down(),
    );
    expect_error(&output, code::TRY_AGAIN_LATER, "0.4.0");
}

#[test]
fn check_needs_version_and_prev_result() {
    let mut agent = FakeAgent::enrolled(true);
    let output = run_with(&CniEnv::from_vars(env("CHECK")), &conf("0.3.1"), &mut agent);
    expect_error(&output, code::INCOMPATIBLE_VERSION, "0.3.1");
    let mut input = conf("1.1.0");
    input.as_object_mut().unwrap().remove("prevResult");
    let output = run_with(&CniEnv::from_vars(env("CHECK")), &input, &mut agent);
    expect_error(&output, code::INVALID_CONFIG, "1.1.0");
    assert!(agent.calls.is_empty());
}

#[test]
fn version_lists_supported_versions() {
    let env = CniEnv::from_vars([("CNI_COMMAND", "VERSION")]);
    for (stdin, answered) in [
        (String::new(), "1.1.0"),
        (r#"{"cniVersion":"0.4.0"}"#.to_owned(), "0.4.0"),
        (r#"{"cniVersion":"1.0.0"}"#.to_owned(), "1.0.0"),
        (r#"{"cniVersion":"0.2.0"}"#.to_owned(), "1.1.0"),
        ("not json".to_owned(), "1.1.0"),
    ] {
        let mut agent = FakeAgent::down();
        let output = run(&env, stdin.as_bytes(), &mut agent);
        assert_eq!(output.exit_code, 0, "{stdin}");
        assert_eq!(
            stdout_json(&output),
            json!({"cniVersion": answered, "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]}),
            "{stdin}"
        );
        assert!(agent.calls.is_empty());
    }
}

#[test]
fn bad_or_missing_command() {
    let output = run(&CniEnv::default(), b"{}", &mut FakeAgent::down());
    let msg = expect_error(&output, code::INVALID_ENV, "1.1.0");
    assert!(msg.contains("CNI_COMMAND"), "{msg}");
    let output = run_with(
        &CniEnv::from_vars(env("UPDATE")),
        &conf("1.0.0"),
        &mut FakeAgent::down(),
    );
    let msg = expect_error(&output, code::INVALID_ENV, "1.0.0");
    assert!(msg.contains("UPDATE"), "{msg}");
}

#[test]
fn malformed_configuration() {
    let env = CniEnv::from_vars(env("ADD"));
    for (stdin, code) in [
        ("", code::DECODE),
        ("{\"cniVersion\": ", code::DECODE),
        ("[1,2]", code::DECODE),
        ("\"1.0.0\"", code::DECODE),
    ] {
        let output = run(&env, stdin.as_bytes(), &mut FakeAgent::enrolled(true));
        expect_error(&output, code, "1.1.0");
    }
    let remove = |key: &str| {
        let mut c = conf("1.0.0");
        c.as_object_mut().unwrap().remove(key);
        c
    };
    let set = |key: &str, value: Value| {
        let mut c = conf("1.0.0");
        c[key] = value;
        c
    };
    let cases = [
        (remove("cniVersion"), code::INVALID_CONFIG, "cniVersion"),
        (
            set("cniVersion", json!(1)),
            code::INVALID_CONFIG,
            "cniVersion",
        ),
        (remove("name"), code::INVALID_CONFIG, "name"),
        (remove("type"), code::INVALID_CONFIG, "type"),
        (remove("agentSocket"), code::INVALID_CONFIG, "agentSocket"),
        (
            set("agentSocket", json!("run/agent.sock")),
            code::INVALID_CONFIG,
            "agentSocket",
        ),
        (
            set("agentCallTimeoutMs", json!(0)),
            code::INVALID_CONFIG,
            "agentCallTimeoutMs",
        ),
        (
            set("agentConnectTimeoutMs", json!("1s")),
            code::INVALID_CONFIG,
            "agentConnectTimeoutMs",
        ),
        (
            set("excludeNamespaces", json!("kube-system")),
            code::INVALID_CONFIG,
            "excludeNamespaces",
        ),
        (
            set("excludeNamespaces", json!(["Kube"])),
            code::INVALID_CONFIG,
            "excludeNamespaces",
        ),
        (
            set("prevResult", json!([])),
            code::INVALID_CONFIG,
            "prevResult",
        ),
    ];
    for (input, code, mentions) in cases {
        let mut agent = FakeAgent::enrolled(true);
        let output = run_with(&env, &input, &mut agent);
        let answered = if mentions == "cniVersion" {
            "1.1.0"
        } else {
            "1.0.0"
        };
        let msg = expect_error(&output, code, answered);
        assert!(msg.contains(mentions), "{mentions}: {msg}");
        assert!(agent.calls.is_empty());
    }
}

#[test]
fn unsupported_versions_are_incompatible() {
    for version in ["0.1.0", "0.2.0", "2.0.0", "1.0"] {
        let output = run_with(
            &CniEnv::from_vars(env("ADD")),
            &conf(version),
            &mut FakeAgent::enrolled(true),
        );
        let msg = expect_error(&output, code::INCOMPATIBLE_VERSION, "1.1.0");
        assert!(msg.contains(version), "{msg}");
    }
}

#[test]
fn status_and_gc() {
    let env = CniEnv::from_vars([("CNI_COMMAND", "STATUS")]);
    let mut agent = FakeAgent::default();
    let output = run_with(&env, &conf("1.1.0"), &mut agent);
    assert_eq!(output.exit_code, 0, "{output:?}");
    assert_eq!(agent.pings, 1);
    agent.ping = Some(Err(AgentError::unreachable("refused")));
    let output = run_with(&env, &conf("1.1.0"), &mut agent);
    expect_error(&output, code::NOT_AVAILABLE, "1.1.0");
    let output = run_with(&env, &conf("1.0.0"), &mut agent);
    expect_error(&output, code::INCOMPATIBLE_VERSION, "1.0.0");

    let env = CniEnv::from_vars([("CNI_COMMAND", "GC")]);
    let mut input = conf("1.1.0");
    input["cni.dev/valid-attachments"] = json!([{"containerID": CONTAINER, "ifname": "eth0"}]);
    let output = run_with(&env, &input, &mut agent);
    assert_eq!(output.exit_code, 0, "{output:?}");
    assert!(output.stdout.is_empty());
}
