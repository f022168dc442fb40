//! Readiness: the process is ready once every registered condition is satisfied.

use std::sync::Arc;

use crate::pending::{PendingEntry, PendingSet};

/// The set of readiness conditions. Cloning shares the set.
///
/// Register every condition before the readiness server starts: a set with nothing pending
/// is ready.
#[derive(Debug, Clone)]
pub struct Ready {
    pending: Arc<PendingSet>,
}

/// One readiness condition; satisfied by [`done`](ReadyToken::done) or by dropping it.
#[derive(Debug)]
#[must_use = "dropping the token satisfies the condition at once"]
pub struct ReadyToken {
    _entry: PendingEntry,
}

impl Ready {
    /// A set with no conditions.
    pub fn new() -> Self {
        Self {
            pending: PendingSet::new(),
        }
    }

    /// Adds a condition named `name` (e.g. `"certificates"`), pending until the token is
    /// done or dropped.
    pub fn register(&self, name: impl Into<String>) -> ReadyToken {
        ReadyToken {
            _entry: self.pending.add(name.into()),
        }
    }

    /// Names of the conditions still pending, in registration order.
    pub fn pending(&self) -> Vec<String> {
        self.pending.names()
    }

    /// Whether every condition is satisfied.
    pub fn is_ready(&self) -> bool {
        self.pending.is_empty()
    }

    /// Resolves once every condition is satisfied.
    pub async fn wait(&self) {
        self.pending.wait_empty().await;
    }
}

impl Default for Ready {
    fn default() -> Self {
        Self::new()
    }
}

impl ReadyToken {
    /// Marks the condition satisfied.
    pub fn done(self) {}
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn pending_until_every_token_is_done() {
        let ready = Ready::new();
        assert!(ready.is_ready(), "nothing registered");
        let certs = ready.register("certificates");
        let config = ready.register("config");
        let other = ready.register("certificates");
        assert_eq!(ready.pending(), ["certificates", "config", "certificates"]);
        certs.done();
        assert_eq!(ready.pending(), ["config", "certificates"]);
        drop(other);
        assert_eq!(ready.pending(), ["config"]);
        assert!(!ready.clone().is_ready(), "clones share the set");
        config.done();
        assert!(ready.is_ready());
        assert!(ready.pending().is_empty());
    }

    #[tokio::test]
    async fn wait_resolves_when_the_last_token_is_done() {
        let ready = Ready::new();
        let token = ready.register("config");
        let waiter = tokio::spawn({
            let ready = ready.clone();
            async move { ready.wait().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        token.done();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
    }
}
