//! images/cni-installer/install-cni.sh, run for real against temporary CNI folders (jq needed)
//! and its nftables rules applied in a fresh network namespace (root and nft needed).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use ambit_cni::plugin::{self, AgentError, AgentTarget, CniEnv, NodeAgent};
use ambit_cni::protocol::{AgentRequest, Reply};
use serde_json::{Value, json};

const KINDNET: &str = r#"{"cniVersion":"0.3.1","name":"kindnet","plugins":[{"type":"ptp","ipMasq":false},{"type":"portmap","capabilities":{"portMappings":true}}]}"#;

struct Host {
    dir: tempfile::TempDir,
}

impl Host {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["bin", "net.d"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        std::fs::write(dir.path().join("ambit-cni"), "#!/bin/sh\n").unwrap();
        Self { dir }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    fn command(&self, mode: &str) -> Command {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../images/cni-installer/install-cni.sh");
        let mut command = Command::new("sh");
        command
            .arg(script)
            .arg(mode)
            .env("CNI_BIN_DIR", self.path("bin"))
            .env("CNI_NET_DIR", self.path("net.d"))
            .env("PLUGIN_BINARY", self.path("ambit-cni"))
            .env("EXCLUDE_NAMESPACES", "ambit-system,kube-system")
            .env("PROBE_SNAT", "false")
            .env("CHECK_INTERVAL", "1");
        command
    }

    fn run(&self, mode: &str) -> Output {
        let output = self.command(mode).output().unwrap();
        assert!(
            output.status.success(),
            "{mode}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    fn json(&self, relative: &str) -> Value {
        serde_json::from_str(&std::fs::read_to_string(self.path(relative)).unwrap()).unwrap()
    }

    fn plugin_types(&self, relative: &str) -> Vec<String> {
        let conf = self.json(relative);
        conf["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["type"].as_str().unwrap().to_owned())
            .collect()
    }
}

/// Polls `condition` (a file changed by another process) until it holds or 20 s pass.
fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_with_timeout(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "installer did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn install_chains_the_plugin_last_once_and_uninstall_restores_the_conflist() {
    let host = Host::new();
    std::fs::write(host.path("net.d/10-kindnet.conflist"), KINDNET).unwrap();
    // A later file is not the primary configuration and stays untouched.
    std::fs::write(host.path("net.d/99-other.conflist"), KINDNET).unwrap();
    host.run("install");
    assert_eq!(
        host.plugin_types("net.d/10-kindnet.conflist"),
        ["ptp", "portmap", "ambit-cni"]
    );
    assert_eq!(
        host.plugin_types("net.d/99-other.conflist"),
        ["ptp", "portmap"]
    );
    let entry = host.json("net.d/10-kindnet.conflist")["plugins"][2].clone();
    assert_eq!(
        entry,
        json!({"type": "ambit-cni", "name": "ambit-cni", "agentSocket": "/var/run/ambit/cni.sock",
               "agentConnectTimeoutMs": 2000, "agentCallTimeoutMs": 10000,
               "excludeNamespaces": ["ambit-system", "kube-system"]})
    );
    let binary = host.path("bin/ambit-cni");
    assert_eq!(std::fs::read_to_string(&binary).unwrap(), "#!/bin/sh\n");

    // Installing again changes nothing.
    let before = std::fs::read_to_string(host.path("net.d/10-kindnet.conflist")).unwrap();
    host.run("install");
    let after = std::fs::read_to_string(host.path("net.d/10-kindnet.conflist")).unwrap();
    assert_eq!(before, after);

    host.run("uninstall");
    let original: Value = serde_json::from_str(KINDNET).unwrap();
    assert_eq!(host.json("net.d/10-kindnet.conflist"), original);
    assert!(!binary.exists());
}

/// A node agent that records the sockets it was asked through and enrolls every pod.
#[derive(Default)]
struct RecordingAgent {
    targets: Vec<AgentTarget>,
}

impl NodeAgent for RecordingAgent {
    fn call(&mut self, target: &AgentTarget, _: &AgentRequest) -> Result<Reply, AgentError> {
        self.targets.push(target.clone());
        Ok(Reply::Ack {
            enrolled: Some(true),
        })
    }

    fn ping(&mut self, target: &AgentTarget) -> Result<(), AgentError> {
        self.targets.push(target.clone());
        Ok(())
    }
}

/// Runs the real plugin for ADD of a pod in `namespace` with the chain entry as the runtime
/// would pass it (the list's name and version, the previous plugin's result).
fn plugin_add(
    conflist: &Value,
    namespace: &str,
    agent: &mut RecordingAgent,
) -> plugin::PluginOutput {
    let mut conf = conflist["plugins"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    conf["cniVersion"] = conflist["cniVersion"].clone();
    conf["name"] = conflist["name"].clone();
    conf["prevResult"] = json!({
        "cniVersion": conflist["cniVersion"],
        "interfaces": [{"name": "eth0", "sandbox": "/var/run/netns/cni-1"}],
        "ips": [{"address": "10.244.1.5/24", "interface": 0}],
    });
    let args = format!("K8S_POD_NAMESPACE={namespace};K8S_POD_NAME=web-0");
    let env = CniEnv::from_vars([
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "9c0e8d7f6a5b"),
        ("CNI_NETNS", "/var/run/netns/cni-1"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
        ("CNI_ARGS", args.as_str()),
    ]);
    plugin::run(&env, conf.to_string().as_bytes(), agent)
}

#[test]
fn the_real_plugin_accepts_the_chain_entry_and_reports_to_the_agent_socket() {
    let host = Host::new();
    std::fs::write(host.path("net.d/10-kindnet.conflist"), KINDNET).unwrap();
    host.run("install");
    let conflist = host.json("net.d/10-kindnet.conflist");

    let mut agent = RecordingAgent::default();
    let output = plugin_add(&conflist, "shop", &mut agent);
    assert_eq!(
        output.exit_code,
        0,
        "{:?} {}",
        output.diagnostics,
        String::from_utf8_lossy(&output.stdout)
    );
    let target = agent.targets.last().expect("the agent was asked");
    assert_eq!(target.socket, Path::new("/var/run/ambit/cni.sock"));
    assert_eq!(target.client.connect_timeout, Duration::from_millis(2000));
    assert_eq!(target.client.call_timeout, Duration::from_millis(10000));

    // The mesh's own namespace is excluded: the agent is not asked.
    let mut agent = RecordingAgent::default();
    let output = plugin_add(&conflist, "ambit-system", &mut agent);
    assert_eq!(output.exit_code, 0, "{:?}", output.diagnostics);
    assert!(agent.targets.is_empty());
}

#[test]
fn a_single_plugin_conf_becomes_a_conflist() {
    let host = Host::new();
    let conf = r#"{"cniVersion":"0.4.0","name":"bridge","type":"bridge","bridge":"cni0"}"#;
    std::fs::write(host.path("net.d/10-bridge.conf"), conf).unwrap();
    host.run("install");
    assert!(!host.path("net.d/10-bridge.conf").exists());
    let list = host.json("net.d/10-bridge.conflist");
    assert_eq!(list["cniVersion"], "0.4.0");
    assert_eq!(list["name"], "bridge");
    assert_eq!(
        list["plugins"][0],
        json!({"name": "bridge", "type": "bridge", "bridge": "cni0"})
    );
    assert_eq!(list["plugins"][1]["type"], "ambit-cni");
}

#[test]
fn run_waits_for_the_primary_cni_repairs_the_chain_and_cleans_up_on_term() {
    let host = Host::new();
    let mut child = host.command("run").spawn().unwrap();
    let conf = host.path("net.d/10-kindnet.conflist");
    // The primary CNI writes its configuration after the installer started.
    std::fs::write(&conf, KINDNET).unwrap();
    let chained =
        || std::fs::read_to_string(&conf).is_ok_and(|text| text.contains("\"ambit-cni\""));
    eventually("the plugin to be chained", chained);
    // The primary CNI rewrites its file without our entry; the installer puts it back.
    std::fs::write(&conf, KINDNET).unwrap();
    eventually("the chain to be repaired", chained);

    let killed = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(killed.success());
    let status = wait_with_timeout(&mut child);
    assert!(status.success(), "{status}");
    assert_eq!(
        host.plugin_types("net.d/10-kindnet.conflist"),
        ["ptp", "portmap"]
    );
    assert!(!host.path("bin/ambit-cni").exists());
}

#[test]
fn probe_snat_rules_apply_in_a_network_namespace() {
    let host = Host::new();
    let rules = host.run("rules").stdout;
    let script = "nft -f - && nft list table inet ambit_node";
    let mut child = Command::new("unshare")
        .args(["--net", "sh", "-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), &rules).unwrap();
    let output = child.wait_with_output().unwrap();
    let listed = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for expected in [
        "type nat hook postrouting priority srcnat",
        "oifname \"veth*\"",
        "oifname \"cali*\"",
        "snat ip to 169.254.7.127",
        "snat ip6 to fd16:9254:7127:1337:ffff:ffff:ffff:ffff",
    ] {
        assert!(
            listed.contains(expected),
            "{expected} missing from:\n{listed}"
        );
    }
    // Applying twice replaces the table instead of adding rules.
    let twice = format!("{0}{0}", String::from_utf8_lossy(&rules));
    let count =
        "printf '%s' \"$0\" | nft -f - && nft list table inet ambit_node | grep -c 'snat ip to'";
    let output = Command::new("unshare")
        .args(["--net", "sh", "-c", count, &twice])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "4");
}
