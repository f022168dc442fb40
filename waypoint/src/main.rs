//! `waypoint`: the Ambit L7 proxy.
//!
//! With `--controller`, config comes from the controller's stream for this waypoint's Gateway
//! and the certificate from the controller's CA (no CA key on the waypoint's machine). With
//! `--config` (tests, runs without a controller), config comes from a watched file and the
//! certificate is signed in-process with the CA files in `--ca-dir` (Istio's `cacerts`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ambit_api::{
    ConfigClient, ConfigClientOptions, ControllerEndpoint, ControllerFlags, GrpcIssuer, ScopeKey,
};
use ambit_identity::{
    CaMaterial, CaOptions, CertHandle, CertStore, CertStoreOptions, CertificateAuthority, SpiffeId,
    TrustBundle,
};
use ambit_runtime::{DrainWatch, Ready, Shutdown};
use ambit_telemetry::{Metrics, MetricsRegistry};
use ambit_waypoint::config::GatewayName;
use ambit_waypoint::otlp::SpanExport;
use ambit_waypoint::tracing_ctx::Tracer;
use ambit_waypoint::{
    ConfigHandle, ConfigWatcher, ControlAddrs, ControlInputs, ControlServers, Waypoint,
    WaypointOptions,
};
use anyhow::{Context, bail};
use clap::Parser;

/// Command line.
#[derive(Debug, Parser)]
#[command(name = "waypoint", about = "Ambit's L7 waypoint proxy")]
struct Args {
    /// The controller's gRPC address (`https://host:15012`, with `--controller-ca-file`):
    /// config and the certificate come from it.
    #[arg(
        long,
        conflicts_with = "config",
        required_unless_present = "config",
        requires_all = ["token_file", "gateway"]
    )]
    controller: Option<http::Uri>,
    #[command(flatten)]
    controller_tls: ControllerFlags,
    /// File holding the bearer token the controller authenticates this waypoint by (CA and
    /// config stream); read before each request and reconnect (projected tokens rotate).
    #[arg(long, requires = "controller")]
    token_file: Option<PathBuf>,
    /// With `--controller`: this waypoint's Gateway, `NAMESPACE/NAME` (the config scope).
    #[arg(long, requires = "controller")]
    gateway: Option<String>,
    /// The YAML file with services, workloads, policies and routes (reloaded on change);
    /// instead of `--controller`.
    #[arg(long, requires = "ca_dir")]
    config: Option<PathBuf>,
    /// With `--config`: a directory with root-cert.pem, ca-cert.pem, ca-key.pem (and
    /// optionally cert-chain.pem), as Istio's cacerts secret.
    #[arg(long, requires = "config")]
    ca_dir: Option<PathBuf>,
    /// The waypoint's SPIFFE ID, e.g. spiffe://cluster.local/ns/shop/sa/waypoint.
    #[arg(long)]
    identity: String,
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

/// Where config and the certificate come from.
enum Source {
    Controller {
        address: ControllerEndpoint,
        token_file: PathBuf,
        gateway: GatewayName,
    },
    File {
        config: PathBuf,
        ca_dir: PathBuf,
    },
}

/// What keeps the config flowing; dropped on exit.
enum ConfigFeed {
    // Both are held only to keep their background tasks alive.
    Controller(#[allow(dead_code)] ConfigClient),
    File(#[allow(dead_code)] ConfigWatcher),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let logging = ambit_telemetry::init_logging("info", false).context("logging")?;
    let args = Args::parse();
    let identity = SpiffeId::parse(&args.identity).context("--identity")?;
    let source = source(&args)?;
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

    let (config, _feed) = match &source {
        Source::File { config, .. } => {
            let (watcher, handle) = ConfigWatcher::start(
                config.clone(),
                Duration::from_millis(args.reload_interval_ms),
            )
            .context("loading the config")?;
            config_ready.done();
            (handle, ConfigFeed::File(watcher))
        }
        Source::Controller {
            address,
            gateway,
            token_file,
        } => {
            let handle = ConfigHandle::new(
                ambit_waypoint::controller::empty_snapshot(gateway).map_err(anyhow::Error::msg)?,
            );
            let client = ConfigClient::start(
                address.clone(),
                ScopeKey::waypoint(&gateway.namespace, &gateway.name),
                // The same token as the CA's: the controller gives a waypoint only its own scope.
                ConfigClientOptions::new(format!(
                    "waypoint/{}/{}",
                    gateway.namespace, gateway.name
                ))
                .with_token_file(token_file),
            );
            tokio::spawn(ambit_waypoint::controller::follow_controller(
                client.config(),
                handle.clone(),
                gateway.clone(),
                move || config_ready.done(),
            ));
            (handle, ConfigFeed::Controller(client))
        }
    };
    control.set_config(config.clone());

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
    let mut options = WaypointOptions::new(identity.clone(), args.listen);
    options.metrics = Some(metrics);
    options.observability.tracer = Tracer::new(args.trace_sampling, span_export);
    options.observability.access_log = args.access_log;
    let watch = shutdown.watch();
    // Start-up waits for the certificate (possibly long, when the CA refuses us); a SIGTERM
    // meanwhile must still stop the process, so it runs beside `shutdown.run()`.
    tokio::spawn(async move {
        let started = async {
            let (store, certificate, bundle) = certificate(&source, &identity).await?;
            certificate_ready.done();
            let waypoint = Waypoint::start(options, config, certificate, bundle).await?;
            anyhow::Ok((store, waypoint))
        };
        match started.await {
            // The store renews the certificate for as long as it lives.
            Ok((_store, waypoint)) => serve_until_drained(waypoint, watch).await,
            Err(err) => {
                tracing::error!(error = format!("{err:#}"), "the waypoint cannot start");
                std::process::exit(1);
            }
        }
    });
    let report = shutdown.run().await;
    tracing::info!(reason = %report.reason, unfinished = ?report.unfinished, "stopped");
    drop(control);
    Ok(())
}

fn source(args: &Args) -> anyhow::Result<Source> {
    Ok(match (&args.controller, &args.config) {
        (Some(address), None) => {
            let address = args.controller_tls.endpoint(address)?;
            let (Some(token_file), Some(gateway)) = (&args.token_file, &args.gateway) else {
                bail!("--controller needs --token-file and --gateway");
            };
            let Some((namespace, name)) = gateway.split_once('/') else {
                bail!("--gateway must be NAMESPACE/NAME, got {gateway:?}");
            };
            if namespace.is_empty() || name.is_empty() || name.contains('/') {
                bail!("--gateway must be NAMESPACE/NAME, got {gateway:?}");
            }
            Source::Controller {
                address,
                token_file: token_file.clone(),
                gateway: GatewayName {
                    name: name.to_owned(),
                    namespace: namespace.to_owned(),
                },
            }
        }
        (None, Some(config)) => {
            let Some(ca_dir) = &args.ca_dir else {
                bail!("--config needs --ca-dir");
            };
            Source::File {
                config: config.clone(),
                ca_dir: ca_dir.clone(),
            }
        }
        _ => bail!("give either --controller (with --token-file, --gateway) or --config"),
    })
}

/// The store renewing the waypoint's certificate at half life, a handle on that certificate,
/// and the trust bundle.
async fn certificate(
    source: &Source,
    identity: &SpiffeId,
) -> anyhow::Result<(CertStore, Arc<CertHandle>, TrustBundle)> {
    match source {
        Source::File { ca_dir, .. } => {
            let read = |name: &str| {
                std::fs::read_to_string(ca_dir.join(name))
                    .with_context(|| format!("reading {}", ca_dir.join(name).display()))
            };
            let material = CaMaterial {
                root_cert: read("root-cert.pem")?,
                signing_cert: read("ca-cert.pem")?,
                signing_key: read("ca-key.pem")?,
                cert_chain: read("cert-chain.pem").ok(),
            };
            let ca = CertificateAuthority::from_pem(
                identity.trust_domain(),
                &material,
                CaOptions::default(),
            )
            .context("loading the CA")?;
            let bundle = ca.trust_bundle().context("trust bundle")?;
            let store = CertStore::new(Arc::new(ca), CertStoreOptions::default());
            store
                .certificate(identity)
                .await
                .context("issuing the waypoint certificate")?;
            let handle = Arc::new(store.source(identity)?);
            Ok((store, handle, bundle))
        }
        Source::Controller {
            address,
            token_file,
            ..
        } => {
            let issuer = GrpcIssuer::with_token_file(address, token_file);
            let store = CertStore::new(Arc::new(issuer.clone()), CertStoreOptions::default());
            // The store retries with backoff; until it succeeds the waypoint stays not ready
            // and says why.
            loop {
                match store.certificate(identity).await {
                    Ok(_) => break,
                    Err(err) => {
                        tracing::warn!(%identity, error = %err, "no certificate from the controller's CA yet");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
            let pem = issuer
                .trust_bundle_pem()
                .context("the CA answered without a trust bundle")?;
            let bundle = TrustBundle::from_pem(identity.trust_domain(), &pem)
                .context("the CA's trust bundle")?;
            let handle = Arc::new(store.source(identity)?);
            Ok((store, handle, bundle))
        }
    }
}

async fn serve_until_drained(waypoint: Waypoint, mut watch: DrainWatch) {
    let in_flight = watch.track("waypoint");
    watch.draining().await;
    waypoint.shutdown().await;
    drop(in_flight);
}
