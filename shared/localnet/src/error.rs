//! The crate's one error type: opaque, with predicates for the cases callers act on.

use std::io;
use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a localnet operation failed; the message names the command or file involved.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct Error(Box<Kind>);

#[derive(Debug, thiserror::Error)]
enum Kind {
    #[error("a localnet cluster needs root: {0}")]
    Privileges(String),
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("could not run `{command}`: {source}")]
    Spawn { command: String, source: io::Error },
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
    #[error("cannot enter network namespace {netns}: {source}")]
    Setns { netns: String, source: nix::Error },
    #[error("state file {path} is not a localnet state: {source}")]
    StateFormat {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("invalid {0}")]
    Invalid(String),
    #[error("no free address left: {0}")]
    Exhausted(String),
}

impl Error {
    /// True if the process lacks root, capabilities or the `ip` tool.
    pub fn is_privileges(&self) -> bool {
        matches!(*self.0, Kind::Privileges(_))
    }

    /// True if an external command ran and exited unsuccessfully.
    pub fn is_command_failed(&self) -> bool {
        matches!(*self.0, Kind::Command { .. })
    }

    /// True if a named node, pod or state file does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(*self.0, Kind::NotFound(_))
    }

    /// True if a node or pod with that name already exists.
    pub fn is_already_exists(&self) -> bool {
        matches!(*self.0, Kind::AlreadyExists(_))
    }

    /// True if a name given by the caller is not acceptable.
    pub fn is_invalid(&self) -> bool {
        matches!(*self.0, Kind::Invalid(_))
    }

    pub(crate) fn privileges(missing: String) -> Self {
        Self(Box::new(Kind::Privileges(missing)))
    }

    pub(crate) fn command(command: String, status: String, stderr: String) -> Self {
        Self(Box::new(Kind::Command {
            command,
            status,
            stderr,
        }))
    }

    pub(crate) fn spawn(command: String, source: io::Error) -> Self {
        Self(Box::new(Kind::Spawn { command, source }))
    }

    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self(Box::new(Kind::Io {
            context: context.into(),
            source,
        }))
    }

    pub(crate) fn setns(netns: &str, source: nix::Error) -> Self {
        Self(Box::new(Kind::Setns {
            netns: netns.to_owned(),
            source,
        }))
    }

    pub(crate) fn state_format(path: PathBuf, source: serde_json::Error) -> Self {
        Self(Box::new(Kind::StateFormat { path, source }))
    }

    pub(crate) fn not_found(what: impl Into<String>) -> Self {
        Self(Box::new(Kind::NotFound(what.into())))
    }

    pub(crate) fn already_exists(what: impl Into<String>) -> Self {
        Self(Box::new(Kind::AlreadyExists(what.into())))
    }

    pub(crate) fn invalid(what: impl Into<String>) -> Self {
        Self(Box::new(Kind::Invalid(what.into())))
    }

    pub(crate) fn exhausted(what: impl Into<String>) -> Self {
        Self(Box::new(Kind::Exhausted(what.into())))
    }
}
