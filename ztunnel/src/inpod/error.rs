//! The error type of in-pod enrollment: which pod namespace, what failed, and why.

use std::fmt;
use std::io;

/// Result of in-pod operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why an in-pod operation failed; always names the pod network namespace involved.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct Error(Box<Kind>);

#[derive(Debug, thiserror::Error)]
enum Kind {
    #[error("network namespace {netns}: {action}: {source}")]
    Netns {
        netns: String,
        action: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("network namespace {netns}: `{command}` failed ({status}): {stderr}")]
    Command {
        netns: String,
        command: String,
        status: String,
        stderr: String,
    },
    #[error("network namespace {netns}: {context}: {source}")]
    Io {
        netns: String,
        context: String,
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// True if the namespace itself could not be opened or entered.
    pub fn is_netns(&self) -> bool {
        matches!(*self.0, Kind::Netns { .. })
    }

    /// True if `nft` or `ip` ran and reported failure; see [`Error::stderr`].
    pub fn is_command_failed(&self) -> bool {
        matches!(*self.0, Kind::Command { .. })
    }

    /// What a failed command wrote to stderr.
    pub fn stderr(&self) -> Option<&str> {
        match &*self.0 {
            Kind::Command { stderr, .. } => Some(stderr),
            _ => None,
        }
    }

    /// The OS error behind a socket or namespace failure, if that is what happened.
    pub fn io_error_kind(&self) -> Option<io::ErrorKind> {
        match &*self.0 {
            Kind::Netns { source, .. } | Kind::Io { source, .. } => Some(source.kind()),
            Kind::Command { .. } => None,
        }
    }

    /// The raw OS error code behind a socket or namespace failure.
    pub fn raw_os_error(&self) -> Option<i32> {
        match &*self.0 {
            Kind::Netns { source, .. } | Kind::Io { source, .. } => source.raw_os_error(),
            Kind::Command { .. } => None,
        }
    }

    pub(crate) fn netns(netns: &str, action: &'static str, source: io::Error) -> Self {
        Self(Box::new(Kind::Netns {
            netns: netns.to_owned(),
            action,
            source,
        }))
    }

    pub(crate) fn command(
        netns: &str,
        command: impl fmt::Display,
        status: impl fmt::Display,
        stderr: &[u8],
    ) -> Self {
        Self(Box::new(Kind::Command {
            netns: netns.to_owned(),
            command: command.to_string(),
            status: status.to_string(),
            stderr: String::from_utf8_lossy(stderr).trim().to_owned(),
        }))
    }

    pub(crate) fn io(netns: &str, context: impl Into<String>, source: io::Error) -> Self {
        Self(Box::new(Kind::Io {
            netns: netns.to_owned(),
            context: context.into(),
            source,
        }))
    }
}
