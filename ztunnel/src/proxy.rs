//! What every per-pod proxy shares: the state, certificates and policy evaluator of the node
//! ([`ProxyInputs`]), and the pod it serves ([`PodContext`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use ambit_hbone::Pool;
use ambit_identity::SpiffeId;
use ambit_policy::Authorizer;
use ambit_state::StateStore;
use socket2::SockRef;
use tokio::net::TcpStream;
use tracing::debug;

use crate::certs::PodCertificates;
use crate::inpod::PodNetns;
use crate::observe::Telemetry;

/// Node-wide inputs of the proxies, built once in `app.rs`.
#[derive(Debug)]
pub struct ProxyInputs {
    /// The mesh state (lock-free loads).
    pub state: Arc<StateStore>,
    /// Certificates of the pods on this node.
    pub certs: Arc<PodCertificates>,
    /// L4 authorization with the mesh's root namespace.
    pub authorizer: Authorizer,
    /// The trust domain of pod identities.
    pub trust_domain: String,
    /// Round-robin position over service endpoints.
    pub next_endpoint: AtomicUsize,
    /// Metrics, access log and the live-connection table.
    pub telemetry: Telemetry,
}

/// The enrolled pod one set of proxies serves.
#[derive(Debug)]
pub struct PodContext {
    /// Pod UID: the key into the state's workloads.
    pub uid: String,
    /// Pod namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// The pod's SPIFFE identity: its certificate, and the source of its HBONE connections.
    pub identity: SpiffeId,
    /// The pod's network namespace, where every ztunnel socket of this pod is made.
    pub netns: PodNetns,
    /// HBONE client connections opened from inside the pod's namespace.
    pub pool: Pool,
}

/// Ztunnel's own ports inside a pod: never a valid destination for proxied traffic.
pub const OWN_PORTS: [u16; 4] = [
    crate::inpod::OUTBOUND_PORT,
    crate::inpod::INBOUND_PLAINTEXT_PORT,
    crate::inpod::HBONE_PORT,
    crate::inpod::DNS_PORT,
];

/// IPv4-mapped IPv6 (how dual-stack sockets report IPv4 peers) as plain IPv4.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// `addr` with its IP made canonical.
pub fn canonical_addr(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(canonical_ip(addr.ip()), addr.port())
}

/// Closes `stream` with a TCP RST rather than a FIN, so the client sees a refused connection
/// instead of an orderly (and misleading) end of data.
pub fn reset(stream: TcpStream) {
    if let Err(err) = SockRef::from(&stream).set_linger(Some(std::time::Duration::ZERO)) {
        debug!(%err, "could not arm a reset; closing normally");
    }
    drop(stream);
}
