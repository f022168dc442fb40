//! Load balancing: weighted choice among a rule's backends, round robin among a service's
//! endpoints.
//!
//! "Healthy" here means: the endpoint's workload is known, has an address of the right
//! family and the service maps the port. Outlier detection, LEAST_REQUEST, RANDOM and
//! consistent hashing (issue 4 item 5) are not implemented yet.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use ambit_identity::SpiffeId;
use ambit_model::Workload;
use ambit_model::route::Backend;
use rand::Rng;

use crate::config::{ServiceEntry, Snapshot};

/// One endpoint chosen for a request.
#[derive(Debug, Clone)]
pub struct EndpointTarget {
    /// The endpoint's workload.
    pub workload: Arc<Workload>,
    /// `podIP:targetPort`: the HBONE `:authority`.
    pub addr: SocketAddr,
    /// Where its ztunnel takes HBONE (`podIP:15008`).
    pub hbone: SocketAddr,
    /// Identities its certificate may carry: the workload's, then the service's SANs.
    pub identities: Vec<SpiffeId>,
}

/// Picks a backend with probability proportional to its weight; `None` if every weight is 0.
pub fn pick_backend<'b>(backends: &'b [Backend], rng: &mut impl Rng) -> Option<&'b Backend> {
    let total: u64 = backends.iter().map(|b| u64::from(b.weight)).sum();
    if total == 0 {
        return None;
    }
    let mut point = rng.random_range(0..total);
    for backend in backends {
        let weight = u64::from(backend.weight);
        if point < weight {
            return Some(backend);
        }
        point -= weight;
    }
    None
}

/// The next endpoint of `entry` (round robin) that can take traffic on service port `port`.
pub fn pick_endpoint(
    snapshot: &Snapshot,
    entry: &ServiceEntry,
    port: u16,
) -> Option<EndpointTarget> {
    let service = &entry.service;
    let endpoints: Vec<&String> = service.endpoints().keys().collect();
    if endpoints.is_empty() {
        return None;
    }
    let start = entry.cursor.fetch_add(1, Ordering::Relaxed);
    (0..endpoints.len()).find_map(|offset| {
        let uid = endpoints[(start + offset) % endpoints.len()];
        let workload = snapshot.workload(uid)?;
        let target_port = service.target_port(uid, port)?;
        let ip = *workload.ips().first()?;
        Some(endpoint(
            snapshot,
            workload.clone(),
            SocketAddr::new(ip, target_port),
            service.subject_alt_names(),
        ))
    })
}

/// Like [`pick_endpoint`], restricted to the DestinationRule subset `subset` when one is named
/// (VirtualService `destination.subset`).
///
/// TODO(merge with the DestinationRule work on balance.rs): keep only endpoints whose labels
/// match the subset's labels. Until DestinationRule lands the subset is passed through here
/// and filters nothing.
pub fn pick_endpoint_in_subset(
    snapshot: &Snapshot,
    entry: &ServiceEntry,
    port: u16,
    subset: Option<&str>,
) -> Option<EndpointTarget> {
    if let Some(subset) = subset {
        tracing::trace!(subset, "subset not applied yet: no DestinationRule support");
    }
    pick_endpoint(snapshot, entry, port)
}

/// The endpoint for traffic addressed to a pod directly.
pub fn pod_endpoint(
    snapshot: &Snapshot,
    workload: Arc<Workload>,
    addr: SocketAddr,
) -> EndpointTarget {
    endpoint(snapshot, workload, addr, &[])
}

fn endpoint(
    snapshot: &Snapshot,
    workload: Arc<Workload>,
    addr: SocketAddr,
    extra_identities: &[SpiffeId],
) -> EndpointTarget {
    let mut identities = vec![workload.identity().clone()];
    identities.extend(extra_identities.iter().cloned());
    EndpointTarget {
        hbone: snapshot.hbone_address(addr.ip()),
        workload,
        addr,
        identities,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn backend(name: &str, weight: u32) -> Backend {
        Backend {
            namespace: "shop".into(),
            name: name.into(),
            port: 80,
            weight,
            subset: None,
            filters: Vec::new(),
        }
    }

    #[test]
    fn weights_are_respected() {
        let backends = [backend("a", 90), backend("b", 10), backend("never", 0)];
        let mut rng = StdRng::seed_from_u64(7);
        let mut counts = [0usize; 3];
        for _ in 0..10_000 {
            let picked = pick_backend(&backends, &mut rng).unwrap();
            counts[backends.iter().position(|b| b.name == picked.name).unwrap()] += 1;
        }
        // Binomial(10000, 0.1): sd = 30; 6 sd of slack.
        assert!((820..=1180).contains(&counts[1]), "{counts:?}");
        assert_eq!(counts[2], 0);
        assert!(pick_backend(&[backend("z", 0)], &mut rng).is_none());
    }
}
