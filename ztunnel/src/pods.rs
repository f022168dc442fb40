//! Enrollment: what ztunnel does when the node agent says a pod joined or left the mesh.
//!
//! Enroll: take a certificate for the pod's identity (and wait for it), open the pod's
//! namespace, install the redirection rules, bind the listeners inside it, start the proxies
//! (outbound, inbound HBONE, inbound plaintext, DNS). Unenroll: stop the proxies (HBONE
//! connections get GOAWAY), close the listeners, remove the rules, release the certificate.
//! Snapshot: reconcile to exactly the listed pods.
//!
//! The node agent's unix socket server is `ambit_cni::server`; [`PodManager`] is its handler.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ambit_cni::protocol::PodInfo;
use ambit_cni::server::{EnrollmentHandler, HandlerError};
use ambit_hbone::{Drain, Pool, PoolConfig};
use ambit_identity::SpiffeId;
use ambit_telemetry::ErrorReason;
use futures_util::future::BoxFuture;
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::dns::{DnsConfig, DnsMetrics, DnsProxy, ResolvConf, UpstreamSockets};
use crate::inpod::{self, PodNetns, RedirectConfig};
use crate::names::StateNames;
use crate::proxy::{PodContext, ProxyInputs};
use crate::{inbound, inbound_plaintext, outbound};

/// How long an enrollment waits for the pod's first certificate.
const CERTIFICATE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a pod could not be enrolled.
#[derive(Debug, thiserror::Error)]
#[error("pod {pod}: {message}")]
pub struct EnrollError {
    pod: String,
    message: String,
}

/// The pods this ztunnel serves, and their running proxies.
pub struct PodManager {
    inputs: Arc<ProxyInputs>,
    dns_upstreams: Vec<SocketAddr>,
    dns_metrics: Arc<DnsMetrics>,
    pods: Mutex<HashMap<String, RunningPod>>,
    /// Flips to true once the first snapshot from the node agent is served (readiness).
    synced: watch::Sender<bool>,
}

struct RunningPod {
    info: PodInfo,
    identity: SpiffeId,
    netns: PodNetns,
    drain: Drain,
    tasks: Vec<JoinHandle<()>>,
    context: Arc<PodContext>,
}

/// DNS upstream sockets made inside the pod's namespace, marked so they are not captured.
#[derive(Debug)]
struct PodSockets {
    netns: PodNetns,
}

impl PodManager {
    /// A manager starting proxies with `inputs`; DNS forwards to `dns_upstreams`.
    pub fn new(inputs: Arc<ProxyInputs>, dns_upstreams: Vec<SocketAddr>) -> Self {
        Self {
            dns_upstreams,
            dns_metrics: Arc::new(DnsMetrics::with_telemetry(inputs.telemetry.clone())),
            inputs,
            pods: Mutex::new(HashMap::new()),
            synced: watch::Sender::new(false),
        }
    }

    /// Resolves once a first snapshot (or enrollment) has been served, certificates included.
    pub fn synced(&self) -> watch::Receiver<bool> {
        self.synced.subscribe()
    }

    /// UIDs of the enrolled pods.
    pub async fn enrolled(&self) -> Vec<String> {
        self.pods.lock().await.keys().cloned().collect()
    }

    /// The enrolled pod `namespace/name`, to send traffic as it (SOCKS5).
    pub async fn pod_by_name(&self, namespace: &str, name: &str) -> Option<Arc<PodContext>> {
        let pods = self.pods.lock().await;
        pods.values()
            .find(|running| running.info.namespace == namespace && running.info.name == name)
            .map(|running| running.context.clone())
    }

    /// The enrolled pod that owns `ip` according to the state, if it runs on this node.
    pub async fn pod_by_ip(&self, ip: std::net::IpAddr) -> Option<Arc<PodContext>> {
        let uid = {
            let snapshot = self.inputs.state.load();
            snapshot.workload_by_ip(ip)?.uid().to_owned()
        };
        let pods = self.pods.lock().await;
        pods.get(&uid).map(|running| running.context.clone())
    }

    /// Node drain: every pod's HBONE server sends GOAWAY and stops accepting; the other
    /// listeners stop on their own through the node's drain watch.
    pub async fn drain_all(&self) {
        let pods = self.pods.lock().await;
        for running in pods.values() {
            running.drain.start();
        }
    }

    /// Starts serving `pod`; enrolling the same pod again with the same namespace is a no-op.
    pub async fn enroll(&self, pod: PodInfo) -> Result<(), EnrollError> {
        let mut pods = self.pods.lock().await;
        self.enroll_locked(&mut pods, pod).await?;
        self.synced.send_replace(true);
        Ok(())
    }

    /// Stops serving the pod with `uid`; unknown UIDs are fine.
    pub async fn unenroll(&self, uid: &str) -> Result<(), EnrollError> {
        let mut pods = self.pods.lock().await;
        match pods.remove(uid) {
            Some(running) => self.stop(running).await,
            None => Ok(()),
        }
    }

    /// Serves exactly `wanted`: unenrolls the others, enrolls the new ones.
    pub async fn reconcile(&self, wanted: Vec<PodInfo>) -> Result<(), EnrollError> {
        let mut pods = self.pods.lock().await;
        let keep: std::collections::HashSet<_> = wanted.iter().map(|p| p.uid.clone()).collect();
        let gone: Vec<_> = pods
            .keys()
            .filter(|uid| !keep.contains(*uid))
            .cloned()
            .collect();
        let mut first_error = None;
        for uid in gone {
            if let Some(running) = pods.remove(&uid)
                && let Err(err) = self.stop(running).await
            {
                first_error.get_or_insert(err);
            }
        }
        for pod in wanted {
            if let Err(err) = self.enroll_locked(&mut pods, pod).await {
                warn!(%err, "enrollment from snapshot failed");
                first_error.get_or_insert(err);
            }
        }
        // Readiness means every pod of the agent's snapshot is served: a pod left out (no
        // certificate from the CA, rules refused) keeps ztunnel not ready until a later
        // snapshot or enrollment succeeds.
        self.synced.send_replace(first_error.is_none());
        first_error.map_or(Ok(()), Err)
    }

    /// Stops serving every pod (shutdown) but leaves their redirection rules in place: until
    /// a ztunnel serves them again (the node agent resends its snapshot to the next one),
    /// their captured traffic is refused, never sent around the mesh.
    pub async fn unenroll_all(&self) {
        let mut pods = self.pods.lock().await;
        for (_, mut running) in pods.drain() {
            self.stop_serving(&mut running).await;
            info!(pod = %running.info.name, "pod no longer served; its rules stay in place");
        }
    }

    async fn enroll_locked(
        &self,
        pods: &mut HashMap<String, RunningPod>,
        pod: PodInfo,
    ) -> Result<(), EnrollError> {
        if let Some(running) = pods.get(&pod.uid) {
            if running.info == pod {
                return Ok(());
            }
            if let Some(old) = pods.remove(&pod.uid) {
                self.stop(old).await?;
            }
        }
        let error = |message: String| EnrollError {
            pod: format!("{}/{} ({})", pod.namespace, pod.name, pod.uid),
            message,
        };
        let identity = SpiffeId::new(
            &self.inputs.trust_domain,
            &pod.namespace,
            &pod.service_account,
        )
        .map_err(|err| error(format!("identity: {err}")))?;
        let netns = PodNetns::open(&pod.netns).map_err(|err| error(err.to_string()))?;
        let handle = self
            .inputs
            .certs
            .acquire(&identity)
            .map_err(|err| error(format!("certificate: {err}")))?;
        let started = self.start(&pod, &identity, &netns, handle).await;
        match started {
            Ok((drain, tasks, context)) => {
                info!(pod = %pod.name, namespace = %pod.namespace, %identity, "pod enrolled");
                pods.insert(
                    pod.uid.clone(),
                    RunningPod {
                        info: pod,
                        identity,
                        netns,
                        drain,
                        tasks,
                        context,
                    },
                );
                Ok(())
            }
            Err(message) => {
                self.inputs.certs.release(&identity);
                if let Err(err) = inpod::remove(&netns).await {
                    warn!(%err, "removing rules after a failed enrollment");
                }
                Err(error(message))
            }
        }
    }

    async fn start(
        &self,
        pod: &PodInfo,
        identity: &SpiffeId,
        netns: &PodNetns,
        handle: ambit_identity::CertHandle,
    ) -> Result<(Drain, Vec<JoinHandle<()>>, Arc<PodContext>), String> {
        // Certificates first: a pod is never captured before ztunnel can speak mTLS for it.
        let certificate = self
            .inputs
            .certs
            .ready(identity, CERTIFICATE_TIMEOUT)
            .await
            .map_err(|err| format!("certificate: {err}"));
        if certificate.is_err() {
            self.inputs
                .telemetry
                .count_error(ErrorReason::CertificateRequestFailed);
        }
        certificate?;
        let tls = self
            .inputs
            .certs
            .server_config(handle)
            .map_err(|err| format!("TLS config: {err}"))?;
        inpod::apply(netns, &RedirectConfig::default())
            .await
            .map_err(|err| format!("rules: {err}"))?;
        let listeners = inpod::bind_listeners(netns).map_err(|err| format!("listeners: {err}"))?;
        let connector_netns = netns.clone();
        let connector = move |next_hop: SocketAddr| {
            let netns = connector_netns.clone();
            async move {
                inpod::connect_marked(&netns, next_hop)
                    .await
                    .map_err(io::Error::other)
            }
        };
        let context = Arc::new(PodContext {
            uid: pod.uid.clone(),
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            identity: identity.clone(),
            netns: netns.clone(),
            pool: Pool::with_connector(
                self.inputs.certs.clone(),
                PoolConfig::default(),
                Arc::new(connector),
            ),
        });
        let drain = Drain::new();
        let mut tasks = vec![
            tokio::spawn(outbound::serve(
                listeners.outbound,
                self.inputs.clone(),
                context.clone(),
            )),
            tokio::spawn(inbound::serve(
                listeners.hbone,
                tls,
                self.inputs.clone(),
                context.clone(),
                drain.signal(),
            )),
            tokio::spawn(inbound_plaintext::serve(
                listeners.inbound_plaintext,
                self.inputs.clone(),
                context.clone(),
            )),
        ];
        match DnsProxy::new(
            DnsConfig::new(pod.namespace.clone(), self.dns_upstreams.clone()),
            Arc::new(StateNames::new(self.inputs.state.clone())),
            Arc::new(PodSockets {
                netns: netns.clone(),
            }),
            self.dns_metrics.clone(),
        ) {
            Ok(dns) => {
                let (udp, tcp) = (listeners.dns_udp, listeners.dns_tcp);
                let v6 = listeners.dns_udp_v6.zip(listeners.dns_tcp_v6);
                tasks.push(tokio::spawn(async move {
                    match v6 {
                        Some((udp6, tcp6)) => {
                            tokio::join!(dns.serve(udp, tcp), dns.serve(udp6, tcp6));
                        }
                        None => dns.serve(udp, tcp).await,
                    }
                }));
            }
            Err(err) => warn!(pod = %pod.name, %err, "DNS proxy not started"),
        }
        Ok((drain, tasks, context))
    }

    /// GOAWAY to HBONE clients, then stop accepting: ending the tasks closes the listeners.
    async fn stop_serving(&self, running: &mut RunningPod) {
        running.drain.start();
        for task in &running.tasks {
            task.abort();
        }
        for task in running.tasks.drain(..) {
            let _ = task.await;
        }
        self.inputs.certs.release(&running.identity);
    }

    /// Unenroll: stop serving, then remove the rules so the pod's networking is plain again.
    async fn stop(&self, mut running: RunningPod) -> Result<(), EnrollError> {
        self.stop_serving(&mut running).await;
        info!(pod = %running.info.name, namespace = %running.info.namespace, "pod unenrolled");
        inpod::remove(&running.netns)
            .await
            .map_err(|err| EnrollError {
                pod: format!("{}/{}", running.info.namespace, running.info.name),
                message: format!("removing rules: {err}"),
            })
    }
}

impl EnrollmentHandler for PodManager {
    fn enroll(&self, pod: PodInfo) -> BoxFuture<'_, Result<(), HandlerError>> {
        Box::pin(async move {
            PodManager::enroll(self, pod)
                .await
                .map_err(|err| HandlerError::internal(err.to_string()))
        })
    }

    fn unenroll(&self, uid: String) -> BoxFuture<'_, Result<(), HandlerError>> {
        Box::pin(async move {
            PodManager::unenroll(self, &uid)
                .await
                .map_err(|err| HandlerError::internal(err.to_string()))
        })
    }

    fn snapshot(&self, pods: Vec<PodInfo>) -> BoxFuture<'_, Result<(), HandlerError>> {
        Box::pin(async move {
            self.reconcile(pods)
                .await
                .map_err(|err| HandlerError::internal(err.to_string()))
        })
    }
}

impl crate::socks5::SourcePods for PodManager {
    fn by_ip(&self, ip: std::net::IpAddr) -> BoxFuture<'_, Option<Arc<PodContext>>> {
        Box::pin(self.pod_by_ip(ip))
    }

    fn by_name<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Option<Arc<PodContext>>> {
        Box::pin(self.pod_by_name(namespace, name))
    }
}

impl fmt::Debug for PodManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PodManager")
            .field("dns_upstreams", &self.dns_upstreams)
            .finish_non_exhaustive()
    }
}

impl UpstreamSockets for PodSockets {
    fn udp(&self, upstream: SocketAddr) -> io::Result<UdpSocket> {
        let any = match upstream {
            SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            SocketAddr::V6(_) => SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0)),
        };
        inpod::bind_udp(&self.netns, any).map_err(io::Error::other)
    }

    fn tcp(&self, upstream: SocketAddr) -> BoxFuture<'_, io::Result<TcpStream>> {
        Box::pin(async move {
            inpod::connect_marked(&self.netns, upstream)
                .await
                .map_err(io::Error::other)
        })
    }
}

/// Upstream resolvers from the node's `/etc/resolv.conf` (none if it cannot be read).
pub fn node_resolvers() -> Vec<SocketAddr> {
    match ResolvConf::read("/etc/resolv.conf") {
        Ok(conf) => conf.nameservers,
        Err(err) => {
            warn!(%err, "no upstream resolvers: cannot read /etc/resolv.conf");
            Vec::new()
        }
    }
}
