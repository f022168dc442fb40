//! `waypoint`: the Ambit L7 proxy.
//!
//! Local mode: the waypoint issues its own certificate from the CA files in `--ca-dir`
//! (Istio's `cacerts` layout). This stands in for the controller's CA, which will sign a CSR
//! from the waypoint instead; the key material of the CA must then no longer be on the
//! waypoint's machine.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ambit_identity::{
    CaMaterial, CaOptions, CertStore, CertStoreOptions, CertificateAuthority, SpiffeId,
};
use ambit_runtime::{Ready, Shutdown};
use ambit_telemetry::{Metrics, MetricsRegistry};
use ambit_waypoint::otlp::SpanExport;
use ambit_waypoint::tracing_ctx::Tracer;
use ambit_waypoint::{
    ConfigWatcher, ControlAddrs, ControlInputs, ControlServers, Waypoint, WaypointOptions,
};
use anyhow::Context;
use clap::Parser;

/// Command line.
#[derive(Debug, Parser)]
#[command(name = "waypoint", about = "Ambit's L7 waypoint proxy")]
struct Args {
    /// The YAML file with services, workloads, policies and routes (reloaded on change).
    #[arg(long)]
    config: PathBuf,
    /// The waypoint's SPIFFE ID, e.g. spiffe://cluster.local/ns/shop/sa/waypoint.
    #[arg(long)]
    identity: String,
    /// A directory with root-cert.pem, ca-cert.pem, ca-key.pem (and optionally
    /// cert-chain.pem), as Istio's cacerts secret.
    #[arg(long)]
    ca_dir: PathBuf,
    /// Where to accept HBONE.
    #[arg(long, default_value = "0.0.0.0:15008")]
    listen: SocketAddr,
    /// The admin server (config dump, log level, quitquitquit); keep it on localhost.
    #[arg(long, default_value = "127.0.0.1:15000")]
    admin_addr: SocketAddr,
    /// Prometheus `/metrics`.
    #[arg(long, default_value = "0.0.0.0:15020")]
    metrics_addr: SocketAddr,
    /// `/healthz/ready`.
    #[arg(long, default_value = "0.0.0.0:15021")]
    readiness_addr: SocketAddr,
    /// How long in-flight requests may take to finish after SIGTERM, in seconds.
    #[arg(long, default_value_t = 5)]
    drain_grace_secs: u64,
    /// How often to check the config file for changes, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    reload_interval_ms: u64,
    /// Export request spans over OTLP/gRPC to this collector, e.g. http://collector:4317.
    #[arg(long)]
    otlp_endpoint: Option<String>,
    /// The share (0 to 1) of traces sampled when the caller sent no sampling decision.
    #[arg(long, default_value_t = 0.01)]
    trace_sampling: f64,
    /// Write one JSON access-log line per request (target `ambit_waypoint::access_log`).
    #[arg(long)]
    access_log: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let logging = ambit_telemetry::init_logging("info", false).context("logging")?;
    let args = Args::parse();
    let identity = SpiffeId::parse(&args.identity).context("--identity")?;
    // Signals are caught from here on: SIGTERM drains instead of killing.
    let shutdown = Shutdown::new(Duration::from_secs(args.drain_grace_secs))
        .context("installing signal handlers")?;
    let mut registry = MetricsRegistry::new();
    let metrics = Metrics::register(&mut registry);
    let ready = Ready::new();
    let config_ready = ready.register("config");
    let certificate_ready = ready.register("certificates");
    let control = ControlServers::start(
        ControlAddrs {
            admin: args.admin_addr,
            metrics: args.metrics_addr,
            readiness: args.readiness_addr,
        },
        ControlInputs {
            registry: Arc::new(registry),
            ready,
            logging: Some(logging),
        },
        &shutdown,
    )
    .context("starting the admin, metrics and readiness servers")?;

    let read = |name: &str| {
        std::fs::read_to_string(args.ca_dir.join(name))
            .with_context(|| format!("reading {}", args.ca_dir.join(name).display()))
    };
    let material = CaMaterial {
        root_cert: read("root-cert.pem")?,
        signing_cert: read("ca-cert.pem")?,
        signing_key: read("ca-key.pem")?,
        cert_chain: read("cert-chain.pem").ok(),
    };
    let ca =
        CertificateAuthority::from_pem(identity.trust_domain(), &material, CaOptions::default())
            .context("loading the CA")?;
    let bundle = ca.trust_bundle().context("trust bundle")?;
    // In-process issuing (local mode): the store renews the certificate at half life.
    let store = CertStore::new(Arc::new(ca), CertStoreOptions::default());
    store
        .certificate(&identity)
        .await
        .context("issuing the waypoint certificate")?;
    let certificate = Arc::new(store.source(&identity).context("certificate handle")?);
    certificate_ready.done();
    let (_watcher, config) =
        ConfigWatcher::start(args.config, Duration::from_millis(args.reload_interval_ms))
            .context("loading the config")?;
    control.set_config(config.clone());
    config_ready.done();

    if !(0.0..=1.0).contains(&args.trace_sampling) {
        anyhow::bail!("--trace-sampling must be between 0 and 1");
    }
    // The span exporter lives as long as `main`; spans queued at exit are lost.
    let (span_export, _span_export_task) = match &args.otlp_endpoint {
        Some(endpoint) => {
            let service = format!("{}.{}", identity.service_account(), identity.namespace());
            let (export, task) =
                SpanExport::start(endpoint, &service).context("--otlp-endpoint")?;
            (Some(export), Some(task))
        }
        None => (None, None),
    };
    let mut options = WaypointOptions::new(identity, args.listen);
    options.metrics = Some(metrics);
    options.observability.tracer = Tracer::new(args.trace_sampling, span_export);
    options.observability.access_log = args.access_log;
    let waypoint = Waypoint::start(options, config, certificate, bundle).await?;
    let mut watch = shutdown.watch();
    let in_flight = watch.track("waypoint");
    tokio::spawn(async move {
        watch.draining().await;
        waypoint.shutdown().await;
        drop(in_flight);
    });
    let report = shutdown.run().await;
    tracing::info!(reason = %report.reason, unfinished = ?report.unfinished, "stopped");
    drop(control);
    Ok(())
}
