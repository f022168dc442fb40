//! The waypoint's view of the mesh, from a static YAML file, as an immutable [`Snapshot`].
//!
//! The file holds the model objects the controller would push (services, workloads,
//! authorization policies, HTTP routes) plus a few waypoint settings. Every object is
//! validated by the model on load, so an error names the object and the field; the YAML
//! parser adds the line. [`ConfigWatcher`] polls the file and swaps in a new snapshot when it
//! changes; a file that fails to load is logged and the last good snapshot stays in force.
//! The data path only ever loads the current `Arc<Snapshot>` (never a lock).
//!
//! ```yaml
//! waypoint: { name: waypoint, namespace: shop }   # the Gateway, for targetRefs
//! endpointHbonePort: 15008                        # where endpoints' ztunnels listen
//! services: [ ... ]       # ambit_model::ServiceSpec
//! workloads: [ ... ]      # ambit_model::WorkloadSpec
//! policies: [ ... ]       # {name, namespace, spec: AuthorizationPolicy spec}
//! routes: [ ... ]         # {name, namespace, spec: HTTPRoute spec}
//! destinationRules: [ ... ]  # {name, namespace, spec: DestinationRule spec}
//! localRateLimits: [ ... ]   # {name, namespace, spec: LocalRateLimit spec} (docs/ratelimit.md)
//! grpcRoutes: [ ... ]     # {name, namespace, spec: GRPCRoute spec}
//! virtualServices: [ ... ] # {name, namespace, spec: VirtualService spec (HTTP part)}
//! requestAuthentications: [ ... ]  # {name, namespace, spec: RequestAuthentication spec}
//! ```
//!
//! The controller's push (`--controller`) produces the same [`ConfigFile`] from its stream
//! (see [`crate::controller`]), so both sources share this validation.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, SystemTime};

use ambit_model::{
    AuthorizationPolicy, DestinationRule, GrpcRoute, HttpRoute, LocalRateLimit,
    RequestAuthentication, Service, VirtualService, Workload,
};
use arc_swap::ArcSwap;
use serde::Deserialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::route::RouteTable;

/// The HBONE port of a ztunnel inside each pod's network namespace.
pub const DEFAULT_HBONE_PORT: u16 = 15008;

/// The config file as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigFile {
    /// The waypoint's own Gateway: policies with a `targetRefs` to it apply to all traffic.
    #[serde(default)]
    pub waypoint: Option<GatewayName>,
    /// The port endpoints' ztunnels accept HBONE on (15008; tests point it elsewhere).
    #[serde(default)]
    pub endpoint_hbone_port: Option<u16>,
    /// Per pod IP, where its ztunnel's HBONE listener is, overriding `podIP:endpointHbonePort`
    /// (tests and local setups where several "ztunnels" share one address).
    #[serde(default)]
    pub hbone_address_overrides: BTreeMap<IpAddr, SocketAddr>,
    /// Services the waypoint serves and routes to.
    #[serde(default)]
    pub services: Vec<Service>,
    /// Workloads behind those services.
    #[serde(default)]
    pub workloads: Vec<Workload>,
    /// Authorization policies; only those with `targetRefs` to a service or this waypoint
    /// are enforced here.
    #[serde(default)]
    pub policies: Vec<AuthorizationPolicy>,
    /// HTTP routes with Service parents.
    #[serde(default)]
    pub routes: Vec<HttpRoute>,
    /// Destination rules (load balancing, connection pools, outlier detection, subsets).
    #[serde(default)]
    pub destination_rules: Vec<DestinationRule>,
    /// Local rate limits on services or on this waypoint.
    #[serde(default)]
    pub local_rate_limits: Vec<LocalRateLimit>,
    /// gRPC routes with Service parents.
    #[serde(default)]
    pub grpc_routes: Vec<GrpcRoute>,
    /// VirtualServices; a service with an HTTPRoute or GRPCRoute ignores them.
    #[serde(default)]
    pub virtual_services: Vec<VirtualService>,
    /// JWT rules; only those with `targetRefs` to a service or this waypoint apply here.
    #[serde(default)]
    pub request_authentications: Vec<RequestAuthentication>,
}

/// `namespace/name` of a Gateway.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayName {
    /// Gateway name.
    pub name: String,
    /// Gateway namespace.
    pub namespace: String,
}

/// `namespace/name` of a service.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// A service with its per-snapshot balancing state.
#[derive(Debug)]
pub struct ServiceEntry {
    /// The model service.
    pub service: Service,
    /// Round-robin cursor over the service's endpoints.
    pub(crate) cursor: AtomicUsize,
}

/// One consistent view of the configuration, with lookup indexes.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Increases with every successful load.
    pub generation: u64,
    /// The waypoint's own Gateway.
    pub waypoint: Option<GatewayName>,
    hbone_port: u16,
    hbone_overrides: BTreeMap<IpAddr, SocketAddr>,
    services: HashMap<ServiceKey, Arc<ServiceEntry>>,
    by_vip: HashMap<SocketAddr, ServiceKey>,
    workloads: HashMap<String, Arc<Workload>>,
    workloads_by_ip: HashMap<IpAddr, Arc<Workload>>,
    policies: Vec<AuthorizationPolicy>,
    routes: RouteTable,
    /// The routes as configured, for the config dump.
    route_specs: Vec<HttpRoute>,
    /// Destination rules by the service their host names.
    destination_rules: HashMap<ServiceKey, Arc<DestinationRule>>,
    local_rate_limits: Vec<Arc<LocalRateLimit>>,
    grpc_route_specs: Vec<GrpcRoute>,
    virtual_service_specs: Vec<VirtualService>,
    request_authentications: Vec<RequestAuthentication>,
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("config {path}: {kind}")]
pub struct ConfigError {
    path: String,
    kind: ConfigErrorKind,
}

#[derive(Debug, thiserror::Error)]
enum ConfigErrorKind {
    #[error("cannot read: {0}")]
    Read(#[source] std::io::Error),
    #[error("{0}")]
    Parse(#[source] serde_yaml_ng::Error),
    #[error("{0}")]
    Invalid(String),
}

/// The current snapshot, swapped atomically on reload.
#[derive(Debug, Clone)]
pub struct ConfigHandle {
    current: Arc<ArcSwap<Snapshot>>,
    generation: Arc<watch::Sender<u64>>,
}

/// Polls a config file and publishes each good version to a [`ConfigHandle`].
#[derive(Debug)]
pub struct ConfigWatcher {
    task: JoinHandle<()>,
}

impl Snapshot {
    /// Indexes `file`; refuses duplicate services, workloads and VIP:port pairs.
    pub fn build(file: ConfigFile, generation: u64) -> Result<Self, String> {
        let mut services = HashMap::new();
        let mut by_vip = HashMap::new();
        for (i, service) in file.services.into_iter().enumerate() {
            let key = ServiceKey {
                namespace: service.namespace().to_owned(),
                name: service.name().to_owned(),
            };
            for vip in service.vips() {
                for port in service.ports() {
                    let addr = SocketAddr::new(*vip, port.port);
                    if let Some(other) = by_vip.insert(addr, key.clone()) {
                        return Err(format!(
                            "services[{i}]: {addr} is also a VIP of {}/{}",
                            other.namespace, other.name
                        ));
                    }
                }
            }
            let entry = ServiceEntry {
                service,
                cursor: AtomicUsize::new(0),
            };
            if services.insert(key.clone(), Arc::new(entry)).is_some() {
                return Err(format!(
                    "services[{i}]: {}/{} is listed twice",
                    key.namespace, key.name
                ));
            }
        }
        let mut workloads = HashMap::new();
        let mut workloads_by_ip = HashMap::new();
        for (i, workload) in file.workloads.into_iter().enumerate() {
            let workload = Arc::new(workload);
            for ip in workload.ips() {
                // Several test "pods" may share 127.0.0.1; the first one keeps the address.
                workloads_by_ip
                    .entry(*ip)
                    .or_insert_with(|| workload.clone());
            }
            if workloads
                .insert(workload.uid().to_owned(), workload.clone())
                .is_some()
            {
                return Err(format!(
                    "workloads[{i}]: uid {:?} is listed twice",
                    workload.uid()
                ));
            }
        }
        let mut destination_rules: HashMap<ServiceKey, Arc<DestinationRule>> = HashMap::new();
        for (i, rule) in file.destination_rules.into_iter().enumerate() {
            let Some((namespace, name)) = rule.service() else {
                // Hosts outside the cluster domain never reach a waypoint.
                warn!(rule = rule.name(), host = %rule.spec().host, "destinationRules[{i}]: host is not an in-cluster service; ignored");
                continue;
            };
            let key = ServiceKey {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            };
            if let Some(other) = destination_rules.insert(key.clone(), Arc::new(rule)) {
                return Err(format!(
                    "destinationRules[{i}]: {}/{} already has the destination rule {}/{}",
                    key.namespace,
                    key.name,
                    other.namespace(),
                    other.name()
                ));
            }
        }
        let routes =
            RouteTable::build_all(&file.routes, &file.grpc_routes, &file.virtual_services)?;
        Ok(Self {
            generation,
            waypoint: file.waypoint,
            hbone_port: file.endpoint_hbone_port.unwrap_or(DEFAULT_HBONE_PORT),
            hbone_overrides: file.hbone_address_overrides,
            services,
            by_vip,
            workloads,
            workloads_by_ip,
            policies: file.policies,
            routes,
            route_specs: file.routes,
            destination_rules,
            local_rate_limits: file.local_rate_limits.into_iter().map(Arc::new).collect(),
            grpc_route_specs: file.grpc_routes,
            virtual_service_specs: file.virtual_services,
            request_authentications: file.request_authentications,
        })
    }

    /// The whole snapshot as JSON, for the admin server's `/config_dump`; entries are sorted
    /// so two dumps of the same config are equal.
    pub fn dump(&self) -> serde_json::Value {
        let mut services: Vec<_> = self.services.iter().collect();
        services.sort_by(|a, b| a.0.cmp(b.0));
        let mut workloads: Vec<_> = self.workloads.iter().collect();
        workloads.sort_by(|a, b| a.0.cmp(b.0));
        let mut rules: Vec<_> = self.destination_rules.iter().collect();
        rules.sort_by(|a, b| a.0.cmp(b.0));
        let rules: Vec<&DestinationRule> = rules.iter().map(|(_, r)| &***r).collect();
        serde_json::json!({
            "generation": self.generation,
            "waypoint": self.waypoint.as_ref().map(|w| format!("{}/{}", w.namespace, w.name)),
            "endpointHbonePort": self.hbone_port,
            "hboneAddressOverrides": self.hbone_overrides,
            "services": services.iter().map(|(_, e)| &e.service).collect::<Vec<_>>(),
            "workloads": workloads.iter().map(|(_, w)| &***w).collect::<Vec<_>>(),
            "policies": self.policies,
            "routes": self.route_specs,
            "destinationRules": rules,
            "localRateLimits": self.local_rate_limits.iter().map(|r| &**r).collect::<Vec<_>>(),
            "grpcRoutes": self.grpc_route_specs,
            "virtualServices": self.virtual_service_specs,
            "requestAuthentications": self.request_authentications,
        })
    }

    /// The service with a VIP and port equal to `addr`.
    pub fn service_by_vip(&self, addr: SocketAddr) -> Option<&Arc<ServiceEntry>> {
        self.by_vip
            .get(&addr)
            .and_then(|key| self.services.get(key))
    }

    /// The service `namespace/name`.
    pub fn service(&self, key: &ServiceKey) -> Option<&Arc<ServiceEntry>> {
        self.services.get(key)
    }

    /// All services.
    pub fn services(&self) -> impl Iterator<Item = &Arc<ServiceEntry>> {
        self.services.values()
    }

    /// The workload with pod UID `uid`.
    pub fn workload(&self, uid: &str) -> Option<&Arc<Workload>> {
        self.workloads.get(uid)
    }

    /// The workload with pod IP `ip`.
    pub fn workload_by_ip(&self, ip: IpAddr) -> Option<&Arc<Workload>> {
        self.workloads_by_ip.get(&ip)
    }

    /// All authorization policies of the file.
    pub fn policies(&self) -> &[AuthorizationPolicy] {
        &self.policies
    }

    /// All RequestAuthentications of the file.
    pub fn request_authentications(&self) -> &[RequestAuthentication] {
        &self.request_authentications
    }

    /// The compiled routes.
    pub fn routes(&self) -> &RouteTable {
        &self.routes
    }

    /// The destination rule for service `key`, if any.
    pub fn destination_rule(&self, key: &ServiceKey) -> Option<&Arc<DestinationRule>> {
        self.destination_rules.get(key)
    }

    /// All local rate limits, in file order.
    pub fn local_rate_limits(&self) -> &[Arc<LocalRateLimit>] {
        &self.local_rate_limits
    }

    /// Where the ztunnel of the pod with IP `ip` takes HBONE.
    pub fn hbone_address(&self, ip: IpAddr) -> SocketAddr {
        self.hbone_overrides
            .get(&ip)
            .copied()
            .unwrap_or(SocketAddr::new(ip, self.hbone_port))
    }
}

impl ServiceKey {
    /// The key of `service`.
    pub fn of(service: &Service) -> Self {
        Self {
            namespace: service.namespace().to_owned(),
            name: service.name().to_owned(),
        }
    }
}

impl ConfigError {
    /// Whether the file could not be read at all (as opposed to being invalid).
    pub fn is_read(&self) -> bool {
        matches!(self.kind, ConfigErrorKind::Read(_))
    }
}

/// Parses and indexes YAML text.
pub fn parse(text: &str, generation: u64) -> Result<Snapshot, String> {
    let file: ConfigFile = serde_yaml_ng::from_str(text).map_err(|err| err.to_string())?;
    Snapshot::build(file, generation)
}

/// Reads, parses and indexes the file at `path`.
pub fn load(path: &Path, generation: u64) -> Result<Snapshot, ConfigError> {
    let err = |kind| ConfigError {
        path: path.display().to_string(),
        kind,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(ConfigErrorKind::Read(e)))?;
    let file: ConfigFile =
        serde_yaml_ng::from_str(&text).map_err(|e| err(ConfigErrorKind::Parse(e)))?;
    Snapshot::build(file, generation).map_err(|e| err(ConfigErrorKind::Invalid(e)))
}

impl ConfigHandle {
    /// A handle whose first snapshot is `initial`.
    pub fn new(initial: Snapshot) -> Self {
        let (sender, _) = watch::channel(initial.generation);
        Self {
            current: Arc::new(ArcSwap::from_pointee(initial)),
            generation: Arc::new(sender),
        }
    }

    /// The current snapshot.
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Makes `snapshot` the current one (its generation should exceed the current one's).
    pub fn publish(&self, snapshot: Snapshot) {
        let generation = snapshot.generation;
        self.current.store(Arc::new(snapshot));
        self.generation.send_replace(generation);
    }

    /// Waits until a snapshot with a generation of at least `generation` is in force.
    pub async fn wait_for_generation(&self, generation: u64) {
        let mut receiver = self.generation.subscribe();
        // The sender lives as long as `self`, so this cannot fail while we wait.
        let _ = receiver.wait_for(|g| *g >= generation).await;
    }
}

impl ConfigWatcher {
    /// Loads `path` once (failing if it is unusable), then polls it every `interval` and
    /// publishes each new good version.
    pub fn start(path: PathBuf, interval: Duration) -> Result<(Self, ConfigHandle), ConfigError> {
        let handle = ConfigHandle::new(load(&path, 1)?);
        let task = tokio::spawn(poll_file(path, interval, handle.clone()));
        Ok((Self { task }, handle))
    }
}

impl Drop for ConfigWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What identifies a version of the file without reading it.
fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

async fn poll_file(path: PathBuf, interval: Duration, handle: ConfigHandle) {
    let mut last = stamp(&path);
    let mut generation = handle.load().generation;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let now = stamp(&path);
        if now == last {
            continue;
        }
        last = now;
        match load(&path, generation + 1) {
            Ok(snapshot) => {
                generation += 1;
                info!(path = %path.display(), generation, "configuration reloaded");
                handle.publish(snapshot);
            }
            Err(err) => warn!(%err, "configuration not reloaded; keeping the last good one"),
        }
    }
}

#[cfg(test)]
mod tests;
