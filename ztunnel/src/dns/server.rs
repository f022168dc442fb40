//! The DNS proxy server: one per enrolled pod, on the UDP socket and TCP listener the caller
//! opened in the pod's network namespace.
//!
//! Each message is parsed strictly (`message::parse_query`); A/AAAA queries for mesh names are
//! answered here, everything else goes to the upstream resolvers. A malformed message costs its
//! sender one FORMERR (or nothing) and never disturbs other queries: UDP forwarding runs in
//! tasks bounded by a semaphore, TCP connections in tasks bounded by another, and a full server
//! drops new work instead of queueing it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{debug, error, trace, warn};

use super::message::{
    Rejection, encode_tcp, encode_udp, error_reply, is_address_query, mesh_answer, parse_query,
    question, relayed, udp_limit,
};
use super::metrics::{DnsMetrics, Failure};
use super::names::{MeshNames, NameExpander};
use super::upstream::{Forwarder, Transport, UpstreamSockets};

/// Largest UDP datagram there is; a smaller buffer would cut oversized queries silently.
const MAX_DATAGRAM: usize = u16::MAX as usize;
/// The UDP payload every DNS client takes (no EDNS).
const PLAIN_UDP_LIMIT: usize = 512;
/// Pause after a failed `accept`/`recv`, so a persistent error (e.g. out of file descriptors)
/// does not spin a core.
const ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// Settings of one DNS proxy.
#[non_exhaustive]
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// Namespace of the pod this proxy serves: bare names resolve to its Services.
    /// [`DnsConfig::new`] derives `search_domains` from it; change both together.
    pub namespace: String,
    /// Kubernetes cluster domain, `cluster.local` by default.
    pub cluster_domain: String,
    /// The pod's search domains; by default Kubernetes' `<ns>.svc.<domain>`, `svc.<domain>`,
    /// `<domain>`.
    pub search_domains: Vec<String>,
    /// Upstream resolvers, tried in order (e.g. the node's `resolv.conf` nameservers).
    pub upstreams: Vec<SocketAddr>,
    /// Time one upstream gets for one query, TCP retry included, before the next is tried.
    pub upstream_timeout: Duration,
    /// Queries forwarded over UDP at the same time; more are dropped.
    pub max_in_flight: usize,
    /// Open TCP client connections; more are closed at once.
    pub max_tcp_connections: usize,
    /// How long a TCP client connection may sit idle (or trickle a message) before it is closed.
    pub tcp_idle_timeout: Duration,
}

/// Why a [`DnsConfig`] was refused.
#[derive(Debug, thiserror::Error)]
#[error("DNS proxy config: {0:?} is not a valid DNS name")]
pub struct ConfigError(String);

/// The DNS proxy of one pod; cheap to clone (clones share limits and counters).
#[derive(Debug, Clone)]
pub struct DnsProxy {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    namespace: String,
    expander: NameExpander,
    names: Arc<dyn MeshNames>,
    forwarder: Forwarder,
    metrics: Arc<DnsMetrics>,
    in_flight: Arc<Semaphore>,
    tcp_connections: Arc<Semaphore>,
    tcp_idle_timeout: Duration,
}

/// What to do with one client message.
#[derive(Debug)]
enum Decision {
    /// Nothing to answer (not even a query header).
    Drop,
    /// Send this reply; `udp_limit` is the largest UDP reply the client takes.
    Reply { reply: Message, udp_limit: usize },
    /// Ask the upstream resolvers.
    Forward(Message),
}

impl DnsConfig {
    /// Kubernetes defaults for a pod in `namespace`, forwarding to `upstreams`.
    pub fn new(namespace: impl Into<String>, upstreams: Vec<SocketAddr>) -> Self {
        let namespace = namespace.into();
        let cluster_domain = "cluster.local".to_owned();
        let search_domains = vec![
            format!("{namespace}.svc.{cluster_domain}"),
            format!("svc.{cluster_domain}"),
            cluster_domain.clone(),
        ];
        Self {
            namespace,
            cluster_domain,
            search_domains,
            upstreams,
            upstream_timeout: Duration::from_secs(2),
            max_in_flight: 256,
            max_tcp_connections: 64,
            tcp_idle_timeout: Duration::from_secs(10),
        }
    }
}

impl DnsProxy {
    /// A proxy answering from `names` and forwarding with sockets from `sockets`.
    pub fn new(
        config: DnsConfig,
        names: Arc<dyn MeshNames>,
        sockets: Arc<dyn UpstreamSockets>,
        metrics: Arc<DnsMetrics>,
    ) -> Result<Self, ConfigError> {
        let expander = NameExpander::new(
            &config.cluster_domain,
            &config.namespace,
            &config.search_domains,
        )
        .map_err(ConfigError)?;
        let forwarder = Forwarder::new(config.upstreams, config.upstream_timeout, sockets);
        Ok(Self {
            inner: Arc::new(Inner {
                namespace: config.namespace,
                expander,
                names,
                forwarder,
                metrics,
                in_flight: Arc::new(Semaphore::new(config.max_in_flight.max(1))),
                tcp_connections: Arc::new(Semaphore::new(config.max_tcp_connections.max(1))),
                tcp_idle_timeout: config.tcp_idle_timeout,
            }),
        })
    }

    /// The proxy's counters.
    pub fn metrics(&self) -> &Arc<DnsMetrics> {
        &self.inner.metrics
    }

    /// Serves `udp` and `tcp` until the returned future is dropped (which also stops every
    /// query in progress).
    pub async fn serve(&self, udp: UdpSocket, tcp: TcpListener) {
        tokio::join!(self.serve_udp(udp), self.serve_tcp(tcp));
    }

    /// Serves DNS over UDP on `socket` until the future is dropped.
    pub async fn serve_udp(&self, socket: UdpSocket) {
        let socket = Arc::new(socket);
        let mut forwards = JoinSet::new();
        let mut buffer = vec![0; MAX_DATAGRAM];
        loop {
            reap(&mut forwards);
            let (len, client) = match socket.recv_from(&mut buffer).await {
                Ok(received) => received,
                Err(err) => {
                    warn!(error = %err, "DNS proxy: UDP receive failed");
                    tokio::time::sleep(ERROR_BACKOFF).await;
                    continue;
                }
            };
            match self.decide(&buffer[..len]) {
                Decision::Drop => {}
                Decision::Reply { reply, udp_limit } => {
                    self.send_udp(&socket, &reply, udp_limit, client).await;
                }
                Decision::Forward(query) => {
                    let Ok(permit) = self.inner.in_flight.clone().try_acquire_owned() else {
                        debug!(%client, "DNS proxy at its limit; dropping a query");
                        self.inner.metrics.count_failure(Failure::Overloaded);
                        continue;
                    };
                    let proxy = self.clone();
                    let socket = Arc::clone(&socket);
                    forwards.spawn(async move {
                        let reply = proxy.forward(&query, Transport::Udp).await;
                        proxy
                            .send_udp(&socket, &reply, udp_limit(&query), client)
                            .await;
                        drop(permit);
                    });
                }
            }
        }
    }

    /// Serves DNS over TCP (RFC 7766 length-prefixed messages) on `listener` until the future
    /// is dropped.
    pub async fn serve_tcp(&self, listener: TcpListener) {
        let mut connections = JoinSet::new();
        loop {
            reap(&mut connections);
            let (stream, client) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(err) => {
                    warn!(error = %err, "DNS proxy: TCP accept failed");
                    tokio::time::sleep(ERROR_BACKOFF).await;
                    continue;
                }
            };
            let Ok(permit) = self.inner.tcp_connections.clone().try_acquire_owned() else {
                debug!(%client, "DNS proxy at its TCP connection limit; closing");
                self.inner.metrics.count_failure(Failure::Overloaded);
                continue;
            };
            let proxy = self.clone();
            connections.spawn(async move {
                proxy.serve_connection(stream, client).await;
                drop(permit);
            });
        }
    }

    /// Answers the queries of one TCP client in order until it closes, idles or misbehaves.
    async fn serve_connection(&self, mut stream: TcpStream, client: SocketAddr) {
        let idle = self.inner.tcp_idle_timeout;
        loop {
            let len = match tokio::time::timeout(idle, stream.read_u16()).await {
                Ok(Ok(len)) => usize::from(len),
                // Closed by the client, or idle too long: the normal end of a connection.
                _ => return,
            };
            let mut message = vec![0; len];
            match tokio::time::timeout(idle, stream.read_exact(&mut message)).await {
                Ok(Ok(_)) => {}
                _ => {
                    trace!(%client, "DNS TCP client left in the middle of a message");
                    return;
                }
            }
            let reply = match self.decide(&message) {
                Decision::Drop => return,
                Decision::Reply { reply, .. } => reply,
                Decision::Forward(query) => self.forward(&query, Transport::Tcp).await,
            };
            let Some(bytes) = encode_tcp(&reply) else {
                self.inner.metrics.count_failure(Failure::ReplyFailed);
                return;
            };
            let mut framed = Vec::with_capacity(bytes.len() + 2);
            // encode_tcp only returns messages whose length fits in 16 bits.
            framed.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
            framed.extend_from_slice(&bytes);
            if let Err(err) = stream.write_all(&framed).await {
                debug!(%client, error = %err, "DNS proxy: TCP reply failed");
                self.inner.metrics.count_failure(Failure::ReplyFailed);
                return;
            }
        }
    }

    /// Parses one client message and decides how it is answered, counting what happened.
    fn decide(&self, bytes: &[u8]) -> Decision {
        let metrics = &self.inner.metrics;
        metrics.count_request();
        let query = match parse_query(bytes) {
            Ok(query) => query,
            Err(Rejection::Drop) => {
                metrics.count_failure(Failure::Malformed);
                return Decision::Drop;
            }
            Err(Rejection::Reply { reply, failure }) => {
                metrics.count_failure(failure);
                // Error replies carry at most the question: they always fit plain DNS.
                return Decision::Reply {
                    reply: *reply,
                    udp_limit: PLAIN_UDP_LIMIT,
                };
            }
        };
        let Some(asked) = question(&query).filter(|asked| is_address_query(asked)) else {
            return Decision::Forward(query);
        };
        let found = self.inner.expander.resolve(
            self.inner.names.as_ref(),
            asked.name(),
            &self.inner.namespace,
        );
        match found {
            Some(found) => {
                metrics.count_mesh_answer();
                trace!(name = %asked.name(), "answering a mesh name");
                Decision::Reply {
                    reply: mesh_answer(&query, &found),
                    udp_limit: udp_limit(&query),
                }
            }
            None => Decision::Forward(query),
        }
    }

    /// The reply to a forwarded query: the upstream's answer, or SERVFAIL.
    async fn forward(&self, query: &Message, transport: Transport) -> Message {
        self.inner.metrics.count_forwarded();
        match self.inner.forwarder.forward(query, transport).await {
            Ok(answer) => relayed(answer, query),
            Err(failure) => {
                self.inner.metrics.count_failure(failure);
                error_reply(query, ResponseCode::ServFail)
            }
        }
    }

    async fn send_udp(&self, socket: &UdpSocket, reply: &Message, limit: usize, to: SocketAddr) {
        let Some(bytes) = encode_udp(reply, limit) else {
            self.inner.metrics.count_failure(Failure::ReplyFailed);
            return;
        };
        if let Err(err) = socket.send_to(&bytes, to).await {
            debug!(client = %to, error = %err, "DNS proxy: UDP reply failed");
            self.inner.metrics.count_failure(Failure::ReplyFailed);
        }
    }
}

/// Collects finished tasks so the set does not grow; a panicked task is logged, never rethrown.
fn reap(tasks: &mut JoinSet<()>) {
    while let Some(done) = tasks.try_join_next() {
        if let Err(err) = done
            && err.is_panic()
        {
            error!(error = %err, "DNS proxy task panicked");
        }
    }
}
