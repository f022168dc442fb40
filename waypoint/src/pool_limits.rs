//! Connection-pool limits of one destination (DestinationRule `connectionPool`), Envoy's
//! circuit breakers: counters of active requests, requests waiting for a connection, open
//! HTTP/1.1 connections and retries in flight, each taken with a guard that gives it back.
//!
//! Limits are read from the current snapshot on every acquisition rather than baked into
//! semaphores, so a configuration change applies to the next request while the counts of
//! requests already in flight stay right.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::sync::Notify;

/// The counters of one destination (a service, or a subset of it).
#[derive(Debug, Default)]
pub struct PoolCounters {
    active_requests: AtomicU32,
    pending_requests: AtomicU32,
    connections: AtomicU32,
    retries: AtomicU32,
    /// Woken when a connection becomes idle or closes, for pending requests.
    released: Notify,
}

/// Which counter a guard holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Counter {
    ActiveRequests,
    PendingRequests,
    Connections,
    Retries,
}

/// One unit of a counter, given back on drop.
#[derive(Debug)]
pub struct PoolGuard {
    counters: Arc<PoolCounters>,
    counter: Counter,
}

impl PoolCounters {
    fn counter(&self, counter: Counter) -> &AtomicU32 {
        match counter {
            Counter::ActiveRequests => &self.active_requests,
            Counter::PendingRequests => &self.pending_requests,
            Counter::Connections => &self.connections,
            Counter::Retries => &self.retries,
        }
    }

    /// A request towards the destination, unless `http2MaxRequests` are already active.
    pub fn try_request(self: &Arc<Self>, limit: Option<u32>) -> Option<PoolGuard> {
        self.try_take(Counter::ActiveRequests, limit)
    }

    /// A place in the queue for a connection, unless `http1MaxPendingRequests` are waiting.
    pub fn try_pending(self: &Arc<Self>, limit: Option<u32>) -> Option<PoolGuard> {
        self.try_take(Counter::PendingRequests, limit)
    }

    /// A new connection, unless `tcp.maxConnections` are open.
    pub fn try_connection(self: &Arc<Self>, limit: Option<u32>) -> Option<PoolGuard> {
        self.try_take(Counter::Connections, limit)
    }

    /// A retry, unless `http.maxRetries` retries are in flight.
    pub fn try_retry(self: &Arc<Self>, limit: Option<u32>) -> Option<PoolGuard> {
        self.try_take(Counter::Retries, limit)
    }

    /// Requests active now.
    pub fn active_requests(&self) -> u32 {
        self.active_requests.load(Ordering::Relaxed)
    }

    /// Connections open now.
    pub fn connections(&self) -> u32 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Wakes requests waiting for a connection: one became idle.
    pub fn notify_released(&self) {
        self.released.notify_waiters();
    }

    /// Resolves when a connection becomes idle or closes.
    pub fn released(&self) -> tokio::sync::futures::Notified<'_> {
        self.released.notified()
    }

    fn try_take(self: &Arc<Self>, counter: Counter, limit: Option<u32>) -> Option<PoolGuard> {
        let cell = self.counter(counter);
        let taken = cell.fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| match limit {
            Some(limit) if current >= limit => None,
            _ => Some(current.saturating_add(1)),
        });
        taken.ok().map(|_| PoolGuard {
            counters: self.clone(),
            counter,
        })
    }
}

impl Drop for PoolGuard {
    fn drop(&mut self) {
        self.counters
            .counter(self.counter)
            .fetch_sub(1, Ordering::AcqRel);
        if self.counter == Counter::Connections {
            self.counters.notify_released();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_enforced_and_guards_give_back() {
        let counters = Arc::new(PoolCounters::default());
        let first = counters.try_request(Some(2)).unwrap();
        let second = counters.try_request(Some(2)).unwrap();
        assert!(counters.try_request(Some(2)).is_none());
        assert_eq!(counters.active_requests(), 2);
        drop(first);
        let third = counters.try_request(Some(2)).unwrap();
        // No limit: always granted, still counted.
        let unlimited = counters.try_request(None).unwrap();
        assert_eq!(counters.active_requests(), 3);
        drop((second, third, unlimited));
        assert_eq!(counters.active_requests(), 0);
        assert!(counters.try_connection(Some(0)).is_none());
        let retry = counters.try_retry(Some(1)).unwrap();
        assert!(counters.try_retry(Some(1)).is_none());
        drop(retry);
        assert!(counters.try_pending(Some(1)).is_some());
    }

    #[tokio::test]
    async fn closing_a_connection_wakes_waiters() {
        let counters = Arc::new(PoolCounters::default());
        let connection = counters.try_connection(Some(1)).unwrap();
        let waiter = counters.released();
        tokio::pin!(waiter);
        waiter.as_mut().enable();
        drop(connection);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .unwrap();
        assert_eq!(counters.connections(), 0);
    }
}
