//! The state file: the known pods as JSON, so a restarted agent still knows the sandboxes
//! created before it (the CNI plugin reports each sandbox once).
//!
//! Written atomically (temporary file in the same folder, fsync, rename), so a crash leaves
//! either the old or the new file, never a torn one.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::core::KnownPod;

/// The format version; a file with another version is refused rather than misread.
const STATE_VERSION: u32 = 1;

/// Where the known pods are kept.
#[derive(Clone, Debug)]
pub struct StateFile {
    path: PathBuf,
}

/// Why the state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// The file is not a state file of this version.
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    version: u32,
    pods: Vec<KnownPod>,
}

impl StateFile {
    /// The state file at `path`; nothing is read yet.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The persisted pods; none if the file does not exist (first run).
    pub fn load(&self) -> Result<Vec<KnownPod>, StateError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(self.io(source)),
        };
        let stored: Stored = serde_json::from_slice(&bytes).map_err(|e| StateError::Format {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        if stored.version != STATE_VERSION {
            return Err(StateError::Format {
                path: self.path.clone(),
                message: format!(
                    "version {} is not supported (this agent writes {STATE_VERSION})",
                    stored.version
                ),
            });
        }
        Ok(stored.pods)
    }

    /// Replaces the file with `pods`.
    pub fn save<'a>(&self, pods: impl IntoIterator<Item = &'a KnownPod>) -> Result<(), StateError> {
        let stored = Stored {
            version: STATE_VERSION,
            pods: pods.into_iter().cloned().collect(),
        };
        let mut bytes = serde_json::to_vec_pretty(&stored).map_err(|e| StateError::Format {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        bytes.push(b'\n');
        let mut temp_name = self.path.file_name().unwrap_or_default().to_owned();
        temp_name.push(".tmp");
        let temp = self.path.with_file_name(temp_name);
        let written = std::fs::File::create(&temp).and_then(|mut file| {
            file.write_all(&bytes)?;
            file.sync_all()
        });
        if let Err(source) = written.and_then(|()| std::fs::rename(&temp, &self.path)) {
            let _ = std::fs::remove_file(&temp);
            return Err(self.io(source));
        }
        Ok(())
    }

    fn io(&self, source: io::Error) -> StateError {
        StateError::Io {
            path: self.path.clone(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    fn pod(uid: &str) -> KnownPod {
        KnownPod {
            uid: uid.into(),
            namespace: "shop".into(),
            name: format!("web-{uid}"),
            service_account: "web".into(),
            container_id: format!("c-{uid}"),
            netns: format!("/var/run/netns/cni-{uid}"),
            enrolled: uid == "a",
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ambit-agent-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn save_then_load_round_trips_and_leaves_no_temp_file() {
        let dir = temp_dir("roundtrip");
        let state = StateFile::new(dir.join("state.json"));
        assert!(state.load().unwrap().is_empty(), "no file yet");
        let pods = [pod("a"), pod("b")];
        state.save(&pods).unwrap();
        assert_eq!(state.load().unwrap(), pods);
        state.save(&pods[1..]).unwrap();
        assert_eq!(state.load().unwrap(), pods[1..]);
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["state.json"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_corrupt_or_foreign_file_is_refused() {
        let dir = temp_dir("corrupt");
        let state = StateFile::new(dir.join("state.json"));
        std::fs::write(state.path(), "{\"version\":1,\"pods\":[").unwrap();
        assert!(matches!(state.load(), Err(StateError::Format { .. })));
        std::fs::write(state.path(), "{\"version\":2,\"pods\":[]}").unwrap();
        let error = state.load().unwrap_err().to_string();
        assert!(error.contains("version 2"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
