//! The network namespaces of the node's sandboxes and their interface addresses.
//!
//! containerd and CRI-O bind-mount each sandbox's network namespace under `/var/run/netns`
//! (`cni-<uuid>`, or a name of their own); the DaemonSet mounts that folder read-only with
//! `HostToContainer` propagation, so namespaces created later appear too. No host PID
//! namespace is needed, unlike Istio's scan of `/proc/<pid>/ns/net`.
//!
//! Reading a namespace's addresses means entering it: a thread of its own (never one of
//! tokio's, which would stay in the pod's namespace) `setns`es into each namespace in turn
//! (`CAP_SYS_ADMIN`) and lists the addresses with `getifaddrs` (netlink, which answers for
//! the calling thread's namespace). The thread ends after the scan.
//!
//! The result is cached by the namespace file's device and inode: a namespace's addresses do
//! not change once its sandbox is up, so a rescan enters only new namespaces. A namespace
//! without addresses (its sandbox still being set up) is not cached, and entries gone from
//! the folder are dropped.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns};
use tokio::sync::oneshot;
use tracing::debug;

use crate::discovery::NetnsAddrs;

/// Why a scan could not run at all (a single unreadable namespace is skipped, not an error).
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The folder cannot be listed.
    #[error("cannot list {path}: {source}")]
    ReadDir {
        /// The folder.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// The scanning thread could not be started.
    #[error("cannot start the scanning thread: {0}")]
    Thread(#[source] io::Error),
    /// The scanning thread ended without an answer (it panicked).
    #[error("the scanning thread died")]
    ThreadDied,
}

/// Scans one folder of namespace files, remembering what it read.
#[derive(Debug)]
pub struct NetnsScanner {
    dir: PathBuf,
    cache: Cache,
}

/// Addresses by path, with the `(device, inode)` they were read from.
type Cache = HashMap<PathBuf, ((u64, u64), Vec<IpAddr>)>;

impl NetnsScanner {
    /// A scanner of `dir`; nothing is read yet.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            cache: Cache::new(),
        }
    }

    /// The scanned folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every namespace in the folder with its addresses (loopback and link-local left out);
    /// a folder that does not exist has none.
    pub async fn scan(&mut self) -> Result<NetnsAddrs, ScanError> {
        let dir = self.dir.clone();
        let cache = std::mem::take(&mut self.cache);
        let (done, result) = oneshot::channel();
        std::thread::Builder::new()
            .name("netns-scan".into())
            .spawn(move || {
                // The caller may be gone (shutdown); nothing to do then.
                let _ = done.send(scan_blocking(&dir, cache));
            })
            .map_err(ScanError::Thread)?;
        let (scanned, cache) = result.await.map_err(|_| ScanError::ThreadDied)?;
        self.cache = cache;
        scanned
    }
}

/// The scan proper. Runs on a dedicated thread: it leaves the thread in the last namespace.
fn scan_blocking(dir: &Path, mut cache: Cache) -> (Result<NetnsAddrs, ScanError>, Cache) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            debug!(dir = %dir.display(), "no network namespace folder");
            return (Ok(NetnsAddrs::new()), Cache::new());
        }
        Err(source) => {
            let error = ScanError::ReadDir {
                path: dir.to_owned(),
                source,
            };
            return (Err(error), cache);
        }
    };
    let mut found = NetnsAddrs::new();
    let mut seen = Cache::new();
    for entry in entries.flatten() {
        let path = entry.path();
        // Follows the bind mount to the namespace's own inode.
        let Ok(metadata) = std::fs::metadata(&path) else {
            continue;
        };
        if !metadata.is_file() {
            continue;
        }
        let id = (metadata.dev(), metadata.ino());
        let addrs = match cache.remove(&path) {
            Some((cached_id, addrs)) if cached_id == id => addrs,
            _ => match read_addrs(&path) {
                Ok(addrs) => addrs,
                Err(e) => {
                    // A file that is not (or no longer) a mounted namespace.
                    debug!(netns = %path.display(), error = %e, "skipped");
                    continue;
                }
            },
        };
        if !addrs.is_empty() {
            seen.insert(path.clone(), (id, addrs.clone()));
        }
        found.insert(path.display().to_string(), addrs);
    }
    (Ok(found), seen)
}

/// Enters the namespace at `path` (this thread only) and lists its addresses.
fn read_addrs(path: &Path) -> io::Result<Vec<IpAddr>> {
    let file = File::open(path)?;
    setns(&file, CloneFlags::CLONE_NEWNET)?;
    let mut addrs: Vec<IpAddr> = nix::ifaddrs::getifaddrs()?
        .filter_map(|interface| {
            let address = interface.address?;
            if let Some(v4) = address.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                address.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .filter(is_pod_address)
        .collect();
    addrs.sort();
    addrs.dedup();
    Ok(addrs)
}

/// Loopback and link-local addresses are the same in every namespace: they identify none.
fn is_pod_address(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_link_local() && !v4.is_unspecified(),
        IpAddr::V6(v6) => !v6.is_loopback() && !v6.is_unicast_link_local() && !v6.is_unspecified(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_addresses_that_can_identify_a_pod_count() {
        for (text, counts) in [
            ("10.244.1.2", true),
            ("fd00:10:244::2", true),
            ("127.0.0.1", false),
            ("169.254.7.127", false),
            ("::1", false),
            ("fe80::1", false),
            ("0.0.0.0", false),
        ] {
            let ip: IpAddr = text.parse().unwrap_or_else(|_| panic!("{text}"));
            assert_eq!(is_pod_address(&ip), counts, "{text}");
        }
    }

    #[tokio::test]
    async fn a_missing_folder_has_no_namespaces() {
        let mut scanner = NetnsScanner::new("/nonexistent/ambit-netns-folder");
        assert!(scanner.scan().await.is_ok_and(|found| found.is_empty()));
    }
}
