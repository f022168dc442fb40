//! The proxies' view of the mesh: an immutable [`Snapshot`] of workloads, services,
//! authorization policies and peer authentications, with the indexes the data path needs, held
//! in a [`StateStore`].
//!
//! Readers call [`StateStore::load`] on every connection: an atomic pointer load, no lock, so
//! a config update can never stall traffic. Writers build a whole new [`Snapshot`] off the data
//! path (validation and indexing happen there) and publish it with [`StateStore::replace`]; a
//! connection keeps the snapshot it loaded for as long as it needs it (DESIGN §8.5).
#![forbid(unsafe_code)]

mod snapshot;
mod store;

pub use snapshot::{Destination, Snapshot, SnapshotError, Upstream};
pub use store::StateStore;

#[cfg(test)]
mod tests;
