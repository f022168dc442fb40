//! A Kubernetes-like cluster made of Linux network namespaces, for `ambit local` and the e2e tests.
//!
//! Everything lives in namespaces this crate creates: nothing is configured in the root (host)
//! namespace, no host interface is touched, and forwarding is enabled only inside node
//! namespaces. Addresses therefore repeat freely across clusters. Every netns name starts with
//! the cluster's random prefix `amb-<6 hex>` so clusters can coexist, and interface names are
//! created inside the namespaces that own them, so they never collide.
//!
//! ```text
//!                         underlay netns  <prefix>-underlay
//!                 +--------------------------------------------------+
//!                 |  br0  172.18.0.1/16                              |
//!                 |   |-- veth-n1                  veth-n2 --|       |
//!                 +-------|----------------------------------|-------+
//!                         | veth pair                        | veth pair
//!     node netns <prefix>-node-a                 node netns <prefix>-node-b
//!  +---------------------------------+        +---------------------------------+
//!  | eth0   172.18.0.2/16            |        | eth0   172.18.0.3/16            |
//!  | cbr0   10.244.1.1/24            |        | cbr0   10.244.2.1/24            |
//!  | ip_forward = 1                  |        | ip_forward = 1                  |
//!  | route 10.244.2.0/24             |        | route 10.244.1.0/24             |
//!  |       via 172.18.0.3 dev eth0   |        |       via 172.18.0.2 dev eth0   |
//!  |   |-- veth-p2    veth-p3 --|    |        |   |-- veth-p2                   |
//!  +---|------------------------|----+        +---|-----------------------------+
//!      |                        |                 |
//!  pod netns                pod netns          pod netns
//!  <prefix>-pod-ns_x        <prefix>-pod-ns_y  <prefix>-pod-ns_z
//!  lo up                    lo up              lo up
//!  eth0 10.244.1.2/24       eth0 10.244.1.3/24 eth0 10.244.2.2/24
//!  default via 10.244.1.1   default via ...1   default via 10.244.2.1
//! ```
//!
//! Node `k` (1..=253) gets underlay address `172.18.0.(k+1)` and pod network `10.244.k.0/24`
//! with gateway `.1` on its pod bridge; pods take `.2`, `.3`, … Pods on one node talk across
//! `cbr0`; across nodes each *node* routes every other node's pod network via that node's
//! underlay address (host-gateway style), so the underlay is a plain L2 segment and needs no
//! routes or forwarding of its own. Adding or removing a node updates those routes on all
//! other nodes.
//!
//! Processes run in a pod with [`Pod::command`] / [`Pod::run`] (`ip netns exec`). In-process
//! sockets go into a namespace with [`Netns::run_in`], which runs a closure on a fresh thread
//! that has `setns`'d into it; a socket keeps its namespace after that thread ends.
//!
//! Each cluster records what it creates in a JSON state file (`/run/ambit-localnet/<prefix>.json`)
//! *before* creating it, together with the owner's pid and start time. [`Cluster::teardown`] and
//! `Drop` remove everything; [`cleanup_stale`] removes clusters whose owner process is gone, and
//! [`Cluster::teardown_from_state`] removes one explicitly. Deleting a namespace removes its
//! veths and bridges; processes left inside are killed first.
//!
//! Root (euid 0 with `CAP_NET_ADMIN` and `CAP_SYS_ADMIN`) and iproute2's `ip` are required;
//! [`Cluster::create`] says which of them is missing.

#![forbid(unsafe_code)]

mod addr;
mod cluster;
mod cmd;
mod error;
mod netns;
mod privileges;
mod state;

use std::path::{Path, PathBuf};

pub use addr::{Ipv4Cidr, UNDERLAY_GATEWAY};
pub use cluster::{Cluster, ClusterOptions, Node, Pod};
pub use error::{Error, Result};
pub use netns::{NETNS_DIR, Netns};
pub use state::STATE_DIR;

/// Tears down every cluster in [`STATE_DIR`] whose owner process has exited; returns their
/// state files. Clusters of live processes are left alone.
pub async fn cleanup_stale() -> Result<Vec<PathBuf>> {
    cleanup_stale_in(STATE_DIR).await
}

/// Like [`cleanup_stale`], for clusters created with [`ClusterOptions::state_dir`].
pub async fn cleanup_stale_in(dir: impl AsRef<Path>) -> Result<Vec<PathBuf>> {
    let dir = dir.as_ref().to_owned();
    unblock(move || state::cleanup_stale_blocking(&dir)).await
}

/// Runs blocking namespace work (`ip netns del`, kills) on tokio's blocking pool.
async fn unblock<T, F>(work: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
        Err(err) => Err(Error::io(
            "blocking namespace task",
            std::io::Error::other(err),
        )),
    }
}
