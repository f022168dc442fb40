//! Graceful drain: tells servers to stop accepting and send GOAWAY.

use tokio::sync::watch;

/// The trigger side of a drain. Starting it, or dropping it, drains every [`DrainSignal`].
#[derive(Debug)]
pub struct Drain {
    tx: watch::Sender<bool>,
}

/// The observing side of a drain, cloned into every listener and connection.
#[derive(Debug, Clone)]
pub struct DrainSignal {
    rx: Option<watch::Receiver<bool>>,
}

impl Drain {
    /// A drain that has not started.
    pub fn new() -> Self {
        Self {
            tx: watch::Sender::new(false),
        }
    }

    /// A signal that fires when this drain starts.
    pub fn signal(&self) -> DrainSignal {
        DrainSignal {
            rx: Some(self.tx.subscribe()),
        }
    }

    /// Starts draining: listeners stop accepting, connections send GOAWAY and finish their
    /// in-flight streams.
    pub fn start(&self) {
        self.tx.send_replace(true);
    }
}

impl Default for Drain {
    fn default() -> Self {
        Self::new()
    }
}

impl DrainSignal {
    /// A signal that never fires.
    pub fn never() -> Self {
        Self { rx: None }
    }

    /// Whether draining has started.
    pub fn is_draining(&self) -> bool {
        self.rx
            .as_ref()
            .is_some_and(|rx| *rx.borrow() || rx.has_changed().is_err())
    }

    /// Resolves once draining has started (or the [`Drain`] was dropped).
    pub async fn draining(&mut self) {
        match &mut self.rx {
            // A dropped `Drain` counts as started: its owner is going away.
            Some(rx) => {
                let _ = rx.wait_for(|draining| *draining).await;
            }
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn fires_on_start_and_on_drop() {
        let drain = Drain::new();
        let mut signal = drain.signal();
        assert!(!signal.is_draining());
        drain.start();
        tokio::time::timeout(Duration::from_secs(5), signal.draining())
            .await
            .unwrap();
        assert!(signal.is_draining());

        let drain = Drain::new();
        let mut signal = drain.signal();
        drop(drain);
        assert!(signal.is_draining());
        tokio::time::timeout(Duration::from_secs(5), signal.draining())
            .await
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn never_does_not_fire() {
        let mut signal = DrainSignal::never();
        assert!(!signal.is_draining());
        let waited = tokio::time::timeout(Duration::from_secs(3600), signal.draining()).await;
        assert!(waited.is_err());
    }
}
