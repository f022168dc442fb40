//! Graceful shutdown: a drain signal, then a bounded wait for the tasks that must finish.
//!
//! The phases are `running` → `draining` (on SIGTERM, SIGINT or [`DrainTrigger::start`],
//! e.g. from the admin `/quitquitquit`) → `stopped` (when every tracked task has finished or
//! the grace period ran out). Listeners stop accepting and connections wind down on
//! `draining`; the admin, metrics and readiness servers keep answering until `stopped`, so
//! the readiness probe can report the drain.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;

use crate::pending::{PendingEntry, PendingSet};

/// Drives a shutdown: waits for the trigger, starts the drain, waits for tracked tasks.
///
/// Only [`run`](Shutdown::run) moves the phases on: a `Shutdown` dropped without running
/// never drains its watches.
#[derive(Debug)]
pub struct Shutdown {
    shared: Arc<Shared>,
    grace: Duration,
    signals: Option<Signals>,
}

/// Starts the drain; cloneable, for the admin server and anything else that may ask for it.
#[derive(Debug, Clone)]
pub struct DrainTrigger {
    shared: Arc<Shared>,
}

/// Observes the drain; cloned into every listener and server.
#[derive(Debug, Clone)]
pub struct DrainWatch {
    shared: Arc<Shared>,
    phase: watch::Receiver<Phase>,
}

/// A task the shutdown waits for (up to its grace period); finished when dropped.
#[derive(Debug)]
#[must_use = "dropping the guard marks the task finished at once"]
pub struct TaskGuard {
    _entry: PendingEntry,
}

/// How a shutdown went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownReport {
    /// What started the drain.
    pub reason: ShutdownReason,
    /// Tasks still running when the grace period ran out; empty if all finished in time.
    pub unfinished: Vec<String>,
}

/// What started a drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShutdownReason {
    /// SIGTERM (Kubernetes stopping the pod).
    Terminate,
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// [`DrainTrigger::start`], e.g. the admin `/quitquitquit`.
    Requested,
}

#[derive(Debug)]
struct Shared {
    phase: watch::Sender<Phase>,
    tasks: Arc<PendingSet>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Running,
    Draining,
    Stopped,
}

#[derive(Debug)]
struct Signals {
    terminate: Signal,
    interrupt: Signal,
}

impl Shutdown {
    /// A shutdown triggered by SIGTERM, SIGINT or a [`DrainTrigger`], waiting up to `grace`
    /// for tracked tasks. The signal handlers are installed before this returns, so from
    /// then on those signals no longer kill the process. Must be called inside a Tokio
    /// runtime.
    pub fn new(grace: Duration) -> io::Result<Self> {
        let signals = Signals {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        };
        Ok(Self {
            signals: Some(signals),
            ..Self::without_signals(grace)
        })
    }

    /// A shutdown triggered only by a [`DrainTrigger`] (tests, embedding).
    pub fn without_signals(grace: Duration) -> Self {
        Self {
            shared: Arc::new(Shared {
                phase: watch::Sender::new(Phase::Running),
                tasks: PendingSet::new(),
            }),
            grace,
            signals: None,
        }
    }

    /// A handle that starts the drain.
    pub fn trigger(&self) -> DrainTrigger {
        DrainTrigger {
            shared: self.shared.clone(),
        }
    }

    /// A handle that observes the drain and registers tasks.
    pub fn watch(&self) -> DrainWatch {
        DrainWatch {
            shared: self.shared.clone(),
            phase: self.shared.phase.subscribe(),
        }
    }

    /// Waits for a signal or a trigger, starts the drain, waits up to the grace period for
    /// tracked tasks, marks the process stopped and reports.
    pub async fn run(mut self) -> ShutdownReport {
        let reason = self.wait_for_trigger().await;
        tracing::info!(?reason, grace = ?self.grace, "draining");
        self.shared.start_drain();
        let tasks = self.shared.tasks.clone();
        let unfinished = match tokio::time::timeout(self.grace, tasks.wait_empty()).await {
            Ok(()) => Vec::new(),
            Err(_) => {
                let unfinished = tasks.names();
                tracing::warn!(?unfinished, "grace period over with tasks still running");
                unfinished
            }
        };
        self.shared.phase.send_replace(Phase::Stopped);
        ShutdownReport { reason, unfinished }
    }

    async fn wait_for_trigger(&mut self) -> ShutdownReason {
        let mut phase = self.shared.phase.subscribe();
        let requested = async move {
            // The sender lives in `self.shared`, so this only returns once the phase moves.
            let _ = phase.wait_for(|p| *p != Phase::Running).await;
        };
        match &mut self.signals {
            Some(signals) => tokio::select! {
                _ = signals.terminate.recv() => ShutdownReason::Terminate,
                _ = signals.interrupt.recv() => ShutdownReason::Interrupt,
                () = requested => ShutdownReason::Requested,
            },
            None => {
                requested.await;
                ShutdownReason::Requested
            }
        }
    }
}

impl Shared {
    fn start_drain(&self) {
        self.phase.send_if_modified(|phase| {
            let start = *phase == Phase::Running;
            if start {
                *phase = Phase::Draining;
            }
            start
        });
    }
}

impl DrainTrigger {
    /// Starts the drain (idempotent).
    pub fn start(&self) {
        self.shared.start_drain();
    }
}

impl DrainWatch {
    /// A watch that never drains (for tests and tools).
    pub fn never() -> Self {
        Shutdown::without_signals(Duration::ZERO).watch()
    }

    /// Whether the drain has started.
    pub fn is_draining(&self) -> bool {
        *self.phase.borrow() >= Phase::Draining
    }

    /// Whether the shutdown is over: servers should exit.
    pub fn is_stopped(&self) -> bool {
        *self.phase.borrow() == Phase::Stopped
    }

    /// Resolves once the drain has started: stop accepting, send GOAWAY, finish in-flight work.
    pub async fn draining(&mut self) {
        let _ = self.phase.wait_for(|p| *p >= Phase::Draining).await;
    }

    /// Resolves once the shutdown is over (grace period done or every task finished).
    pub async fn stopped(&mut self) {
        let _ = self.phase.wait_for(|p| *p == Phase::Stopped).await;
    }

    /// Registers a task that shutdown waits for (up to the grace period) before stopping.
    pub fn track(&self, name: impl Into<String>) -> TaskGuard {
        TaskGuard {
            _entry: self.shared.tasks.add(name.into()),
        }
    }
}

impl fmt::Display for ShutdownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Terminate => "SIGTERM",
            Self::Interrupt => "SIGINT",
            Self::Requested => "requested",
        })
    }
}

#[cfg(test)]
#[path = "shutdown_tests.rs"]
mod tests;
