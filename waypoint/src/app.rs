//! Wiring only: the HBONE server on :15008 with the waypoint's certificate, the [`Stack`]
//! behind it, and the HBONE client pool the stack sends upstream with.

use std::error::Error as StdError;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use ambit_hbone::{ClientTlsProvider, Drain, Pool, PoolConfig, Server, ServerConfig};
use ambit_identity::tls::CertificateSource;
use ambit_identity::{SpiffeId, TrustBundle};
use ambit_telemetry::Metrics;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::info;

use crate::config::ConfigHandle;
use crate::stack::{HttpLimits, Observability, Stack};
use crate::upstream::Upstream;

/// How to run a waypoint.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WaypointOptions {
    /// The waypoint's own identity (its service account's SPIFFE ID).
    pub identity: SpiffeId,
    /// Where to accept HBONE (`0.0.0.0:15008`).
    pub listen: SocketAddr,
    /// Downstream HTTP limits.
    pub limits: HttpLimits,
    /// HBONE server tuning.
    pub server: ServerConfig,
    /// HBONE client pool tuning.
    pub pool: PoolConfig,
    /// Where to record Istio's request metrics; none recorded when unset.
    pub metrics: Option<Metrics>,
    /// Seed of the fault-injection dice (tests); from the OS when unset.
    pub fault_seed: Option<u64>,
    /// Tracing, access log and JWKS cache.
    pub observability: Observability,
}

/// A running waypoint.
#[derive(Debug)]
pub struct Waypoint {
    local_addr: SocketAddr,
    drain: Drain,
    task: JoinHandle<()>,
}

/// Why a waypoint could not start.
#[derive(Debug, thiserror::Error)]
#[error("waypoint: {0}")]
pub struct StartError(#[source] Box<dyn StdError + Send + Sync>);

/// Client TLS for upstream HBONE: always the waypoint's own certificate.
struct WaypointTls {
    identity: SpiffeId,
    certificate: Arc<dyn CertificateSource>,
    bundle: TrustBundle,
}

impl WaypointOptions {
    /// Options with HBONE and HTTP defaults, listening on `listen`.
    pub fn new(identity: SpiffeId, listen: SocketAddr) -> Self {
        Self {
            identity,
            listen,
            limits: HttpLimits::default(),
            server: ServerConfig::default(),
            pool: PoolConfig::default(),
            metrics: None,
            fault_seed: None,
            observability: Observability::default(),
        }
    }
}

impl Waypoint {
    /// Binds the HBONE listener and starts serving with `config`, presenting `certificate`
    /// and trusting `bundle` both downstream and upstream.
    pub async fn start(
        options: WaypointOptions,
        config: ConfigHandle,
        certificate: Arc<dyn CertificateSource>,
        bundle: TrustBundle,
    ) -> Result<Self, StartError> {
        let server_tls = ambit_identity::tls::server_config(certificate.clone(), &bundle)
            .map_err(|err| StartError(err.into()))?;
        let client_tls = WaypointTls {
            identity: options.identity.clone(),
            certificate,
            bundle,
        };
        let pool = Pool::new(Arc::new(client_tls), options.pool.clone());
        let upstream = Upstream::new(pool, options.identity.clone());
        let mut stack = Stack::new(config, upstream, options.limits.clone())
            .with_observability(options.observability.clone());
        if let Some(metrics) = &options.metrics {
            stack = stack.with_metrics(metrics.clone());
        }
        if let Some(seed) = options.fault_seed {
            stack = stack.with_fault_seed(seed);
        }
        let stack = Arc::new(stack);
        let handler = move |request, responder| stack.clone().on_connect(request, responder);
        let server = Server::new(server_tls, handler, options.server.clone());
        let listener = TcpListener::bind(options.listen)
            .await
            .map_err(|err| StartError(err.into()))?;
        let local_addr = listener
            .local_addr()
            .map_err(|err| StartError(err.into()))?;
        let drain = Drain::new();
        let signal = drain.signal();
        let task = tokio::spawn(async move { server.serve(listener, signal).await });
        info!(%local_addr, identity = %options.identity, "waypoint listening for HBONE");
        Ok(Self {
            local_addr,
            drain,
            task,
        })
    }

    /// The HBONE listener's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets in-flight tunnels finish (GOAWAY), and returns when all are done.
    pub async fn shutdown(self) {
        self.drain.start();
        if let Err(err) = self.task.await {
            tracing::warn!(%err, "waypoint server task failed");
        }
    }
}

impl ClientTlsProvider for WaypointTls {
    fn client_config(
        &self,
        source: &SpiffeId,
        expected: &[SpiffeId],
    ) -> Result<Arc<rustls::ClientConfig>, Box<dyn StdError + Send + Sync>> {
        if *source != self.identity {
            return Err(
                format!("the waypoint only has a certificate for {}", self.identity).into(),
            );
        }
        Ok(ambit_identity::tls::client_config(
            self.certificate.clone(),
            &self.bundle,
            expected.to_vec(),
        )?)
    }
}

impl fmt::Debug for WaypointTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaypointTls")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}
