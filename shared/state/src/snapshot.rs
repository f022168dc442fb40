//! One immutable, validated and indexed view of the mesh.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ambit_model::authz::PolicyScope;
use ambit_model::{
    AuthorizationPolicy, DEFAULT_ROOT_NAMESPACE, MtlsMode, PeerAuthentication, Service,
    ServicePort, WaypointRef, Workload, effective_mtls_mode,
};

/// The mesh as one proxy sees it at one moment. Built once with [`Snapshot::new`], never
/// changed afterwards; lookups are hash-map reads.
#[derive(Debug, Clone)]
pub struct Snapshot {
    root_namespace: String,
    workloads: Vec<Arc<Workload>>,
    services: Vec<Arc<Service>>,
    policies: Vec<Arc<AuthorizationPolicy>>,
    peer_authentications: Vec<Arc<PeerAuthentication>>,
    workloads_by_ip: HashMap<IpAddr, Arc<Workload>>,
    workloads_by_uid: HashMap<String, Arc<Workload>>,
    workloads_by_name: HashMap<(String, String), Arc<Workload>>,
    services_by_vip: HashMap<IpAddr, Arc<Service>>,
    services_by_hostname: HashMap<String, Arc<Service>>,
    policies_by_namespace: HashMap<String, Vec<Arc<AuthorizationPolicy>>>,
    peer_authentications_by_namespace: HashMap<String, Vec<Arc<PeerAuthentication>>>,
}

/// What a destination address is in the mesh.
#[derive(Debug, Clone)]
pub enum Destination {
    /// A service VIP and one of its declared ports.
    Service {
        /// The service.
        service: Arc<Service>,
        /// The declared port the client connected to.
        port: ServicePort,
    },
    /// A workload's own IP.
    Workload(Arc<Workload>),
    /// Not known to the mesh (or a VIP on a port the service does not declare).
    Unknown,
}

/// A concrete workload to connect to, with the port translated for it.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// The endpoint's workload.
    pub workload: Arc<Workload>,
    /// The workload IP to use (same family as the address the client dialled, when it has one).
    pub ip: IpAddr,
    /// The target port on the workload.
    pub port: u16,
}

/// Two objects of a config conflict: e.g. the same IP on two workloads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{object}: {field}: {reason}")]
pub struct SnapshotError {
    object: String,
    field: String,
    reason: String,
}

impl Default for Snapshot {
    fn default() -> Self {
        Self {
            root_namespace: DEFAULT_ROOT_NAMESPACE.to_owned(),
            workloads: Vec::new(),
            services: Vec::new(),
            policies: Vec::new(),
            peer_authentications: Vec::new(),
            workloads_by_ip: HashMap::new(),
            workloads_by_uid: HashMap::new(),
            workloads_by_name: HashMap::new(),
            services_by_vip: HashMap::new(),
            services_by_hostname: HashMap::new(),
            policies_by_namespace: HashMap::new(),
            peer_authentications_by_namespace: HashMap::new(),
        }
    }
}

impl Snapshot {
    /// Indexes already validated objects, refusing conflicts between them: a UID or IP used by
    /// two workloads, a VIP or name used by two services, two policies with one name.
    pub fn new(
        workloads: Vec<Workload>,
        services: Vec<Service>,
        policies: Vec<AuthorizationPolicy>,
        peer_authentications: Vec<PeerAuthentication>,
    ) -> Result<Self, SnapshotError> {
        let mut snapshot = Self::default();
        for workload in workloads {
            let workload = Arc::new(workload);
            let object = || format!("Workload {}/{}", workload.namespace(), workload.name());
            if let Some(other) = snapshot
                .workloads_by_uid
                .insert(workload.uid().to_owned(), workload.clone())
            {
                return Err(SnapshotError::new(
                    object(),
                    "uid",
                    format!("{} is also the uid of {}", workload.uid(), describe(&other)),
                ));
            }
            for (i, ip) in workload.ips().iter().enumerate() {
                if let Some(other) = snapshot.workloads_by_ip.insert(*ip, workload.clone()) {
                    return Err(SnapshotError::new(
                        object(),
                        format!("ips[{i}]"),
                        format!("{ip} is also an IP of {}", describe(&other)),
                    ));
                }
            }
            snapshot
                .workloads_by_name
                .entry((workload.namespace().to_owned(), workload.name().to_owned()))
                .or_insert_with(|| workload.clone());
            snapshot.workloads.push(workload);
        }
        for service in services {
            let service = Arc::new(service);
            let object = || format!("Service {}/{}", service.namespace(), service.name());
            if snapshot
                .services_by_hostname
                .insert(service.hostname().to_owned(), service.clone())
                .is_some()
            {
                return Err(SnapshotError::new(object(), "name", "is defined twice"));
            }
            for (i, vip) in service.vips().iter().enumerate() {
                if let Some(other) = snapshot.services_by_vip.insert(*vip, service.clone()) {
                    return Err(SnapshotError::new(
                        object(),
                        format!("vips[{i}]"),
                        format!(
                            "{vip} is also a VIP of Service {}/{}",
                            other.namespace(),
                            other.name()
                        ),
                    ));
                }
                if let Some(workload) = snapshot.workloads_by_ip.get(vip) {
                    return Err(SnapshotError::new(
                        object(),
                        format!("vips[{i}]"),
                        format!("{vip} is an IP of {}", describe(workload)),
                    ));
                }
            }
            snapshot.services.push(service);
        }
        for policy in policies {
            let policy = Arc::new(policy);
            let same_namespace = snapshot
                .policies_by_namespace
                .entry(policy.namespace().to_owned())
                .or_default();
            if same_namespace.iter().any(|p| p.name() == policy.name()) {
                return Err(SnapshotError::new(
                    format!(
                        "AuthorizationPolicy {}/{}",
                        policy.namespace(),
                        policy.name()
                    ),
                    "name",
                    "is defined twice",
                ));
            }
            same_namespace.push(policy.clone());
            snapshot.policies.push(policy);
        }
        for peer_authentication in peer_authentications {
            let policy = Arc::new(peer_authentication);
            let same_namespace = snapshot
                .peer_authentications_by_namespace
                .entry(policy.namespace().to_owned())
                .or_default();
            if same_namespace.iter().any(|p| p.name() == policy.name()) {
                return Err(SnapshotError::new(
                    format!(
                        "PeerAuthentication {}/{}",
                        policy.namespace(),
                        policy.name()
                    ),
                    "name",
                    "is defined twice",
                ));
            }
            same_namespace.push(policy.clone());
            snapshot.peer_authentications.push(policy);
        }
        Ok(snapshot)
    }

    /// The same snapshot with another Istio root namespace (mesh-wide policies live there).
    pub fn with_root_namespace(mut self, root_namespace: impl Into<String>) -> Self {
        self.root_namespace = root_namespace.into();
        self
    }

    /// The Istio root namespace.
    pub fn root_namespace(&self) -> &str {
        &self.root_namespace
    }

    /// Every workload, in config order.
    pub fn workloads(&self) -> &[Arc<Workload>] {
        &self.workloads
    }

    /// Every service, in config order.
    pub fn services(&self) -> &[Arc<Service>] {
        &self.services
    }

    /// Every authorization policy, in config order.
    pub fn policies(&self) -> &[Arc<AuthorizationPolicy>] {
        &self.policies
    }

    /// Every peer authentication, in config order.
    pub fn peer_authentications(&self) -> &[Arc<PeerAuthentication>] {
        &self.peer_authentications
    }

    /// The workload owning `ip` (IPv4-mapped IPv6 is looked up as IPv4).
    pub fn workload_by_ip(&self, ip: IpAddr) -> Option<&Arc<Workload>> {
        self.workloads_by_ip.get(&canonical(ip))
    }

    /// The workload with pod UID `uid`.
    pub fn workload_by_uid(&self, uid: &str) -> Option<&Arc<Workload>> {
        self.workloads_by_uid.get(uid)
    }

    /// The workload of the enrolled pod `namespace/name` with Kubernetes UID `uid`: by UID,
    /// else by name. The node agent knows a pod by its Kubernetes UID while the controller may
    /// key workloads differently (Istio's `<cluster>//Pod/<ns>/<name>`); namespace and name
    /// identify a pod at any one moment either way.
    pub fn workload_of_pod(
        &self,
        uid: &str,
        namespace: &str,
        name: &str,
    ) -> Option<&Arc<Workload>> {
        self.workloads_by_uid.get(uid).or_else(|| {
            self.workloads_by_name
                .get(&(namespace.to_owned(), name.to_owned()))
        })
    }

    /// The service with VIP `ip`.
    pub fn service_by_vip(&self, ip: IpAddr) -> Option<&Arc<Service>> {
        self.services_by_vip.get(&canonical(ip))
    }

    /// The service named `<name>.<namespace>.svc.cluster.local`.
    pub fn service_by_hostname(&self, hostname: &str) -> Option<&Arc<Service>> {
        self.services_by_hostname.get(hostname)
    }

    /// What `addr` is: a service port (by VIP), a workload (by pod IP), or unknown.
    pub fn resolve(&self, addr: SocketAddr) -> Destination {
        if let Some(service) = self.service_by_vip(addr.ip()) {
            return match service.port(addr.port()) {
                Some(port) => Destination::Service {
                    service: service.clone(),
                    port: port.clone(),
                },
                None => Destination::Unknown,
            };
        }
        match self.workload_by_ip(addr.ip()) {
            Some(workload) => Destination::Workload(workload.clone()),
            None => Destination::Unknown,
        }
    }

    /// The waypoint traffic to `destination` must go through. The controller already chose
    /// between pod, service and namespace bindings; here a service-addressed destination takes
    /// the service's waypoint and a workload-addressed one the workload's.
    pub fn waypoint<'a>(&self, destination: &'a Destination) -> Option<&'a WaypointRef> {
        match destination {
            Destination::Service { service, .. } => service.waypoint(),
            Destination::Workload(workload) => workload.waypoint(),
            Destination::Unknown => None,
        }
    }

    /// Whether `workload` is the waypoint that traffic to `target` goes through, i.e. it may
    /// receive HBONE addressed to someone else.
    pub fn is_waypoint_for(&self, workload: &Workload, target: SocketAddr) -> bool {
        let destination = self.resolve(target);
        self.waypoint(&destination).is_some_and(|waypoint| {
            waypoint
                .addresses
                .iter()
                .any(|addr| workload.ips().contains(&canonical(addr.ip())))
        })
    }

    /// The healthy endpoints of `service` for service port `port`: endpoints whose workload is
    /// known, with the port translated to the endpoint's target port. `family_of` picks which
    /// of a dual-stack workload's IPs to use.
    pub fn endpoints(&self, service: &Service, port: u16, family_of: IpAddr) -> Vec<Upstream> {
        self.endpoints_iter(service, port, family_of).collect()
    }

    /// The `n % count`-th healthy endpoint (see [`endpoints`](Self::endpoints)) without
    /// allocating: round robin when `n` is a counter.
    pub fn pick_endpoint(
        &self,
        service: &Service,
        port: u16,
        family_of: IpAddr,
        n: usize,
    ) -> Option<Upstream> {
        let count = self.endpoints_iter(service, port, family_of).count();
        if count == 0 {
            return None;
        }
        self.endpoints_iter(service, port, family_of).nth(n % count)
    }

    /// The authorization policies ztunnel enforces for `workload`: those of its namespace and
    /// of the root namespace that apply to the whole namespace or select it by labels. Policies
    /// with `targetRefs` belong to waypoints and are left out.
    pub fn policies_for(&self, workload: &Workload) -> Vec<&Arc<AuthorizationPolicy>> {
        let own = self.policies_by_namespace.get(workload.namespace());
        let root = (workload.namespace() != self.root_namespace)
            .then(|| self.policies_by_namespace.get(&self.root_namespace))
            .flatten();
        own.into_iter()
            .chain(root)
            .flatten()
            .filter(|policy| match policy.scope() {
                PolicyScope::Namespace => true,
                PolicyScope::Selector(selector) => selector.matches(workload.labels()),
                PolicyScope::TargetRefs(_) => false,
            })
            .collect()
    }

    /// The mTLS mode in force for connections to `port` of `workload` (never UNSET).
    pub fn mtls_mode(&self, workload: &Workload, port: u16) -> MtlsMode {
        let own = self
            .peer_authentications_by_namespace
            .get(workload.namespace());
        let root = (workload.namespace() != self.root_namespace)
            .then(|| {
                self.peer_authentications_by_namespace
                    .get(&self.root_namespace)
            })
            .flatten();
        effective_mtls_mode(
            own.into_iter().chain(root).flatten().map(Arc::as_ref),
            workload,
            port,
            &self.root_namespace,
        )
    }

    fn endpoints_iter<'a>(
        &'a self,
        service: &'a Service,
        port: u16,
        family_of: IpAddr,
    ) -> impl Iterator<Item = Upstream> + 'a {
        service.endpoints().keys().filter_map(move |uid| {
            let workload = self.workloads_by_uid.get(uid)?;
            let target = service.target_port(uid, port)?;
            let ip = workload
                .ips()
                .iter()
                .find(|ip| ip.is_ipv4() == family_of.is_ipv4())
                .or_else(|| workload.ips().first())?;
            Some(Upstream {
                workload: workload.clone(),
                ip: *ip,
                port: target,
            })
        })
    }
}

impl SnapshotError {
    fn new(object: String, field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            object,
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The object in conflict, e.g. `Workload shop/web-1`.
    pub fn object(&self) -> &str {
        &self.object
    }

    /// The conflicting field, e.g. `ips[0]`.
    pub fn field(&self) -> &str {
        &self.field
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Service { service, port } => write!(f, "{}:{}", service.hostname(), port.port),
            Self::Workload(workload) => write!(f, "{}/{}", workload.namespace(), workload.name()),
            Self::Unknown => f.write_str("unknown"),
        }
    }
}

fn describe(workload: &Workload) -> String {
    format!("Workload {}/{}", workload.namespace(), workload.name())
}

/// IPv4-mapped IPv6 addresses (how dual-stack sockets report IPv4 peers) as plain IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}
