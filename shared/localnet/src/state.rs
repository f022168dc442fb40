//! The state file: what a cluster created and who owns it, so a crash leaves nothing behind.
//!
//! Every resource is recorded *before* it is created and forgotten only after it is gone, so
//! the file always lists a superset of what exists. Removal tolerates entries that were never
//! created.

use std::fs;
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::addr::Ipv4Cidr;
use crate::error::{Error, Result};
use crate::netns::Netns;

/// Default directory for state files.
pub const STATE_DIR: &str = "/run/ambit-localnet";

const FORMAT_VERSION: u32 = 1;

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// Everything one cluster has created, as written to `<state dir>/<prefix>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ClusterState {
    pub(crate) version: u32,
    /// The human name given at creation.
    pub(crate) name: String,
    /// The unique prefix of every netns name, e.g. `amb-1a2b3c`.
    pub(crate) prefix: String,
    pub(crate) owner: Owner,
    pub(crate) underlay: String,
    pub(crate) nodes: Vec<NodeRecord>,
    pub(crate) pods: Vec<PodRecord>,
}

/// The process that owns a cluster; start time guards against pid reuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Owner {
    pub(crate) pid: u32,
    /// Start time in clock ticks since boot (field 22 of `/proc/<pid>/stat`).
    pub(crate) start_time: Option<u64>,
}

/// One node: its netns, underlay address and pod network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct NodeRecord {
    pub(crate) name: String,
    pub(crate) index: u8,
    pub(crate) netns: String,
    pub(crate) underlay_ip: Ipv4Addr,
    pub(crate) pod_cidr: Ipv4Cidr,
}

/// One pod: its netns, node and address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PodRecord {
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) node: String,
    pub(crate) netns: String,
    pub(crate) ip: Ipv4Addr,
}

impl ClusterState {
    /// A fresh state owned by the current process.
    pub(crate) fn new(name: &str, prefix: &str) -> Self {
        Self {
            version: FORMAT_VERSION,
            name: name.to_owned(),
            prefix: prefix.to_owned(),
            owner: Owner::current(),
            underlay: format!("{prefix}-underlay"),
            nodes: Vec::new(),
            pods: Vec::new(),
        }
    }

    /// Reads a state file.
    pub(crate) fn read(path: &Path) -> Result<Self> {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                return Err(Error::not_found(format!("state file {}", path.display())));
            }
            Err(err) => {
                return Err(Error::io(format!("reading {}", path.display()), err));
            }
        };
        serde_json::from_str(&text).map_err(|source| Error::state_format(path.to_owned(), source))
    }

    /// Writes the file for the first time; fails if it exists, which reserves the prefix.
    ///
    /// The content is written to a sibling first and hard-linked into place, so the name
    /// appears atomically with complete content (a concurrent [`cleanup_stale_blocking`] never
    /// reads a half-written file) and the link fails if the name is taken.
    pub(crate) fn create_file(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)
                .map_err(|err| Error::io(format!("creating {}", dir.display()), err))?;
        }
        let tmp = self.write_sibling(path)?;
        let linked = fs::hard_link(&tmp, path);
        let _ = fs::remove_file(&tmp);
        linked.map_err(|err| match err.kind() {
            io::ErrorKind::AlreadyExists => {
                Error::already_exists(format!("state file {}", path.display()))
            }
            _ => Error::io(format!("creating {}", path.display()), err),
        })
    }

    /// Replaces the file atomically (write a sibling, then rename over it).
    pub(crate) fn save(&self, path: &Path) -> Result<()> {
        let tmp = self.write_sibling(path)?;
        fs::rename(&tmp, path).map_err(|err| {
            let _ = fs::remove_file(&tmp);
            Error::io(format!("writing {}", path.display()), err)
        })
    }

    /// Writes the state, synced, to `<path>.tmp<pid>-<n>` and returns that path.
    fn write_sibling(&self, path: &Path) -> Result<PathBuf> {
        let json = self.to_json()?;
        let mut tmp = path.as_os_str().to_owned();
        // Unique per writer, so concurrent writers in one process never share a sibling.
        let seq = TMP_SEQ.fetch_add(1, Ordering::Relaxed);
        tmp.push(format!(".tmp{}-{seq}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let mut file = fs::File::create(&tmp)
            .map_err(|err| Error::io(format!("creating {}", tmp.display()), err))?;
        file.write_all(json.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|err| Error::io(format!("writing {}", tmp.display()), err))?;
        Ok(tmp)
    }

    fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self)
            .map_err(|err| Error::io("encoding state", io::Error::other(err)))
    }

    /// Removes every recorded namespace (pods, then nodes, then the underlay), saving the file
    /// after each, and deletes the file at the end. Stops at the first failure, file kept.
    pub(crate) fn destroy_blocking(&mut self, path: &Path) -> Result<()> {
        while let Some(pod) = self.pods.last() {
            Netns::new(&pod.netns).destroy_blocking()?;
            self.pods.pop();
            self.save(path)?;
        }
        while let Some(node) = self.nodes.last() {
            Netns::new(&node.netns).destroy_blocking()?;
            self.nodes.pop();
            self.save(path)?;
        }
        Netns::new(&self.underlay).destroy_blocking()?;
        match fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(Error::io(format!("removing {}", path.display()), err)),
        }
    }
}

impl Owner {
    /// The current process.
    pub(crate) fn current() -> Self {
        let pid = std::process::id();
        Self {
            pid,
            start_time: process_start_time(pid),
        }
    }

    /// True while the owning process runs (a zombie or a reused pid counts as gone).
    pub(crate) fn is_alive(&self) -> bool {
        let Ok(stat) = fs::read_to_string(format!("/proc/{}/stat", self.pid)) else {
            return false;
        };
        let Some(fields) = stat_fields(&stat) else {
            return false;
        };
        let zombie = matches!(fields.first().copied(), Some("Z" | "X"));
        let same_process = match self.start_time {
            Some(recorded) => start_time_of(&fields) == Some(recorded),
            None => true,
        };
        !zombie && same_process
    }
}

/// Tears down the cluster described by the state file at `path`, whoever created it.
pub(crate) fn teardown_file_blocking(path: &Path) -> Result<()> {
    let mut state = ClusterState::read(path)?;
    info!(cluster = %state.name, prefix = %state.prefix, "tearing down from state file");
    state.destroy_blocking(path)
}

/// Tears down every cluster in `dir` whose owner process is gone; returns their state files.
pub(crate) fn cleanup_stale_blocking(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(Error::io(format!("listing {}", dir.display()), err)),
    };
    let mut cleaned = Vec::new();
    let mut first_error = None;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|ext| ext != "json") {
            continue;
        }
        let result = match ClusterState::read(&path) {
            Ok(state) if state.owner.is_alive() => continue,
            Ok(mut state) => state.destroy_blocking(&path),
            // A concurrent cleanup got there first.
            Err(err) if err.is_not_found() => continue,
            Err(err) => Err(err),
        };
        match result {
            Ok(()) => {
                info!(state = %path.display(), "removed stale cluster");
                cleaned.push(path);
            }
            Err(err) => {
                warn!(state = %path.display(), %err, "could not remove stale cluster");
                first_error.get_or_insert(err);
            }
        }
    }
    match first_error {
        Some(err) => Err(err),
        None => Ok(cleaned),
    }
}

fn process_start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    start_time_of(&stat_fields(&stat)?)
}

/// The fields of `/proc/<pid>/stat` after the command name (which may contain spaces).
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().collect())
}

/// Field 22 (`starttime`); field 3 (`state`) is index 0 after the command name.
fn start_time_of(fields: &[&str]) -> Option<u64> {
    fields.get(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parsing_handles_spaces_and_parens_in_the_command_name() {
        let stat = "4242 (my (odd) prog) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
                    987654 1000 10 18446744073709551615";
        let fields = stat_fields(stat).unwrap();
        assert_eq!(fields[0], "S");
        assert_eq!(start_time_of(&fields), Some(987_654));
    }

    #[test]
    fn current_process_is_alive_and_a_reused_pid_is_not() {
        let me = Owner::current();
        assert!(me.start_time.is_some());
        assert!(me.is_alive());
        let reused = Owner {
            start_time: me.start_time.map(|t| t + 1),
            ..me
        };
        assert!(!reused.is_alive());
        let gone = Owner {
            pid: u32::MAX,
            start_time: None,
        };
        assert!(!gone.is_alive());
    }

    #[test]
    fn state_round_trips_and_save_replaces_atomically() {
        let dir = std::env::temp_dir().join(format!("ambit-localnet-unit-{}", std::process::id()));
        let path = dir.join("amb-000000.json");
        let _ = fs::remove_dir_all(&dir);
        let mut state = ClusterState::new("unit", "amb-000000");
        state.create_file(&path).unwrap();
        assert!(state.create_file(&path).unwrap_err().is_already_exists());
        state.nodes.push(NodeRecord {
            name: "a".into(),
            index: 1,
            netns: "amb-000000-node-a".into(),
            underlay_ip: Ipv4Addr::new(172, 18, 0, 2),
            pod_cidr: "10.244.1.0/24".parse().unwrap(),
        });
        state.save(&path).unwrap();
        assert_eq!(ClusterState::read(&path).unwrap(), state);
        let leftovers: Vec<_> = fs::read_dir(&dir).unwrap().flatten().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left: {leftovers:?}");
        fs::write(&path, "{not json").unwrap();
        let err = ClusterState::read(&path).unwrap_err();
        assert!(err.to_string().contains("is not a localnet state"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
        assert!(ClusterState::read(&path).unwrap_err().is_not_found());
    }
}
