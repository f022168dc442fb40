//! The verbs against a Kubernetes cluster, through kube-rs: waypoints as Gateway API objects
//! ([`waypoint`]) and ztunnel's admin documents through a port-forward to the ztunnel pod
//! ([`ztunnel`]). Each verb takes a [`kube::Client`] and returns the text to print, so tests
//! drive them against a mocked API server.

pub mod waypoint;
pub mod ztunnel;

use crate::ztunnel_config::ZtunnelConfigError;

/// Why a cluster verb failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The API server refused or could not be reached.
    #[error("{action}: {source}")]
    Api {
        /// What was being done (`applying Gateway shop/waypoint`).
        action: String,
        /// The client's error.
        source: kube::Error,
    },
    /// The object does not exist.
    #[error("{what} not found")]
    NotFound {
        /// The object (`waypoint shop/waypoint`).
        what: String,
    },
    /// The object exists but is not what this verb manages.
    #[error("{0}")]
    Refused(String),
    /// Watching for a condition failed.
    #[error("{action}: {source}")]
    Watch {
        /// What was being waited for.
        action: String,
        /// The watcher's error.
        source: kube::runtime::wait::Error,
    },
    /// A document or request could not be made sense of.
    #[error("{0}")]
    Invalid(String),
    /// `--wait` ran out of time.
    #[error(
        "waypoint {namespace}/{name} was not Programmed within {timeout:?} ({last}); \
         see `kubectl describe gateway -n {namespace} {name}`"
    )]
    WaitTimeout {
        /// Namespace of the Gateway.
        namespace: String,
        /// Its name.
        name: String,
        /// The bound.
        timeout: std::time::Duration,
        /// The last Programmed condition seen.
        last: String,
    },
    /// No single ztunnel pod matches.
    #[error("{0}")]
    Ztunnel(String),
    /// A ztunnel's admin document could not be read through the port-forward.
    #[error("{action}: {message}")]
    Admin {
        /// What was being done (`GET /config_dump from ztunnel pod …`).
        action: String,
        /// Why it failed.
        message: String,
    },
    /// A request did not finish in time.
    #[error("{action}: no answer within {timeout:?}")]
    Timeout {
        /// What was being done.
        action: String,
        /// The bound.
        timeout: std::time::Duration,
    },
    /// The fetched admin document could not be rendered.
    #[error(transparent)]
    Render(#[from] ZtunnelConfigError),
}

impl ClusterError {
    /// An API error while doing `action`.
    pub(crate) fn api(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let action = action.into();
        move |source| Self::Api { action, source }
    }
}

impl ClusterError {
    /// An API error while doing `action` on `what`, a 404 being [`ClusterError::NotFound`].
    pub(crate) fn api_or_not_found(
        what: impl Into<String>,
        action: impl Into<String>,
    ) -> impl FnOnce(kube::Error) -> Self {
        let (what, action) = (what.into(), action.into());
        move |source| {
            if is_not_found(&source) {
                Self::NotFound { what }
            } else {
                Self::Api { action, source }
            }
        }
    }
}

/// Whether `error` is the API server's 404.
pub(crate) fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}
