//! Logging setup: `tracing` with an `RUST_LOG`-style filter that can be changed at runtime.

use std::io::IsTerminal as _;

use tracing::Subscriber;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Layer, Layered, SubscriberExt as _};
use tracing_subscriber::{EnvFilter, Registry, reload};

/// The environment variable that overrides the default filter, as in `env_logger`.
pub const ENV_VAR: &str = "RUST_LOG";

/// Changes the active log filter at runtime (behind the admin `/logging` endpoint).
#[derive(Debug, Clone)]
pub struct LogHandle {
    reload: reload::Handle<EnvFilter, Registry>,
}

/// A logging setup or level change failed.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct LoggingError(#[from] ErrorKind);

#[derive(Debug, thiserror::Error)]
enum ErrorKind {
    #[error("invalid log filter {directives:?}: {source}")]
    InvalidFilter {
        directives: String,
        source: tracing_subscriber::filter::ParseError,
    },
    #[error("a global logger is already installed")]
    AlreadyInstalled(#[source] tracing::subscriber::SetGlobalDefaultError),
    #[error("the logger this handle controls is gone")]
    SubscriberGone(#[source] reload::Error),
}

/// A subscriber built by [`subscriber`]; install it globally or for a scope.
pub type BoxedSubscriber = Box<dyn Subscriber + Send + Sync>;

type FilteredRegistry = Layered<reload::Layer<EnvFilter, Registry>, Registry>;

impl LogHandle {
    /// Replaces the filter with `directives` (`debug`, `info,ambit_hbone=trace`, ...). The
    /// old filter stays in force when `directives` do not parse.
    pub fn set_level(&self, directives: &str) -> Result<(), LoggingError> {
        let filter = parse_filter(directives)?;
        self.reload
            .reload(filter)
            .map_err(|e| ErrorKind::SubscriberGone(e).into())
    }

    /// The active filter's directives, e.g. `info,ambit_hbone=debug`.
    pub fn level(&self) -> Result<String, LoggingError> {
        self.reload
            .with_current(|filter| filter.to_string())
            .map_err(|e| ErrorKind::SubscriberGone(e).into())
    }
}

impl LoggingError {
    /// Whether the error is a filter string that does not parse (the caller's mistake).
    pub fn is_invalid_filter(&self) -> bool {
        matches!(self.0, ErrorKind::InvalidFilter { .. })
    }
}

/// Installs the process-wide logger writing to stdout: `RUST_LOG` if set, else
/// `default_level`; one JSON object per line when `json`, else human-readable text.
pub fn init_logging(default_level: &str, json: bool) -> Result<LogHandle, LoggingError> {
    let directives = std::env::var(ENV_VAR)
        .ok()
        .filter(|value| !value.trim().is_empty())
        .unwrap_or_else(|| default_level.to_owned());
    let ansi = !json && std::io::stdout().is_terminal();
    let (subscriber, handle) = build(&directives, json, ansi, std::io::stdout)?;
    tracing::subscriber::set_global_default(subscriber).map_err(ErrorKind::AlreadyInstalled)?;
    Ok(handle)
}

/// Builds (without installing) a subscriber that writes to `writer`, filtered by
/// `directives`; used by tests and by embedders that install it themselves.
pub fn subscriber<W>(
    directives: &str,
    json: bool,
    writer: W,
) -> Result<(BoxedSubscriber, LogHandle), LoggingError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    build(directives, json, false, writer)
}

fn build<W>(
    directives: &str,
    json: bool,
    ansi: bool,
    writer: W,
) -> Result<(BoxedSubscriber, LogHandle), LoggingError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let (filter, reload) = reload::Layer::new(parse_filter(directives)?);
    // Boxed so JSON and text produce the same type; this is built once per process.
    let output: Box<dyn Layer<FilteredRegistry> + Send + Sync> = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(writer)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(writer)
            .boxed()
    };
    let subscriber = Registry::default().with(filter).with(output);
    Ok((Box::new(subscriber), LogHandle { reload }))
}

fn parse_filter(directives: &str) -> Result<EnvFilter, LoggingError> {
    EnvFilter::builder().parse(directives).map_err(|source| {
        ErrorKind::InvalidFilter {
            directives: directives.to_owned(),
            source,
        }
        .into()
    })
}

#[cfg(test)]
#[path = "logging_tests.rs"]
mod tests;
