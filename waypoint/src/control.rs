//! The admin (127.0.0.1:15000), metrics (15020) and readiness (15021) servers, on their own
//! small runtime so they never take a data-path worker thread.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, OnceLock};

use ambit_runtime::{AdminServer, ControlRuntime, Ready, Shutdown, serve_metrics, serve_readiness};
use ambit_telemetry::{LogHandle, MetricsRegistry};
use tracing::{info, warn};

use crate::config::ConfigHandle;

/// Where the three servers listen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlAddrs {
    /// Admin (`/config_dump`, `/logging`, `/quitquitquit`): localhost only.
    pub admin: SocketAddr,
    /// Prometheus `/metrics`.
    pub metrics: SocketAddr,
    /// `/healthz/ready`.
    pub readiness: SocketAddr,
}

/// The running admin, metrics and readiness servers. Dropping this stops them.
#[derive(Debug)]
pub struct ControlServers {
    addrs: ControlAddrs,
    config: Arc<OnceLock<ConfigHandle>>,
    // Last: the servers stop when the runtime is dropped.
    _runtime: ControlRuntime,
}

/// What the servers show and control.
#[derive(Debug)]
pub struct ControlInputs {
    /// The registry `/metrics` encodes.
    pub registry: Arc<MetricsRegistry>,
    /// The conditions `/healthz/ready` waits for.
    pub ready: Ready,
    /// The logger `/logging` changes, if the process installed one.
    pub logging: Option<LogHandle>,
}

impl Default for ControlAddrs {
    fn default() -> Self {
        Self {
            admin: SocketAddr::from(([127, 0, 0, 1], 15000)),
            metrics: SocketAddr::from(([0, 0, 0, 0], 15020)),
            readiness: SocketAddr::from(([0, 0, 0, 0], 15021)),
        }
    }
}

impl ControlServers {
    /// Binds the three listeners (port 0 picks a free one) and serves them on a dedicated
    /// runtime until `shutdown` is over; `/quitquitquit` starts its drain. `/config_dump`
    /// answers once [`ControlServers::set_config`] is called.
    pub fn start(
        addrs: ControlAddrs,
        inputs: ControlInputs,
        shutdown: &Shutdown,
    ) -> io::Result<Self> {
        let admin = TcpListener::bind(addrs.admin)?;
        let metrics = TcpListener::bind(addrs.metrics)?;
        let readiness = TcpListener::bind(addrs.readiness)?;
        let bound = ControlAddrs {
            admin: admin.local_addr()?,
            metrics: metrics.local_addr()?,
            readiness: readiness.local_addr()?,
        };
        let config: Arc<OnceLock<ConfigHandle>> = Arc::new(OnceLock::new());
        let dump_source = config.clone();
        let mut admin_server =
            AdminServer::new(shutdown.trigger()).config_dump(move || match dump_source.get() {
                Some(handle) => handle.load().dump(),
                None => serde_json::json!({ "loaded": false }),
            });
        if let Some(logging) = inputs.logging {
            admin_server = admin_server.logging(logging);
        }
        let runtime = ControlRuntime::start("waypoint-control")?;
        let watch = shutdown.watch();
        runtime.spawn(report("admin", admin_server.serve(admin, watch.clone())));
        runtime.spawn(report(
            "metrics",
            serve_metrics(metrics, inputs.registry, watch.clone()),
        ));
        runtime.spawn(report(
            "readiness",
            serve_readiness(readiness, inputs.ready, watch),
        ));
        info!(admin = %bound.admin, metrics = %bound.metrics, readiness = %bound.readiness, "control servers listening");
        Ok(Self {
            addrs: bound,
            config,
            _runtime: runtime,
        })
    }

    /// Makes `/config_dump` show `handle`'s current snapshot (the config loads after the
    /// servers start, so readiness can say it is pending).
    pub fn set_config(&self, handle: ConfigHandle) {
        if self.config.set(handle).is_err() {
            warn!("config handle set twice; keeping the first");
        }
    }

    /// The bound addresses.
    pub fn addrs(&self) -> ControlAddrs {
        self.addrs
    }
}

async fn report(name: &'static str, server: impl Future<Output = io::Result<()>>) {
    if let Err(err) = server.await {
        warn!(%err, server = name, "control server failed");
    }
}
