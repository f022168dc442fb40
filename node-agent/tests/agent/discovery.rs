//! Pods that ran before the agent: real network namespaces (root) under the agent's
//! `--netns-dir`, matched to the mocked API's pods by address, with no CNI report at all.

use std::process::Command;

use super::*;

const UID_LOST: &str = "6b1f0c2e-0000-4000-8000-000000000003";
const UID_TWIN: &str = "6b1f0c2e-0000-4000-8000-000000000004";
const UID_DNS: &str = "6b1f0c2e-0000-4000-8000-000000000005";
const UID_NODE: &str = "6b1f0c2e-0000-4000-8000-000000000006";

/// A network namespace bind-mounted at `<dir>/<name>` (as containerd does under
/// `/var/run/netns`) with `ips` on a veth; unmounted on drop, which frees it.
struct PodNetns {
    path: PathBuf,
}

impl PodNetns {
    fn create(dir: &Path, name: &str, ips: &[&str]) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, "").unwrap();
        run("unshare", &[&format!("--net={}", path.display()), "true"]);
        let netns = Self { path };
        netns.ip(&[
            "link", "add", "eth0", "type", "veth", "peer", "name", "peer0",
        ]);
        for ip in ips {
            let mut args = vec!["addr", "add", ip, "dev", "eth0"];
            if ip.contains(':') {
                // No duplicate address detection: the address is listed at once.
                args.push("nodad");
            }
            netns.ip(&args);
        }
        netns.ip(&["link", "set", "eth0", "up"]);
        netns
    }

    fn path(&self) -> String {
        self.path.display().to_string()
    }

    fn ip(&self, args: &[&str]) {
        let netns = format!("--net={}", self.path.display());
        let mut all = vec![netns.as_str(), "ip"];
        all.extend_from_slice(args);
        run("nsenter", &all);
    }
}

impl Drop for PodNetns {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).output();
    }
}

fn run(program: &str, args: &[&str]) {
    let output = Command::new(program).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A pod with the status a running sandbox gives it.
fn running(mut pod: Value, ips: &[&str]) -> Value {
    let ips: Vec<Value> = ips.iter().map(|ip| json!({"ip": ip})).collect();
    pod["status"] = json!({"phase": "Running", "podIP": ips[0]["ip"], "podIPs": ips});
    pod
}

fn check(name: &str, namespace: &str, netns: &str) -> AgentRequest {
    AgentRequest::Check {
        pod: report(name, namespace, "c-unknown", netns),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_running_before_the_agent_are_found_by_address_and_decided() {
    let dir = TempDir::new();
    let netns_dir = dir.join(NETNS_DIR);
    let web = PodNetns::create(&netns_dir, "cni-web", &["10.77.0.2/24", "fd77::2/64"]);
    let db = PodNetns::create(&netns_dir, "cni-db", &["10.77.0.3/24"]);
    // Two namespaces holding one address: which is the pod's cannot be told.
    let _twin_a = PodNetns::create(&netns_dir, "cni-twin-a", &["10.77.0.7/24"]);
    let _twin_b = PodNetns::create(&netns_dir, "cni-twin-b", &["10.77.0.7/24"]);
    // Excluded namespace: the plugin never reports it, so the scan leaves it alone too.
    let dns = PodNetns::create(&netns_dir, "cni-dns", &["10.77.0.4/24"]);
    // Not a namespace (a mount that did not propagate): skipped.
    std::fs::write(netns_dir.join("cni-stale"), "").unwrap();

    let (ztunnel, _zt) = start_ztunnel(&dir.join("ztunnel.sock"));
    let mut host = pod("node-exporter", "shop", UID_NODE, json!({}));
    host["spec"]["hostNetwork"] = json!(true);
    let cluster = Cluster::start(
        vec![
            running(
                pod("web-0", "shop", UID_WEB, json!({})),
                &["10.77.0.2", "fd77::2"],
            ),
            running(pod("db-0", "plain", UID_DB, json!({})), &["10.77.0.3"]),
            running(pod("lost-0", "shop", UID_LOST, json!({})), &["10.77.0.9"]),
            running(pod("twin-0", "shop", UID_TWIN, json!({})), &["10.77.0.7"]),
            running(
                pod("dns-0", "kube-system", UID_DNS, json!({})),
                &["10.77.0.4"],
            ),
            running(host, &["10.77.0.3"]),
        ],
        vec![
            namespace("shop", ambient()),
            namespace("plain", json!({})),
            namespace("kube-system", ambient()),
        ],
    );
    // No state file: this agent never ran on the node, and the plugin reports nothing.
    let agent = Agent::start(&dir, &cluster, quick()).await;
    ztunnel.wait_served(&["web-0"]).await;
    let served = ztunnel.pods.lock().unwrap().get(UID_WEB).cloned().unwrap();
    assert_eq!(served.netns, web.path());
    assert_eq!(served.service_account, "web");

    // The non-ambient pod is known (not enrolled), so its namespace joining the mesh
    // enrolls it live; the others stay unknown.
    assert_eq!(
        agent.call(check("db-0", "plain", &db.path())).await,
        enrolled(false)
    );
    for (name, namespace) in [
        ("lost-0", "shop"),
        ("twin-0", "shop"),
        ("dns-0", "kube-system"),
        ("node-exporter", "shop"),
    ] {
        let reply = agent.call(check(name, namespace, &dns.path())).await;
        assert_eq!(error_kind(&reply), Some(ErrorKind::UnknownPod), "{name}");
    }
    cluster.namespace_event("MODIFIED", namespace("plain", ambient()));
    ztunnel.wait_served(&["db-0", "web-0"]).await;

    // Found pods are persisted like reported ones, and leave with their pod.
    let state: Value =
        serde_json::from_slice(&std::fs::read(dir.join("state.json")).unwrap()).unwrap();
    let mut names: Vec<&str> = state["pods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["db-0", "web-0"], "{state}");
    cluster.pod_event("DELETED", pod("web-0", "shop", UID_WEB, json!({})));
    ztunnel.wait_served(&["db-0"]).await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_without_ips_yet_is_found_when_they_arrive() {
    let dir = TempDir::new();
    let web = PodNetns::create(&dir.join(NETNS_DIR), "cni-web", &["10.77.1.2/24"]);
    let (ztunnel, _zt) = start_ztunnel(&dir.join("ztunnel.sock"));
    let cluster = shop(vec![pod("web-0", "shop", UID_WEB, json!({}))]);
    let agent = Agent::start(&dir, &cluster, quick()).await;
    ztunnel
        .wait_until(|z| z.log() == ["snapshot []"])
        .await
        .unwrap();

    cluster.pod_event(
        "MODIFIED",
        running(pod("web-0", "shop", UID_WEB, json!({})), &["10.77.1.2"]),
    );
    ztunnel.wait_served(&["web-0"]).await;
    let served = ztunnel.pods.lock().unwrap().get(UID_WEB).cloned().unwrap();
    assert_eq!(served.netns, web.path());

    // The runtime tears the sandbox down: its DEL (no sandbox ID known, no netns given)
    // forgets the pod, and the next status update does not bring it back.
    let del = PodReport {
        netns: None,
        ..report("web-0", "shop", "c-web", &web.path())
    };
    assert_eq!(
        agent.call(AgentRequest::Del { pod: del }).await,
        Reply::ack()
    );
    ztunnel.wait_served(&[]).await;
    let mut update = running(pod("web-0", "shop", UID_WEB, json!({})), &["10.77.1.2"]);
    update["metadata"]["labels"] = json!({"version": "2"});
    cluster.pod_event("MODIFIED", update);
    // Pod events are handled in order, and the scan for this later pod would find web-0 too.
    let probe = PodNetns::create(&dir.join(NETNS_DIR), "cni-probe", &["10.77.1.3/24"]);
    cluster.pod_event(
        "ADDED",
        running(pod("probe-0", "shop", UID_DB, json!({})), &["10.77.1.3"]),
    );
    ztunnel.wait_served(&["probe-0"]).await;
    let served = ztunnel.pods.lock().unwrap().get(UID_DB).cloned().unwrap();
    assert_eq!(served.netns, probe.path());

    // A new sandbox of the pod is reported by the plugin and served as usual.
    let again = report("web-0", "shop", "c-web-2", &web.path());
    assert_eq!(agent.add(again).await, enrolled(true));
    assert_eq!(
        ztunnel.log(),
        [
            "snapshot []",
            "enroll web-0",
            "unenroll web-0",
            "enroll probe-0",
            "enroll web-0"
        ]
    );
    agent.stop().await;
}
