//! A pod's network namespace, held open by file descriptor.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use nix::sched::{CloneFlags, setns};

use super::error::{Error, Result};

/// An open handle on a pod's network namespace; cheap to clone.
///
/// Holding the file keeps the namespace alive even if its bind mount goes away, so a pod that
/// is being deleted cannot be swapped for another namespace under ztunnel's feet.
#[derive(Debug, Clone)]
pub struct PodNetns {
    file: Arc<File>,
    name: Arc<str>,
}

impl PodNetns {
    /// Opens the namespace at `path` (e.g. `/var/run/netns/<name>` or `/proc/<pid>/ns/net`).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let file = File::open(path).map_err(|source| Error::netns(&name, "opening", source))?;
        Ok(Self::from_file(file, name))
    }

    /// Wraps an already open namespace file (e.g. an fd received from the node agent);
    /// `name` is used in errors and logs.
    pub fn from_file(file: File, name: impl Into<String>) -> Self {
        Self {
            file: Arc::new(file),
            name: Arc::from(name.into()),
        }
    }

    /// The name given at construction (the path for [`PodNetns::open`]).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `f` on a fresh thread that has entered this namespace and returns its result.
    ///
    /// Sockets created by `f` stay in the namespace after the thread ends, and processes it
    /// spawns start in it. The caller blocks until `f` returns; a panic in `f` is resumed here.
    pub fn run_in<F, T>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        // A dedicated thread, because entering a namespace is per thread and must never leak
        // into the runtime's workers.
        std::thread::scope(|scope| {
            let thread = std::thread::Builder::new()
                .name("ztunnel-netns".to_owned())
                .spawn_scoped(scope, || {
                    setns(&*self.file, CloneFlags::CLONE_NEWNET)
                        .map_err(|errno| Error::netns(&self.name, "entering", errno.into()))?;
                    Ok(f())
                })
                .map_err(|source| Error::netns(&self.name, "spawning a thread for", source))?;
            match thread.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }
}
