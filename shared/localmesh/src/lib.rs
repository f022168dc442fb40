//! The whole mesh on one Linux machine, without Kubernetes or containers: the runtime behind
//! `ambit local` and `ambit demo`, and the end-to-end test bed.
//!
//! [`LocalMesh::up`] builds a netns "cluster" (`ambit-localnet`), starts `ambit-controller` in
//! the underlay namespace with a watched folder of YAML as its source, and one `ztunnel` per
//! node taking config and certificates from it. The runtime then plays the parts a cluster's
//! API server, scheduler, kubelet and CNI would: [`LocalMesh::apply`] takes the same YAML as
//! Kubernetes, creates a pod netns for each Pod (Deployments expand into Pods) and runs its
//! container's `command`/`args` as a process inside it, fills in what a cluster would (UIDs,
//! pod IPs, node placement, cluster IPs), writes the objects into the controller's folder, and
//! tells each node's ztunnel which pods are enrolled (the node agent's snapshot). A Gateway of
//! class `istio-waypoint` gets a waypoint process in its own pod netns, as the controller's
//! deployer would create a Deployment on a cluster.
//!
//! Everything the runtime starts is a child process killed with it; [`LocalMesh::down`] also
//! removes the namespaces.

#![forbid(unsafe_code)]

pub mod daemon;
pub mod objects;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use ambit_cni::client::{Client, ClientConfig};
use ambit_cni::protocol::{PodInfo, Reply, ZtunnelRequest};
use ambit_localnet::{Cluster, ClusterOptions, Netns, Pod};
use serde_json::Value;
use tokio::process::{Child, Command};
use tokio::sync::Mutex;
use tracing::{info, warn};

use crate::objects::{Object, ObjectKey, PodPlan, VipAllocator};

/// The controller's gRPC port (Istio's istiod port).
pub const CONTROLLER_GRPC_PORT: u16 = 15012;
/// The Gateway label saying which traffic a waypoint takes.
const WAYPOINT_FOR_LABEL: &str = "istio.io/waypoint-for";
/// The cluster DNS address pods are given (kind's kube-dns address).
const CLUSTER_DNS: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
/// How long a started process may take to become reachable.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How to bring a local mesh up.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MeshOptions {
    /// A label for people (netns names get a unique prefix anyway).
    pub name: String,
    /// Number of nodes, `node-1` … `node-N`.
    pub nodes: usize,
    /// Where the runtime keeps the controller's YAML folder, CA state, tokens, sockets and logs.
    pub state_dir: PathBuf,
    /// Where `ambit-controller`, `ztunnel` and `waypoint` are; also first on pods' `PATH`, so
    /// sample apps built beside them run by name.
    pub bin_dir: PathBuf,
    /// The trust domain of identities.
    pub trust_domain: String,
    /// `RUST_LOG` for the processes the runtime starts.
    pub log_level: String,
    /// Where waypoints export request spans (OTLP/gRPC, e.g. `http://10.0.0.1:4317`); none
    /// by default.
    pub waypoint_otlp_endpoint: Option<String>,
    /// The share (0 to 1) of traces waypoints sample when the caller sent no decision; the
    /// waypoint's own default when unset.
    pub waypoint_trace_sampling: Option<f64>,
}

/// A mesh running on this machine.
#[derive(Debug)]
pub struct LocalMesh {
    options: MeshOptions,
    cluster: Cluster,
    world: Mutex<World>,
}

/// What went wrong; messages name the object, node or process.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MeshError {
    /// The network namespaces could not be built or changed.
    #[error("network: {0}")]
    Net(#[from] ambit_localnet::Error),
    /// A file of the state folder could not be written or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A process could not be started or did not come up.
    #[error("{process}: {message}")]
    Process {
        /// Which process.
        process: String,
        /// What happened.
        message: String,
    },
    /// A ztunnel refused an enrollment.
    #[error("ztunnel on {node}: {message}")]
    Enroll {
        /// The node.
        node: String,
        /// ztunnel's answer.
        message: String,
    },
    /// The request does not make sense here (unknown pod, bad label).
    #[error("{0}")]
    Invalid(String),
}

/// The outcome of [`LocalMesh::apply`] or [`LocalMesh::delete`]: what was done and every
/// object refused (the others still applied).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    /// `Kind namespace/name created|configured|unchanged|deleted`.
    pub done: Vec<String>,
    /// Objects that could not be used, with file, document and field.
    pub errors: Vec<String>,
}

/// A pod as `get pods` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PodStatus {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Node.
    pub node: String,
    /// Pod IP.
    pub ip: Ipv4Addr,
    /// Whether ztunnel serves it.
    pub enrolled: bool,
    /// Whether its process runs (`None`: it has no command).
    pub running: Option<bool>,
}

/// A service as `get services` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServiceStatus {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Cluster IP (`None` when headless).
    pub cluster_ip: Option<Ipv4Addr>,
}

/// A waypoint as `get waypoints` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WaypointStatus {
    /// Namespace.
    pub namespace: String,
    /// The Gateway's name.
    pub name: String,
    /// Which traffic it takes: the Gateway's `istio.io/waypoint-for` label as written
    /// (`service` when absent, Istio's default), as `ambit waypoint list` shows on a cluster.
    pub waypoint_for: String,
    /// Its Service's cluster IP.
    pub address: Option<Ipv4Addr>,
    /// Whether its process runs.
    pub running: bool,
}

#[derive(Debug, Default)]
struct World {
    controller: Option<Child>,
    ztunnels: BTreeMap<String, Option<Child>>,
    node_tokens: BTreeMap<String, String>,
    waypoint_tokens: BTreeMap<(String, String), String>,
    /// Every applied object, as given (Deployments and Gateways included).
    applied: BTreeMap<ObjectKey, Object>,
    pods: BTreeMap<(String, String), PodEntry>,
    cluster_ips: BTreeMap<(String, String), Option<Ipv4Addr>>,
    vips: VipAllocator,
    /// Waypoint Gateway → its process.
    waypoints: BTreeMap<(String, String), Option<Child>>,
}

#[derive(Debug)]
struct PodEntry {
    plan: PodPlan,
    uid: String,
    node: String,
    ip: Ipv4Addr,
    netns: Netns,
    /// The object that made it: a Pod, a Deployment or a waypoint Gateway.
    owner: ObjectKey,
    process: Option<Child>,
    waypoint: bool,
}

impl MeshOptions {
    /// Defaults: one node, trust domain `cluster.local`, `info` logs.
    pub fn new(state_dir: impl Into<PathBuf>, bin_dir: impl Into<PathBuf>) -> Self {
        Self {
            name: "ambit-local".to_owned(),
            nodes: 1,
            state_dir: state_dir.into(),
            bin_dir: bin_dir.into(),
            trust_domain: "cluster.local".to_owned(),
            log_level: "info".to_owned(),
            waypoint_otlp_endpoint: None,
            waypoint_trace_sampling: None,
        }
    }
}

impl LocalMesh {
    /// Builds the cluster, starts the controller and one ztunnel per node; returns once every
    /// ztunnel accepts enrollments.
    pub async fn up(options: MeshOptions) -> Result<Self, MeshError> {
        if options.nodes == 0 || options.nodes > 20 {
            return Err(MeshError::Invalid(format!(
                "--nodes must be 1 to 20, got {}",
                options.nodes
            )));
        }
        for binary in ["ambit-controller", "ztunnel", "waypoint"] {
            let path = options.bin_dir.join(binary);
            if !path.is_file() {
                return Err(MeshError::Process {
                    process: binary.to_owned(),
                    message: format!(
                        "not found at {} (build the workspace: cargo build --workspace)",
                        path.display()
                    ),
                });
            }
        }
        for dir in ["objects", "controller", "tokens", "logs"] {
            create_dir(&options.state_dir.join(dir))?;
        }
        let cluster = Cluster::create_with(
            ClusterOptions::new(&options.name).state_dir(options.state_dir.join("net")),
        )
        .await?;
        let mut world = World::default();
        for i in 1..=options.nodes {
            let node = format!("node-{i}");
            cluster.add_node(&node).await?;
            world.node_tokens.insert(node.clone(), random_token());
            world.ztunnels.insert(node, None);
        }
        let mesh = Self {
            options,
            cluster,
            world: Mutex::new(world),
        };
        {
            let mut world = mesh.world.lock().await;
            mesh.write_tokens(&world)?;
            mesh.start_controller_locked(&mut world).await?;
            let nodes: Vec<String> = world.ztunnels.keys().cloned().collect();
            for node in nodes {
                mesh.start_ztunnel_locked(&mut world, &node).await?;
            }
        }
        info!(nodes = mesh.options.nodes, "local mesh up");
        Ok(mesh)
    }

    /// The options it runs with.
    pub fn options(&self) -> &MeshOptions {
        &self.options
    }

    /// The controller's gRPC address (reachable from every node).
    pub fn controller_addr(&self) -> SocketAddr {
        SocketAddr::from((self.cluster.underlay_gateway(), CONTROLLER_GRPC_PORT))
    }

    /// The root the controller's CA generated (in its state folder), which its gRPC serving
    /// certificate chains to; proxies trust the controller by it.
    pub fn controller_root_file(&self) -> PathBuf {
        self.options
            .state_dir
            .join("controller")
            .join("ca")
            .join("root-cert.pem")
    }

    /// `--controller` and its TLS flags, as every proxy the runtime starts is given them.
    fn controller_args(&self) -> [std::ffi::OsString; 4] {
        [
            "--controller".into(),
            format!("https://{}", self.controller_addr()).into(),
            "--controller-ca-file".into(),
            self.controller_root_file().into(),
        ]
    }

    /// The netns cluster (nodes and pods).
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// A pod's namespace handle, to run commands or open sockets in it.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<Pod> {
        self.cluster.pod(namespace, name)
    }

    /// Applies every object of a YAML stream (`origin` names it in errors). Refused objects
    /// are reported; the rest apply.
    pub async fn apply(&self, origin: &str, text: &str) -> ApplyReport {
        let (objects, errors) = objects::parse_documents(origin, text);
        let mut report = ApplyReport {
            errors: errors.iter().map(ToString::to_string).collect(),
            ..ApplyReport::default()
        };
        let mut world = self.world.lock().await;
        // Namespaces first, Services before the pods that back them, Gateways last: the
        // order a user would apply them in, whatever the file's order.
        let mut ordered = objects;
        ordered.sort_by_key(|o| match o.kind.as_str() {
            "Namespace" => 0,
            "ServiceAccount" => 1,
            "Service" => 2,
            "Pod" | "Deployment" => 3,
            _ if o.is_waypoint_gateway() => 5,
            _ => 4,
        });
        for object in ordered {
            let key = object.key();
            match self.apply_one(&mut world, object).await {
                Ok(outcome) => report.done.push(format!("{key} {outcome}")),
                Err(message) => report.errors.push(format!("{origin}: {key}: {message}")),
            }
        }
        if let Err(err) = self.reconcile_enrollment(&world).await {
            report.errors.push(err.to_string());
        }
        report
    }

    /// Deletes every object of a YAML stream that was applied.
    pub async fn delete(&self, origin: &str, text: &str) -> ApplyReport {
        let (objects, errors) = objects::parse_documents(origin, text);
        let mut report = ApplyReport {
            errors: errors.iter().map(ToString::to_string).collect(),
            ..ApplyReport::default()
        };
        let mut world = self.world.lock().await;
        for object in objects {
            let key = object.key();
            match self.delete_one(&mut world, &key).await {
                Ok(true) => report.done.push(format!("{key} deleted")),
                Ok(false) => report.errors.push(format!("{key}: not found")),
                Err(err) => report.errors.push(format!("{key}: {err}")),
            }
        }
        if let Err(err) = self.reconcile_enrollment(&world).await {
            report.errors.push(err.to_string());
        }
        report
    }

    /// Sets (`Some`) or removes (`None`) a label of namespace `name`, creating the Namespace
    /// object if only implied; enrollment follows live.
    pub async fn label_namespace(
        &self,
        name: &str,
        key: &str,
        value: Option<&str>,
    ) -> Result<(), MeshError> {
        objects::check_dns_label(name).map_err(MeshError::Invalid)?;
        if key.is_empty() || key.len() > 317 || value.is_some_and(|v| v.len() > 63) {
            return Err(MeshError::Invalid(format!("invalid label {key:?}")));
        }
        let mut world = self.world.lock().await;
        let key_of = ObjectKey {
            kind: "Namespace".to_owned(),
            namespace: String::new(),
            name: name.to_owned(),
        };
        let mut object = match world.applied.get(&key_of) {
            Some(object) => object.clone(),
            None => {
                let text = format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}}}\n");
                let (mut parsed, _) = objects::parse_documents("label", &text);
                parsed
                    .pop()
                    .ok_or_else(|| MeshError::Invalid(format!("namespace {name}")))?
            }
        };
        let labels = &mut object.body["metadata"]["labels"];
        if !labels.is_object() {
            *labels = Value::Object(Default::default());
        }
        match value {
            Some(value) => labels[key] = Value::String(value.to_owned()),
            None => {
                if let Some(map) = labels.as_object_mut() {
                    map.remove(key);
                }
            }
        }
        self.write_object(&object.key(), &object.body)?;
        world.applied.insert(key_of, object);
        self.reconcile_enrollment(&world).await
    }

    /// Every pod.
    pub async fn pods(&self) -> Vec<PodStatus> {
        let mut world = self.world.lock().await;
        let namespace_labels = namespace_labels(&world);
        world
            .pods
            .values_mut()
            .map(|entry| PodStatus {
                namespace: entry.plan.namespace.clone(),
                name: entry.plan.name.clone(),
                node: entry.node.clone(),
                ip: entry.ip,
                enrolled: !entry.waypoint
                    && objects::enrolled(
                        namespace_labels
                            .get(&entry.plan.namespace)
                            .unwrap_or(&BTreeMap::new()),
                        &entry.plan.labels,
                    ),
                running: entry.process.as_mut().map(is_running),
            })
            .collect()
    }

    /// Every service.
    pub async fn services(&self) -> Vec<ServiceStatus> {
        let world = self.world.lock().await;
        world
            .cluster_ips
            .iter()
            .map(|((namespace, name), ip)| ServiceStatus {
                namespace: namespace.clone(),
                name: name.clone(),
                cluster_ip: *ip,
            })
            .collect()
    }

    /// Every waypoint.
    pub async fn waypoints(&self) -> Vec<WaypointStatus> {
        let mut world = self.world.lock().await;
        let addresses = world.cluster_ips.clone();
        let World {
            waypoints, applied, ..
        } = &mut *world;
        waypoints
            .iter_mut()
            .map(|((namespace, name), process)| WaypointStatus {
                namespace: namespace.clone(),
                name: name.clone(),
                waypoint_for: applied
                    .get(&ObjectKey {
                        kind: "Gateway".to_owned(),
                        namespace: namespace.clone(),
                        name: name.clone(),
                    })
                    .and_then(|gateway| gateway.labels().remove(WAYPOINT_FOR_LABEL))
                    .unwrap_or_else(|| "service".to_owned()),
                address: addresses
                    .get(&(namespace.clone(), name.clone()))
                    .copied()
                    .flatten(),
                running: process.as_mut().is_some_and(is_running),
            })
            .collect()
    }

    /// Where a pod's process logs go.
    pub fn log_path(&self, namespace: &str, name: &str) -> PathBuf {
        self.options
            .state_dir
            .join("logs")
            .join(format!("pod-{namespace}-{name}.log"))
    }

    /// Where a node's ztunnel logs go.
    pub fn ztunnel_log_path(&self, node: &str) -> PathBuf {
        self.options
            .state_dir
            .join("logs")
            .join(format!("ztunnel-{node}.log"))
    }

    /// Kills a node's ztunnel (its pods' captured traffic then fails closed).
    pub async fn stop_ztunnel(&self, node: &str) -> Result<(), MeshError> {
        let mut world = self.world.lock().await;
        let slot = world
            .ztunnels
            .get_mut(node)
            .ok_or_else(|| MeshError::Invalid(format!("no node {node}")))?;
        if let Some(mut child) = slot.take() {
            kill(&mut child, "ztunnel").await;
        }
        Ok(())
    }

    /// Starts a node's ztunnel again and resends the node's enrollment snapshot, as the node
    /// agent does after a ztunnel restart.
    pub async fn start_ztunnel(&self, node: &str) -> Result<(), MeshError> {
        let mut world = self.world.lock().await;
        if !world.ztunnels.contains_key(node) {
            return Err(MeshError::Invalid(format!("no node {node}")));
        }
        self.start_ztunnel_locked(&mut world, node).await?;
        self.reconcile_enrollment(&world).await
    }

    /// Kills the controller (proxies keep serving their last config).
    pub async fn stop_controller(&self) {
        let mut world = self.world.lock().await;
        if let Some(mut child) = world.controller.take() {
            kill(&mut child, "controller").await;
        }
    }

    /// Starts the controller again (proxies resync).
    pub async fn start_controller(&self) -> Result<(), MeshError> {
        let mut world = self.world.lock().await;
        self.start_controller_locked(&mut world).await
    }

    /// Stops every process and removes every namespace.
    pub async fn down(self) -> Result<(), MeshError> {
        let mut world = self.world.into_inner();
        for (_, mut entry) in std::mem::take(&mut world.pods) {
            if let Some(child) = entry.process.as_mut() {
                kill(child, "pod").await;
            }
        }
        for (_, child) in std::mem::take(&mut world.waypoints) {
            if let Some(mut child) = child {
                kill(&mut child, "waypoint").await;
            }
        }
        for (_, child) in std::mem::take(&mut world.ztunnels) {
            if let Some(mut child) = child {
                kill(&mut child, "ztunnel").await;
            }
        }
        if let Some(mut child) = world.controller.take() {
            kill(&mut child, "controller").await;
        }
        self.cluster.teardown().await?;
        info!("local mesh down");
        Ok(())
    }

    async fn apply_one(&self, world: &mut World, mut object: Object) -> Result<String, String> {
        let key = object.key();
        let previous = world.applied.get(&key).cloned();
        if previous.as_ref().is_some_and(|p| p.body == object.body) {
            return Ok("unchanged".to_owned());
        }
        match (object.api_version.as_str(), object.kind.as_str()) {
            ("v1", "Pod") | ("apps/v1", "Deployment") => {
                let plans = objects::pod_plans(&object).map_err(field_message)?;
                // Replace: the simplest faithful update for pods (they are immutable anyway).
                self.remove_pods_of(world, &key).await;
                for plan in plans {
                    let name = (plan.namespace.clone(), plan.name.clone());
                    if world.pods.contains_key(&name) {
                        return Err(format!(
                            "pod {}/{} already exists (made by another object)",
                            name.0, name.1
                        ));
                    }
                    self.create_pod(world, plan, key.clone(), false)
                        .await
                        .map_err(|err| err.to_string())?;
                }
            }
            ("v1", "Service") => {
                let slot = (key.namespace.clone(), key.name.clone());
                if let Some(Some(ip)) = world.cluster_ips.get(&slot) {
                    // Keep the address across updates, as a cluster does.
                    object.body["spec"]["clusterIP"] = Value::String(ip.to_string());
                }
                let ip = objects::assign_cluster_ip(&mut object.body, &mut world.vips)
                    .map_err(field_message)?;
                world.cluster_ips.insert(slot, ip);
                self.write_object(&key, &object.body)
                    .map_err(|e| e.to_string())?;
            }
            _ if object.is_waypoint_gateway() => {
                self.write_object(&key, &object.body)
                    .map_err(|e| e.to_string())?;
                if previous.is_none() {
                    self.create_waypoint(world, &object)
                        .await
                        .map_err(|e| e.to_string())?;
                }
            }
            _ => self
                .write_object(&key, &object.body)
                .map_err(|e| e.to_string())?,
        }
        world.applied.insert(key, object);
        Ok(if previous.is_some() {
            "configured"
        } else {
            "created"
        }
        .to_owned())
    }

    async fn delete_one(&self, world: &mut World, key: &ObjectKey) -> Result<bool, MeshError> {
        let Some(object) = world.applied.remove(key) else {
            return Ok(false);
        };
        match object.kind.as_str() {
            "Pod" | "Deployment" => self.remove_pods_of(world, key).await,
            "Service" => {
                if let Some(Some(ip)) = world
                    .cluster_ips
                    .remove(&(key.namespace.clone(), key.name.clone()))
                {
                    world.vips.release(ip);
                }
                self.remove_object(key)?;
            }
            _ if object.is_waypoint_gateway() => {
                self.remove_object(key)?;
                let slot = (key.namespace.clone(), key.name.clone());
                if let Some(Some(mut child)) = world.waypoints.remove(&slot) {
                    kill(&mut child, "waypoint").await;
                }
                self.remove_pods_of(world, key).await;
                let service = ObjectKey {
                    kind: "Service".to_owned(),
                    namespace: key.namespace.clone(),
                    name: key.name.clone(),
                };
                if let Some(Some(ip)) = world.cluster_ips.remove(&slot) {
                    world.vips.release(ip);
                }
                self.remove_object(&service)?;
                world.waypoint_tokens.remove(&slot);
                self.write_tokens(world)?;
            }
            _ => self.remove_object(key)?,
        }
        Ok(true)
    }

    async fn create_pod(
        &self,
        world: &mut World,
        plan: PodPlan,
        owner: ObjectKey,
        waypoint: bool,
    ) -> Result<(), MeshError> {
        let node = match &plan.node_name {
            Some(node) if world.ztunnels.contains_key(node) => node.clone(),
            Some(node) => {
                return Err(MeshError::Invalid(format!(
                    "spec.nodeName: no node {node:?} (nodes: {})",
                    world
                        .ztunnels
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            // The least loaded node, as a scheduler spreading pods would.
            None => world
                .ztunnels
                .keys()
                .min_by_key(|node| world.pods.values().filter(|p| &p.node == *node).count())
                .cloned()
                .ok_or_else(|| MeshError::Invalid("no nodes".to_owned()))?,
        };
        let pod = self
            .cluster
            .add_pod(&node, &plan.namespace, &plan.name)
            .await?;
        let uid = random_uid();
        write_resolv_conf(pod.netns(), &plan.namespace)?;
        let body = objects::running_pod(&plan, &uid, &node, pod.ip());
        let key = ObjectKey {
            kind: "Pod".to_owned(),
            namespace: plan.namespace.clone(),
            name: plan.name.clone(),
        };
        self.write_object(&key, &body)?;
        let process = if plan.command.is_empty() {
            None
        } else {
            Some(self.start_pod_process(&plan, &pod)?)
        };
        info!(pod = %key, %node, ip = %pod.ip(), "pod running");
        world.pods.insert(
            (plan.namespace.clone(), plan.name.clone()),
            PodEntry {
                plan,
                uid,
                node,
                ip: pod.ip(),
                netns: pod.netns().clone(),
                owner,
                process,
                waypoint,
            },
        );
        Ok(())
    }

    async fn remove_pods_of(&self, world: &mut World, owner: &ObjectKey) {
        let names: Vec<(String, String)> = world
            .pods
            .iter()
            .filter(|(_, entry)| &entry.owner == owner)
            .map(|(name, _)| name.clone())
            .collect();
        for name in names {
            if let Some(mut entry) = world.pods.remove(&name) {
                if let Some(child) = entry.process.as_mut() {
                    kill(child, "pod").await;
                }
                let key = ObjectKey {
                    kind: "Pod".to_owned(),
                    namespace: name.0.clone(),
                    name: name.1.clone(),
                };
                if let Err(err) = self.remove_object(&key) {
                    warn!(pod = %key, %err, "removing the pod object");
                }
                if let Err(err) = self.cluster.remove_pod(&name.0, &name.1).await {
                    warn!(pod = %key, %err, "removing the pod netns");
                }
                let _ = std::fs::remove_dir_all(netns_etc(&entry.netns));
            }
        }
    }

    async fn create_waypoint(&self, world: &mut World, gateway: &Object) -> Result<(), MeshError> {
        let (plan, mut service) = objects::waypoint_objects(gateway);
        let slot = (plan.namespace.clone(), gateway.name.clone());
        let ip = objects::assign_cluster_ip(&mut service, &mut world.vips)
            .map_err(|(field, message)| MeshError::Invalid(format!("{field}: {message}")))?;
        world.cluster_ips.insert(slot.clone(), ip);
        let service_key = ObjectKey {
            kind: "Service".to_owned(),
            namespace: slot.0.clone(),
            name: slot.1.clone(),
        };
        self.write_object(&service_key, &service)?;
        world.waypoint_tokens.insert(slot.clone(), random_token());
        self.write_tokens(world)?;
        // The controller reads its token file at start: restart it so the new waypoint's
        // token is known (proxies keep serving meanwhile and resync).
        self.start_controller_locked(world).await?;
        let service_account = plan.service_account.clone();
        let pod_key = (plan.namespace.clone(), plan.name.clone());
        self.create_pod(world, plan, gateway.key(), true).await?;
        let netns = world
            .pods
            .get(&pod_key)
            .map(|entry| entry.netns.clone())
            .ok_or_else(|| MeshError::Invalid("waypoint pod vanished".to_owned()))?;
        let identity = format!(
            "spiffe://{}/ns/{}/sa/{}",
            self.options.trust_domain, slot.0, service_account
        );
        let token_file = self.token_path(&format!("waypoint-{}-{}", slot.0, slot.1));
        let log = self
            .options
            .state_dir
            .join("logs")
            .join(format!("waypoint-{}-{}.log", slot.0, slot.1));
        let mut command = netns.command(self.options.bin_dir.join("waypoint"));
        command
            .args(self.controller_args())
            .arg("--token-file")
            .arg(&token_file)
            .arg("--gateway")
            .arg(format!("{}/{}", slot.0, slot.1))
            .arg("--identity")
            .arg(identity);
        if let Some(endpoint) = &self.options.waypoint_otlp_endpoint {
            command.arg("--otlp-endpoint").arg(endpoint);
        }
        if let Some(ratio) = self.options.waypoint_trace_sampling {
            command.arg("--trace-sampling").arg(ratio.to_string());
        }
        let child = self.spawn(command, &log, "waypoint")?;
        world.waypoints.insert(slot, Some(child));
        Ok(())
    }

    fn start_pod_process(&self, plan: &PodPlan, pod: &Pod) -> Result<Child, MeshError> {
        let mut command = pod.netns().command(&plan.command[0]);
        command
            .args(&plan.command[1..])
            .env("PATH", self.pod_path())
            .env("POD_NAME", &plan.name)
            .env("POD_NAMESPACE", &plan.namespace)
            .env("POD_IP", pod.ip().to_string());
        for (name, value) in &plan.env {
            let value = match value {
                objects::EnvValue::Value(value) => value.clone(),
                objects::EnvValue::Field(field) => match field.as_str() {
                    "metadata.name" => plan.name.clone(),
                    "metadata.namespace" => plan.namespace.clone(),
                    "spec.nodeName" => pod.node().to_owned(),
                    "spec.serviceAccountName" => plan.service_account.clone(),
                    _ => pod.ip().to_string(),
                },
            };
            command.env(name, value);
        }
        let log = self.log_path(&plan.namespace, &plan.name);
        self.spawn(
            command,
            &log,
            &format!("pod {}/{}", plan.namespace, plan.name),
        )
    }

    async fn start_controller_locked(&self, world: &mut World) -> Result<(), MeshError> {
        if let Some(mut old) = world.controller.take() {
            kill(&mut old, "controller").await;
        }
        let dir = &self.options.state_dir;
        let mut command = self
            .cluster
            .underlay()
            .command(self.options.bin_dir.join("ambit-controller"));
        command
            .arg("--config-dir")
            .arg(dir.join("objects"))
            .arg("--state-dir")
            .arg(dir.join("controller"))
            .arg("--node-tokens")
            .arg(dir.join("tokens.yaml"))
            .arg("--grpc-addr")
            .arg(self.controller_addr().to_string())
            // Proxies reach it by IP: the serving certificate names that IP.
            .arg("--grpc-ip-san")
            .arg(self.controller_addr().ip().to_string())
            .arg("--trust-domain")
            .arg(&self.options.trust_domain);
        let log = dir.join("logs").join("controller.log");
        let child = self.spawn(command, &log, "ambit-controller")?;
        world.controller = Some(child);
        // Up once its gRPC port answers; ztunnels would retry anyway, but a clear error here
        // beats a mesh that never becomes ready.
        let underlay = self.cluster.underlay();
        let addr = self.controller_addr();
        let reachable = tokio::time::timeout(START_TIMEOUT, async {
            loop {
                if underlay.connect_tcp(addr).await.is_ok() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        if reachable.is_err() {
            return Err(MeshError::Process {
                process: "ambit-controller".to_owned(),
                message: format!(
                    "not listening on {addr} after {START_TIMEOUT:?}; see {}",
                    log.display()
                ),
            });
        }
        Ok(())
    }

    async fn start_ztunnel_locked(&self, world: &mut World, node: &str) -> Result<(), MeshError> {
        if let Some(Some(mut old)) = world.ztunnels.remove(node) {
            kill(&mut old, "ztunnel").await;
        }
        let netns = self
            .cluster
            .node(node)
            .ok_or_else(|| MeshError::Invalid(format!("no node {node}")))?
            .netns()
            .clone();
        let socket = self.agent_socket(node);
        let mut command = netns.command(self.options.bin_dir.join("ztunnel"));
        command
            .args(self.controller_args())
            .arg("--token-file")
            .arg(self.token_path(&format!("node-{node}")))
            .arg("--node")
            .arg(node)
            .arg("--node-agent-socket")
            .arg(&socket);
        // The socket of a previous run must not count as this one being up.
        let _ = std::fs::remove_file(&socket);
        let log = self.ztunnel_log_path(node);
        let child = self.spawn(command, &log, &format!("ztunnel on {node}"))?;
        world.ztunnels.insert(node.to_owned(), Some(child));
        let up = tokio::time::timeout(START_TIMEOUT, async {
            while !socket.exists() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        if up.is_err() {
            return Err(MeshError::Process {
                process: format!("ztunnel on {node}"),
                message: format!("no node-agent socket; see {}", log.display()),
            });
        }
        Ok(())
    }

    /// Sends every node's ztunnel the pods it must serve now.
    async fn reconcile_enrollment(&self, world: &World) -> Result<(), MeshError> {
        let namespace_labels = namespace_labels(world);
        let empty = BTreeMap::new();
        let mut first_error = None;
        for (node, ztunnel) in &world.ztunnels {
            if ztunnel.is_none() {
                continue;
            }
            let pods: Vec<PodInfo> = world
                .pods
                .values()
                .filter(|entry| &entry.node == node && !entry.waypoint)
                .filter(|entry| {
                    objects::enrolled(
                        namespace_labels
                            .get(&entry.plan.namespace)
                            .unwrap_or(&empty),
                        &entry.plan.labels,
                    )
                })
                .map(|entry| PodInfo {
                    uid: entry.uid.clone(),
                    namespace: entry.plan.namespace.clone(),
                    name: entry.plan.name.clone(),
                    service_account: entry.plan.service_account.clone(),
                    netns: entry.netns.path().display().to_string(),
                })
                .collect();
            if let Err(err) = send_snapshot(node, self.agent_socket(node), pods).await {
                warn!(%err, "enrollment snapshot refused");
                first_error.get_or_insert(err);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn spawn(&self, mut command: Command, log: &Path, what: &str) -> Result<Child, MeshError> {
        let file = std::fs::File::create(log).map_err(|source| MeshError::Io {
            path: log.to_owned(),
            source,
        })?;
        let err_file = file.try_clone().map_err(|source| MeshError::Io {
            path: log.to_owned(),
            source,
        })?;
        command
            .env("RUST_LOG", &self.options.log_level)
            .stdin(Stdio::null())
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(err_file))
            .kill_on_drop(true);
        command.spawn().map_err(|err| MeshError::Process {
            process: what.to_owned(),
            message: format!("cannot start: {err}"),
        })
    }

    fn write_tokens(&self, world: &World) -> Result<(), MeshError> {
        let mut yaml = String::from("nodes:\n");
        for (node, token) in &world.node_tokens {
            yaml.push_str(&format!("  {node}: {token}\n"));
            write_file(&self.token_path(&format!("node-{node}")), token)?;
        }
        yaml.push_str("waypoints:\n");
        if world.waypoint_tokens.is_empty() {
            yaml.truncate(yaml.len() - "waypoints:\n".len());
        }
        for ((namespace, name), token) in &world.waypoint_tokens {
            yaml.push_str(&format!("  {namespace}/{name}: {token}\n"));
            write_file(
                &self.token_path(&format!("waypoint-{namespace}-{name}")),
                token,
            )?;
        }
        write_file(&self.options.state_dir.join("tokens.yaml"), &yaml)
    }

    fn token_path(&self, name: &str) -> PathBuf {
        self.options.state_dir.join("tokens").join(name)
    }

    fn agent_socket(&self, node: &str) -> PathBuf {
        self.options.state_dir.join(format!("{node}.sock"))
    }

    fn object_path(&self, key: &ObjectKey) -> PathBuf {
        let namespace = if key.namespace.is_empty() {
            "_cluster"
        } else {
            &key.namespace
        };
        self.options.state_dir.join("objects").join(format!(
            "{}.{}.{}.yaml",
            key.kind.to_lowercase(),
            namespace,
            key.name
        ))
    }

    fn write_object(&self, key: &ObjectKey, body: &Value) -> Result<(), MeshError> {
        let path = self.object_path(key);
        let yaml = serde_yaml_ng::to_string(body).map_err(|err| MeshError::Io {
            path: path.clone(),
            source: std::io::Error::other(err),
        })?;
        write_file(&path, &yaml)
    }

    fn remove_object(&self, key: &ObjectKey) -> Result<(), MeshError> {
        let path = self.object_path(key);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(MeshError::Io { path, source }),
        }
    }

    fn pod_path(&self) -> std::ffi::OsString {
        let mut dirs = vec![self.options.bin_dir.clone()];
        if let Some(path) = std::env::var_os("PATH") {
            dirs.extend(std::env::split_paths(&path));
        }
        std::env::join_paths(dirs).unwrap_or_default()
    }
}

fn namespace_labels(world: &World) -> BTreeMap<String, BTreeMap<String, String>> {
    world
        .applied
        .values()
        .filter(|o| o.kind == "Namespace")
        .map(|o| (o.name.clone(), o.labels()))
        .collect()
}

async fn send_snapshot(node: &str, socket: PathBuf, pods: Vec<PodInfo>) -> Result<(), MeshError> {
    let node_name = node.to_owned();
    let reply = tokio::task::spawn_blocking(move || {
        let config = ClientConfig {
            connect_timeout: Duration::from_secs(5),
            call_timeout: Duration::from_secs(60),
        };
        let mut client = Client::<ZtunnelRequest>::connect(&socket, &config)?;
        client.call(&ZtunnelRequest::Snapshot { pods })
    })
    .await
    .map_err(|err| MeshError::Enroll {
        node: node_name.clone(),
        message: err.to_string(),
    })?
    .map_err(|err| MeshError::Enroll {
        node: node_name.clone(),
        message: err.to_string(),
    })?;
    match reply {
        Reply::Ack { .. } => Ok(()),
        Reply::Error { kind, message } => Err(MeshError::Enroll {
            node: node_name,
            message: format!("{kind:?}: {message}"),
        }),
    }
}

/// `/etc/netns/<name>`: `ip netns exec` bind-mounts its files over `/etc`.
fn netns_etc(netns: &Netns) -> PathBuf {
    Path::new("/etc/netns").join(netns.name())
}

/// The pod's `/etc/resolv.conf`, as the kubelet writes it: the namespace's search path, and a
/// nameserver that ztunnel's DNS proxy answers for enrolled pods (it captures port 53 to any
/// address). Unenrolled pods have no DNS server in local mode: nothing else serves one.
fn write_resolv_conf(netns: &Netns, namespace: &str) -> Result<(), MeshError> {
    let dir = netns_etc(netns);
    create_dir(&dir)?;
    let text = format!(
        "search {namespace}.svc.cluster.local svc.cluster.local cluster.local\n\
         nameserver {CLUSTER_DNS}\n\
         options ndots:5\n"
    );
    write_file(&dir.join("resolv.conf"), &text)
}

fn is_running(child: &mut Child) -> bool {
    matches!(child.try_wait(), Ok(None))
}

async fn kill(child: &mut Child, what: &str) {
    if let Err(err) = child.kill().await {
        warn!(process = what, %err, "kill failed");
    }
}

fn field_message((field, message): (String, String)) -> String {
    format!("{field}: {message}")
}

fn create_dir(path: &Path) -> Result<(), MeshError> {
    std::fs::create_dir_all(path).map_err(|source| MeshError::Io {
        path: path.to_owned(),
        source,
    })
}

fn write_file(path: &Path, text: &str) -> Result<(), MeshError> {
    // Write then rename: the controller's folder watcher never reads half a file.
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|source| MeshError::Io {
            path: path.to_owned(),
            source,
        })
}

fn random_token() -> String {
    (0..32)
        .map(|_| char::from_digit(rand::random_range(0..16u32), 16).unwrap_or('0'))
        .collect()
}

fn random_uid() -> String {
    let hex = random_token();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}
