//! A small runtime on its own thread for the admin, metrics and readiness servers.
//!
//! Scrapes and config dumps serialise whole registries and snapshots; on a dedicated
//! single-threaded runtime they never take a worker thread from the data path, and a stuck
//! data path still answers `/healthz/ready` and `/config_dump` (Istio's ztunnel makes the
//! same split).

use std::future::Future;
use std::io;
use std::thread::JoinHandle;

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;

/// A current-thread Tokio runtime driven by a dedicated OS thread. Dropping it cancels its
/// tasks and joins the thread.
#[derive(Debug)]
pub struct ControlRuntime {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ControlRuntime {
    /// Starts the runtime on a thread named `thread_name`.
    pub fn start(thread_name: &str) -> io::Result<Self> {
        let runtime = Builder::new_current_thread().enable_all().build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(thread_name.to_owned())
            .spawn(move || {
                // Spawned tasks run while this thread blocks on the stop signal.
                let _ = runtime.block_on(stopped);
            })?;
        Ok(Self {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Spawns `task` on this runtime.
    pub fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(task)
    }

    /// The runtime's handle.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

impl Drop for ControlRuntime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the control runtime thread panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_tasks_on_its_own_thread_and_stops_on_drop() {
        let control = ControlRuntime::start("ambit-control-test").unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        control.spawn(async move {
            let name = std::thread::current().name().map(str::to_owned);
            tx.send(name).unwrap();
        });
        let name = rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
        assert_eq!(name.as_deref(), Some("ambit-control-test"));

        let (dropped_tx, dropped_rx) = std::sync::mpsc::channel::<()>();
        control.spawn(async move {
            let _keep = dropped_tx;
            std::future::pending::<()>().await;
        });
        drop(control);
        // Dropping the runtime cancelled the pending task, which dropped its sender.
        assert!(
            dropped_rx
                .recv_timeout(std::time::Duration::from_secs(5))
                .is_err()
        );
    }
}
