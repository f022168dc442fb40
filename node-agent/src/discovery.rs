//! Finding pods the plugin never reported: pods whose sandbox existed before the agent first
//! ran on the node (Ambit installed into a running cluster, or the state file lost).
//!
//! A pod of this node that the pod watch shows with IPs, that is not host-network, not
//! finished and not in an excluded namespace, but that no CNI report (nor the state file)
//! made known, is a **candidate**. Candidates are matched to the network namespaces under
//! `--netns-dir` (where containerd and CRI-O bind-mount each sandbox's netns) by address:
//! [`NetnsScanner`] lists each namespace's interface addresses,
//! [`match_pods`] pairs them with the pods' `status.podIPs`, and a match is taken as if the
//! plugin had reported it ([`Core::discover`](crate::core::Core::discover)): the same
//! enrollment decision, remembered and persisted like any sandbox.
//!
//! A scan runs after the first pod and namespace lists, and again only when a pod becomes a
//! candidate with IPs the last scan did not look for (a pod without IPs yet waits for the
//! watch event that brings them). Only an exact, unambiguous match counts: an address found
//! in two namespaces, claimed by two pods, or a namespace matching two pods is refused and
//! logged, because enrolling the wrong namespace would capture another pod's traffic.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use tracing::warn;

use crate::agent::Agent;
use crate::netns::NetnsScanner;

/// Interface addresses of each network namespace, by the path that names it.
pub type NetnsAddrs = BTreeMap<String, Vec<IpAddr>>;

/// A pod the scan looks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Pod UID.
    pub uid: String,
    /// Namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// `status.podIPs`, never empty.
    pub ips: Vec<IpAddr>,
}

/// What the scan found for one candidate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Exactly this namespace holds the pod's addresses.
    Found(String),
    /// No namespace holds any of the pod's addresses.
    NotFound,
    /// The addresses point to more than one namespace or pod; nothing is enrolled.
    Ambiguous(String),
}

/// Matches `pods` to the namespaces in `found` by address. `taken` are the namespaces of the
/// pods already known: one of them holding a candidate's address is a conflict, not a match.
pub fn match_pods(
    found: &NetnsAddrs,
    taken: &BTreeSet<&str>,
    pods: &[Candidate],
) -> BTreeMap<String, Outcome> {
    let mut netns_by_ip: BTreeMap<IpAddr, BTreeSet<&str>> = BTreeMap::new();
    for (netns, addrs) in found {
        for ip in addrs {
            netns_by_ip.entry(*ip).or_default().insert(netns);
        }
    }
    let mut pods_by_ip: BTreeMap<IpAddr, BTreeSet<&str>> = BTreeMap::new();
    for pod in pods {
        for ip in &pod.ips {
            pods_by_ip.entry(*ip).or_default().insert(&pod.uid);
        }
    }

    // First each pod on its own, then namespaces claimed by several pods.
    let mut outcomes: BTreeMap<String, Outcome> = BTreeMap::new();
    let mut claims: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for pod in pods {
        let outcome = match own_netns(pod, &netns_by_ip, &pods_by_ip) {
            Ok(Some(netns)) if taken.contains(netns) => Outcome::Ambiguous(format!(
                "{netns} holds its address but already belongs to a known pod"
            )),
            Ok(Some(netns)) => {
                claims.entry(netns).or_default().push(&pod.uid);
                Outcome::Found(netns.to_owned())
            }
            Ok(None) => Outcome::NotFound,
            Err(why) => Outcome::Ambiguous(why),
        };
        outcomes.insert(pod.uid.clone(), outcome);
    }
    for (netns, uids) in claims {
        if uids.len() > 1 {
            for uid in &uids {
                outcomes.insert(
                    (*uid).to_owned(),
                    Outcome::Ambiguous(format!("{netns} also holds the addresses of other pods")),
                );
            }
        }
    }
    outcomes
}

/// The one namespace holding `pod`'s addresses, if any.
fn own_netns<'a>(
    pod: &Candidate,
    netns_by_ip: &BTreeMap<IpAddr, BTreeSet<&'a str>>,
    pods_by_ip: &BTreeMap<IpAddr, BTreeSet<&str>>,
) -> Result<Option<&'a str>, String> {
    let mut holders: BTreeSet<&'a str> = BTreeSet::new();
    for ip in &pod.ips {
        if pods_by_ip.get(ip).is_some_and(|uids| uids.len() > 1) {
            return Err(format!("{ip} is the address of more than one pod"));
        }
        let Some(netns) = netns_by_ip.get(ip) else {
            continue;
        };
        if netns.len() > 1 {
            let names: Vec<&str> = netns.iter().copied().collect();
            return Err(format!(
                "{ip} is in several namespaces: {}",
                names.join(", ")
            ));
        }
        holders.extend(netns.iter().copied());
    }
    let mut holders = holders.into_iter();
    match (holders.next(), holders.next()) {
        (None, _) => Ok(None),
        (Some(netns), None) => Ok(Some(netns)),
        (Some(first), Some(second)) => {
            Err(format!("its addresses are split over {first} and {second}"))
        }
    }
}

/// Scans whenever the agent has candidates it has not looked for, until the future is
/// dropped. The scan runs on a thread of its own (it enters each namespace); the agent keeps
/// answering the plugin meanwhile.
pub async fn run(agent: Arc<Agent>, mut scanner: NetnsScanner) {
    loop {
        agent.scan_wanted().await;
        if !agent.wants_scan().await {
            continue;
        }
        match scanner.scan().await {
            Ok(found) => agent.discover(&found, scanner.dir()).await,
            Err(e) => {
                warn!(error = %e, "cannot scan for the network namespaces of unknown pods");
                agent.scan_failed().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap_or_else(|_| panic!("{text}"))
    }

    fn pod(uid: &str, ips: &[&str]) -> Candidate {
        Candidate {
            uid: uid.into(),
            namespace: "shop".into(),
            name: format!("web-{uid}"),
            ips: ips.iter().map(|text| ip(text)).collect(),
        }
    }

    fn netns(entries: &[(&str, &[&str])]) -> NetnsAddrs {
        entries
            .iter()
            .map(|(path, ips)| {
                let ips = ips.iter().map(|text| ip(text)).collect();
                ((*path).to_owned(), ips)
            })
            .collect()
    }

    fn found(path: &str) -> Outcome {
        Outcome::Found(path.into())
    }

    /// The reason `uid` was refused.
    fn refusal<'a>(outcomes: &'a BTreeMap<String, Outcome>, uid: &str) -> &'a str {
        match &outcomes[uid] {
            Outcome::Ambiguous(why) => why,
            other => panic!("{uid}: {other:?}"),
        }
    }

    #[test]
    fn each_pod_gets_the_namespace_holding_its_address() {
        let scan = netns(&[
            ("/n/cni-a", &["10.244.1.2", "fd00::2"]),
            ("/n/cni-b", &["10.244.1.3"]),
            ("/n/cni-empty", &[]),
        ]);
        let pods = [
            pod("a", &["10.244.1.2", "fd00::2"]),
            // Dual-stack pod whose namespace has only the IPv4 address so far.
            pod("b", &["10.244.1.3", "fd00::3"]),
            pod("c", &["10.244.1.9"]),
        ];
        let outcomes = match_pods(&scan, &BTreeSet::new(), &pods);
        assert_eq!(outcomes["a"], found("/n/cni-a"));
        assert_eq!(outcomes["b"], found("/n/cni-b"));
        assert_eq!(outcomes["c"], Outcome::NotFound);
        assert_eq!(outcomes.len(), 3);
    }

    #[test]
    fn an_address_in_two_namespaces_is_refused() {
        let scan = netns(&[("/n/cni-a", &["10.244.1.2"]), ("/n/cni-b", &["10.244.1.2"])]);
        let outcomes = match_pods(&scan, &BTreeSet::new(), &[pod("a", &["10.244.1.2"])]);
        let Outcome::Ambiguous(why) = &outcomes["a"] else {
            panic!("{outcomes:?}")
        };
        assert!(
            why.contains("/n/cni-a") && why.contains("/n/cni-b"),
            "{why}"
        );
    }

    #[test]
    fn an_address_of_two_pods_is_refused_for_both() {
        let scan = netns(&[("/n/cni-a", &["10.244.1.2"])]);
        let pods = [pod("a", &["10.244.1.2"]), pod("b", &["10.244.1.2"])];
        let outcomes = match_pods(&scan, &BTreeSet::new(), &pods);
        for uid in ["a", "b"] {
            assert!(
                matches!(&outcomes[uid], Outcome::Ambiguous(why) if why.contains("more than one pod")),
                "{outcomes:?}"
            );
        }
    }

    #[test]
    fn a_namespace_matching_two_pods_is_refused_for_both() {
        let scan = netns(&[("/n/cni-a", &["10.244.1.2", "10.244.1.3"])]);
        let pods = [pod("a", &["10.244.1.2"]), pod("b", &["10.244.1.3"])];
        let outcomes = match_pods(&scan, &BTreeSet::new(), &pods);
        refusal(&outcomes, "a");
        refusal(&outcomes, "b");
    }

    #[test]
    fn a_pod_split_over_two_namespaces_is_refused() {
        let scan = netns(&[("/n/cni-a", &["10.244.1.2"]), ("/n/cni-b", &["fd00::2"])]);
        let outcomes = match_pods(
            &scan,
            &BTreeSet::new(),
            &[pod("a", &["10.244.1.2", "fd00::2"])],
        );
        refusal(&outcomes, "a");
    }

    #[test]
    fn a_namespace_of_a_known_pod_is_not_given_to_another() {
        let scan = netns(&[("/n/cni-a", &["10.244.1.2"]), ("/n/cni-b", &["10.244.1.3"])]);
        let taken = BTreeSet::from(["/n/cni-a"]);
        let pods = [pod("x", &["10.244.1.2"]), pod("y", &["10.244.1.3"])];
        let outcomes = match_pods(&scan, &taken, &pods);
        assert!(
            matches!(&outcomes["x"], Outcome::Ambiguous(why) if why.contains("known pod")),
            "{outcomes:?}"
        );
        assert_eq!(outcomes["y"], found("/n/cni-b"));
    }
}
