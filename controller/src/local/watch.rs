//! [`FolderSource`]: the folder watched with `notify`, debounced, reread whole on each change
//! (parsing again only the files whose text changed).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode};
use notify_debouncer_mini::{DebounceEventResult, Debouncer, new_debouncer};
use tokio::sync::mpsc;

use super::{ParsedFiles, load_dir_with};
use crate::source::{Snapshot, Source};

/// The folder could not be watched.
#[derive(Debug, thiserror::Error)]
#[error("cannot watch {}: {source}", dir.display())]
pub struct WatchError {
    dir: PathBuf,
    source: notify::Error,
}

/// A [`Source`] over a folder of YAML files. The first snapshot is the folder as it is; each
/// later one is the whole folder reread after changes settled for the debounce period (editors
/// write files in several steps, and rereading everything keeps duplicates and cross-file
/// references consistent).
pub struct FolderSource {
    dir: PathBuf,
    changes: mpsc::Receiver<()>,
    started: bool,
    /// Parses of the files as last read; a reread parses only files that changed.
    parsed: Arc<Mutex<ParsedFiles>>,
    // Dropping it stops the watch.
    _debouncer: Debouncer<RecommendedWatcher>,
}

impl FolderSource {
    /// Starts watching `dir`. Changes made after this returns are seen by
    /// [`next_snapshot`](Source::next_snapshot).
    pub fn new(dir: impl Into<PathBuf>, debounce: Duration) -> Result<Self, WatchError> {
        let dir = dir.into();
        // One slot is enough: a pending signal already means "reread".
        let (tx, changes) = mpsc::channel(1);
        let handler = move |result: DebounceEventResult| {
            if let Err(err) = &result {
                tracing::warn!(error = %err, "folder watch error; rereading the folder");
            }
            let _ = tx.try_send(());
        };
        let watch_error = |source| WatchError {
            dir: dir.clone(),
            source,
        };
        let mut debouncer = new_debouncer(debounce, handler).map_err(watch_error)?;
        debouncer
            .watcher()
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(watch_error)?;
        Ok(Self {
            dir,
            changes,
            started: false,
            parsed: Arc::new(Mutex::new(ParsedFiles::default())),
            _debouncer: debouncer,
        })
    }

    /// The watched folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Source for FolderSource {
    async fn next_snapshot(&mut self) -> Option<Snapshot> {
        if self.started {
            self.changes.recv().await?;
            // Changes that arrived meanwhile are covered by this reread.
            while self.changes.try_recv().is_ok() {}
        }
        self.started = true;
        let dir = self.dir.clone();
        let parsed = self.parsed.clone();
        let snapshot = tokio::task::spawn_blocking(move || {
            // Only this source locks it, one reread at a time; a poisoned lock only means an
            // earlier reread panicked, and starting from no cache is always correct.
            let mut parsed = parsed.lock().unwrap_or_else(|poisoned| {
                let mut guard = poisoned.into_inner();
                *guard = ParsedFiles::default();
                guard
            });
            load_dir_with(&dir, &mut parsed)
        })
        .await
        .ok()?;
        tracing::debug!(
            dir = %self.dir.display(),
            objects = snapshot.resources.len(),
            errors = snapshot.errors.len(),
            "folder read"
        );
        Some(snapshot)
    }
}

impl fmt::Debug for FolderSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FolderSource")
            .field("dir", &self.dir)
            .field("started", &self.started)
            .finish_non_exhaustive()
    }
}
