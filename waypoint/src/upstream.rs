//! Upstream: HBONE to the chosen endpoint's ztunnel with the waypoint's own certificate,
//! then HTTP/1.1 or HTTP/2 over that tunnel with hyper's client connection API.
//!
//! HBONE connections are pooled by [`ambit_hbone::Pool`] (one mTLS connection carries many
//! tunnels). On top, HTTP/1.1 connections (one tunnel each) are kept per endpoint and reused
//! once their previous response is finished; HTTP/2 has one multiplexed connection per
//! endpoint.
//!
//! [`Upstream::send_limited`] applies a destination's `connectionPool`: HTTP/1.1 connections
//! of the destination are counted against `tcp.maxConnections`; a request that finds neither
//! an idle connection nor room for a new one waits for one to become free, unless
//! `http1MaxPendingRequests` are already waiting (then `503 UO`). Connections (HTTP/1.1 and
//! HTTP/2) are retired after `maxRequestsPerConnection` requests. The per-destination state
//! ([`Clusters`]) lives here because it outlives configuration snapshots, as the pools do.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;

use ambit_hbone::{ConnectRequest, Pool, Target};
use ambit_identity::SpiffeId;
use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tracing::debug;

use ambit_model::destination_rule::ConnectionPool;

use crate::balance::EndpointTarget;
use crate::cluster::Clusters;
use crate::errors::{BoxError, ProxyError};
use crate::pool_limits::{PoolCounters, PoolGuard};

/// The body of requests sent upstream.
pub type UpstreamBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// Idle HTTP/1.1 connections kept per endpoint.
const MAX_IDLE_H1_PER_ENDPOINT: usize = 64;

/// Which HTTP version to speak to an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpstreamProtocol {
    /// HTTP/1.1, one request at a time per connection.
    Http1,
    /// HTTP/2 cleartext (prior knowledge), multiplexed.
    Http2,
}

/// Sends requests to endpoints over HBONE.
pub struct Upstream {
    pool: Pool,
    source: SpiffeId,
    h1: Mutex<HashMap<ConnectionKey, Vec<H1Connection>>>,
    h2: Mutex<HashMap<ConnectionKey, H2Connection>>,
    clusters: Clusters,
}

/// The connection-pool limits and counters of the destination a request goes to.
#[derive(Debug, Clone)]
pub struct SendLimits {
    /// The destination's counters.
    pub counters: Arc<PoolCounters>,
    /// Its limits.
    pub pool: ConnectionPool,
}

/// An HTTP/1.1 connection and how many requests it has carried.
struct H1Connection {
    sender: http1::SendRequest<UpstreamBody>,
    requests: u32,
    /// The counters its slot is taken from, to find the destination's idle connections.
    counters: Arc<PoolCounters>,
}

/// A shared HTTP/2 connection and how many requests it has carried.
struct H2Connection {
    sender: http2::SendRequest<UpstreamBody>,
    requests: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ConnectionKey {
    hbone: SocketAddr,
    addr: SocketAddr,
    identities: Vec<SpiffeId>,
}

impl Upstream {
    /// Tunnels from identity `source` through `pool`.
    pub fn new(pool: Pool, source: SpiffeId) -> Self {
        Self {
            pool,
            source,
            h1: Mutex::new(HashMap::new()),
            h2: Mutex::new(HashMap::new()),
            clusters: Clusters::default(),
        }
    }

    /// The per-destination state (balancing, outlier detection, pool counters).
    pub fn clusters(&self) -> &Clusters {
        &self.clusters
    }

    /// The HBONE pool (also used for opaque TCP).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Opens a tunnel to `endpoint` (its `podIP:targetPort`, through its ztunnel).
    pub async fn tunnel(
        &self,
        endpoint: &EndpointTarget,
    ) -> Result<ambit_hbone::HboneStream, ProxyError> {
        let request = ConnectRequest::new(
            self.source.clone(),
            endpoint.identities.clone(),
            endpoint.hbone,
            Target::Socket(endpoint.addr),
        );
        self.pool
            .connect(request)
            .await
            .map_err(ProxyError::connect_failure)
    }

    /// Sends `request` to `endpoint` and returns the response head (the body streams), with
    /// no connection-pool limits.
    pub async fn send(
        &self,
        endpoint: &EndpointTarget,
        protocol: UpstreamProtocol,
        request: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, ProxyError> {
        let unlimited = SendLimits {
            counters: Arc::new(PoolCounters::default()),
            pool: ConnectionPool::default(),
        };
        self.send_limited(endpoint, protocol, request, &unlimited)
            .await
    }

    /// Sends `request` to `endpoint` under the destination's connection-pool `limits`.
    pub async fn send_limited(
        &self,
        endpoint: &EndpointTarget,
        protocol: UpstreamProtocol,
        request: Request<UpstreamBody>,
        limits: &SendLimits,
    ) -> Result<Response<Incoming>, ProxyError> {
        let key = ConnectionKey {
            hbone: endpoint.hbone,
            addr: endpoint.addr,
            identities: endpoint.identities.clone(),
        };
        match protocol {
            UpstreamProtocol::Http1 => {
                let mut connection = self.h1_connection(&key, endpoint, limits).await?;
                connection
                    .sender
                    .ready()
                    .await
                    .map_err(|err| ProxyError::upstream_reset(true, err))?;
                connection.requests += 1;
                let result = connection.sender.send_request(request).await;
                self.release_h1(key, connection, limits);
                result.map_err(hyper_error)
            }
            UpstreamProtocol::Http2 => {
                let mut sender = self.h2_sender(&key, endpoint, limits).await?;
                sender
                    .ready()
                    .await
                    .map_err(|err| ProxyError::upstream_reset(true, err))?;
                sender.send_request(request).await.map_err(hyper_error)
            }
        }
    }

    /// An idle connection, a new one, or — when `maxConnections` are open — the next one to
    /// become free, waiting in the pending queue.
    async fn h1_connection(
        &self,
        key: &ConnectionKey,
        endpoint: &EndpointTarget,
        limits: &SendLimits,
    ) -> Result<H1Connection, ProxyError> {
        let counters = &limits.counters;
        let mut pending: Option<PoolGuard> = None;
        loop {
            // Registered before looking, so a release between the look and the wait is seen.
            let released = counters.released();
            tokio::pin!(released);
            released.as_mut().enable();
            if let Some(connection) = self.idle_h1(key, true) {
                return Ok(connection);
            }
            if let Some(guard) = counters.try_connection(limits.pool.max_connections) {
                return self.connect_h1(endpoint, guard, counters.clone()).await;
            }
            // At the connection limit: a busy connection to this endpoint that will be free
            // once its response is read serves as well as a new one.
            if let Some(connection) = self.idle_h1(key, false) {
                return Ok(connection);
            }
            // Idle connections to the destination's other endpoints would hold the slots
            // forever: close one; its slot frees when its task ends, which wakes us.
            self.evict_idle_h1(counters);
            if pending.is_none() {
                pending = Some(
                    counters
                        .try_pending(limits.pool.max_pending_requests)
                        .ok_or_else(|| ProxyError::overflow("http1MaxPendingRequests"))?,
                );
            }
            released.await;
        }
    }

    /// A kept connection to `key`: only one ready now if `ready_only`.
    fn idle_h1(&self, key: &ConnectionKey, ready_only: bool) -> Option<H1Connection> {
        let mut idle = self
            .h1
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let connections = idle.get_mut(key)?;
        connections.retain(|c| !c.sender.is_closed());
        let index = connections
            .iter()
            .position(|c| !ready_only || c.sender.is_ready())?;
        Some(connections.swap_remove(index))
    }

    /// Closes one idle connection that holds a slot of `counters`.
    fn evict_idle_h1(&self, counters: &Arc<PoolCounters>) {
        let mut idle = self
            .h1
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for connections in idle.values_mut() {
            if let Some(index) = connections
                .iter()
                .position(|c| Arc::ptr_eq(&c.counters, counters))
            {
                // Dropping the sender closes the connection once a response still being
                // read has ended; then its task ends and frees the slot.
                connections.swap_remove(index);
                return;
            }
        }
    }

    /// Keeps the connection for the next request (it becomes ready when this response's
    /// body has been read to the end), unless it has served `maxRequestsPerConnection`.
    fn release_h1(&self, key: ConnectionKey, connection: H1Connection, limits: &SendLimits) {
        let retired = limits
            .pool
            .max_requests_per_connection
            .is_some_and(|max| connection.requests >= max);
        if connection.sender.is_closed() || retired {
            // Dropping the sender closes the connection once the response is read; its
            // guard then frees the slot and wakes pending requests.
            return;
        }
        {
            let mut idle = self
                .h1
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let connections = idle.entry(key).or_default();
            if connections.len() < MAX_IDLE_H1_PER_ENDPOINT {
                connections.push(connection);
            }
        }
        limits.counters.notify_released();
    }

    async fn connect_h1(
        &self,
        endpoint: &EndpointTarget,
        slot: PoolGuard,
        counters: Arc<PoolCounters>,
    ) -> Result<H1Connection, ProxyError> {
        let stream = self.tunnel(endpoint).await?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(ProxyError::connect_failure)?;
        let addr = endpoint.addr;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                debug!(%addr, %err, "upstream HTTP/1.1 connection ended with an error");
            }
            drop(slot);
        });
        Ok(H1Connection {
            sender,
            requests: 0,
            counters,
        })
    }

    async fn h2_sender(
        &self,
        key: &ConnectionKey,
        endpoint: &EndpointTarget,
        limits: &SendLimits,
    ) -> Result<http2::SendRequest<UpstreamBody>, ProxyError> {
        let max_requests = limits.pool.max_requests_per_connection;
        {
            let mut shared = self
                .h2
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some(connection) = shared.get_mut(key).filter(|c| !c.sender.is_closed()) {
                connection.requests += 1;
                let sender = connection.sender.clone();
                if max_requests.is_some_and(|max| connection.requests >= max) {
                    // Its last request: new requests get a new connection; this one ends
                    // when its streams do.
                    shared.remove(key);
                }
                return Ok(sender);
            }
        }
        // Two requests may race to connect; the later connection replaces the earlier in the
        // map, and both keep working for their own requests.
        let slot = limits.counters.try_connection(None);
        let stream = self.tunnel(endpoint).await?;
        let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(ProxyError::connect_failure)?;
        let addr = endpoint.addr;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                debug!(%addr, %err, "upstream HTTP/2 connection ended with an error");
            }
            drop(slot);
        });
        if max_requests.is_none_or(|max| max > 1) {
            self.h2
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .insert(
                    key.clone(),
                    H2Connection {
                        sender: sender.clone(),
                        requests: 1,
                    },
                );
        }
        Ok(sender)
    }
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// A failed exchange: a cancelled request never reached the endpoint and may be retried.
fn hyper_error(err: hyper::Error) -> ProxyError {
    ProxyError::upstream_reset(err.is_canceled(), err)
}
