//! Snapshots: the complete, encoded resource set of one scope, and the diff between two.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use bytes::Bytes;

use crate::proto;
use crate::resource::{MeshResource, ResourceError, ResourceKey};

/// Everything one scope holds, encoded once. The controller builds one per scope and publishes
/// it; the server diffs snapshots to push only what changed.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    resources: BTreeMap<ResourceKey, Bytes>,
}

impl PartialEq for Snapshot {
    fn eq(&self, other: &Self) -> bool {
        self.resources.len() == other.resources.len()
            && self.resources.iter().zip(&other.resources).all(
                |((key, payload), (other_key, other_payload))| {
                    key == other_key && same_payload(payload, other_payload)
                },
            )
    }
}

impl Eq for Snapshot {}

/// Equal payloads; the same bytes (a publisher that reuses the encoding of an unchanged
/// resource, as the controller does) are found equal without reading them.
fn same_payload(a: &Bytes, b: &Bytes) -> bool {
    (a.as_ptr() == b.as_ptr() && a.len() == b.len()) || a == b
}

/// What turns one snapshot into another.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Diff {
    pub(crate) upserts: Vec<(ResourceKey, Bytes)>,
    pub(crate) removals: Vec<ResourceKey>,
}

impl Snapshot {
    /// An empty snapshot.
    pub fn new() -> Self {
        Self::default()
    }

    /// A snapshot of `resources`; fails if one cannot be encoded or two share a key.
    pub fn from_resources<'a>(
        resources: impl IntoIterator<Item = &'a MeshResource>,
    ) -> Result<Self, ResourceError> {
        let mut snapshot = Self::new();
        for resource in resources {
            snapshot.insert(resource)?;
        }
        Ok(snapshot)
    }

    /// Adds `resource`; fails if it cannot be encoded or its key is already present.
    pub fn insert(&mut self, resource: &MeshResource) -> Result<(), ResourceError> {
        let payload = resource.encode()?;
        self.insert_encoded(resource.key(), payload)
    }

    /// Adds an already encoded payload without validating it (clients validate, and NACK an
    /// invalid one). Fails if `key` is already present.
    pub fn insert_encoded(
        &mut self,
        key: ResourceKey,
        payload: Bytes,
    ) -> Result<(), ResourceError> {
        match self.resources.entry(key) {
            Entry::Occupied(entry) => Err(ResourceError::new(
                entry.key().to_string(),
                "is in the snapshot twice",
            )),
            Entry::Vacant(entry) => {
                entry.insert(payload);
                Ok(())
            }
        }
    }

    /// Removes the resource with `key`; whether it was present.
    pub fn remove(&mut self, key: &ResourceKey) -> bool {
        self.resources.remove(key).is_some()
    }

    /// Whether a resource with `key` is present.
    pub fn contains(&self, key: &ResourceKey) -> bool {
        self.resources.contains_key(key)
    }

    /// The number of resources.
    pub fn len(&self) -> usize {
        self.resources.len()
    }

    /// Whether the snapshot holds no resources.
    pub fn is_empty(&self) -> bool {
        self.resources.is_empty()
    }

    /// The encoded size of every resource together: what a full sync of this snapshot puts
    /// on the wire, framing aside.
    pub fn payload_bytes(&self) -> usize {
        self.resources
            .iter()
            .map(|(key, payload)| key.to_string().len() + payload.len())
            .sum()
    }

    /// The keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &ResourceKey> {
        self.resources.keys()
    }

    /// Everything in this snapshot as upserts (a full resync).
    pub(crate) fn as_full(&self) -> Diff {
        Diff {
            upserts: self
                .resources
                .iter()
                .map(|(key, payload)| (key.clone(), payload.clone()))
                .collect(),
            removals: Vec::new(),
        }
    }

    /// What a client holding `self` needs to reach `next`.
    pub(crate) fn diff(&self, next: &Snapshot) -> Diff {
        let mut diff = Diff::default();
        for (key, payload) in &next.resources {
            if !self
                .resources
                .get(key)
                .is_some_and(|held| same_payload(held, payload))
            {
                diff.upserts.push((key.clone(), payload.clone()));
            }
        }
        diff.removals = self
            .resources
            .keys()
            .filter(|key| !next.resources.contains_key(*key))
            .cloned()
            .collect();
        diff
    }
}

impl Diff {
    pub(crate) fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.removals.is_empty()
    }

    pub(crate) fn into_update(
        self,
        version: u64,
        nonce: String,
        full: bool,
    ) -> proto::ConfigUpdate {
        proto::ConfigUpdate {
            version,
            nonce,
            full,
            upserts: self
                .upserts
                .into_iter()
                .map(|(key, payload)| proto::Resource {
                    key: Some(key.to_proto()),
                    payload,
                })
                .collect(),
            removals: self.removals.iter().map(ResourceKey::to_proto).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::ResourceKind;

    fn key(name: &str) -> ResourceKey {
        ResourceKey::new(ResourceKind::Service, "ns", name)
    }

    fn snapshot(entries: &[(&str, &str)]) -> Snapshot {
        let mut snapshot = Snapshot::new();
        for (name, payload) in entries {
            snapshot
                .insert_encoded(key(name), Bytes::from(payload.to_string()))
                .unwrap();
        }
        snapshot
    }

    #[test]
    fn diff_reports_changed_added_and_removed() {
        let old = snapshot(&[("a", "1"), ("b", "1"), ("c", "1")]);
        let new = snapshot(&[("a", "1"), ("b", "2"), ("d", "1")]);
        let diff = old.diff(&new);
        let upserted: Vec<_> = diff.upserts.iter().map(|(k, _)| &*k.name).collect();
        assert_eq!(upserted, ["b", "d"]);
        assert_eq!(diff.removals, [key("c")]);
        assert!(new.diff(&new).is_empty());
    }

    #[test]
    fn full_sends_everything() {
        let snap = snapshot(&[("a", "1"), ("b", "1")]);
        let full = snap.as_full();
        assert_eq!(full.upserts.len(), 2);
        assert!(full.removals.is_empty());
        assert_eq!(Snapshot::new().diff(&snap), full);
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let mut snap = snapshot(&[("a", "1")]);
        assert!(snap.insert_encoded(key("a"), Bytes::from("2")).is_err());
        assert!(snap.remove(&key("a")));
        assert!(snap.is_empty());
    }
}
