//! Mesh names: the hosts ztunnel answers itself, and the names a pod's search path makes of them.
//!
//! [`MeshNames`] answers exact hosts only. The crate-private `NameExpander` turns the name a pod
//! asked for into the hosts it may mean, the way Kubernetes DNS would: `<svc>`, `<svc>.<ns>` and
//! `<svc>.<ns>.svc` grow into `<svc>.<ns>.svc.<cluster domain>`, a name that ends in one of the
//! pod's search domains is also tried without it, and every candidate is also tried as the
//! ServiceEntry wildcards that would cover it (`*.example.com`, `*.com`).

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

use hickory_proto::rr::Name;

/// Looks up mesh hosts (Kubernetes Services, ServiceEntry hosts) in ztunnel's state.
pub trait MeshNames: Send + Sync + fmt::Debug {
    /// The addresses of `host` as a pod in `client_namespace` sees them, or `None` when `host`
    /// is not a mesh host (the query then goes upstream).
    ///
    /// `host` is lower case without the trailing dot, e.g. `reviews.default.svc.cluster.local`,
    /// or a wildcard such as `*.example.com`. `Some` with no addresses of the asked family
    /// still makes an (empty) authoritative answer, never NXDOMAIN.
    fn lookup(&self, host: &str, client_namespace: &str) -> Option<Vec<IpAddr>>;
}

/// An in-memory [`MeshNames`]: a fixed map of hosts to addresses, for tests and static setups.
#[derive(Debug, Default, Clone)]
pub struct StaticMeshNames {
    hosts: HashMap<String, Vec<IpAddr>>,
}

/// Expands a queried name into the mesh hosts it may stand for, from one pod's point of view.
#[derive(Debug, Clone)]
pub(crate) struct NameExpander {
    /// `<cluster domain>.`
    cluster_domain: Name,
    /// `svc.<cluster domain>.`
    svc_domain: Name,
    /// `<pod namespace>.svc.<cluster domain>.`
    namespace_domain: Name,
    /// The pod's search domains, absolute.
    search_domains: Vec<Name>,
}

/// A mesh host that matched a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MeshMatch {
    /// Every address of the host, both families.
    pub(crate) addresses: Vec<IpAddr>,
    /// Set when the match came from stripping a search domain: the answer then carries a CNAME
    /// from the queried name to this name, and the address records are under this name.
    pub(crate) canonical: Option<Name>,
}

/// One name to look up, and the stripped name it came from, if any.
#[derive(Debug, Clone)]
struct Candidate {
    name: Name,
    stripped: Option<Name>,
}

impl StaticMeshNames {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `addresses` to `host` (case and a trailing dot do not matter).
    pub fn insert(&mut self, host: &str, addresses: impl IntoIterator<Item = IpAddr>) {
        self.hosts
            .entry(host_key(host))
            .or_default()
            .extend(addresses);
    }

    /// Builder form of [`StaticMeshNames::insert`].
    pub fn with(mut self, host: &str, addresses: impl IntoIterator<Item = IpAddr>) -> Self {
        self.insert(host, addresses);
        self
    }
}

impl MeshNames for StaticMeshNames {
    fn lookup(&self, host: &str, _client_namespace: &str) -> Option<Vec<IpAddr>> {
        self.hosts.get(host).cloned()
    }
}

impl NameExpander {
    /// An expander for a pod in `namespace`; the error is the text that is not a valid name.
    pub(crate) fn new(
        cluster_domain: &str,
        namespace: &str,
        search_domains: &[String],
    ) -> Result<Self, String> {
        let cluster_domain = absolute(cluster_domain).ok_or_else(|| cluster_domain.to_owned())?;
        let svc_domain =
            absolute(&format!("svc.{cluster_domain}")).ok_or_else(|| cluster_domain.to_ascii())?;
        let namespace_domain = Name::from_ascii(namespace)
            .ok()
            .filter(|name| name.iter().len() == 1)
            .and_then(|name| name.append_domain(&svc_domain).ok())
            .ok_or_else(|| namespace.to_owned())?;
        let search_domains = search_domains
            .iter()
            .map(|domain| absolute(domain).ok_or_else(|| domain.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            cluster_domain,
            svc_domain,
            namespace_domain,
            search_domains,
        })
    }

    /// Finds the first candidate of `query` that `names` knows, most specific first.
    pub(crate) fn resolve(
        &self,
        names: &dyn MeshNames,
        query: &Name,
        client_namespace: &str,
    ) -> Option<MeshMatch> {
        for candidate in self.candidates(query) {
            for (index, lookup) in with_wildcards(&candidate.name).iter().enumerate() {
                if let Some(addresses) =
                    names.lookup(&host_key(&lookup.to_ascii()), client_namespace)
                {
                    // A wildcard covers the queried name itself; no alias to explain.
                    let canonical = if index == 0 { candidate.stripped } else { None };
                    return Some(MeshMatch {
                        addresses,
                        canonical,
                    });
                }
            }
        }
        None
    }

    /// The names `query` may stand for, without duplicates, in the order they are tried.
    fn candidates(&self, query: &Name) -> Vec<Candidate> {
        let mut out: Vec<Candidate> = Vec::new();
        let mut add = |name: Name, stripped: Option<Name>| {
            if !out.iter().any(|seen| seen.name == name) {
                out.push(Candidate { name, stripped });
            }
        };
        add(query.clone(), None);
        if let Some(expanded) = self.kubernetes_form(query) {
            add(expanded, None);
        }
        for domain in &self.search_domains {
            let Some(stripped) = strip_domain(query, domain) else {
                continue;
            };
            add(stripped.clone(), Some(stripped.clone()));
            if let Some(expanded) = self.kubernetes_form(&stripped) {
                add(expanded, Some(stripped.clone()));
            }
        }
        out
    }

    /// The full Service name a short Kubernetes form stands for: `<svc>` in the pod's own
    /// namespace, `<svc>.<ns>`, `<svc>.<ns>.svc`.
    fn kubernetes_form(&self, name: &Name) -> Option<Name> {
        let labels = name.iter().len();
        let domain = match labels {
            1 => &self.namespace_domain,
            2 => &self.svc_domain,
            3 if name
                .iter()
                .next_back()
                .is_some_and(|label| label.eq_ignore_ascii_case(b"svc")) =>
            {
                &self.cluster_domain
            }
            _ => return None,
        };
        relative(name)?.append_domain(domain).ok()
    }
}

/// `name` and the wildcards that would cover it: `a.b.c`, `*.b.c`, `*.c`.
fn with_wildcards(name: &Name) -> Vec<Name> {
    let mut out = vec![name.clone()];
    let mut rest = name.clone();
    while rest.iter().len() > 1 {
        out.push(rest.clone().into_wildcard());
        rest = rest.base_name();
    }
    out
}

/// `name` without `domain` at its end, if `name` is strictly below `domain`.
fn strip_domain(name: &Name, domain: &Name) -> Option<Name> {
    let labels = name.iter().len();
    let domain_labels = domain.iter().len();
    if labels <= domain_labels || !domain.zone_of(name) {
        return None;
    }
    let mut stripped = Name::from_labels(name.iter().take(labels - domain_labels)).ok()?;
    stripped.set_fqdn(true);
    Some(stripped)
}

/// The same labels as `name`, not marked absolute, so a domain can be appended.
fn relative(name: &Name) -> Option<Name> {
    Name::from_labels(name.iter()).ok()
}

/// `domain` as an absolute name, whether or not it was written with the trailing dot.
fn absolute(domain: &str) -> Option<Name> {
    let mut name = Name::from_ascii(domain.trim_end_matches('.')).ok()?;
    if name.iter().len() == 0 {
        return None;
    }
    name.set_fqdn(true);
    Some(name)
}

/// The form hosts are looked up in: lower case, no trailing dot.
fn host_key(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
#[path = "names/tests.rs"]
mod tests;
