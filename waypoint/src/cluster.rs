//! Per-destination state that outlives configuration snapshots: the round-robin cursor,
//! requests in flight and outlier state per endpoint, and the connection-pool counters.
//!
//! A destination ("cluster" in Envoy's terms) is a service or one subset of it. The state is
//! kept across reloads — an ejected endpoint stays ejected and in-flight counts stay right
//! when a DestinationRule changes — and endpoints are keyed by address, which is how they
//! are identified from one snapshot to the next.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use ambit_model::destination_rule::OutlierDetection;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Instant;
use tracing::info;

use crate::config::ServiceKey;
use crate::outlier::{OutlierState, TryOutcome};
use crate::pool_limits::PoolCounters;

/// A service, or a subset of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClusterKey {
    /// The service.
    pub service: ServiceKey,
    /// The subset name, if any.
    pub subset: Option<String>,
}

/// Every destination's state, shared by all requests.
#[derive(Debug, Default)]
pub struct Clusters {
    clusters: Mutex<HashMap<ClusterKey, Arc<Cluster>>>,
}

/// One destination's state.
#[derive(Debug, Default)]
pub struct Cluster {
    cursor: AtomicUsize,
    endpoints: Mutex<HashMap<SocketAddr, EndpointStats>>,
    counters: Arc<PoolCounters>,
}

/// What the cluster knows about one endpoint.
#[derive(Debug, Default)]
pub struct EndpointStats {
    in_flight: Arc<AtomicUsize>,
    outlier: OutlierState,
}

/// A request in flight to one endpoint (for LEAST_REQUEST), counted until dropped.
#[derive(Debug)]
pub struct InFlight(Arc<AtomicUsize>);

/// A response body that keeps `held` (the request's in-flight and pool counts) until the
/// body ends or is dropped.
#[derive(Debug)]
pub struct HeldBody<B, H> {
    inner: B,
    held: Option<H>,
}

impl Clusters {
    /// The state of `key`, created on first use.
    pub fn get(&self, key: &ClusterKey) -> Arc<Cluster> {
        let mut clusters = self
            .clusters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(cluster) = clusters.get(key) {
            return cluster.clone();
        }
        let cluster = Arc::new(Cluster::default());
        clusters.insert(key.clone(), cluster.clone());
        cluster
    }
}

impl Cluster {
    /// The next round-robin position.
    pub fn next_cursor(&self) -> usize {
        self.cursor.fetch_add(1, Ordering::Relaxed)
    }

    /// The connection-pool counters.
    pub fn counters(&self) -> &Arc<PoolCounters> {
        &self.counters
    }

    /// Locks the endpoint table for one pick.
    pub fn endpoints(&self) -> MutexGuard<'_, HashMap<SocketAddr, EndpointStats>> {
        self.endpoints
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts `outcome` of a try to `addr`; ejects the endpoint when a threshold is reached
    /// and fewer than `maxEjectionPercent` of the `total` endpoints are ejected already.
    pub fn record(
        &self,
        addr: SocketAddr,
        outcome: TryOutcome,
        config: &OutlierDetection,
        total: usize,
    ) {
        let now = Instant::now();
        let mut endpoints = self.endpoints();
        let crossed = endpoints
            .entry(addr)
            .or_default()
            .outlier
            .record(outcome, config);
        if !crossed {
            return;
        }
        let ejected = endpoints
            .values_mut()
            .map(|e| e.outlier.is_ejected(now))
            .filter(|ejected| *ejected)
            .count();
        // Envoy's rule: eject while the ejected share is below the cap.
        let total = total.max(endpoints.len()).max(1);
        if ejected * 100 >= total * config.max_ejection_percent as usize {
            return;
        }
        if let Some(stats) = endpoints.get_mut(&addr) {
            stats.outlier.eject(now, config);
            info!(endpoint = %addr, ejections = stats.outlier.ejections(), "outlier ejected");
        }
    }
}

impl EndpointStats {
    /// Whether the endpoint is ejected now.
    pub fn is_ejected(&mut self, now: Instant) -> bool {
        self.outlier.is_ejected(now)
    }

    /// Requests in flight to it.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts one more request in flight until the guard drops.
    pub fn start(&self) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.in_flight.clone())
    }
}

impl<B, H> HeldBody<B, H> {
    /// Wraps `inner`, releasing `held` at its end.
    pub fn new(inner: B, held: H) -> Self {
        Self {
            inner,
            held: Some(held),
        }
    }
}

impl<B, H> Body for HeldBody<B, H>
where
    B: Body + Unpin,
    H: Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            self.held = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    #[tokio::test(start_paused = true)]
    async fn max_ejection_percent_caps_ejections() {
        let config = OutlierDetection {
            consecutive_5xx_errors: Some(1),
            consecutive_gateway_errors: None,
            interval: Duration::from_secs(1),
            base_ejection_time: Duration::from_secs(10),
            max_ejection_percent: 50,
        };
        let cluster = Cluster::default();
        for port in 1..=4 {
            cluster.record(addr(port), TryOutcome::Status(500), &config, 4);
        }
        let now = Instant::now();
        let ejected = cluster
            .endpoints()
            .values_mut()
            .map(|e| e.is_ejected(now))
            .filter(|ejected| *ejected)
            .count();
        assert_eq!(ejected, 2, "half of 4");
        tokio::time::advance(Duration::from_secs(10)).await;
        let now = Instant::now();
        assert!(cluster.endpoints().values_mut().all(|e| !e.is_ejected(now)));
    }

    #[tokio::test]
    async fn held_body_releases_at_its_end() {
        use http_body_util::BodyExt;

        let stats = EndpointStats::default();
        let body = HeldBody::new(
            http_body_util::Full::new(bytes::Bytes::from_static(b"data")),
            stats.start(),
        );
        assert_eq!(stats.in_flight(), 1);
        let mut body = std::pin::pin!(body);
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "data");
        assert_eq!(stats.in_flight(), 1, "held while the body streams");
        assert!(body.frame().await.is_none());
        assert_eq!(stats.in_flight(), 0, "released at the end");
    }

    #[test]
    fn in_flight_guards_count() {
        let stats = EndpointStats::default();
        let a = stats.start();
        let b = stats.start();
        assert_eq!(stats.in_flight(), 2);
        drop(a);
        assert_eq!(stats.in_flight(), 1);
        drop(b);
        assert_eq!(stats.in_flight(), 0);
    }
}
