//! Outbound (15001): connections the pod's apps make, captured by the pod's rules.
//!
//! Per connection: original destination → state lookup → one of
//! - waypoint bound to the destination: HBONE to the waypoint, `:authority` = what the app
//!   dialled (VIP:port or pod IP:port), expecting the waypoint's identity;
//! - mesh workload (directly, or a service endpoint picked round robin with the service port
//!   translated to its target port): HBONE to `podIP:15008` with the source pod's certificate,
//!   expecting the destination's identity (plus the service's declared SANs);
//! - workload not enrolled: plain TCP to it;
//! - unknown destination: passthrough TCP to the original destination.
//!
//! Every socket is made inside the pod's namespace with ztunnel's mark.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use ambit_hbone::{
    ByteCounters, ConnectError, ConnectRequest, HboneStream, Target, copy_bidirectional,
};
use ambit_identity::SpiffeId;
use ambit_model::{WaypointRef, Workload};
use ambit_runtime::DrainWatch;
use ambit_state::{Destination, Snapshot};
use ambit_telemetry::{
    ErrorReason, Reporter, ResponseFlags, SecurityPolicy, TrafficLabels, WorkloadLabels,
};
use http::{HeaderValue, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};

use crate::inpod::{HBONE_PORT, connect_marked, original_destination};
use crate::observe::{TrackedConnection, service_labels, workload_labels};
use crate::proxy::{OWN_PORTS, PodContext, ProxyInputs, canonical_addr, reset};

/// Where one outbound connection goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// HBONE through `next_hop` (a ztunnel's or waypoint's `ip:15008`).
    Hbone {
        /// The HBONE server to connect to.
        next_hop: SocketAddr,
        /// The `:authority` of the CONNECT.
        target: SocketAddr,
        /// Identities the server may present.
        expected: Vec<SpiffeId>,
        /// The service hostname, when the app dialled a service (for `forwarded;host=`).
        service_host: Option<String>,
    },
    /// Plain TCP to this address.
    Tcp(SocketAddr),
    /// Refuse the connection.
    Refuse(&'static str),
}

/// An outbound connection whose upstream is open, counted in the telemetry until relayed.
#[derive(Debug)]
pub(crate) struct Opened {
    tracked: TrackedConnection,
    upstream: Upstream,
    original: SocketAddr,
}

/// The upstream side of an outbound connection.
#[derive(Debug)]
enum Upstream {
    Tcp(TcpStream),
    Hbone(HboneStream),
}

/// Why no upstream could be opened, as far as the client needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenFailure {
    /// Refused: by a rule, by the destination's policy, or by the destination itself.
    Refused,
    /// The next hop could not be reached (or did not complete mTLS).
    Unreachable,
}

/// Accepts and proxies the pod's outbound connections until the future is dropped.
/// Stops accepting once the node drains (connections already accepted go on).
pub async fn serve(listener: TcpListener, inputs: Arc<ProxyInputs>, pod: Arc<PodContext>) {
    let mut drain = node_drain(&inputs);
    loop {
        let accepted = tokio::select! {
            () = drain.draining() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                warn!(pod = %pod.name, %err, "outbound accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let (inputs, pod) = (inputs.clone(), pod.clone());
        tokio::spawn(async move {
            handle(stream, canonical_addr(peer), &inputs, &pod).await;
        });
    }
}

/// The node's drain watch, or one that never drains.
pub(crate) fn node_drain(inputs: &ProxyInputs) -> DrainWatch {
    inputs
        .telemetry
        .drain()
        .cloned()
        .unwrap_or_else(DrainWatch::never)
}

/// Decides where a connection from `client` to `original` goes.
pub fn route(snapshot: &Snapshot, original: SocketAddr, next_endpoint: usize) -> Route {
    if OWN_PORTS.contains(&original.port()) {
        return Route::Refuse("destination is a ztunnel port");
    }
    let destination = snapshot.resolve(original);
    if let Some(waypoint) = snapshot.waypoint(&destination) {
        let service_host = match &destination {
            Destination::Service { service, .. } => Some(service.hostname().to_owned()),
            _ => None,
        };
        return match waypoint_address(waypoint, original)
            .map(|address| waypoint_endpoint(snapshot, address, next_endpoint))
        {
            Some(next_hop) => Route::Hbone {
                next_hop,
                target: original,
                expected: vec![waypoint.identity.clone()],
                service_host,
            },
            None => Route::Refuse("waypoint has no address"),
        };
    }
    match destination {
        Destination::Service { service, port } => {
            match snapshot.pick_endpoint(&service, port.port, original.ip(), next_endpoint) {
                Some(upstream) => {
                    let target = SocketAddr::new(upstream.ip, upstream.port);
                    let mut expected = vec![upstream.workload.identity().clone()];
                    expected.extend(service.subject_alt_names().iter().cloned());
                    workload_route(
                        &upstream.workload,
                        target,
                        expected,
                        Some(service.hostname().to_owned()),
                    )
                }
                None => Route::Refuse("service has no healthy endpoint"),
            }
        }
        Destination::Workload(workload) => {
            let expected = vec![workload.identity().clone()];
            workload_route(&workload, original, expected, None)
        }
        Destination::Unknown => Route::Tcp(original),
    }
}

fn workload_route(
    workload: &Workload,
    target: SocketAddr,
    expected: Vec<SpiffeId>,
    service_host: Option<String>,
) -> Route {
    if workload.is_enrolled() {
        Route::Hbone {
            next_hop: SocketAddr::new(target.ip(), HBONE_PORT),
            target,
            expected,
            service_host,
        }
    } else {
        Route::Tcp(target)
    }
}

fn waypoint_address(waypoint: &WaypointRef, original: SocketAddr) -> Option<SocketAddr> {
    waypoint
        .addresses
        .iter()
        .find(|addr| addr.is_ipv4() == original.is_ipv4())
        .or_else(|| waypoint.addresses.first())
        .copied()
}

/// A waypoint's address is usually its Service's VIP, which nothing but a proxy resolves
/// (no kube-proxy rule applies to ztunnel's own marked sockets, and local mode has none):
/// a VIP known as a service becomes one of its endpoints, as for any other service.
fn waypoint_endpoint(snapshot: &Snapshot, address: SocketAddr, next_endpoint: usize) -> SocketAddr {
    match snapshot.resolve(address) {
        Destination::Service { service, port } => snapshot
            .pick_endpoint(&service, port.port, address.ip(), next_endpoint)
            .map_or(address, |upstream| {
                SocketAddr::new(upstream.ip, upstream.port)
            }),
        _ => address,
    }
}

async fn handle(mut stream: TcpStream, client: SocketAddr, inputs: &ProxyInputs, pod: &PodContext) {
    let original = match original_destination(&stream) {
        Ok(original) => canonical_addr(original),
        Err(err) => {
            warn!(pod = %pod.name, %err, "outbound connection without an original destination");
            reset(stream);
            return;
        }
    };
    match open(client, original, inputs, pod).await {
        Ok(opened) => opened.relay(&mut stream).await,
        Err(_) => reset(stream),
    }
}

/// Chooses the route of a connection from `client` (in `pod`) to `original` and opens its
/// upstream: the shared first half of captured traffic and SOCKS5. The failure is already
/// logged, counted and closed in the telemetry; the caller only answers its client.
pub(crate) async fn open(
    client: SocketAddr,
    original: SocketAddr,
    inputs: &ProxyInputs,
    pod: &PodContext,
) -> Result<Opened, OpenFailure> {
    let (route, labels) = {
        let snapshot = inputs.state.load();
        let n = inputs.next_endpoint.fetch_add(1, Ordering::Relaxed);
        let route = route(&snapshot, original, n);
        let labels = labels(&snapshot, pod, original, &route);
        (route, labels)
    };
    debug!(pod = %pod.name, %client, %original, ?route, "outbound");
    let mut tracked = inputs.telemetry.open(labels, client, original);
    let upstream = match route {
        Route::Refuse(reason) => {
            info!(pod = %pod.name, %client, %original, reason, "outbound connection refused");
            tracked.fail(ResponseFlags::CONNECT_FAILURE, reason);
            return Err(OpenFailure::Refused);
        }
        Route::Tcp(target) => match connect_marked(&pod.netns, target).await {
            Ok(upstream) => Upstream::Tcp(upstream),
            Err(err) => {
                info!(pod = %pod.name, %target, %err, "passthrough connect failed");
                tracked.fail(ResponseFlags::CONNECT_FAILURE, err.to_string());
                let refused = err.io_error_kind() == Some(std::io::ErrorKind::ConnectionRefused);
                return Err(if refused {
                    OpenFailure::Refused
                } else {
                    OpenFailure::Unreachable
                });
            }
        },
        Route::Hbone {
            next_hop,
            target,
            expected,
            service_host,
        } => {
            tracked.set_hbone_authority(target.to_string());
            let request = ConnectRequest::new(
                pod.identity.clone(),
                expected,
                next_hop,
                Target::Socket(target),
            );
            let request = with_headers(request, client, service_host.as_deref(), inputs, pod);
            match pod.pool.connect(request).await {
                Ok(tunnel) => Upstream::Hbone(tunnel),
                Err(err) => {
                    info!(pod = %pod.name, %next_hop, %target, %err, "HBONE connect failed");
                    let failure = hbone_failure(&err);
                    if let Some(reason) = failure.reason {
                        inputs.telemetry.count_error(reason);
                    }
                    tracked.fail(failure.flags, err.to_string());
                    return Err(failure.outcome);
                }
            }
        }
    };
    Ok(Opened {
        tracked,
        upstream,
        original,
    })
}

/// How a failed HBONE connect is reported.
struct HboneFailure {
    reason: Option<ErrorReason>,
    flags: ResponseFlags,
    outcome: OpenFailure,
}

/// A refusal by the destination's policy is a decision, not an error: it is flagged `DENY`
/// and not counted in `ambit_hbone_errors_total`.
fn hbone_failure(err: &ConnectError) -> HboneFailure {
    let (reason, flags, outcome) = if err.is_tls() {
        (
            Some(ErrorReason::HboneTlsHandshake),
            ResponseFlags::CONNECT_FAILURE,
            OpenFailure::Unreachable,
        )
    } else if err.is_connect() || err.is_timeout() {
        (
            Some(ErrorReason::HboneUpstreamConnect),
            ResponseFlags::CONNECT_FAILURE,
            OpenFailure::Unreachable,
        )
    } else {
        match err.status() {
            Some(StatusCode::UNAUTHORIZED) => (None, ResponseFlags::DENIED, OpenFailure::Refused),
            Some(StatusCode::BAD_REQUEST) => (
                Some(ErrorReason::HboneBadRequest),
                ResponseFlags::CONNECT_FAILURE,
                OpenFailure::Refused,
            ),
            Some(_) => (
                Some(ErrorReason::HboneUpstreamConnect),
                ResponseFlags::CONNECT_FAILURE,
                OpenFailure::Refused,
            ),
            None => (
                Some(ErrorReason::HboneH2Protocol),
                ResponseFlags::CONNECT_FAILURE,
                OpenFailure::Unreachable,
            ),
        }
    };
    HboneFailure {
        reason,
        flags,
        outcome,
    }
}

impl Opened {
    /// Copies between `stream` and the upstream until both sides are done.
    pub(crate) async fn relay(mut self, stream: &mut TcpStream) {
        let counters = self.tracked.counters();
        let result = match &mut self.upstream {
            Upstream::Tcp(upstream) => copy(stream, upstream, counters).await,
            Upstream::Hbone(tunnel) => copy(stream, tunnel, counters).await,
        };
        let original = self.original;
        match result {
            Ok(()) => debug!(
                %original,
                sent = counters.a_to_b(), received = counters.b_to_a(),
                "outbound connection done"
            ),
            Err(err) => {
                debug!(%original, %err, "outbound connection failed");
                self.tracked.set_error(err.to_string());
            }
        }
    }
}

/// The labels of an outbound connection (reporter `source`), from the same snapshot that
/// chose its route.
pub fn labels(
    snapshot: &Snapshot,
    pod: &PodContext,
    original: SocketAddr,
    route: &Route,
) -> TrafficLabels {
    let mut labels = TrafficLabels::new(Reporter::Source);
    labels.source = match snapshot.workload_of_pod(&pod.uid, &pod.namespace, &pod.name) {
        Some(workload) => workload_labels(workload),
        None => WorkloadLabels {
            workload: Some(pod.name.clone()),
            namespace: Some(pod.namespace.clone()),
            ..WorkloadLabels::default()
        }
        .with_spiffe_principal(&pod.identity.to_string()),
    };
    if let Destination::Service { service, .. } = snapshot.resolve(original) {
        labels.destination_service = service_labels(&service);
    }
    let upstream = match route {
        Route::Hbone {
            target, expected, ..
        } => {
            labels.connection_security_policy = SecurityPolicy::MutualTls;
            // Through a waypoint the peer is the waypoint, not a workload of the state.
            match snapshot.workload_by_ip(target.ip()) {
                Some(workload) => Some(workload_labels(workload)),
                None => expected
                    .first()
                    .map(|id| WorkloadLabels::default().with_spiffe_principal(&id.to_string())),
            }
        }
        Route::Tcp(target) => snapshot.workload_by_ip(target.ip()).map(|workload| {
            // Plain TCP: the peer's identity is not proven, so no principal.
            WorkloadLabels {
                principal: None,
                ..workload_labels(workload)
            }
        }),
        Route::Refuse(_) => None,
    };
    labels.destination = upstream.unwrap_or_default();
    labels
}

async fn copy<B>(
    stream: &mut TcpStream,
    upstream: &mut B,
    counters: &ByteCounters,
) -> std::io::Result<()>
where
    B: AsyncRead + AsyncWrite + Unpin,
{
    copy_bidirectional(stream, upstream, counters)
        .await
        .map(drop)
}

/// `forwarded: for="<client>"[;host=<service>]` and the source's `baggage` (DESIGN §3).
fn with_headers(
    request: ConnectRequest,
    client: SocketAddr,
    service_host: Option<&str>,
    inputs: &ProxyInputs,
    pod: &PodContext,
) -> ConnectRequest {
    let mut forwarded = format!("for=\"{client}\"");
    if let Some(host) = service_host {
        forwarded.push_str(";host=");
        forwarded.push_str(host);
    }
    let snapshot = inputs.state.load();
    let baggage = match snapshot.workload_of_pod(&pod.uid, &pod.namespace, &pod.name) {
        Some(workload) => format!(
            "k8s.namespace.name={},k8s.pod.name={},service.name={},service.version={}",
            workload.namespace(),
            workload.name(),
            workload.canonical_name(),
            workload.canonical_revision()
        ),
        None => format!(
            "k8s.namespace.name={},k8s.pod.name={}",
            pod.namespace, pod.name
        ),
    };
    let mut request = request;
    match HeaderValue::try_from(forwarded) {
        Ok(value) => request = request.with_forwarded(value),
        Err(err) => debug!(%err, "forwarded header not representable"),
    }
    match HeaderValue::try_from(baggage) {
        Ok(value) => request = request.with_baggage(value),
        Err(err) => debug!(%err, "baggage header not representable"),
    }
    request
}

#[cfg(test)]
#[path = "outbound_tests.rs"]
mod tests;
