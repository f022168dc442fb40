//! Inbound HBONE (15008): mTLS tunnels into the pod.
//!
//! Per CONNECT: the `:authority` must be this pod (unless this pod is the target's waypoint)
//! → `400`; L4 authorization with the peer's SPIFFE identity → `401` on deny; connect to the
//! app inside the pod's namespace under the client's own IP → `503` if that fails; only then
//! `200`, and bytes are copied until both sides are done.

use std::net::SocketAddr;
use std::sync::Arc;

use ambit_hbone::{
    ConnectionError, DrainSignal, InboundRequest, Responder, Server, ServerConfig, Target,
    copy_bidirectional,
};
use ambit_identity::SpiffeId;
use ambit_policy::Connection;
use ambit_telemetry::{
    ErrorReason, Reporter, ResponseFlags, SecurityPolicy, TrafficLabels, WorkloadLabels,
};
use http::{HeaderMap, HeaderValue, StatusCode};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::inpod::connect_marked_from;
use crate::observe::{service_labels, workload_labels};
use crate::proxy::{OWN_PORTS, PodContext, ProxyInputs, canonical_addr, canonical_ip};

/// Pause after a failed accept (e.g. out of file descriptors) before trying again.
const ACCEPT_ERROR_BACKOFF: std::time::Duration = std::time::Duration::from_millis(50);

/// Why a tunnel was refused before reaching the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The target is not this pod (and this pod is not its waypoint), or is a ztunnel port.
    WrongDestination,
    /// The destination workload is not in the config yet.
    UnknownWorkload,
    /// Denied by an AuthorizationPolicy.
    Denied,
}

/// Serves HBONE on `listener` with the pod's certificate until the future is dropped; `drain`
/// sends GOAWAY on every connection.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    inputs: Arc<ProxyInputs>,
    pod: Arc<PodContext>,
    drain: DrainSignal,
) {
    let telemetry = inputs.telemetry.clone();
    let handler = move |request: InboundRequest, responder: Responder| {
        let (inputs, pod) = (inputs.clone(), pod.clone());
        async move { handle(request, responder, &inputs, &pod).await }
    };
    let server = Server::new(tls, handler, ServerConfig::default());
    // Our own accept loop rather than `Server::serve`, to count failed connections by reason.
    let mut drain = drain;
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            () = drain.draining() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((tcp, remote)) => {
                    let (server, drain, telemetry) = (server.clone(), drain.clone(), telemetry.clone());
                    connections.spawn(async move {
                        if let Err(err) = server.serve_connection(tcp, drain).await {
                            info!(%remote, %err, "HBONE connection closed with an error");
                            telemetry.count_error(connection_error_reason(&err));
                        }
                    });
                }
                Err(err) => {
                    warn!(%err, "accepting an HBONE connection failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                }
            },
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// The `ambit_hbone_errors_total` reason of a failed inbound connection.
fn connection_error_reason(err: &ConnectionError) -> ErrorReason {
    if err.is_tls() || err.is_timeout() {
        ErrorReason::HboneTlsHandshake
    } else {
        ErrorReason::HboneH2Protocol
    }
}

/// The checks before connecting upstream: destination and policy.
pub fn admit(
    inputs: &ProxyInputs,
    pod: &PodContext,
    local: SocketAddr,
    remote: SocketAddr,
    target: SocketAddr,
    peer: &ambit_identity::SpiffeId,
) -> Result<(), Refusal> {
    if OWN_PORTS.contains(&target.port()) {
        return Err(Refusal::WrongDestination);
    }
    let snapshot = inputs.state.load();
    let Some(workload) = snapshot.workload_of_pod(&pod.uid, &pod.namespace, &pod.name) else {
        return Err(Refusal::UnknownWorkload);
    };
    // The connection arrived on this pod's address; the target must be one of its IPs.
    let own = target.ip() == canonical_ip(local.ip()) || workload.ips().contains(&target.ip());
    if !own && !snapshot.is_waypoint_for(workload, target) {
        return Err(Refusal::WrongDestination);
    }
    let connection = Connection {
        source_identity: Some(peer.clone()),
        source_ip: canonical_ip(remote.ip()),
        destination_ip: target.ip(),
        destination_port: target.port(),
    };
    let decision = inputs.authorizer.evaluate_l4(
        snapshot.policies_for(workload).into_iter().map(Arc::as_ref),
        workload,
        &connection,
    );
    if decision.is_allowed() {
        Ok(())
    } else {
        info!(pod = %pod.name, peer = %peer, %target, ?decision, "HBONE connection denied by policy");
        Err(Refusal::Denied)
    }
}

async fn handle(
    request: InboundRequest,
    responder: Responder,
    inputs: &ProxyInputs,
    pod: &PodContext,
) {
    let Target::Socket(target) = request.target().clone() else {
        debug!(pod = %pod.name, target = %request.target(), "HBONE target is a hostname");
        inputs.telemetry.count_error(ErrorReason::HboneBadRequest);
        responder.reject(StatusCode::BAD_REQUEST);
        return;
    };
    let target = canonical_addr(target);
    let remote = canonical_addr(request.remote_addr());
    let labels = labels(
        inputs,
        pod,
        remote,
        request.peer_identity(),
        request.headers(),
    );
    let mut tracked = inputs.telemetry.open(labels, remote, target);
    tracked.set_hbone_authority(target.to_string());
    if let Err(refusal) = admit(
        inputs,
        pod,
        request.local_addr(),
        remote,
        target,
        request.peer_identity(),
    ) {
        let (status, flags) = match refusal {
            Refusal::WrongDestination => (StatusCode::BAD_REQUEST, ResponseFlags::CONNECT_FAILURE),
            Refusal::UnknownWorkload => (
                StatusCode::SERVICE_UNAVAILABLE,
                ResponseFlags::CONNECT_FAILURE,
            ),
            Refusal::Denied => (StatusCode::UNAUTHORIZED, ResponseFlags::DENIED),
        };
        if refusal == Refusal::WrongDestination {
            inputs.telemetry.count_error(ErrorReason::HboneBadRequest);
        }
        tracked.fail(flags, format!("{refusal:?}"));
        responder.reject(status);
        return;
    }
    // The app sees the client's IP, as it would without the mesh.
    let source = SocketAddr::new(remote.ip(), 0);
    let mut upstream = match connect_marked_from(&pod.netns, source, target).await {
        Ok(upstream) => upstream,
        Err(err) => {
            info!(pod = %pod.name, %target, %err, "app unreachable");
            inputs
                .telemetry
                .count_error(ErrorReason::HboneUpstreamConnect);
            tracked.fail(ResponseFlags::CONNECT_FAILURE, err.to_string());
            responder.reject(StatusCode::SERVICE_UNAVAILABLE);
            return;
        }
    };
    let mut headers = HeaderMap::new();
    let baggage = format!(
        "k8s.namespace.name={},k8s.pod.name={}",
        pod.namespace, pod.name
    );
    if let Ok(value) = HeaderValue::try_from(baggage) {
        headers.insert("baggage", value);
    }
    let mut tunnel = match responder.accept(headers) {
        Ok(tunnel) => tunnel,
        Err(err) => {
            debug!(pod = %pod.name, %err, "client went away before 200");
            tracked.fail(ResponseFlags::DOWNSTREAM_TERMINATED, err.to_string());
            return;
        }
    };
    match copy_bidirectional(&mut tunnel, &mut upstream, tracked.counters()).await {
        Ok(done) => {
            debug!(pod = %pod.name, %target, ?done, "inbound HBONE done")
        }
        Err(err) => {
            debug!(pod = %pod.name, %target, %err, "inbound HBONE failed");
            tracked.set_error(err.to_string());
        }
    }
}

/// The labels of an inbound HBONE connection (reporter `destination`): the source principal
/// is the peer's authenticated identity; the service comes from `forwarded: ...;host=`.
fn labels(
    inputs: &ProxyInputs,
    pod: &PodContext,
    remote: SocketAddr,
    peer: &SpiffeId,
    headers: &HeaderMap,
) -> TrafficLabels {
    let snapshot = inputs.state.load();
    let mut labels = TrafficLabels::new(Reporter::Destination);
    labels.connection_security_policy = SecurityPolicy::MutualTls;
    let source = snapshot
        .workload_by_ip(remote.ip())
        .filter(|workload| workload.identity() == peer)
        .map(|workload| workload_labels(workload))
        .unwrap_or_default();
    labels.source = source.with_spiffe_principal(&peer.to_string());
    labels.destination = match snapshot.workload_of_pod(&pod.uid, &pod.namespace, &pod.name) {
        Some(workload) => workload_labels(workload),
        None => WorkloadLabels {
            workload: Some(pod.name.clone()),
            namespace: Some(pod.namespace.clone()),
            ..WorkloadLabels::default()
        }
        .with_spiffe_principal(&pod.identity.to_string()),
    };
    if let Some(service) =
        forwarded_host(headers).and_then(|host| snapshot.service_by_hostname(host))
    {
        labels.destination_service = service_labels(service);
    }
    labels
}

/// The `host=` parameter of the `forwarded` header, if any.
fn forwarded_host(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::FORWARDED)?.to_str().ok()?;
    value
        .split([';', ','])
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| key.eq_ignore_ascii_case("host"))
        .map(|(_, host)| host.trim_matches('"'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarded(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::FORWARDED, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn the_service_comes_from_the_forwarded_host() {
        let headers = forwarded("for=\"10.0.0.1:4000\";host=web.demo.svc.cluster.local");
        assert_eq!(forwarded_host(&headers), Some("web.demo.svc.cluster.local"));
        let quoted = forwarded("for=\"10.0.0.1:4000\"; Host=\"web.demo.svc.cluster.local\"");
        assert_eq!(forwarded_host(&quoted), Some("web.demo.svc.cluster.local"));
        assert_eq!(forwarded_host(&forwarded("for=\"10.0.0.1:4000\"")), None);
        assert_eq!(forwarded_host(&HeaderMap::new()), None);
    }
}
