//! The set of enrolled pods and the difference a snapshot makes to it.
//!
//! ztunnel keeps a [`PodSet`] of what it serves. On `snapshot` it computes a [`SnapshotPlan`],
//! tears down what the plan unenrolls, sets up what it enrolls, then applies the plan to the
//! set. Pure data, no IO, so the reconnect semantics are tested without sockets.

use std::collections::BTreeMap;

use crate::protocol::PodInfo;

/// Pods currently enrolled, keyed by UID.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodSet {
    pods: BTreeMap<String, PodInfo>,
}

/// What turns a [`PodSet`] into a snapshot: unenroll first, then enroll.
///
/// A pod whose UID is kept but whose details changed (typically a new sandbox, so a new
/// netns) appears in both lists: its old enrollment must go before the new one is set up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotPlan {
    /// UIDs to unenroll, sorted.
    pub unenroll: Vec<String>,
    /// Pods to enroll, in snapshot order.
    pub enroll: Vec<PodInfo>,
}

impl PodSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a pod; returns the previous entry for its UID.
    pub fn enroll(&mut self, pod: PodInfo) -> Option<PodInfo> {
        self.pods.insert(pod.uid.clone(), pod)
    }

    /// Removes a pod; returns it if it was enrolled.
    pub fn unenroll(&mut self, uid: &str) -> Option<PodInfo> {
        self.pods.remove(uid)
    }

    /// The pod with this UID.
    pub fn get(&self, uid: &str) -> Option<&PodInfo> {
        self.pods.get(uid)
    }

    /// Number of enrolled pods.
    pub fn len(&self) -> usize {
        self.pods.len()
    }

    /// Whether no pod is enrolled.
    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    /// The enrolled pods, ordered by UID.
    pub fn iter(&self) -> impl Iterator<Item = &PodInfo> {
        self.pods.values()
    }

    /// The changes that make this set equal to `snapshot` (whose UIDs are unique, as the
    /// protocol decoder guarantees).
    pub fn plan(&self, snapshot: &[PodInfo]) -> SnapshotPlan {
        let wanted: BTreeMap<&str, &PodInfo> =
            snapshot.iter().map(|p| (p.uid.as_str(), p)).collect();
        let unenroll = self
            .pods
            .iter()
            .filter(|(uid, current)| wanted.get(uid.as_str()) != Some(current))
            .map(|(uid, _)| uid.clone())
            .collect();
        let enroll = snapshot
            .iter()
            .filter(|pod| self.pods.get(&pod.uid) != Some(*pod))
            .cloned()
            .collect();
        SnapshotPlan { unenroll, enroll }
    }

    /// Applies a plan computed by [`Self::plan`].
    pub fn apply(&mut self, plan: &SnapshotPlan) {
        for uid in &plan.unenroll {
            self.pods.remove(uid);
        }
        for pod in &plan.enroll {
            self.pods.insert(pod.uid.clone(), pod.clone());
        }
    }
}

impl SnapshotPlan {
    /// Whether the snapshot changes nothing.
    pub fn is_empty(&self) -> bool {
        self.unenroll.is_empty() && self.enroll.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str, netns: &str) -> PodInfo {
        PodInfo {
            uid: uid.into(),
            namespace: "shop".into(),
            name: format!("pod-{uid}"),
            service_account: "default".into(),
            netns: netns.into(),
        }
    }

    #[test]
    fn snapshot_replaces_the_set() {
        let mut set = PodSet::new();
        set.enroll(pod("a", "/n/a"));
        set.enroll(pod("b", "/n/b"));
        set.enroll(pod("c", "/n/c"));
        // b unchanged, c re-created with a new netns, a gone, d new.
        let snapshot = [pod("b", "/n/b"), pod("c", "/n/c2"), pod("d", "/n/d")];
        let plan = set.plan(&snapshot);
        assert_eq!(plan.unenroll, ["a", "c"]);
        assert_eq!(plan.enroll, [pod("c", "/n/c2"), pod("d", "/n/d")]);
        set.apply(&plan);
        let now: Vec<_> = set.iter().cloned().collect();
        assert_eq!(now, snapshot);
        assert!(set.plan(&snapshot).is_empty());
    }

    #[test]
    fn empty_snapshot_unenrolls_everything() {
        let mut set = PodSet::new();
        set.enroll(pod("a", "/n/a"));
        let plan = set.plan(&[]);
        assert_eq!(plan.unenroll, ["a"]);
        assert!(plan.enroll.is_empty());
        set.apply(&plan);
        assert!(set.is_empty());
        assert!(PodSet::new().plan(&[]).is_empty());
    }

    #[test]
    fn snapshot_into_empty_set_enrolls_everything() {
        let set = PodSet::new();
        let snapshot = [pod("x", "/n/x"), pod("y", "/n/y")];
        let plan = set.plan(&snapshot);
        assert!(plan.unenroll.is_empty());
        assert_eq!(plan.enroll, snapshot);
    }
}
