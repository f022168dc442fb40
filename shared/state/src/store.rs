//! The atomically swapped holder of the current snapshot.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::{ArcSwap, Guard};

use crate::snapshot::Snapshot;

/// Holds the current [`Snapshot`]. Cheap to share behind an `Arc`; readers never block.
#[derive(Debug)]
pub struct StateStore {
    current: ArcSwap<Snapshot>,
    version: AtomicU64,
}

impl StateStore {
    /// A store whose first snapshot is `initial` (version 0).
    pub fn new(initial: Snapshot) -> Self {
        Self {
            current: ArcSwap::from_pointee(initial),
            version: AtomicU64::new(0),
        }
    }

    /// The current snapshot, for the duration of one lookup or connection. Lock-free.
    pub fn load(&self) -> Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// The current snapshot as an owned `Arc`, to keep beyond a short lookup.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Publishes `next`; readers see it from their next [`load`](Self::load) on. Returns the
    /// new version.
    pub fn replace(&self, next: Snapshot) -> u64 {
        self.current.store(Arc::new(next));
        self.version.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// How many snapshots were published after the initial one.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }
}

impl Default for StateStore {
    fn default() -> Self {
        Self::new(Snapshot::default())
    }
}
