//! The node agent's decisions as a pure state machine: cluster facts and CNI reports in,
//! enrollment actions out. No IO and no clock, so every rule is tested without sockets.
//!
//! The core holds two views:
//! - the **cluster**: this node's pods and every namespace, as the Kubernetes watches report
//!   them (only the fields the decision needs);
//! - the **known pods**: every sandbox the CNI plugin reported with `add` and that was not
//!   deleted since, enrolled or not, with its netns. They are what gets persisted, and what
//!   lets a later label change enroll or unenroll a running pod.
//!
//! After every input the decision of each known pod is recomputed from the cluster view and
//! the difference in the enrolled set comes out as [`Action`]s.
//!
//! Pods of the cluster view that are not known but run with IPs are the candidates of the
//! netns scan ([`crate::discovery`]); a scan's matches become known pods through
//! [`Core::discover`], decided like reported ones.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ambit_cni::protocol::{Message, PodInfo, PodReport, ZtunnelRequest};
use serde::{Deserialize, Serialize};

use crate::discovery::{Candidate, NetnsAddrs, Outcome, match_pods};

/// `ambient` enrolls, `none` opts out; on namespaces and pods, the pod's wins.
pub const DATAPLANE_MODE: &str = "istio.io/dataplane-mode";
/// Annotation Istio's sidecar injector sets: such pods have their own proxy.
pub const SIDECAR_STATUS: &str = "sidecar.istio.io/status";

/// Labels of an object.
pub type Labels = BTreeMap<String, String>;

/// What the agent needs of a pod object from the API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiPod {
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `spec.serviceAccountName`, `default` when unset.
    pub service_account: String,
    /// `metadata.labels`.
    pub labels: Labels,
    /// `spec.hostNetwork`.
    pub host_network: bool,
    /// Whether Istio injected a sidecar.
    pub has_sidecar: bool,
    /// `status.podIPs`: empty until the sandbox's network is up.
    pub ips: Vec<IpAddr>,
    /// `status.phase` is `Succeeded` or `Failed`: no sandbox runs, its IPs may be reused.
    pub finished: bool,
}

/// A sandbox the CNI plugin reported, with the agent's current decision. Persisted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnownPod {
    /// Pod UID.
    pub uid: String,
    /// Namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// Service account, from the pod object.
    pub service_account: String,
    /// The sandbox that was reported; a `del` of another sandbox does not touch this one.
    /// Empty for a pod the netns scan found (the sandbox ID is not known then).
    pub container_id: String,
    /// The sandbox's network namespace.
    pub netns: String,
    /// The last decision: whether ztunnel should serve the pod.
    pub enrolled: bool,
}

/// What ztunnel must be told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Start serving the pod (or serve it with these new details).
    Enroll(PodInfo),
    /// Stop serving the pod with this UID.
    Unenroll(String),
}

/// A fact from the Kubernetes watches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterEvent {
    /// A pod of this node was created or changed.
    PodApplied(ApiPod),
    /// A pod of this node was deleted (by UID).
    PodDeleted(String),
    /// The complete list of this node's pods (initial list or relist).
    PodsListed(Vec<ApiPod>),
    /// A namespace was created or its labels changed.
    NamespaceApplied {
        /// The namespace.
        name: String,
        /// Its labels.
        labels: Labels,
    },
    /// A namespace was deleted.
    NamespaceDeleted(String),
    /// The complete list of namespaces with their labels.
    NamespacesListed(Vec<(String, Labels)>),
}

/// What an input changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Enrollment changes for ztunnel, unenrollments first.
    pub actions: Vec<Action>,
    /// Whether the known pods changed (and must be persisted).
    pub known_changed: bool,
}

/// The answer to a CNI `add`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddOutcome {
    /// The pod is known now; `pod` is what ztunnel is asked to serve when `enrolled`.
    Added {
        /// Whether the pod is in the mesh.
        enrolled: bool,
        /// The pod as ztunnel sees it.
        pod: PodInfo,
    },
    /// The watches do not have the pod (or are not synced) yet: ask again after the next
    /// cluster event, or give up.
    Pending(Pending),
    /// The report contradicts the API (a UID of another pod).
    Rejected(String),
}

/// Why an `add` cannot be answered yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pending {
    /// The initial pod or namespace list has not completed.
    NotSynced,
    /// The pod is not (yet) in the pod watch.
    UnknownPod,
    /// The pod's namespace is not (yet) in the namespace watch: its labels decide, so a pod
    /// created right after its namespace waits for them.
    UnknownNamespace,
}

/// The state machine.
#[derive(Clone, Debug, Default)]
pub struct Core {
    pods: BTreeMap<String, ApiPod>,
    namespaces: BTreeMap<String, Labels>,
    pods_synced: bool,
    namespaces_synced: bool,
    known: BTreeMap<String, KnownPod>,
    /// Namespaces the plugin never reports (`excludeNamespaces`): not scanned for either.
    excluded: BTreeSet<String>,
    /// Pods whose sandbox the plugin deleted in this run: a scan must not bring back a
    /// namespace that is being torn down. Cleared by the next `add` of the pod.
    cni_deleted: BTreeSet<String>,
    /// Candidates a scan looked for without a match, with the IPs it looked for: scanned
    /// again only when those change.
    looked_for: BTreeMap<String, Vec<IpAddr>>,
}

/// Whether a pod is in the mesh, as Istio decides for ambient: the pod's
/// `istio.io/dataplane-mode` (`ambient` or `none`) wins over its namespace's; an unknown value
/// on the pod is ignored. Host-network pods share the node's namespace and cannot be captured;
/// pods with an injected sidecar have their own proxy.
pub fn decide(namespace_labels: &Labels, pod: &ApiPod) -> bool {
    if pod.host_network || pod.has_sidecar {
        return false;
    }
    match pod.labels.get(DATAPLANE_MODE).map(String::as_str) {
        Some("ambient") => true,
        Some("none") => false,
        _ => namespace_labels
            .get(DATAPLANE_MODE)
            .is_some_and(|mode| mode == "ambient"),
    }
}

impl KnownPod {
    /// The pod as ztunnel needs it.
    pub fn info(&self) -> PodInfo {
        PodInfo {
            uid: self.uid.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            service_account: self.service_account.clone(),
            netns: self.netns.clone(),
        }
    }
}

impl Core {
    /// An empty core: nothing known, watches not synced.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty core whose scans skip the pods of `excluded` namespaces.
    pub fn with_excluded_namespaces(excluded: BTreeSet<String>) -> Self {
        Self {
            excluded,
            ..Self::default()
        }
    }

    /// Takes the pods persisted by a previous run, dropping those whose netns is gone (the
    /// sandbox was torn down while the agent was not running). Until the pod watch has
    /// listed, their persisted decisions stand, so a restarted agent serves ztunnel the same
    /// snapshot at once.
    pub fn restore(&mut self, pods: Vec<KnownPod>, netns_exists: impl Fn(&str) -> bool) -> Changes {
        let before = self.known.clone();
        for pod in pods {
            if netns_exists(&pod.netns) {
                self.known.insert(pod.uid.clone(), pod);
            } else {
                tracing::info!(
                    namespace = %pod.namespace, name = %pod.name, netns = %pod.netns,
                    "forgetting a persisted pod whose netns is gone"
                );
            }
        }
        self.finish(&before)
    }

    /// Applies a watch event.
    pub fn apply(&mut self, event: ClusterEvent) -> Changes {
        let before = self.known.clone();
        match event {
            ClusterEvent::PodApplied(pod) => {
                self.pods.insert(pod.uid.clone(), pod);
            }
            ClusterEvent::PodDeleted(uid) => {
                self.pods.remove(&uid);
                // Gone from the API: whatever the watch sync state, the pod is over.
                self.known.remove(&uid);
                self.cni_deleted.remove(&uid);
                self.looked_for.remove(&uid);
            }
            ClusterEvent::PodsListed(pods) => {
                self.pods = pods.into_iter().map(|p| (p.uid.clone(), p)).collect();
                self.pods_synced = true;
                let pods = &self.pods;
                self.cni_deleted.retain(|uid| pods.contains_key(uid));
                self.looked_for.retain(|uid, _| pods.contains_key(uid));
            }
            ClusterEvent::NamespaceApplied { name, labels } => {
                self.namespaces.insert(name, labels);
            }
            ClusterEvent::NamespaceDeleted(name) => {
                self.namespaces.remove(&name);
            }
            ClusterEvent::NamespacesListed(namespaces) => {
                self.namespaces = namespaces.into_iter().collect();
                self.namespaces_synced = true;
            }
        }
        self.finish(&before)
    }

    /// CNI ADD: resolves the pod from the cluster view and remembers the sandbox.
    pub fn add(&mut self, report: &PodReport) -> (AddOutcome, Changes) {
        if !self.pods_synced || !self.namespaces_synced {
            return (AddOutcome::Pending(Pending::NotSynced), Changes::default());
        }
        let Some(netns) = report.netns.clone() else {
            return (
                AddOutcome::Rejected("add without a netns".into()),
                Changes::default(),
            );
        };
        let api = match &report.uid {
            Some(uid) => match self.pods.get(uid) {
                Some(pod) if pod.namespace == report.namespace && pod.name == report.name => {
                    Some(pod)
                }
                Some(pod) => {
                    let message = format!(
                        "uid {uid} belongs to {}/{}, not {}/{}",
                        pod.namespace, pod.name, report.namespace, report.name
                    );
                    return (AddOutcome::Rejected(message), Changes::default());
                }
                None => None,
            },
            None => self
                .pods
                .values()
                .find(|p| p.namespace == report.namespace && p.name == report.name),
        };
        let Some(api) = api.cloned() else {
            return (AddOutcome::Pending(Pending::UnknownPod), Changes::default());
        };
        if !self.namespaces.contains_key(&api.namespace) {
            return (
                AddOutcome::Pending(Pending::UnknownNamespace),
                Changes::default(),
            );
        }
        let before = self.known.clone();
        self.cni_deleted.remove(&api.uid);
        self.looked_for.remove(&api.uid);
        // A pod of the same name with another UID was replaced; its sandbox is going away.
        self.known.retain(|uid, known| {
            *uid == api.uid || known.namespace != api.namespace || known.name != api.name
        });
        let known = KnownPod {
            uid: api.uid.clone(),
            namespace: api.namespace.clone(),
            name: api.name.clone(),
            service_account: api.service_account.clone(),
            container_id: report.container_id.clone(),
            netns,
            enrolled: false,
        };
        self.known.insert(api.uid.clone(), known);
        let changes = self.finish(&before);
        let Some(known) = self.known.get(&api.uid) else {
            // `finish` keeps every pod that is in the pod view, as this one is.
            return (
                AddOutcome::Rejected("the pod vanished while being added".into()),
                changes,
            );
        };
        let outcome = AddOutcome::Added {
            enrolled: known.enrolled,
            pod: known.info(),
        };
        (outcome, changes)
    }

    /// CNI DEL: forgets the sandbox. A DEL for another sandbox of the pod (an earlier,
    /// failed attempt) or for an unknown pod changes nothing.
    pub fn del(&mut self, report: &PodReport) -> Changes {
        let before = self.known.clone();
        if let Some(uid) = self.find_sandbox(report) {
            self.known.remove(&uid);
        }
        let uid = report.uid.clone().or_else(|| {
            self.pods
                .values()
                .find(|p| p.namespace == report.namespace && p.name == report.name)
                .map(|p| p.uid.clone())
        });
        if let Some(uid) = uid {
            self.cni_deleted.insert(uid);
        }
        self.finish(&before)
    }

    /// CNI CHECK: whether the reported sandbox is known, and enrolled.
    pub fn check(&self, report: &PodReport) -> Option<bool> {
        let uid = self.find_sandbox(report)?;
        self.known.get(&uid).map(|known| known.enrolled)
    }

    /// Every pod ztunnel should serve now, by UID.
    pub fn enrolled(&self) -> BTreeMap<String, PodInfo> {
        enrolled(&self.known)
    }

    /// The known pods, by UID (what is persisted).
    pub fn known(&self) -> impl Iterator<Item = &KnownPod> {
        self.known.values()
    }

    /// Pods to look for in the node's network namespaces: running with IPs in the pod
    /// view, not known, not host-network, not excluded, not deleted by the plugin. None
    /// before both watches have listed (the decision needs the namespaces).
    pub fn candidates(&self) -> Vec<Candidate> {
        if !self.pods_synced || !self.namespaces_synced {
            return Vec::new();
        }
        self.pods
            .values()
            .filter(|pod| {
                !pod.host_network
                    && !pod.finished
                    && !pod.ips.is_empty()
                    && !self.excluded.contains(&pod.namespace)
                    && !self.known.contains_key(&pod.uid)
                    && !self.cni_deleted.contains(&pod.uid)
            })
            .map(|pod| Candidate {
                uid: pod.uid.clone(),
                namespace: pod.namespace.clone(),
                name: pod.name.clone(),
                ips: pod.ips.clone(),
            })
            .collect()
    }

    /// Whether a scan could find something new: a candidate whose IPs no scan looked for.
    pub fn wants_scan(&self) -> bool {
        self.candidates()
            .iter()
            .any(|pod| self.looked_for.get(&pod.uid) != Some(&pod.ips))
    }

    /// Takes a scan's result: each candidate found in exactly one namespace becomes known,
    /// as if the plugin had reported it; the others are not looked for again until their
    /// IPs change. Returns the changes and each candidate's outcome (for the logs).
    pub fn discover(&mut self, found: &NetnsAddrs) -> (Changes, Vec<(Candidate, Outcome)>) {
        let candidates = self.candidates();
        let outcomes = {
            let taken: BTreeSet<&str> = self.known.values().map(|k| k.netns.as_str()).collect();
            match_pods(found, &taken, &candidates)
        };
        let before = self.known.clone();
        let mut report = Vec::with_capacity(candidates.len());
        for candidate in candidates {
            let outcome = outcomes
                .get(&candidate.uid)
                .cloned()
                .unwrap_or(Outcome::NotFound);
            match (&outcome, self.pods.get(&candidate.uid)) {
                (Outcome::Found(netns), Some(api)) => {
                    let known = KnownPod {
                        uid: api.uid.clone(),
                        namespace: api.namespace.clone(),
                        name: api.name.clone(),
                        service_account: api.service_account.clone(),
                        container_id: String::new(),
                        netns: netns.clone(),
                        enrolled: false,
                    };
                    self.looked_for.remove(&candidate.uid);
                    self.known.insert(candidate.uid.clone(), known);
                }
                _ => {
                    self.looked_for
                        .insert(candidate.uid.clone(), candidate.ips.clone());
                }
            }
            report.push((candidate, outcome));
        }
        (self.finish(&before), report)
    }

    /// A scan could not run: today's candidates are not looked for again until their IPs
    /// change (a pod event with new IPs, or a new candidate, retries).
    pub fn scan_failed(&mut self) {
        for candidate in self.candidates() {
            self.looked_for.insert(candidate.uid, candidate.ips);
        }
    }

    /// The known pod reported as `report`, matching its sandbox. A pod the scan found has
    /// no sandbox ID: any sandbox of it in the same netns (or with none given, as a DEL
    /// may be) is taken to be it, since a new sandbox would have been added first.
    fn find_sandbox(&self, report: &PodReport) -> Option<String> {
        let known = match &report.uid {
            Some(uid) => self.known.get(uid),
            None => self
                .known
                .values()
                .find(|k| k.namespace == report.namespace && k.name == report.name),
        }?;
        let same = if known.container_id.is_empty() {
            report
                .netns
                .as_ref()
                .is_none_or(|netns| *netns == known.netns)
        } else {
            known.container_id == report.container_id
        };
        same.then(|| known.uid.clone())
    }

    /// Recomputes every known pod's decision and reports what changed since `before` (the
    /// known pods before the input; the cluster view is not copied, it can be large).
    fn finish(&mut self, before: &BTreeMap<String, KnownPod>) -> Changes {
        let empty = Labels::new();
        let pods_synced = self.pods_synced;
        let (pods, namespaces) = (&self.pods, &self.namespaces);
        self.known.retain(|uid, known| match pods.get(uid) {
            Some(api) => {
                let labels = namespaces.get(&api.namespace).unwrap_or(&empty);
                known.service_account = api.service_account.clone();
                known.enrolled = decide(labels, api) && acceptable(known);
                true
            }
            // Listed without it: deleted while the watch was down (or the agent was not
            // running). Before the first list, the persisted decision stands.
            None => !pods_synced,
        });
        let (old, new) = (enrolled(before), self.enrolled());
        let mut actions: Vec<Action> = old
            .keys()
            .filter(|uid| !new.contains_key(*uid))
            .map(|uid| Action::Unenroll(uid.clone()))
            .collect();
        actions.extend(
            new.iter()
                .filter(|(uid, pod)| old.get(*uid) != Some(*pod))
                .map(|(_, pod)| Action::Enroll(pod.clone())),
        );
        Changes {
            actions,
            known_changed: *before != self.known,
        }
    }
}

fn enrolled(known: &BTreeMap<String, KnownPod>) -> BTreeMap<String, PodInfo> {
    known
        .values()
        .filter(|known| known.enrolled)
        .map(|known| (known.uid.clone(), known.info()))
        .collect()
}

/// Whether ztunnel's protocol accepts the pod; one odd pod must not break every snapshot.
fn acceptable(known: &KnownPod) -> bool {
    let request = ZtunnelRequest::Enroll { pod: known.info() };
    match request.validate() {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(
                namespace = %known.namespace, name = %known.name, error = %e,
                "pod cannot be enrolled"
            );
            false
        }
    }
}

#[cfg(test)]
mod tests;
