//! Upstream: HBONE to the chosen endpoint's ztunnel with the waypoint's own certificate,
//! then HTTP/1.1 or HTTP/2 over that tunnel with hyper's client connection API.
//!
//! HBONE connections are pooled by [`ambit_hbone::Pool`] (one mTLS connection carries many
//! tunnels). On top, HTTP/1.1 connections (one tunnel each) are kept per endpoint and reused
//! once their previous response is finished; HTTP/2 has one multiplexed connection per
//! endpoint. Connection-pool limits (`maxConnections`, pending requests, overflow → UO) are
//! issue 4 item 5 and not implemented.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;

use ambit_hbone::{ConnectRequest, Pool, Target};
use ambit_identity::SpiffeId;
use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tracing::debug;

use crate::balance::EndpointTarget;
use crate::errors::{BoxError, ProxyError};

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
    h1: Mutex<HashMap<ConnectionKey, Vec<http1::SendRequest<UpstreamBody>>>>,
    h2: Mutex<HashMap<ConnectionKey, http2::SendRequest<UpstreamBody>>>,
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
        }
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

    /// Sends `request` to `endpoint` and returns the response head (the body streams).
    pub async fn send(
        &self,
        endpoint: &EndpointTarget,
        protocol: UpstreamProtocol,
        request: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, ProxyError> {
        let key = ConnectionKey {
            hbone: endpoint.hbone,
            addr: endpoint.addr,
            identities: endpoint.identities.clone(),
        };
        match protocol {
            UpstreamProtocol::Http1 => {
                let mut sender = match self.idle_h1(&key) {
                    Some(sender) => sender,
                    None => self.connect_h1(endpoint).await?,
                };
                sender
                    .ready()
                    .await
                    .map_err(|err| ProxyError::upstream_reset(true, err))?;
                let result = sender.send_request(request).await;
                self.release_h1(key, sender);
                result.map_err(hyper_error)
            }
            UpstreamProtocol::Http2 => {
                let mut sender = self.h2_sender(&key, endpoint).await?;
                sender
                    .ready()
                    .await
                    .map_err(|err| ProxyError::upstream_reset(true, err))?;
                sender.send_request(request).await.map_err(hyper_error)
            }
        }
    }

    fn idle_h1(&self, key: &ConnectionKey) -> Option<http1::SendRequest<UpstreamBody>> {
        let mut idle = self
            .h1
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let senders = idle.get_mut(key)?;
        senders.retain(|sender| !sender.is_closed());
        let ready = senders.iter().position(http1::SendRequest::is_ready)?;
        Some(senders.swap_remove(ready))
    }

    /// Keeps the connection for the next request; it becomes ready when this response's body
    /// has been read to the end.
    fn release_h1(&self, key: ConnectionKey, sender: http1::SendRequest<UpstreamBody>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self
            .h1
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let senders = idle.entry(key).or_default();
        if senders.len() < MAX_IDLE_H1_PER_ENDPOINT {
            senders.push(sender);
        }
    }

    async fn connect_h1(
        &self,
        endpoint: &EndpointTarget,
    ) -> Result<http1::SendRequest<UpstreamBody>, ProxyError> {
        let stream = self.tunnel(endpoint).await?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(ProxyError::connect_failure)?;
        let addr = endpoint.addr;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                debug!(%addr, %err, "upstream HTTP/1.1 connection ended with an error");
            }
        });
        Ok(sender)
    }

    async fn h2_sender(
        &self,
        key: &ConnectionKey,
        endpoint: &EndpointTarget,
    ) -> Result<http2::SendRequest<UpstreamBody>, ProxyError> {
        {
            let shared = self
                .h2
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some(sender) = shared.get(key).filter(|s| !s.is_closed()) {
                return Ok(sender.clone());
            }
        }
        // Two requests may race to connect; the later connection replaces the earlier in the
        // map, and both keep working for their own requests.
        let stream = self.tunnel(endpoint).await?;
        let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(ProxyError::connect_failure)?;
        let addr = endpoint.addr;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                debug!(%addr, %err, "upstream HTTP/2 connection ended with an error");
            }
        });
        self.h2
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(key.clone(), sender.clone());
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
