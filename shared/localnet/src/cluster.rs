//! The cluster: an underlay netns with a bridge, node netns wired to it, pod netns wired to nodes.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tracing::{debug, info, warn};

use crate::addr::{self, Ipv4Cidr, MAX_NODE_INDEX, POD_HOSTS, UNDERLAY_CIDR};
use crate::cmd::ip;
use crate::error::{Error, Result};
use crate::netns::{NETNS_DIR, Netns};
use crate::state::{self, ClusterState, NodeRecord, PodRecord, STATE_DIR};
use crate::{privileges, unblock};

/// Bridge in the underlay netns that all nodes plug into.
const UNDERLAY_BRIDGE: &str = "br0";
/// Bridge in each node netns that the node's pods plug into.
const POD_BRIDGE: &str = "cbr0";
/// The node's and the pod's interface towards their parent bridge.
const ETH0: &str = "eth0";
/// How many random prefixes to try before giving up (collisions are already very unlikely).
const PREFIX_ATTEMPTS: usize = 16;

/// How to create a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterOptions {
    name: String,
    state_dir: PathBuf,
}

/// A set of network namespaces forming nodes and pods; torn down on [`Cluster::teardown`] or drop.
#[derive(Debug)]
pub struct Cluster {
    prefix: String,
    state_path: PathBuf,
    /// Serialises topology changes, which read the set of nodes to install routes.
    changes: tokio::sync::Mutex<()>,
    /// The topology as recorded in the state file; never held across an await.
    state: Mutex<ClusterState>,
    torn_down: bool,
}

/// A node: a netns on the underlay with a bridge and a /24 for its pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    name: String,
    netns: Netns,
    underlay_ip: Ipv4Addr,
    pod_cidr: Ipv4Cidr,
}

/// A pod: a netns with `lo` and `eth0` on its node's pod bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    namespace: String,
    name: String,
    node: String,
    netns: Netns,
    ip: Ipv4Addr,
    gateway: Ipv4Addr,
}

impl ClusterOptions {
    /// Options for a cluster called `name` (a label for people; netns names get a unique prefix).
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            state_dir: PathBuf::from(STATE_DIR),
        }
    }

    /// Keeps the state file in `dir` instead of `/run/ambit-localnet`.
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = dir.into();
        self
    }
}

impl Cluster {
    /// Creates a cluster named `name` with default options.
    pub async fn create(name: &str) -> Result<Self> {
        Self::create_with(ClusterOptions::new(name)).await
    }

    /// Creates the underlay netns and its bridge; fails clearly without root and `ip`.
    pub async fn create_with(options: ClusterOptions) -> Result<Self> {
        privileges::check()?;
        let (state, state_path) = reserve_prefix(&options)?;
        let cluster = Self {
            prefix: state.prefix.clone(),
            state_path,
            changes: tokio::sync::Mutex::new(()),
            state: Mutex::new(state),
            torn_down: false,
        };
        // On failure `cluster` is dropped, which removes whatever was created.
        cluster.build_underlay().await?;
        info!(cluster = %options.name, prefix = %cluster.prefix, "cluster created");
        Ok(cluster)
    }

    /// Removes the cluster described by a state file, e.g. one left by a crashed process.
    pub async fn teardown_from_state(path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref().to_owned();
        unblock(move || state::teardown_file_blocking(&path)).await
    }

    /// The name given at creation.
    pub fn name(&self) -> String {
        self.state().name.clone()
    }

    /// The unique prefix of every netns name of this cluster, e.g. `amb-1a2b3c`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Path of the JSON state file.
    pub fn state_path(&self) -> &Path {
        &self.state_path
    }

    /// The underlay netns, holding bridge `br0` with `172.18.0.1/16`.
    pub fn underlay(&self) -> Netns {
        Netns::new(&self.state().underlay)
    }

    /// The underlay's own address on `br0` (`172.18.0.1`): every node reaches it, so a service
    /// run in the underlay netns (a local control plane) serves the whole cluster.
    pub fn underlay_gateway(&self) -> Ipv4Addr {
        addr::underlay_gateway()
    }

    /// The node called `name`, if any.
    pub fn node(&self, name: &str) -> Option<Node> {
        self.state()
            .nodes
            .iter()
            .find(|n| n.name == name)
            .map(Node::from)
    }

    /// All nodes, in creation order.
    pub fn nodes(&self) -> Vec<Node> {
        self.state().nodes.iter().map(Node::from).collect()
    }

    /// The pod `namespace/name`, if any.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<Pod> {
        self.state()
            .pods
            .iter()
            .find(|p| p.namespace == namespace && p.name == name)
            .map(Pod::from)
    }

    /// All pods, in creation order.
    pub fn pods(&self) -> Vec<Pod> {
        self.state().pods.iter().map(Pod::from).collect()
    }

    /// Adds a node: netns, veth to the underlay, pod bridge, forwarding, routes to other nodes.
    pub async fn add_node(&self, name: &str) -> Result<Node> {
        validate_name("node name", name, false)?;
        let _change = self.changes.lock().await;
        let (record, others) = {
            let mut state = self.state();
            if state.nodes.iter().any(|n| n.name == name) {
                return Err(Error::already_exists(format!("node {name}")));
            }
            let index = (1..=MAX_NODE_INDEX)
                .find(|i| state.nodes.iter().all(|n| n.index != *i))
                .ok_or_else(|| Error::exhausted(format!("{MAX_NODE_INDEX} nodes already")))?;
            let record = NodeRecord {
                name: name.to_owned(),
                index,
                netns: format!("{}-node-{name}", self.prefix),
                underlay_ip: addr::node_underlay_ip(index),
                pod_cidr: addr::node_pod_cidr(index),
            };
            let others = state.nodes.clone();
            state.nodes.push(record.clone());
            state.save(&self.state_path)?;
            (record, others)
        };
        if let Err(err) = self.build_node(&record, &others).await {
            warn!(node = name, %err, "adding node failed; rolling back");
            self.rollback_node(&record, &others).await;
            return Err(err);
        }
        info!(node = name, netns = %record.netns, ip = %record.underlay_ip, "node added");
        Ok(Node::from(&record))
    }

    /// Removes a node, its pods, and the other nodes' routes to it.
    pub async fn remove_node(&self, name: &str) -> Result<()> {
        let _change = self.changes.lock().await;
        let (record, others, pods) = {
            let state = self.state();
            let record = state
                .nodes
                .iter()
                .find(|n| n.name == name)
                .cloned()
                .ok_or_else(|| Error::not_found(format!("node {name}")))?;
            let others: Vec<_> = state
                .nodes
                .iter()
                .filter(|n| n.name != name)
                .cloned()
                .collect();
            let pods: Vec<_> = state
                .pods
                .iter()
                .filter(|p| p.node == name)
                .cloned()
                .collect();
            (record, others, pods)
        };
        for pod in &pods {
            self.destroy_pod(pod, &record).await?;
        }
        for other in &others {
            ip(&[
                "-n",
                &other.netns,
                "route",
                "del",
                &record.pod_cidr.to_string(),
            ])
            .await?;
        }
        self.destroy_node(&record).await?;
        info!(node = name, "node removed");
        Ok(())
    }

    /// Adds pod `namespace/name` on `node`: netns, `lo` up, `eth0` on the node's pod bridge,
    /// the next free address of the node's /24, default route via the node.
    pub async fn add_pod(&self, node: &str, namespace: &str, name: &str) -> Result<Pod> {
        validate_name("namespace", namespace, false)?;
        validate_name("pod name", name, true)?;
        let _change = self.changes.lock().await;
        let (record, node_record) = {
            let mut state = self.state();
            let node_record = state
                .nodes
                .iter()
                .find(|n| n.name == node)
                .cloned()
                .ok_or_else(|| Error::not_found(format!("node {node}")))?;
            if state
                .pods
                .iter()
                .any(|p| p.namespace == namespace && p.name == name)
            {
                return Err(Error::already_exists(format!("pod {namespace}/{name}")));
            }
            let ip = POD_HOSTS
                .filter_map(|host| node_record.pod_cidr.host(u32::from(host)))
                .find(|ip| state.pods.iter().all(|p| p.ip != *ip))
                .ok_or_else(|| {
                    Error::exhausted(format!("node {node}'s {}", node_record.pod_cidr))
                })?;
            let record = PodRecord {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                node: node.to_owned(),
                netns: format!("{}-pod-{namespace}_{name}", self.prefix),
                ip,
            };
            state.pods.push(record.clone());
            state.save(&self.state_path)?;
            (record, node_record)
        };
        if let Err(err) = self.build_pod(&record, &node_record).await {
            warn!(pod = %format!("{namespace}/{name}"), %err, "adding pod failed; rolling back");
            if let Err(cleanup) = self.destroy_pod(&record, &node_record).await {
                warn!(%cleanup, "rollback of pod failed; the state file still lists it");
            }
            return Err(err);
        }
        info!(pod = %format!("{namespace}/{name}"), node, ip = %record.ip, "pod added");
        Ok(Pod::from(&record))
    }

    /// Removes pod `namespace/name`, killing the processes inside it.
    pub async fn remove_pod(&self, namespace: &str, name: &str) -> Result<()> {
        let _change = self.changes.lock().await;
        let (record, node_record) = {
            let state = self.state();
            let record = state
                .pods
                .iter()
                .find(|p| p.namespace == namespace && p.name == name)
                .cloned()
                .ok_or_else(|| Error::not_found(format!("pod {namespace}/{name}")))?;
            let node_record = state
                .nodes
                .iter()
                .find(|n| n.name == record.node)
                .cloned()
                .ok_or_else(|| Error::not_found(format!("node {}", record.node)))?;
            (record, node_record)
        };
        self.destroy_pod(&record, &node_record).await?;
        info!(pod = %format!("{namespace}/{name}"), "pod removed");
        Ok(())
    }

    /// Removes every netns of the cluster (killing their processes) and the state file.
    pub async fn teardown(mut self) -> Result<()> {
        self.torn_down = true;
        let mut state = self.state().clone();
        let path = self.state_path.clone();
        info!(prefix = %self.prefix, "tearing down cluster");
        unblock(move || state.destroy_blocking(&path)).await
    }

    fn state(&self) -> MutexGuard<'_, ClusterState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn build_underlay(&self) -> Result<()> {
        let underlay = self.underlay();
        let ns = underlay.name();
        underlay.create().await?;
        ip(&["-n", ns, "link", "set", "lo", "up"]).await?;
        ip(&["-n", ns, "link", "add", UNDERLAY_BRIDGE, "type", "bridge"]).await?;
        pin_bridge_mac(ns, UNDERLAY_BRIDGE, 0).await?;
        let gateway = format!(
            "{}/{}",
            addr::underlay_gateway(),
            UNDERLAY_CIDR.prefix_len()
        );
        ip(&["-n", ns, "addr", "add", &gateway, "dev", UNDERLAY_BRIDGE]).await?;
        ip(&["-n", ns, "link", "set", UNDERLAY_BRIDGE, "up"]).await?;
        Ok(())
    }

    async fn build_node(&self, node: &NodeRecord, others: &[NodeRecord]) -> Result<()> {
        let underlay = self.underlay();
        let netns = Netns::new(&node.netns);
        let ns = netns.name();
        let uplink = underlay_port(node.index);
        netns.create().await?;
        // Created inside the underlay so the name never meets the root namespace.
        ip(&[
            "-n",
            underlay.name(),
            "link",
            "add",
            &uplink,
            "type",
            "veth",
            "peer",
            "name",
            ETH0,
            "netns",
            ns,
        ])
        .await?;
        ip(&[
            "-n",
            underlay.name(),
            "link",
            "set",
            &uplink,
            "master",
            UNDERLAY_BRIDGE,
            "up",
        ])
        .await?;
        ip(&["-n", ns, "link", "set", "lo", "up"]).await?;
        let node_addr = format!("{}/{}", node.underlay_ip, UNDERLAY_CIDR.prefix_len());
        ip(&["-n", ns, "addr", "add", &node_addr, "dev", ETH0]).await?;
        ip(&["-n", ns, "link", "set", ETH0, "up"]).await?;
        ip(&["-n", ns, "link", "add", POD_BRIDGE, "type", "bridge"]).await?;
        pin_bridge_mac(ns, POD_BRIDGE, u32::from(node.index) + 1).await?;
        let gateway = format!("{}/{}", pod_gateway(node), node.pod_cidr.prefix_len());
        ip(&["-n", ns, "addr", "add", &gateway, "dev", POD_BRIDGE]).await?;
        ip(&["-n", ns, "link", "set", POD_BRIDGE, "up"]).await?;
        enable_forwarding(&netns)?;
        for other in others {
            add_route(&node.netns, other).await?;
            add_route(&other.netns, node).await?;
        }
        // The underlay answers pods too (a service there, such as a local control plane, is
        // reachable from every pod, as a cluster's network would route pod IPs).
        let underlay = self.state().underlay.clone();
        let cidr = node.pod_cidr.to_string();
        let via = node.underlay_ip.to_string();
        ip(&[
            "-n",
            &underlay,
            "route",
            "replace",
            &cidr,
            "via",
            &via,
            "dev",
            UNDERLAY_BRIDGE,
        ])
        .await?;
        Ok(())
    }

    async fn rollback_node(&self, node: &NodeRecord, others: &[NodeRecord]) {
        let underlay = self.state().underlay.clone();
        let _ = ip(&["-n", &underlay, "route", "del", &node.pod_cidr.to_string()]).await;
        for other in others {
            // The route may not have been added yet; its absence is fine.
            let cidr = node.pod_cidr.to_string();
            if let Err(err) = ip(&["-n", &other.netns, "route", "del", &cidr]).await {
                debug!(%err, "route was not there");
            }
        }
        if let Err(err) = self.destroy_node(node).await {
            warn!(%err, "rollback of node failed; the state file still lists it");
        }
    }

    /// Deletes a node's netns and uplink, then forgets it in the state file.
    async fn destroy_node(&self, node: &NodeRecord) -> Result<()> {
        let underlay = self.underlay();
        let uplink = underlay_port(node.index);
        let netns = Netns::new(&node.netns);
        unblock(move || {
            delete_link_if_present(&underlay, &uplink)?;
            netns.destroy_blocking()
        })
        .await?;
        let mut state = self.state();
        state.nodes.retain(|n| n.name != node.name);
        state.save(&self.state_path)
    }

    async fn build_pod(&self, pod: &PodRecord, node: &NodeRecord) -> Result<()> {
        let netns = Netns::new(&pod.netns);
        let ns = netns.name();
        let port = pod_port(pod.ip);
        netns.create().await?;
        // Created inside the node so the pod side is named eth0 without any collision.
        ip(&[
            "-n",
            &node.netns,
            "link",
            "add",
            &port,
            "type",
            "veth",
            "peer",
            "name",
            ETH0,
            "netns",
            ns,
        ])
        .await?;
        ip(&[
            "-n",
            &node.netns,
            "link",
            "set",
            &port,
            "master",
            POD_BRIDGE,
            "up",
        ])
        .await?;
        ip(&["-n", ns, "link", "set", "lo", "up"]).await?;
        let pod_addr = format!("{}/{}", pod.ip, node.pod_cidr.prefix_len());
        ip(&["-n", ns, "addr", "add", &pod_addr, "dev", ETH0]).await?;
        ip(&["-n", ns, "link", "set", ETH0, "up"]).await?;
        let gateway = pod_gateway(node).to_string();
        ip(&["-n", ns, "route", "add", "default", "via", &gateway]).await?;
        Ok(())
    }

    /// Deletes a pod's port on the node and its netns, then forgets it in the state file.
    async fn destroy_pod(&self, pod: &PodRecord, node: &NodeRecord) -> Result<()> {
        let node_netns = Netns::new(&node.netns);
        let port = pod_port(pod.ip);
        let netns = Netns::new(&pod.netns);
        unblock(move || {
            // Deleting the node's end explicitly frees the port name even if a socket still
            // holds the pod netns alive.
            delete_link_if_present(&node_netns, &port)?;
            netns.destroy_blocking()
        })
        .await?;
        let mut state = self.state();
        state
            .pods
            .retain(|p| !(p.namespace == pod.namespace && p.name == pod.name));
        state.save(&self.state_path)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.torn_down {
            return;
        }
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let Err(err) = state.destroy_blocking(&self.state_path) {
            warn!(prefix = %self.prefix, %err, "teardown on drop failed; run cleanup_stale later");
        }
    }
}

impl Node {
    /// The node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node's netns (where its ztunnel's own sockets live).
    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    /// The node's address on the underlay (`eth0`), `172.18.0.<k+1>`.
    pub fn underlay_ip(&self) -> Ipv4Addr {
        self.underlay_ip
    }

    /// The node's pod network, `10.244.<k>.0/24`.
    pub fn pod_cidr(&self) -> Ipv4Cidr {
        self.pod_cidr
    }

    /// The node's address on its pod bridge, the pods' default gateway.
    pub fn pod_gateway(&self) -> Ipv4Addr {
        self.pod_cidr.host(1).unwrap_or(self.pod_cidr.network())
    }
}

impl Pod {
    /// The pod's Kubernetes namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The pod's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name of the node it runs on.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The pod's address on `eth0`.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// The default gateway (its node's pod bridge).
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    /// The pod's netns.
    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    /// A command running `program` inside the pod; see [`Netns::command`].
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> tokio::process::Command {
        self.netns.command(program)
    }

    /// Runs `program args…` inside the pod and captures its output; see [`Netns::run`].
    pub async fn run<I, S>(&self, program: impl AsRef<std::ffi::OsStr>, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.netns.run(program, args).await
    }
}

impl From<&NodeRecord> for Node {
    fn from(record: &NodeRecord) -> Self {
        Self {
            name: record.name.clone(),
            netns: Netns::new(&record.netns),
            underlay_ip: record.underlay_ip,
            pod_cidr: record.pod_cidr,
        }
    }
}

impl From<&PodRecord> for Pod {
    fn from(record: &PodRecord) -> Self {
        let cidr = addr::node_pod_cidr(record.ip.octets()[2]);
        Self {
            namespace: record.namespace.clone(),
            name: record.name.clone(),
            node: record.node.clone(),
            netns: Netns::new(&record.netns),
            ip: record.ip,
            gateway: cidr.host(1).unwrap_or(cidr.network()),
        }
    }
}

/// Picks a random unused prefix and reserves it by creating the state file.
fn reserve_prefix(options: &ClusterOptions) -> Result<(ClusterState, PathBuf)> {
    for _ in 0..PREFIX_ATTEMPTS {
        let prefix = format!("amb-{:06x}", rand::random::<u32>() & 0x00ff_ffff);
        if netns_with_prefix(&prefix)? {
            continue;
        }
        let path = options.state_dir.join(format!("{prefix}.json"));
        let state = ClusterState::new(&options.name, &prefix);
        match state.create_file(&path) {
            Ok(()) => return Ok((state, path)),
            Err(err) if err.is_already_exists() => continue,
            Err(err) => return Err(err),
        }
    }
    Err(Error::exhausted(format!(
        "no unused cluster prefix after {PREFIX_ATTEMPTS} attempts"
    )))
}

fn netns_with_prefix(prefix: &str) -> Result<bool> {
    let entries = match fs::read_dir(NETNS_DIR) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(err) => return Err(Error::io(format!("listing {NETNS_DIR}"), err)),
    };
    let start = format!("{prefix}-");
    Ok(entries
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with(&start)))
}

/// Accepts Kubernetes-style names: lowercase alphanumerics and `-` (and `.` for pods),
/// starting and ending alphanumeric, at most 63 bytes. Keeps netns names unambiguous.
fn validate_name(what: &str, name: &str, allow_dots: bool) -> Result<()> {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let valid = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(alnum)
        && name.ends_with(alnum)
        && name
            .chars()
            .all(|c| alnum(c) || c == '-' || (allow_dots && c == '.'));
    if valid {
        Ok(())
    } else {
        let allowed = if allow_dots {
            ", '-' and '.'"
        } else {
            " and '-'"
        };
        Err(Error::invalid(format!(
            "{what} {name:?}: use 1-63 lowercase letters, digits{allowed}, \
             starting and ending with a letter or digit"
        )))
    }
}

fn pod_gateway(node: &NodeRecord) -> Ipv4Addr {
    node.pod_cidr.host(1).unwrap_or(node.pod_cidr.network())
}

/// Name of node `index`'s port on the underlay bridge (≤ 15 bytes: `veth-n253`).
fn underlay_port(index: u8) -> String {
    format!("veth-n{index}")
}

/// Name of a pod's port on its node's bridge, from the pod's host number (`veth-p254`).
fn pod_port(ip: Ipv4Addr) -> String {
    format!("veth-p{}", ip.octets()[3])
}

/// Routes `to`'s pod network via its underlay address, inside netns `from`.
async fn add_route(from: &str, to: &NodeRecord) -> Result<()> {
    let cidr = to.pod_cidr.to_string();
    let via = to.underlay_ip.to_string();
    ip(&["-n", from, "route", "add", &cidr, "via", &via, "dev", ETH0])
        .await
        .map(drop)
}

/// Turns on IPv4 forwarding in `netns` only: the write happens on a thread inside it.
fn enable_forwarding(netns: &Netns) -> Result<()> {
    const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";
    netns.run_in(|| fs::write(IP_FORWARD, "1"))?.map_err(|err| {
        Error::io(
            format!("writing {IP_FORWARD} in network namespace {}", netns.name()),
            err,
        )
    })
}

fn delete_link_if_present(netns: &Netns, link: &str) -> Result<()> {
    if !netns.exists() {
        return Ok(());
    }
    let present = crate::cmd::ip_blocking(&["-n", netns.name(), "link", "show", "dev", link]);
    if present.is_err() {
        return Ok(());
    }
    crate::cmd::ip_blocking(&["-n", netns.name(), "link", "del", "dev", link]).map(drop)
}

/// Gives `bridge` a fixed, locally administered MAC (`02:a0:…`, unique per `id`). A bridge
/// left to itself takes the lowest MAC of its ports and changes it whenever a port with a lower
/// one is added, so a pod that learnt its gateway's MAC earlier would keep sending to an
/// address the bridge no longer owns, and its traffic would vanish until its ARP entry
/// expired. An address set explicitly never changes.
async fn pin_bridge_mac(netns: &str, bridge: &str, id: u32) -> Result<()> {
    let [_, a, b, c] = id.to_be_bytes();
    let mac = format!("02:a0:00:{a:02x}:{b:02x}:{c:02x}");
    ip(&["-n", netns, "link", "set", "dev", bridge, "address", &mac]).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_kubernetes_rules() {
        validate_name("node name", "worker-1", false).unwrap();
        validate_name("pod name", "web-7d9f.v2", true).unwrap();
        for bad in ["", "-a", "a-", "A", "a_b", "a/b", "a.b", &"x".repeat(64)] {
            let err = validate_name("node name", bad, false).unwrap_err();
            assert!(err.is_invalid(), "{bad:?}");
        }
        assert!(validate_name("pod name", "a..", true).is_err());
    }

    #[test]
    fn interface_names_fit_in_ifnamsiz() {
        assert!(underlay_port(MAX_NODE_INDEX).len() <= 15);
        assert!(pod_port(Ipv4Addr::new(10, 244, 253, 254)).len() <= 15);
        assert!(UNDERLAY_BRIDGE.len() <= 15 && POD_BRIDGE.len() <= 15);
    }

    #[test]
    fn pod_handle_derives_its_gateway() {
        let pod = Pod::from(&PodRecord {
            namespace: "default".into(),
            name: "web".into(),
            node: "a".into(),
            netns: "amb-000000-pod-default_web".into(),
            ip: Ipv4Addr::new(10, 244, 3, 9),
        });
        assert_eq!(pod.gateway(), Ipv4Addr::new(10, 244, 3, 1));
        assert_eq!(
            pod.netns().path(),
            Path::new("/var/run/netns/amb-000000-pod-default_web")
        );
    }
}
