//! The `ambit-controller` process: flags, wiring of source → pipeline → gRPC (config and CA),
//! metrics and readiness servers, graceful shutdown.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ambit_api::server::StaticTokens;
use ambit_api::{CaServer, ConfigServer, ConfigServerOptions};
use ambit_identity::{CaOptions, DEFAULT_TRUST_DOMAIN};
use ambit_runtime::{ControlRuntime, Ready, Shutdown, serve_metrics, serve_readiness};
use ambit_telemetry::MetricsRegistry;
use anyhow::{Context, bail};
use clap::Parser;
use serde::Serialize;

use crate::ca::{CaOrigin, load_or_generate};
use crate::local::FolderSource;
use crate::metrics::ControllerMetrics;
use crate::pipeline::{self, Pipeline};
use crate::tokens::NodeTokens;
use crate::translate::TranslateOptions;

/// Ambit's control plane: translates Kubernetes objects into the mesh model, pushes each
/// proxy its part over gRPC, and signs workload certificates.
#[derive(Debug, Clone, Parser)]
#[command(name = "ambit-controller", version)]
pub struct Args {
    /// Local mode: a folder of Kubernetes YAML (multi-document files), watched for changes.
    #[arg(long)]
    pub config_dir: Option<PathBuf>,
    /// State folder: the CA root is generated here on first start (`ca/`) and reused after.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// User-supplied CA in Istio's `cacerts` layout (ca-cert.pem, ca-key.pem, root-cert.pem,
    /// cert-chain.pem); takes precedence over the generated one.
    #[arg(long)]
    pub ca_dir: Option<PathBuf>,
    /// Local-mode bootstrap tokens: YAML `nodes: {node: token}` and
    /// `waypoints: {namespace/name: token}` (see the `tokens` module). Without it, the CA
    /// accepts no caller.
    #[arg(long)]
    pub node_tokens: Option<PathBuf>,
    /// Config distribution and CA (gRPC), Istio's port.
    #[arg(long, default_value = "0.0.0.0:15012")]
    pub grpc_addr: SocketAddr,
    /// Prometheus metrics (`/metrics`), istiod's port.
    #[arg(long, default_value = "0.0.0.0:15014")]
    pub metrics_addr: SocketAddr,
    /// Readiness (`/healthz/ready`): ready once the first translation is published.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub readiness_addr: SocketAddr,
    /// Trust domain of workload identities.
    #[arg(long, default_value = DEFAULT_TRUST_DOMAIN)]
    pub trust_domain: String,
    /// Namespace whose selector-less policies apply mesh-wide.
    #[arg(long, default_value = ambit_model::DEFAULT_ROOT_NAMESPACE)]
    pub root_namespace: String,
    /// Quiet period after a change before translating.
    #[arg(long, default_value_t = 100)]
    pub debounce_ms: u64,
    /// Written (JSON: grpc, metrics, readiness addresses) once every server listens; useful
    /// with port 0.
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
    /// Seconds open streams may take to end after SIGTERM.
    #[arg(long, default_value_t = 5)]
    pub drain_seconds: u64,
    /// Log as JSON lines.
    #[arg(long)]
    pub log_json: bool,
}

/// The bound addresses, as written to `--ready-file`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct BoundAddresses {
    /// gRPC (config and CA).
    pub grpc: SocketAddr,
    /// Metrics.
    pub metrics: SocketAddr,
    /// Readiness.
    pub readiness: SocketAddr,
}

/// Runs the controller until SIGTERM/SIGINT.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let shutdown = Shutdown::new(Duration::from_secs(args.drain_seconds))
        .context("installing signal handlers")?;
    // Kubernetes mode will be chosen here too, behind the same `Source` trait.
    let Some(config_dir) = args.config_dir.clone() else {
        bail!(
            "no config source: pass --config-dir DIR (local mode); Kubernetes mode is not available yet"
        );
    };
    let debounce = Duration::from_millis(args.debounce_ms);
    let source = FolderSource::new(&config_dir, debounce)
        .with_context(|| format!("watching {}", config_dir.display()))?;

    let tokens = match &args.node_tokens {
        Some(path) => NodeTokens::load(path)?,
        None => {
            tracing::warn!("no --node-tokens: the CA will refuse every request");
            NodeTokens::default()
        }
    };
    let loaded = load_or_generate(
        &args.trust_domain,
        args.state_dir.as_deref(),
        args.ca_dir.as_deref(),
        CaOptions::default(),
    )?;
    match loaded.origin {
        CaOrigin::Supplied => tracing::info!("CA loaded from --ca-dir"),
        CaOrigin::Generated => tracing::info!("CA root generated and saved in the state folder"),
        CaOrigin::Persisted => tracing::info!("CA root loaded from the state folder"),
    }

    // No second quiet period per client: a translation publishes every scope at once, and a
    // client with a push in flight gets the latest state only after its ACK, so bursts are
    // coalesced there already; waiting here would only add latency to every change.
    let config_server =
        ConfigServer::new(ConfigServerOptions::default().with_debounce(Duration::ZERO));
    let static_tokens = Arc::new(StaticTokens::new());
    let options = TranslateOptions {
        trust_domain: args.trust_domain.clone(),
        root_namespace: args.root_namespace.clone(),
        ..TranslateOptions::default()
    };
    let pipeline =
        Pipeline::new(config_server.clone(), options).with_tokens(tokens, static_tokens.clone());
    let ca_server = CaServer::new(
        Arc::new(loaded.ca),
        &loaded.bundle,
        static_tokens,
        Arc::new(pipeline.authorizer()),
    );
    let mut registry = MetricsRegistry::new();
    let metrics = ControllerMetrics::register(&mut registry, &config_server, Some(&ca_server));
    let pipeline = pipeline.with_metrics(metrics.clone());

    let grpc_listener = tokio::net::TcpListener::bind(args.grpc_addr)
        .await
        .with_context(|| format!("binding gRPC {}", args.grpc_addr))?;
    let metrics_listener = bind_std(args.metrics_addr, "metrics")?;
    let readiness_listener = bind_std(args.readiness_addr, "readiness")?;
    let bound = BoundAddresses {
        grpc: grpc_listener.local_addr()?,
        metrics: metrics_listener.local_addr()?,
        readiness: readiness_listener.local_addr()?,
    };

    let ready = Ready::new();
    let config_ready = ready.register("config");
    let control = ControlRuntime::start("controller-control").context("control runtime")?;
    control.spawn(serve_metrics(
        metrics_listener,
        Arc::new(registry),
        shutdown.watch(),
    ));
    control.spawn(serve_readiness(readiness_listener, ready, shutdown.watch()));
    tokio::spawn(metrics.track_acks(config_server.clone()));
    tokio::spawn(pipeline::run(
        source,
        pipeline,
        // The folder source already waits for changes to settle; a second quiet period here
        // would only add latency.
        Duration::ZERO,
        Some(config_ready),
        shutdown.watch(),
    ));
    let mut drain = shutdown.watch();
    let guard = drain.track("grpc");
    let grpc = tokio::spawn(async move {
        let stop = async move { drain.draining().await };
        let result =
            ambit_api::server::serve(grpc_listener, Some(config_server), Some(ca_server), stop)
                .await;
        drop(guard);
        result
    });
    tracing::info!(grpc = %bound.grpc, metrics = %bound.metrics, readiness = %bound.readiness, "controller listening");
    if let Some(path) = &args.ready_file {
        write_ready_file(path, &bound)?;
    }
    tokio::select! {
        report = shutdown.run() => {
            tracing::info!(?report, "controller stopped");
        }
        result = grpc => {
            match result {
                Ok(Ok(())) => bail!("gRPC server ended unexpectedly"),
                Ok(Err(err)) => return Err(err.into()),
                Err(err) => bail!("gRPC server task failed: {err}"),
            }
        }
    }
    Ok(())
}

fn bind_std(addr: SocketAddr, what: &str) -> anyhow::Result<std::net::TcpListener> {
    let listener =
        std::net::TcpListener::bind(addr).with_context(|| format!("binding {what} {addr}"))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Written through a temporary file and a rename, so readers never see half of it.
fn write_ready_file(path: &Path, bound: &BoundAddresses) -> anyhow::Result<()> {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, serde_json::to_vec(bound)?)
        .with_context(|| format!("writing {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
