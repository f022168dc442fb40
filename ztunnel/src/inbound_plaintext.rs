//! Inbound plaintext (15006): connections into the pod that did not come over HBONE.
//!
//! PeerAuthentication decides first: STRICT resets the connection. PERMISSIVE (or unset,
//! which defaults to it) applies L4 authorization with no identity, then connects to the app
//! under the client's IP; the connection is reported with `connection_security_policy`
//! `unknown`.

use std::net::SocketAddr;
use std::sync::Arc;

use ambit_hbone::copy_bidirectional;
use ambit_model::MtlsMode;
use ambit_policy::Connection;
use ambit_telemetry::{Reporter, ResponseFlags, SecurityPolicy, TrafficLabels, WorkloadLabels};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};

use crate::inpod::{connect_marked_from, original_destination};
use crate::observe::workload_labels;
use crate::proxy::{OWN_PORTS, PodContext, ProxyInputs, canonical_addr};

/// What happens to a plaintext connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Proxy it to the app.
    Forward,
    /// PeerAuthentication STRICT: plaintext is not accepted.
    Strict,
    /// Denied by an AuthorizationPolicy.
    Denied,
    /// The workload is unknown or the port is ztunnel's own.
    Refused,
}

/// Accepts plaintext connections into the pod until the future is dropped.
/// Stops accepting once the node drains.
pub async fn serve(listener: TcpListener, inputs: Arc<ProxyInputs>, pod: Arc<PodContext>) {
    let mut drain = crate::outbound::node_drain(&inputs);
    loop {
        let accepted = tokio::select! {
            () = drain.draining() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                warn!(pod = %pod.name, %err, "inbound plaintext accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let (inputs, pod) = (inputs.clone(), pod.clone());
        tokio::spawn(async move { handle(stream, canonical_addr(peer), &inputs, &pod).await });
    }
}

/// The decision for a plaintext connection from `client` to `target` (this pod).
pub fn decide(
    inputs: &ProxyInputs,
    pod: &PodContext,
    client: SocketAddr,
    target: SocketAddr,
) -> Verdict {
    if OWN_PORTS.contains(&target.port()) {
        return Verdict::Refused;
    }
    let snapshot = inputs.state.load();
    let Some(workload) = snapshot.workload_of_pod(&pod.uid, &pod.namespace, &pod.name) else {
        return Verdict::Refused;
    };
    if snapshot.mtls_mode(workload, target.port()) == MtlsMode::Strict {
        return Verdict::Strict;
    }
    let connection = Connection {
        source_identity: None,
        source_ip: client.ip(),
        destination_ip: target.ip(),
        destination_port: target.port(),
    };
    let decision = inputs.authorizer.evaluate_l4(
        snapshot.policies_for(workload).into_iter().map(Arc::as_ref),
        workload,
        &connection,
    );
    if decision.is_allowed() {
        Verdict::Forward
    } else {
        Verdict::Denied
    }
}

async fn handle(mut stream: TcpStream, client: SocketAddr, inputs: &ProxyInputs, pod: &PodContext) {
    let target = match original_destination(&stream) {
        Ok(target) => canonical_addr(target),
        Err(err) => {
            warn!(pod = %pod.name, %err, "plaintext connection without an original destination");
            crate::proxy::reset(stream);
            return;
        }
    };
    let mut tracked = inputs
        .telemetry
        .open(labels(inputs, pod, client), client, target);
    let verdict = decide(inputs, pod, client, target);
    if verdict != Verdict::Forward {
        info!(pod = %pod.name, %client, %target, ?verdict, "plaintext connection refused");
        let flags = match verdict {
            Verdict::Strict | Verdict::Denied => ResponseFlags::DENIED,
            Verdict::Refused | Verdict::Forward => ResponseFlags::CONNECT_FAILURE,
        };
        tracked.fail(flags, format!("{verdict:?}"));
        crate::proxy::reset(stream);
        return;
    }
    let source = SocketAddr::new(client.ip(), 0);
    let mut upstream = match connect_marked_from(&pod.netns, source, target).await {
        Ok(upstream) => upstream,
        Err(err) => {
            info!(pod = %pod.name, %target, %err, "app unreachable");
            tracked.fail(ResponseFlags::CONNECT_FAILURE, err.to_string());
            crate::proxy::reset(stream);
            return;
        }
    };
    match copy_bidirectional(&mut stream, &mut upstream, tracked.counters()).await {
        Ok(done) => debug!(pod = %pod.name, %client, %target, ?done, "inbound plaintext done"),
        Err(err) => {
            debug!(pod = %pod.name, %target, %err, "inbound plaintext failed");
            tracked.set_error(err.to_string());
        }
    }
}

/// The labels of a plaintext connection (reporter `destination`): nothing about the client
/// is proven, so its workload comes from its IP and it has no principal.
fn labels(inputs: &ProxyInputs, pod: &PodContext, client: SocketAddr) -> TrafficLabels {
    let snapshot = inputs.state.load();
    let mut labels = TrafficLabels::new(Reporter::Destination);
    labels.connection_security_policy = SecurityPolicy::Unknown;
    if let Some(workload) = snapshot.workload_by_ip(client.ip()) {
        labels.source = WorkloadLabels {
            principal: None,
            ..workload_labels(workload)
        };
    }
    labels.destination = match snapshot.workload_of_pod(&pod.uid, &pod.namespace, &pod.name) {
        Some(workload) => workload_labels(workload),
        None => WorkloadLabels {
            workload: Some(pod.name.clone()),
            namespace: Some(pod.namespace.clone()),
            ..WorkloadLabels::default()
        },
    };
    labels
}
