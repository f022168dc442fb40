//! Snapshots: the complete, encoded resource set of one scope, and the diff between two.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::collections::btree_map::{self, Entry};
use std::iter::Peekable;
use std::sync::Arc;

use bytes::Bytes;
use prost::Message;

use crate::proto;
use crate::resource::{MeshResource, ResourceError, ResourceKey};

/// Everything one scope holds, encoded once. The controller builds one per scope and publishes
/// it; the server diffs snapshots to push only what changed.
///
/// A snapshot has two layers: a `base` that clones share (behind an `Arc`) and its `own`
/// resources. The controller puts what every node scope holds (every workload and service)
/// in one shared base and only each node's policies in its own layer, so a hundred node
/// scopes cost one copy of the common part, and two snapshots on the same base are compared
/// by their own layers alone. The layers never hold the same key.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    base: Arc<BTreeMap<ResourceKey, Bytes>>,
    own: BTreeMap<ResourceKey, Bytes>,
}

impl PartialEq for Snapshot {
    fn eq(&self, other: &Self) -> bool {
        if Arc::ptr_eq(&self.base, &other.base) {
            return same_entries(self.own.iter(), other.own.iter());
        }
        self.len() == other.len() && same_entries(self.iter(), other.iter())
    }
}

impl Eq for Snapshot {}

fn same_entries<'a>(
    mut a: impl Iterator<Item = (&'a ResourceKey, &'a Bytes)>,
    mut b: impl Iterator<Item = (&'a ResourceKey, &'a Bytes)>,
) -> bool {
    loop {
        match (a.next(), b.next()) {
            (None, None) => return true,
            (Some((key, payload)), Some((other_key, other_payload))) => {
                if key != other_key || !same_payload(payload, other_payload) {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

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

/// The entries of two key-ordered maps with disjoint keys, in key order.
struct Merged<'a> {
    base: Peekable<btree_map::Iter<'a, ResourceKey, Bytes>>,
    own: Peekable<btree_map::Iter<'a, ResourceKey, Bytes>>,
}

impl<'a> Iterator for Merged<'a> {
    type Item = (&'a ResourceKey, &'a Bytes);

    fn next(&mut self) -> Option<Self::Item> {
        let take_base = match (self.base.peek(), self.own.peek()) {
            (Some((base_key, _)), Some((own_key, _))) => base_key < own_key,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if take_base {
            self.base.next()
        } else {
            self.own.next()
        }
    }
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

    /// The same resources, all in the shared layer: clones of the result share them, and
    /// what is inserted into a clone afterwards is that clone's own.
    pub fn into_shared(self) -> Self {
        let mut all = Arc::unwrap_or_clone(self.base);
        all.extend(self.own);
        Self {
            base: Arc::new(all),
            own: BTreeMap::new(),
        }
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
        let twice =
            |key: &ResourceKey| ResourceError::new(key.to_string(), "is in the snapshot twice");
        if self.base.contains_key(&key) {
            return Err(twice(&key));
        }
        match self.own.entry(key) {
            Entry::Occupied(entry) => Err(twice(entry.key())),
            Entry::Vacant(entry) => {
                entry.insert(payload);
                Ok(())
            }
        }
    }

    /// Removes the resource with `key`; whether it was present. Removing a shared resource
    /// copies the shared layer for this snapshot alone.
    pub fn remove(&mut self, key: &ResourceKey) -> bool {
        if self.own.remove(key).is_some() {
            return true;
        }
        self.base.contains_key(key) && Arc::make_mut(&mut self.base).remove(key).is_some()
    }

    /// Whether a resource with `key` is present.
    pub fn contains(&self, key: &ResourceKey) -> bool {
        self.own.contains_key(key) || self.base.contains_key(key)
    }

    /// The number of resources.
    pub fn len(&self) -> usize {
        self.base.len() + self.own.len()
    }

    /// Whether the snapshot holds no resources.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The encoded size of every resource together: what a full sync of this snapshot puts
    /// on the wire, framing aside.
    pub fn payload_bytes(&self) -> usize {
        self.iter()
            .map(|(key, payload)| key.to_string().len() + payload.len())
            .sum()
    }

    /// The keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &ResourceKey> {
        self.iter().map(|(key, _)| key)
    }

    /// Every resource, in key order.
    fn iter(&self) -> Merged<'_> {
        Merged {
            base: self.base.iter().peekable(),
            own: self.own.iter().peekable(),
        }
    }

    /// Everything in this snapshot as upserts (a full resync).
    pub(crate) fn as_full(&self) -> Diff {
        Diff {
            upserts: self
                .iter()
                .map(|(key, payload)| (key.clone(), payload.clone()))
                .collect(),
            removals: Vec::new(),
        }
    }

    /// What a client holding `self` needs to reach `next`.
    pub(crate) fn diff(&self, next: &Snapshot) -> Diff {
        // Same shared layer (a push that changed only this scope's own resources): the
        // shared part cannot differ, so only the own layers are compared.
        if Arc::ptr_eq(&self.base, &next.base) {
            return diff_sorted(self.own.iter(), next.own.iter());
        }
        diff_sorted(self.iter(), next.iter())
    }
}

/// The diff between two key-ordered entry sequences, in one pass over both.
fn diff_sorted<'a>(
    held: impl Iterator<Item = (&'a ResourceKey, &'a Bytes)>,
    next: impl Iterator<Item = (&'a ResourceKey, &'a Bytes)>,
) -> Diff {
    let mut diff = Diff::default();
    let mut held = held.peekable();
    let mut next = next.peekable();
    loop {
        match (held.peek(), next.peek()) {
            (None, None) => return diff,
            (Some((held_key, _)), None) => {
                diff.removals.push((*held_key).clone());
                held.next();
            }
            (None, Some((key, payload))) => {
                diff.upserts.push(((*key).clone(), (*payload).clone()));
                next.next();
            }
            (Some((held_key, held_payload)), Some((key, payload))) => match held_key.cmp(key) {
                Ordering::Less => {
                    diff.removals.push((*held_key).clone());
                    held.next();
                }
                Ordering::Greater => {
                    diff.upserts.push(((*key).clone(), (*payload).clone()));
                    next.next();
                }
                Ordering::Equal => {
                    if !same_payload(held_payload, payload) {
                        diff.upserts.push(((*key).clone(), (*payload).clone()));
                    }
                    held.next();
                    next.next();
                }
            },
        }
    }
}

impl Diff {
    pub(crate) fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.removals.is_empty()
    }

    /// The diff as the messages of one push, built one at a time as they are taken: a single
    /// message when `part_bytes` is `None`, otherwise parts of about `part_bytes` each (a
    /// resource larger than that gets a part of its own), every one but the last marked
    /// `more`.
    pub(crate) fn into_parts(
        self,
        version: u64,
        nonce: &str,
        full: bool,
        part_bytes: Option<usize>,
    ) -> Parts {
        Parts {
            upserts: self.upserts.into_iter(),
            removals: self.removals.into_iter(),
            held: None,
            version,
            nonce: nonce.to_owned(),
            full,
            limit: part_bytes.unwrap_or(usize::MAX),
            done: false,
        }
    }
}

/// The messages of one push, each encoded only when taken, so a client being sent a full
/// resync holds one part's messages at a time, not the whole resync's.
#[derive(Debug)]
pub(crate) struct Parts {
    upserts: std::vec::IntoIter<(ResourceKey, Bytes)>,
    removals: std::vec::IntoIter<ResourceKey>,
    /// An entry taken that did not fit the previous part.
    held: Option<(PartEntry, usize)>,
    version: u64,
    nonce: String,
    full: bool,
    limit: usize,
    done: bool,
}

/// One entry of a part, with the bytes it adds to the message.
#[derive(Debug)]
enum PartEntry {
    Upsert(proto::Resource),
    Removal(proto::ResourceKey),
}

impl Parts {
    fn next_entry(&mut self) -> Option<(PartEntry, usize)> {
        if let Some(held) = self.held.take() {
            return Some(held);
        }
        if let Some((key, payload)) = self.upserts.next() {
            let resource = proto::Resource {
                key: Some(key.to_proto()),
                payload,
            };
            let size = field_len(resource.encoded_len());
            return Some((PartEntry::Upsert(resource), size));
        }
        let key = self.removals.next()?.to_proto();
        let size = field_len(key.encoded_len());
        Some((PartEntry::Removal(key), size))
    }
}

impl Iterator for Parts {
    type Item = proto::ConfigUpdate;

    fn next(&mut self) -> Option<proto::ConfigUpdate> {
        if self.done {
            return None;
        }
        let mut part = proto::ConfigUpdate {
            version: self.version,
            nonce: self.nonce.clone(),
            full: self.full,
            upserts: Vec::new(),
            removals: Vec::new(),
            more: true,
        };
        let mut size = 0usize;
        loop {
            let Some((entry, entry_size)) = self.next_entry() else {
                part.more = false;
                self.done = true;
                return Some(part);
            };
            let empty = part.upserts.is_empty() && part.removals.is_empty();
            if !empty && size.saturating_add(entry_size) > self.limit {
                self.held = Some((entry, entry_size));
                return Some(part);
            }
            size = size.saturating_add(entry_size);
            match entry {
                PartEntry::Upsert(resource) => part.upserts.push(resource),
                PartEntry::Removal(key) => part.removals.push(key),
            }
        }
    }
}

/// The bytes a message of `len` bytes takes as a field of another: tag, length, message.
fn field_len(len: usize) -> usize {
    1 + prost::length_delimiter_len(len) + len
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
    fn clones_of_a_shared_snapshot_share_its_layer_and_diff_by_their_own() {
        let shared = snapshot(&[("a", "1"), ("c", "1")]).into_shared();
        let mut one = shared.clone();
        let mut two = shared.clone();
        one.insert_encoded(key("b"), Bytes::from("1")).unwrap();
        two.insert_encoded(key("b"), Bytes::from("2")).unwrap();
        two.insert_encoded(key("d"), Bytes::from("1")).unwrap();
        // A shared key cannot be added again through a clone.
        assert!(one.insert_encoded(key("a"), Bytes::from("9")).is_err());

        let keys: Vec<_> = two.keys().map(|k| &*k.name).collect();
        assert_eq!(keys, ["a", "b", "c", "d"], "merged in key order");
        assert_eq!(two.len(), 4);
        let diff = one.diff(&two);
        let upserted: Vec<_> = diff.upserts.iter().map(|(k, _)| &*k.name).collect();
        assert_eq!(upserted, ["b", "d"]);
        assert!(diff.removals.is_empty());
        assert_eq!(two.diff(&one).removals, [key("d")]);

        // The same content with other layering is equal, and diffs to nothing.
        let flat = snapshot(&[("a", "1"), ("b", "2"), ("c", "1"), ("d", "1")]);
        assert_eq!(flat, two);
        assert!(flat.diff(&two).is_empty());
        assert!(two.diff(&flat).is_empty());
        assert_eq!(flat.as_full(), two.as_full());
        assert_ne!(one, two);

        // Removing a shared key copies the shared layer: the other clone keeps it.
        assert!(one.remove(&key("a")));
        assert!(!one.contains(&key("a")));
        assert!(two.contains(&key("a")));
        assert_eq!(two.diff(&one).removals, [key("a"), key("d")]);
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let mut snap = snapshot(&[("a", "1")]);
        assert!(snap.insert_encoded(key("a"), Bytes::from("2")).is_err());
        assert!(snap.remove(&key("a")));
        assert!(snap.is_empty());
    }
    fn diff_of(upserts: &[(&str, usize)], removals: &[&str]) -> Diff {
        Diff {
            upserts: upserts
                .iter()
                .map(|(name, size)| (key(name), Bytes::from(vec![b'x'; *size])))
                .collect(),
            removals: removals.iter().map(|name| key(name)).collect(),
        }
    }

    fn names(part: &proto::ConfigUpdate) -> (Vec<&str>, Vec<&str>) {
        (
            part.upserts
                .iter()
                .filter_map(|r| r.key.as_ref().map(|k| k.name.as_str()))
                .collect(),
            part.removals.iter().map(|k| k.name.as_str()).collect(),
        )
    }

    #[test]
    fn without_a_part_size_a_push_is_one_message() {
        let diff = diff_of(&[("a", 5000), ("b", 5000)], &["c"]);
        let parts = diff.into_parts(7, "n", false, None).collect::<Vec<_>>();
        assert_eq!(parts.len(), 1);
        assert!(!parts[0].more);
        assert_eq!(names(&parts[0]), (vec!["a", "b"], vec!["c"]));
        assert_eq!((parts[0].version, parts[0].nonce.as_str()), (7, "n"));
    }

    #[test]
    fn parts_fill_up_to_the_size_and_only_the_last_has_no_more() {
        // A key here encodes to 16 bytes (18 as a removal); a resource with a 40-byte
        // payload to 62 as an upsert: a and b fill 124 of 130, c is alone.
        let diff = diff_of(&[("a", 40), ("b", 40), ("c", 200), ("d", 10)], &["e", "f"]);
        let parts = diff.into_parts(3, "n", true, Some(130)).collect::<Vec<_>>();
        let shapes: Vec<_> = parts.iter().map(names).collect();
        assert_eq!(
            shapes,
            [
                (vec!["a", "b"], vec![]),
                // Bigger than a part on its own: alone, never split.
                (vec!["c"], vec![]),
                (vec!["d"], vec!["e", "f"]),
            ]
        );
        let more: Vec<_> = parts.iter().map(|p| p.more).collect();
        assert_eq!(more, [true, true, false]);
        assert!(
            parts
                .iter()
                .all(|p| p.version == 3 && p.nonce == "n" && p.full)
        );
    }

    #[test]
    fn an_empty_full_push_is_still_one_message() {
        let parts = Diff::default()
            .into_parts(1, "n", true, Some(100))
            .collect::<Vec<_>>();
        assert_eq!(parts.len(), 1);
        assert!(parts[0].full && !parts[0].more && parts[0].upserts.is_empty());
    }
}
