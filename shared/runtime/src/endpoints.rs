//! The admin (15000), metrics (15020) and readiness (15021) servers.
//!
//! Each takes a `std::net::TcpListener` bound by the caller (tests bind port 0) and runs
//! until its [`DrainWatch`] reports the shutdown is over. They run wherever they are
//! spawned; spawn them on a [`ControlRuntime`](crate::ControlRuntime) so a slow scrape or
//! config dump never competes with the data path's worker threads.

use std::io;
use std::sync::Arc;

use ambit_telemetry::{LogHandle, MetricsRegistry};
use bytes::Bytes;
use http::{Method, StatusCode};

use crate::ready::Ready;
use crate::server::{self, Body, Handler};
use crate::shutdown::{DrainTrigger, DrainWatch};

/// Produces a JSON document on demand (config dump, certificates, connections).
pub type JsonSource = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// The admin server: `/config_dump`, `/certs`, `/connections` (GET, JSON), `/logging` (GET
/// shows the filter, POST `?level=` changes it) and `/quitquitquit` (POST, starts the drain).
///
/// It can change the log level and stop the process, so the caller must bind its listener
/// to localhost only (127.0.0.1:15000, as Istio's ztunnel does).
#[derive(Clone)]
pub struct AdminServer {
    drain: DrainTrigger,
    config_dump: Option<JsonSource>,
    certs: Option<JsonSource>,
    connections: Option<JsonSource>,
    logging: Option<LogHandle>,
}

impl AdminServer {
    /// An admin server whose `/quitquitquit` starts `drain`; the JSON endpoints answer 404
    /// until their sources are set.
    pub fn new(drain: DrainTrigger) -> Self {
        Self {
            drain,
            config_dump: None,
            certs: None,
            connections: None,
            logging: None,
        }
    }

    /// Source of `/config_dump`.
    pub fn config_dump(
        mut self,
        source: impl Fn() -> serde_json::Value + Send + Sync + 'static,
    ) -> Self {
        self.config_dump = Some(Arc::new(source));
        self
    }

    /// Source of `/certs`.
    pub fn certs(mut self, source: impl Fn() -> serde_json::Value + Send + Sync + 'static) -> Self {
        self.certs = Some(Arc::new(source));
        self
    }

    /// Source of `/connections`.
    pub fn connections(
        mut self,
        source: impl Fn() -> serde_json::Value + Send + Sync + 'static,
    ) -> Self {
        self.connections = Some(Arc::new(source));
        self
    }

    /// The logger `/logging` controls.
    pub fn logging(mut self, handle: LogHandle) -> Self {
        self.logging = Some(handle);
        self
    }

    /// Serves until `stop` reports the shutdown is over.
    pub async fn serve(self, listener: std::net::TcpListener, stop: DrainWatch) -> io::Result<()> {
        let handler: Handler = Arc::new(move |method, uri| self.handle(method, uri));
        server::serve("admin", listener, handler, stop).await
    }

    fn handle(&self, method: &Method, uri: &http::Uri) -> hyper::Response<Body> {
        match uri.path() {
            "/config_dump" => json_endpoint(method, self.config_dump.as_ref()),
            "/certs" => json_endpoint(method, self.certs.as_ref()),
            "/connections" => json_endpoint(method, self.connections.as_ref()),
            "/logging" => self.handle_logging(method, uri),
            "/quitquitquit" if method == Method::POST => {
                tracing::info!("drain requested through the admin server");
                self.drain.start();
                server::text(StatusCode::OK, "draining\n")
            }
            "/quitquitquit" => server::method_not_allowed(&Method::POST),
            _ => server::not_found(),
        }
    }

    fn handle_logging(&self, method: &Method, uri: &http::Uri) -> hyper::Response<Body> {
        let Some(handle) = &self.logging else {
            return server::not_found();
        };
        if method == Method::GET {
            return match handle.level() {
                Ok(level) => server::text(StatusCode::OK, format!("{level}\n")),
                Err(error) => server::text(StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")),
            };
        }
        if method != Method::POST {
            return server::method_not_allowed(&Method::POST);
        }
        let level = match server::query_param(uri, "level") {
            Some(Ok(level)) if !level.trim().is_empty() => level,
            Some(Err(())) => {
                return server::text(StatusCode::BAD_REQUEST, "level is badly percent-encoded\n");
            }
            _ => {
                return server::text(StatusCode::BAD_REQUEST, "missing ?level=<filter>\n");
            }
        };
        match handle.set_level(&level) {
            Ok(()) => {
                tracing::info!(%level, "log level changed through the admin server");
                server::text(StatusCode::OK, format!("{level}\n"))
            }
            Err(error) if error.is_invalid_filter() => {
                server::text(StatusCode::BAD_REQUEST, format!("{error}\n"))
            }
            Err(error) => server::text(StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")),
        }
    }
}

impl std::fmt::Debug for AdminServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminServer")
            .field("config_dump", &self.config_dump.is_some())
            .field("certs", &self.certs.is_some())
            .field("connections", &self.connections.is_some())
            .field("logging", &self.logging.is_some())
            .finish_non_exhaustive()
    }
}

/// Serves `/metrics` (and Istio's alias `/stats/prometheus`) in the OpenMetrics text format
/// until `stop` reports the shutdown is over.
pub async fn serve_metrics(
    listener: std::net::TcpListener,
    registry: Arc<MetricsRegistry>,
    stop: DrainWatch,
) -> io::Result<()> {
    let handler: Handler = Arc::new(move |method, uri| match uri.path() {
        "/metrics" | "/stats/prometheus" if method == Method::GET => match registry.encode() {
            Ok(text) => server::with_type(
                StatusCode::OK,
                ambit_telemetry::metrics::CONTENT_TYPE,
                Bytes::from(text),
            ),
            Err(error) => server::text(StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")),
        },
        "/metrics" | "/stats/prometheus" => server::method_not_allowed(&Method::GET),
        _ => server::not_found(),
    });
    server::serve("metrics", listener, handler, stop).await
}

/// Serves `/healthz/ready`: 200 once every condition in `ready` is satisfied, else 503
/// listing what is pending; 503 `draining` once the drain has started, so load balancers
/// stop sending new work. Runs until `stop` reports the shutdown is over.
pub async fn serve_readiness(
    listener: std::net::TcpListener,
    ready: Ready,
    stop: DrainWatch,
) -> io::Result<()> {
    let drain = stop.clone();
    let handler: Handler = Arc::new(move |method, uri| match uri.path() {
        "/healthz/ready" if method == Method::GET => {
            if drain.is_draining() {
                return server::text(StatusCode::SERVICE_UNAVAILABLE, "draining\n");
            }
            let pending = ready.pending();
            if pending.is_empty() {
                server::text(StatusCode::OK, "ready\n")
            } else {
                server::text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready, pending: {}\n", pending.join(", ")),
                )
            }
        }
        "/healthz/ready" => server::method_not_allowed(&Method::GET),
        _ => server::not_found(),
    });
    server::serve("readiness", listener, handler, stop).await
}

fn json_endpoint(method: &Method, source: Option<&JsonSource>) -> hyper::Response<Body> {
    let Some(source) = source else {
        return server::not_found();
    };
    if method != Method::GET {
        return server::method_not_allowed(&Method::GET);
    }
    server::json(&source())
}
