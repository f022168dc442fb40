//! A set of named things still pending, shared by readiness conditions and drain tasks.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

/// Names still pending, keyed by registration order. A `watch` channel so waiters learn of
/// every removal without polling; updates happen once per registration, never per request.
#[derive(Debug)]
pub(crate) struct PendingSet {
    entries: watch::Sender<BTreeMap<u64, String>>,
    next_id: AtomicU64,
}

/// Removes its entry from the set when done or dropped.
#[derive(Debug)]
pub(crate) struct PendingEntry {
    set: Arc<PendingSet>,
    id: u64,
}

impl PendingSet {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            entries: watch::Sender::new(BTreeMap::new()),
            next_id: AtomicU64::new(0),
        })
    }

    pub(crate) fn add(self: &Arc<Self>, name: String) -> PendingEntry {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.entries.send_modify(|entries| {
            entries.insert(id, name);
        });
        PendingEntry {
            set: self.clone(),
            id,
        }
    }

    /// Names still pending, in registration order.
    pub(crate) fn names(&self) -> Vec<String> {
        self.entries.borrow().values().cloned().collect()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.borrow().is_empty()
    }

    /// Resolves once nothing is pending.
    pub(crate) async fn wait_empty(&self) {
        let mut rx = self.entries.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = rx.wait_for(BTreeMap::is_empty).await;
    }
}

impl Drop for PendingEntry {
    fn drop(&mut self) {
        let id = self.id;
        self.set.entries.send_modify(|entries| {
            entries.remove(&id);
        });
    }
}
