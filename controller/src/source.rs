//! The interface every source of objects implements: the local folder
//! ([`FolderSource`](crate::local::FolderSource)) and the Kubernetes API
//! ([`KubeSource`](crate::kube::KubeSource)).
//!
//! A source yields **full snapshots**: after any change, the complete consistent set of objects
//! it currently sees, plus the problems it found while reading them. Full snapshots keep the
//! translation a pure function of one value and make a restarted consumer trivially correct;
//! incremental pushes to proxies are computed downstream by diffing translated configs, not
//! here. The Kubernetes source hands out its watch cache when a watch event arrives
//! (debounced), in the same shape.

use std::future::Future;

use crate::local::SourceError;
use crate::objects::Resources;

/// Everything a source sees at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// The valid objects.
    pub resources: Resources,
    /// Objects that could not be read, were invalid or duplicated; each was skipped.
    pub errors: Vec<SourceError>,
}

/// A source of object snapshots.
pub trait Source {
    /// Waits for the next snapshot. The first call returns the current state at once; each
    /// later call returns after something changed. `None` means the source has ended for good.
    fn next_snapshot(&mut self) -> impl Future<Output = Option<Snapshot>> + Send;
}
