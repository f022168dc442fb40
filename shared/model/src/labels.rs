//! Kubernetes labels and the `matchLabels` selectors of Istio policies.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Labels of a workload; ordered so snapshots serialize deterministically.
pub type Labels = BTreeMap<String, String>;

/// `selector: { matchLabels: … }` of an Istio policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSelector {
    /// Every label here must be present on the workload with the same value.
    #[serde(default)]
    pub match_labels: Labels,
}

impl WorkloadSelector {
    /// Whether a workload with `labels` is selected. An empty selector selects everything;
    /// callers that give "no labels" a different meaning check [`is_empty`](Self::is_empty).
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels
            .iter()
            .all(|(key, value)| labels.get(key) == Some(value))
    }

    /// Whether the selector has no labels (Istio treats that like no selector at all).
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_labels_must_match() {
        let selector = WorkloadSelector {
            match_labels: [
                ("app".to_owned(), "web".to_owned()),
                ("v".to_owned(), "1".to_owned()),
            ]
            .into(),
        };
        let mut labels: Labels = [("app".to_owned(), "web".to_owned())].into();
        assert!(!selector.matches(&labels));
        labels.insert("v".into(), "1".into());
        assert!(selector.matches(&labels));
        labels.insert("v".into(), "2".into());
        assert!(!selector.matches(&labels));
        assert!(WorkloadSelector::default().matches(&labels));
    }
}
