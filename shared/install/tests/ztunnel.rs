//! The ambit-ztunnel chart: least privilege for ztunnel, and the node installer configured as
//! the values say.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Container, PodSpec};
use support::{find, render, render_with, strict};

fn pod(manifests: &[ambit_install::Manifest], name: &str) -> PodSpec {
    let daemon_set: DaemonSet = strict(find(manifests, "DaemonSet", name)).unwrap();
    daemon_set.spec.unwrap().template.spec.unwrap()
}

fn container<'a>(pod: &'a PodSpec, name: &str) -> &'a Container {
    pod.containers.iter().find(|c| c.name == name).unwrap()
}

fn added_capabilities(container: &Container) -> Vec<String> {
    let caps = container
        .security_context
        .as_ref()
        .unwrap()
        .capabilities
        .as_ref()
        .unwrap();
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_owned()][..]));
    caps.add.clone().unwrap_or_default()
}

fn env<'a>(container: &'a Container, name: &str) -> &'a str {
    let vars = container.env.as_deref().unwrap();
    vars.iter()
        .find(|v| v.name == name)
        .unwrap()
        .value
        .as_deref()
        .unwrap()
}

#[test]
fn ztunnel_gets_only_what_in_pod_mode_needs() {
    let manifests = render("ambit-ztunnel", &[]).unwrap();
    let ztunnel = pod(&manifests, "ztunnel");
    assert_ne!(
        ztunnel.host_network,
        Some(true),
        "ztunnel runs in the pod network"
    );
    assert_eq!(ztunnel.automount_service_account_token, Some(false));
    let proxy = container(&ztunnel, "ztunnel");
    assert_eq!(added_capabilities(proxy), ["NET_ADMIN", "SYS_ADMIN"]);
    let security = proxy.security_context.as_ref().unwrap();
    assert_eq!(security.privileged, Some(false));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(security.read_only_root_filesystem, Some(true));
    // Pod namespaces created after ztunnel started must become visible to it.
    let mounts = proxy.volume_mounts.as_deref().unwrap();
    let netns = mounts
        .iter()
        .find(|m| m.mount_path == "/var/run/netns")
        .unwrap();
    assert_eq!(netns.mount_propagation.as_deref(), Some("HostToContainer"));
    let probe = proxy
        .readiness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(probe.path.as_deref(), Some("/healthz/ready"));
    // The drain period fits in the grace period.
    assert_eq!(ztunnel.termination_grace_period_seconds, Some(30));
    assert!(
        proxy
            .args
            .as_ref()
            .unwrap()
            .contains(&"--drain-seconds=20".to_owned())
    );
}

#[test]
fn the_installer_chains_the_plugin_to_the_agent_socket_ztunnel_does_not_use() {
    let manifests = render("ambit-ztunnel", &[]).unwrap();
    let node = pod(&manifests, "ambit-node");
    assert_eq!(node.host_network, Some(true));
    let installer = container(&node, "install-cni");
    assert_eq!(added_capabilities(installer), ["NET_ADMIN"]);
    assert_eq!(env(installer, "AGENT_SOCKET"), "/var/run/ambit/cni.sock");
    // The mesh's own namespace is never captured, whatever the values list.
    assert_eq!(
        env(installer, "EXCLUDE_NAMESPACES"),
        "ambit-system,kube-system"
    );
    assert_eq!(env(installer, "POD_INTERFACES"), "veth*,cali*,lxc*,cni*");
    assert_eq!(env(installer, "PROBE_SOURCE_V4"), "169.254.7.127");
    let agent = container(&node, "node-agent");
    // setns into pod namespaces, for the scan of pods that ran before the agent.
    assert_eq!(added_capabilities(agent), ["SYS_ADMIN"]);
    let netns = agent
        .volume_mounts
        .as_deref()
        .unwrap()
        .iter()
        .find(|m| m.mount_path == "/var/run/netns")
        .unwrap();
    assert_eq!(netns.mount_propagation.as_deref(), Some("HostToContainer"));
    assert_eq!(netns.read_only, Some(true));
    let agent_args = agent.args.clone().unwrap();
    assert!(agent_args.contains(&"--listen=/var/run/ambit/cni.sock".to_owned()));
    assert!(agent_args.contains(&"--ztunnel-socket=/var/run/ambit/ztunnel.sock".to_owned()));
    // The scan skips exactly the namespaces the plugin does not report.
    assert!(agent_args.contains(&"--exclude-namespaces=ambit-system,kube-system".to_owned()));
    let ztunnel_args = container(&pod(&manifests, "ztunnel"), "ztunnel")
        .args
        .clone()
        .unwrap();
    assert!(ztunnel_args.contains(&"--node-agent-socket=/var/run/ambit/ztunnel.sock".to_owned()));
    assert!(
        ztunnel_args
            .contains(&"--controller=https://ambit-controller.ambit-system.svc:15012".to_owned())
    );
}

#[test]
fn ztunnel_verifies_the_controller_by_the_roots_configmap_it_publishes() {
    let manifests = render("ambit-ztunnel", &[]).unwrap();
    let ztunnel_pod = pod(&manifests, "ztunnel");
    let ztunnel = container(&ztunnel_pod, "ztunnel");
    let args = ztunnel.args.clone().unwrap();
    assert!(args.contains(&"--controller-ca-file=/var/run/ambit/ca/root-cert.pem".to_owned()));
    assert!(
        !args
            .iter()
            .any(|a| a.starts_with("--controller-server-name"))
    );
    assert!(!args.iter().any(|a| a == "--controller-plaintext"));
    let mount = ztunnel
        .volume_mounts
        .as_deref()
        .unwrap()
        .iter()
        .find(|m| m.mount_path == "/var/run/ambit/ca")
        .unwrap();
    let volume = ztunnel_pod
        .volumes
        .as_deref()
        .unwrap()
        .iter()
        .find(|v| v.name == mount.name)
        .unwrap();
    // The controller's names for it, so the two cannot drift apart.
    assert_eq!(
        volume.config_map.as_ref().unwrap().name,
        ambit_controller::kube::ROOT_CONFIGMAP
    );
    assert_eq!(ambit_controller::kube::ROOT_CONFIGMAP_KEY, "root-cert.pem");

    let named = render_with(
        "ambit-ztunnel",
        "controller: {address: 10.0.0.9:15012, serverName: ambit-controller.mesh.svc}",
    )
    .unwrap();
    let args = container(&pod(&named, "ztunnel"), "ztunnel")
        .args
        .clone()
        .unwrap();
    assert!(args.contains(&"--controller=https://10.0.0.9:15012".to_owned()));
    assert!(args.contains(&"--controller-server-name=ambit-controller.mesh.svc".to_owned()));
}

#[test]
fn the_node_agent_may_read_pods_and_namespaces_and_nothing_else() {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    let manifests = render("ambit-ztunnel", &[]).unwrap();
    let role: ClusterRole = strict(find(&manifests, "ClusterRole", "ambit-node")).unwrap();
    let rules = role.rules.unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].api_groups.as_deref(), Some(&["".to_owned()][..]));
    assert_eq!(
        rules[0].resources.as_deref(),
        Some(&["pods".to_owned(), "namespaces".to_owned()][..])
    );
    assert_eq!(rules[0].verbs, ["get", "list", "watch"]);
    let binding: ClusterRoleBinding =
        strict(find(&manifests, "ClusterRoleBinding", "ambit-node")).unwrap();
    assert_eq!(binding.role_ref.name, "ambit-node");
    let subjects = binding.subjects.unwrap();
    assert_eq!(subjects[0].name, "ambit-node");
    assert_eq!(
        pod(&manifests, "ambit-node")
            .service_account_name
            .as_deref(),
        Some("ambit-node")
    );
}

#[test]
fn without_probe_snat_the_installer_has_no_capability() {
    let manifests = render_with("ambit-ztunnel", "probeSnat: {enabled: false}").unwrap();
    let node = pod(&manifests, "ambit-node");
    let installer = container(&node, "install-cni");
    assert!(added_capabilities(installer).is_empty());
    assert_eq!(env(installer, "PROBE_SNAT"), "false");
}

#[test]
fn custom_cni_folders_are_the_host_paths_mounted() {
    let manifests = render_with(
        "ambit-ztunnel",
        "cni: {binDir: /host-bin, netDir: /host-net}\nnodeAgent: {socketDir: /run/a}",
    )
    .unwrap();
    let node = pod(&manifests, "ambit-node");
    let host_paths: Vec<_> = node
        .volumes
        .as_deref()
        .unwrap()
        .iter()
        .map(|v| (v.name.as_str(), v.host_path.as_ref().unwrap().path.as_str()))
        .collect();
    assert_eq!(
        host_paths,
        [
            ("cni-bin", "/host-bin"),
            ("cni-net", "/host-net"),
            ("sockets", "/run/a"),
            ("netns", "/var/run/netns")
        ]
    );
    let installer = container(&node, "install-cni");
    assert_eq!(env(installer, "AGENT_SOCKET"), "/run/a/cni.sock");
}

#[test]
fn invalid_values_are_refused() {
    for values in [
        "cni: {binDir: relative/bin}",
        "cni: {excludeNamespaces: [Not_A_Namespace]}",
        "probeSnat: {podInterfaces: []}",
        "updateStrategy: {maxUnavailable: 0}",
        "controller: {address: 'no port'}",
        "probeSnat: {sourceV4: not-an-ip}",
    ] {
        let error = format!("{:#}", render_with("ambit-ztunnel", values).unwrap_err());
        assert!(error.contains("values.schema.json"), "{values}: {error}");
    }
}
