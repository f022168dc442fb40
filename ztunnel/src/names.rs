//! The DNS proxy's view of mesh names, read from the current state snapshot.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use ambit_state::StateStore;

use crate::dns::MeshNames;

/// Answers service hostnames (`<svc>.<ns>.svc.cluster.local`) with their VIPs.
pub struct StateNames {
    state: Arc<StateStore>,
}

impl StateNames {
    /// Names from `state`, re-read at every query.
    pub fn new(state: Arc<StateStore>) -> Self {
        Self { state }
    }
}

impl MeshNames for StateNames {
    fn lookup(&self, host: &str, _client_namespace: &str) -> Option<Vec<IpAddr>> {
        let snapshot = self.state.load();
        snapshot
            .service_by_hostname(host)
            .filter(|service| !service.vips().is_empty())
            .map(|service| service.vips().to_vec())
    }
}

impl fmt::Debug for StateNames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateNames").finish_non_exhaustive()
    }
}
