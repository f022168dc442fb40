//! Load balancing: weighted choice among a rule's backends, then an endpoint of the chosen
//! service under its DestinationRule.
//!
//! [`pick`] applies the rule (or the subset's policy): the candidates are the service's
//! endpoints whose workload is known, maps the port and carries the subset's labels; outlier
//! detection removes the ejected ones ("healthy" = what is left); the load balancer
//! ([`crate::lb`]) chooses among them; `http2MaxRequests` is checked. The [`Picked`] result
//! carries the cluster state, so the outcome of the try can be reported back and the pool
//! limits applied upstream; the stack keeps it with the response body, so a request counts
//! as in flight (LEAST_REQUEST, `http2MaxRequests`) until its response has been sent.
//! Without a DestinationRule, endpoints are taken round robin (Istio would default to
//! LEAST_REQUEST; the waypoint's earlier behaviour is kept).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ambit_identity::SpiffeId;
use ambit_model::destination_rule::{HashKey, LoadBalancer, Subset, TrafficPolicy};
use ambit_model::route::Backend;
use ambit_model::{Labels, Workload};
use http::HeaderValue;
use http::header::COOKIE;
use http::request::Parts;
use rand::Rng;
use tokio::time::Instant;

use crate::cluster::{Cluster, ClusterKey, Clusters, InFlight};
use crate::config::{ServiceEntry, ServiceKey, Snapshot};
use crate::errors::ProxyError;
use crate::lb::{self, Candidate};
use crate::outlier::TryOutcome;
use crate::pool_limits::PoolGuard;

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

/// The request facts endpoint choice may depend on.
#[derive(Debug, Clone, Copy)]
pub struct PickRequest<'a> {
    /// The request head (hash keys: header, cookie, query parameter).
    pub parts: &'a Parts,
    /// The original client address (hash key `useSourceIp`).
    pub client_ip: IpAddr,
    /// The DestinationRule subset the route names, if any.
    pub subset: Option<&'a str>,
}

/// An endpoint chosen under a destination's policy, with what the try must give back.
#[derive(Debug)]
pub struct Picked {
    /// The endpoint.
    pub endpoint: EndpointTarget,
    /// The destination's state (pool counters, outlier state).
    pub cluster: Arc<Cluster>,
    /// The policy in force for this destination.
    pub policy: TrafficPolicy,
    /// A `set-cookie` value when a hash cookie was generated for this request.
    pub set_cookie: Option<HeaderValue>,
    /// How many endpoints the destination has (for `maxEjectionPercent`).
    total: usize,
    _in_flight: InFlight,
    _active: PoolGuard,
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

/// The next endpoint of `entry` (round robin) that can take traffic on service port `port`,
/// among the workloads carrying every one of `labels` (a subset's) when given.
pub fn pick_endpoint(
    snapshot: &Snapshot,
    entry: &ServiceEntry,
    port: u16,
    labels: Option<&Labels>,
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
        if let Some(labels) = labels
            && !has_labels(workload, labels)
        {
            return None;
        }
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

/// Whether `workload` carries every one of `labels`.
fn has_labels(workload: &Workload, labels: &Labels) -> bool {
    labels
        .iter()
        .all(|(key, value)| workload.labels().get(key) == Some(value))
}

/// Subset `name` of `entry`'s DestinationRule; `503 NC` when there is no such subset.
pub fn subset<'s>(
    snapshot: &'s Snapshot,
    entry: &ServiceEntry,
    name: &str,
) -> Result<&'s Subset, ProxyError> {
    let service = &entry.service;
    snapshot
        .destination_rule(&ServiceKey::of(service))
        .and_then(|rule| rule.subset(name))
        .ok_or_else(|| {
            ProxyError::unknown_subset(format!("{} has no subset {name:?}", service.hostname()))
        })
}

/// Picks an endpoint of `entry` on service port `port` for one try of `request`, under the
/// service's DestinationRule. Fails with `503 NC` for an unknown subset, `503 UH` when no
/// endpoint is healthy, `503 UO` when `http2MaxRequests` are active.
pub fn pick(
    snapshot: &Snapshot,
    clusters: &Clusters,
    entry: &ServiceEntry,
    port: u16,
    request: PickRequest<'_>,
) -> Result<Picked, ProxyError> {
    let service = &entry.service;
    let service_key = ServiceKey::of(service);
    let rule = snapshot.destination_rule(&service_key);
    let (policy, labels) = match (request.subset, rule) {
        (None, None) => (TrafficPolicy::default(), None),
        (None, Some(rule)) => (rule.policy().clone(), None),
        (Some(name), _) => {
            let subset = subset(snapshot, entry, name)?;
            (subset.policy.clone(), Some(&subset.labels))
        }
    };
    let cluster = clusters.get(&ClusterKey {
        service: service_key,
        subset: request.subset.map(str::to_owned),
    });
    let mut targets: Vec<EndpointTarget> = service
        .endpoints()
        .keys()
        .filter_map(|uid| {
            let workload = snapshot.workload(uid)?;
            if let Some(labels) = labels
                && !has_labels(workload, labels)
            {
                return None;
            }
            let target_port = service.target_port(uid, port)?;
            let ip = *workload.ips().first()?;
            Some(endpoint(
                snapshot,
                workload.clone(),
                SocketAddr::new(ip, target_port),
                service.subject_alt_names(),
            ))
        })
        .collect();
    let total = targets.len();
    let now = Instant::now();
    let (chosen, in_flight) = {
        let mut stats = cluster.endpoints();
        let mut candidates = Vec::with_capacity(targets.len());
        targets.retain(|target| {
            let entry = stats.entry(target.addr).or_default();
            let healthy = !entry.is_ejected(now);
            if healthy {
                candidates.push(Candidate {
                    addr: target.addr,
                    in_flight: entry.in_flight(),
                });
            }
            healthy
        });
        let mut set_cookie = None;
        let index = match &policy.load_balancer {
            LoadBalancer::RoundRobin => lb::round_robin(&candidates, cluster.next_cursor()),
            LoadBalancer::Random => lb::random(&candidates, &mut rand::rng()),
            LoadBalancer::LeastRequest => lb::least_request(&candidates, &mut rand::rng()),
            LoadBalancer::ConsistentHash(key) => match hash_key(key, &request) {
                Some(HashInput::Present(bytes)) => lb::consistent_hash(&candidates, &bytes),
                Some(HashInput::Generated { value, cookie }) => {
                    set_cookie = Some(cookie);
                    lb::consistent_hash(&candidates, value.as_bytes())
                }
                // No key in this request: any endpoint, and nothing to stick to.
                None => lb::random(&candidates, &mut rand::rng()),
            },
        };
        let Some(index) = index else {
            return Err(ProxyError::no_healthy_upstream());
        };
        let addr = candidates[index].addr;
        let in_flight = stats.entry(addr).or_default().start();
        ((index, set_cookie), in_flight)
    };
    let (index, set_cookie) = chosen;
    let active = cluster
        .counters()
        .try_request(policy.connection_pool.max_requests)
        .ok_or_else(|| ProxyError::overflow("http2MaxRequests"))?;
    Ok(Picked {
        endpoint: targets.swap_remove(index),
        cluster,
        policy,
        set_cookie,
        total,
        _in_flight: in_flight,
        _active: active,
    })
}

impl Picked {
    /// Reports how the try went, for outlier detection.
    pub fn report(&self, outcome: TryOutcome) {
        if let Some(config) = &self.policy.outlier_detection {
            self.cluster
                .record(self.endpoint.addr, outcome, config, self.total);
        }
    }
}

/// A hash key from the request, or one generated for a cookie with a TTL.
enum HashInput {
    Present(Vec<u8>),
    Generated { value: String, cookie: HeaderValue },
}

fn hash_key(key: &HashKey, request: &PickRequest<'_>) -> Option<HashInput> {
    let headers = &request.parts.headers;
    match key {
        HashKey::Header(name) => {
            // Every value of a repeated header, in order.
            let values: Vec<&[u8]> = headers
                .get_all(name.as_str())
                .iter()
                .map(HeaderValue::as_bytes)
                .collect();
            (!values.is_empty()).then(|| HashInput::Present(values.join(&b',')))
        }
        HashKey::SourceIp => Some(HashInput::Present(
            request.client_ip.to_string().into_bytes(),
        )),
        HashKey::QueryParameter(name) => request.parts.uri.query()?.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key == name).then(|| HashInput::Present(value.as_bytes().to_vec()))
        }),
        HashKey::Cookie { name, path, ttl } => {
            if let Some(value) = cookie(headers, name) {
                return Some(HashInput::Present(value.as_bytes().to_vec()));
            }
            let ttl = (*ttl)?;
            let value = format!("{:016x}", rand::rng().random::<u64>());
            let cookie = set_cookie(name, &value, path.as_deref(), ttl)?;
            Some(HashInput::Generated { value, cookie })
        }
    }
}

/// The value of cookie `name` in the request's `cookie` headers.
fn cookie<'h>(headers: &'h http::HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key == name).then(|| value.trim_matches('"'))
        })
}

fn set_cookie(name: &str, value: &str, path: Option<&str>, ttl: Duration) -> Option<HeaderValue> {
    let mut cookie = format!("{name}={value}; Max-Age={}; HttpOnly", ttl.as_secs().max(1));
    if let Some(path) = path {
        cookie.push_str("; Path=");
        cookie.push_str(path);
    }
    HeaderValue::from_str(&cookie).ok()
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
    fn cookies_are_found_and_generated() {
        let mut headers = http::HeaderMap::new();
        headers.append(COOKIE, HeaderValue::from_static("a=1; session=\"abc\""));
        headers.append(COOKIE, HeaderValue::from_static("other=2"));
        assert_eq!(cookie(&headers, "session"), Some("abc"));
        assert_eq!(cookie(&headers, "other"), Some("2"));
        assert_eq!(cookie(&headers, "missing"), None);
        let value = set_cookie("session", "f00", Some("/cart"), Duration::from_secs(60)).unwrap();
        assert_eq!(value, "session=f00; Max-Age=60; HttpOnly; Path=/cart");
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
