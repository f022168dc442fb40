//! The `ambit-controller` process: flags, wiring of source → pipeline → gRPC (config and CA),
//! metrics and readiness servers, graceful shutdown.
//!
//! Two modes, chosen by flag:
//! - **local** (`--config-dir DIR`): a watched folder of YAML; CA and config callers present
//!   bootstrap tokens from `--node-tokens`.
//! - **Kubernetes** (`--kube`): the API server (in-cluster config, else kubeconfig) through
//!   [`KubeSource`]; CA and config callers present projected ServiceAccount tokens checked by
//!   TokenReview, and may get the identities of the pods on their node ([`PodIdentities`]).
//!
//! In both modes a config subscriber gets only its own scope: a ztunnel its node's, a waypoint
//! its Gateway's ([`Pipeline::scope_access`]). After each
//!   translation, waypoints are deployed and statuses written in a background task
//!   ([`KubeWriters`]) that never holds up config pushes.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ambit_api::server::{Authenticator, Authorizer, ServerTransport, StaticTokens};
use ambit_api::{CaServer, ConfigServer, ConfigServerOptions};
use ambit_identity::{CaOptions, DEFAULT_TRUST_DOMAIN};
use ambit_runtime::{ControlRuntime, Ready, Shutdown, serve_metrics, serve_readiness};
use ambit_telemetry::MetricsRegistry;
use anyhow::{Context, bail};
use clap::{ArgGroup, Parser};
use serde::Serialize;
use tokio::sync::watch;

use crate::ca::{CaOrigin, load_or_generate};
use crate::kube::{
    AuthSettings, DEFAULT_CONTROLLER_NAME, KubeSource, KubeSourceConfig, KubeWriters,
    PodIdentities, RootPublisher, StatusWriter, TokenReviewAuthenticator, TrackIdentities,
    WaypointDeployer, WaypointTemplate,
};
use crate::local::FolderSource;
use crate::metrics::ControllerMetrics;
use crate::pipeline::{self, Pipeline};
use crate::serving::{SERVING_CERT_TTL, ServingCertificate, ServingNames};
use crate::source::{Snapshot, Source};
use crate::tokens::NodeTokens;
use crate::translate::TranslateOptions;

/// Where ztunnel runs when neither `--ztunnel-namespace` nor `$POD_NAMESPACE` says: the
/// namespace the charts' install instructions use for both charts.
pub const DEFAULT_ZTUNNEL_NAMESPACE: &str = "ambit-system";
/// ztunnel's ServiceAccount in the ambit-ztunnel chart.
pub const DEFAULT_ZTUNNEL_SERVICE_ACCOUNT: &str = "ztunnel";
/// The audience of the projected tokens ztunnel and waypoints present (both charts' default).
pub const DEFAULT_TOKEN_AUDIENCE: &str = "ambit";

/// Ambit's control plane: translates Kubernetes objects into the mesh model, pushes each
/// proxy its part over gRPC, and signs workload certificates.
#[derive(Debug, Clone, Parser)]
#[command(name = "ambit-controller", version)]
#[command(group(ArgGroup::new("source").required(true).args(["config_dir", "kube"])))]
pub struct Args {
    /// Local mode: a folder of Kubernetes YAML (multi-document files), watched for changes.
    #[arg(long)]
    pub config_dir: Option<PathBuf>,
    /// Kubernetes mode: watch the API server (in-cluster config, else kubeconfig), deploy
    /// waypoints, write statuses, and authenticate CA and config callers by TokenReview.
    #[arg(long)]
    pub kube: bool,
    /// State folder: the CA root is generated here on first start (`ca/`) and reused after.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// User-supplied CA in Istio's `cacerts` layout (ca-cert.pem, ca-key.pem, root-cert.pem,
    /// cert-chain.pem); takes precedence over the generated one.
    #[arg(long)]
    pub ca_dir: Option<PathBuf>,
    /// Local-mode bootstrap tokens: YAML `nodes: {node: token}` and
    /// `waypoints: {namespace/name: token}` (see the `tokens` module). Without it, the CA and
    /// config distribution accept no caller.
    #[arg(long, conflicts_with = "kube")]
    pub node_tokens: Option<PathBuf>,
    /// Kubernetes mode (required there): the waypoint object templates
    /// (`serviceaccount.yaml`, `deployment.yaml`, `service.yaml`, optional `hpa.yaml` and
    /// `pdb.yaml`; the ambit-controller chart mounts its ConfigMap). Only the templates know
    /// the controller's Service address, the token volume and the roots mount a waypoint
    /// needs to reach the controller.
    #[arg(long, conflicts_with = "config_dir", required_if_eq("kube", "true"))]
    pub waypoint_template_dir: Option<PathBuf>,
    /// Kubernetes mode: the namespace of ztunnel's ServiceAccount. Default: this pod's
    /// namespace (`$POD_NAMESPACE`), else `ambit-system`.
    #[arg(long, conflicts_with = "config_dir")]
    pub ztunnel_namespace: Option<String>,
    /// Kubernetes mode: ztunnel's ServiceAccount; its pods may get the identities of the pods
    /// on their node.
    #[arg(long, default_value = DEFAULT_ZTUNNEL_SERVICE_ACCOUNT, conflicts_with = "config_dir")]
    pub ztunnel_service_account: String,
    /// Kubernetes mode: an audience CA and config callers' tokens must be valid for
    /// (repeatable).
    #[arg(long = "token-audience", default_value = DEFAULT_TOKEN_AUDIENCE, conflicts_with = "config_dir")]
    pub token_audiences: Vec<String>,
    /// Config distribution and CA (gRPC), Istio's port. TLS, with a serving certificate the
    /// controller's CA issues for `--grpc-dns-name` and `--grpc-ip-san` and renews at half life.
    #[arg(long, default_value = "0.0.0.0:15012")]
    pub grpc_addr: SocketAddr,
    /// A DNS name proxies reach the gRPC port by (repeatable), e.g. the Service's
    /// `ambit-controller.<ns>.svc`.
    #[arg(
        long = "grpc-dns-name",
        value_name = "NAME",
        default_value = "localhost"
    )]
    pub grpc_dns_names: Vec<String>,
    /// An IP address proxies reach the gRPC port by (repeatable; local mode connects by IP).
    #[arg(long = "grpc-ip-san", value_name = "IP")]
    pub grpc_ip_sans: Vec<IpAddr>,
    /// Serve gRPC without TLS: bearer tokens and config travel in the clear. For tests only.
    #[arg(long)]
    pub grpc_plaintext: bool,
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

/// Runs the controller until SIGTERM/SIGINT. In Kubernetes mode, connects to the API server
/// with the in-cluster config, else the kubeconfig.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let shutdown = Shutdown::new(Duration::from_secs(args.drain_seconds))
        .context("installing signal handlers")?;
    let client = if args.kube {
        let client = ::kube::Client::try_default().await.context(
            "connecting to the Kubernetes API (in-cluster service account, else kubeconfig)",
        )?;
        Some(client)
    } else {
        None
    };
    run_with_client(args, client, shutdown).await
}

/// [`run`] with the Kubernetes client given (`None` in local mode) and the shutdown that ends
/// it (tests use one without signal handlers and trigger it).
pub async fn run_with_client(
    args: Args,
    client: Option<::kube::Client>,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let debounce = Duration::from_millis(args.debounce_ms);
    let options = TranslateOptions {
        trust_domain: args.trust_domain.clone(),
        root_namespace: args.root_namespace.clone(),
        ..TranslateOptions::default()
    };
    // No second quiet period per client: a translation publishes every scope at once, and a
    // client with a push in flight gets the latest state only after its ACK, so bursts are
    // coalesced there already; waiting here would only add latency to every change.
    let config_server =
        ConfigServer::new(ConfigServerOptions::default().with_debounce(Duration::ZERO));
    let pipeline = Pipeline::new(config_server.clone(), options);
    // Everything that depends on the mode, checked before the CA is touched or a port bound.
    let mode = match (&args.config_dir, args.kube, client) {
        (Some(_), true, _) => bail!("--config-dir and --kube exclude each other: choose one mode"),
        (None, false, _) => bail!(
            "no config source: pass --config-dir DIR (local mode) or --kube (Kubernetes mode)"
        ),
        (None, true, None) => bail!("Kubernetes mode needs a Kubernetes client"),
        (Some(dir), false, _) => local_mode(&args, dir, debounce, pipeline)?,
        (None, true, Some(client)) => kube_mode(&args, client, debounce, pipeline)?,
    };
    let Mode {
        source,
        pipeline,
        authenticator,
        authorizer,
        writers,
        roots_home,
    } = mode;
    // The same callers as the CA's; set before the server is served.
    let config_server =
        config_server.with_authenticator(authenticator.clone(), pipeline.scope_access());

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
    let ca = Arc::new(loaded.ca);
    let transport = if args.grpc_plaintext {
        tracing::warn!(
            "--grpc-plaintext: bearer tokens, certificates and config cross the network in the clear"
        );
        ServerTransport::Plaintext
    } else {
        let names = ServingNames {
            dns: args.grpc_dns_names.clone(),
            ips: args.grpc_ip_sans.clone(),
        };
        let serving = ServingCertificate::issue(ca.clone(), names.clone(), SERVING_CERT_TTL)?;
        tracing::info!(dns = ?names.dns, ips = ?names.ips, "gRPC serves TLS with a certificate of the mesh CA");
        let tls = serving.tls();
        tokio::spawn(serving.renew());
        ServerTransport::Tls(tls)
    };
    let ca_server = CaServer::new(ca, &loaded.bundle, authenticator, authorizer);
    let mut registry = MetricsRegistry::new();
    let metrics = ControllerMetrics::register(&mut registry, &config_server, Some(&ca_server));
    let mut pipeline = pipeline.with_metrics(metrics.clone());
    if let Some(mut writers) = writers {
        if let Some((client, home)) = roots_home {
            writers = writers.with_roots(RootPublisher::new(client, loaded.bundle.to_pem(), home));
        }
        let (translations, latest) = watch::channel(None);
        pipeline = pipeline.with_translations(translations);
        tokio::spawn(
            writers
                .with_metrics(metrics.clone())
                .run(latest, shutdown.watch()),
        );
    }

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
        // Both sources already wait for changes to settle; a second quiet period here would
        // only add latency.
        Duration::ZERO,
        Some(config_ready),
        shutdown.watch(),
    ));
    let mut drain = shutdown.watch();
    let guard = drain.track("grpc");
    let grpc = tokio::spawn(async move {
        let stop = async move { drain.draining().await };
        let result = ambit_api::server::serve(
            grpc_listener,
            transport,
            Some(config_server),
            Some(ca_server),
            stop,
        )
        .await;
        drop(guard);
        result
    });
    tracing::info!(grpc = %bound.grpc, metrics = %bound.metrics, readiness = %bound.readiness, "controller listening");
    if let Some(path) = &args.ready_file {
        write_ready_file(path, &bound)?;
    }
    let stopping = shutdown.watch();
    let mut stopped = std::pin::pin!(shutdown.run());
    tokio::select! {
        report = &mut stopped => {
            tracing::info!(?report, "controller stopped");
        }
        result = grpc => {
            match result {
                // The drain ends the server, often before the other tracked tasks are done.
                Ok(Ok(())) if stopping.is_draining() => {
                    let report = stopped.await;
                    tracing::info!(?report, "controller stopped");
                }
                Ok(Ok(())) => bail!("gRPC server ended unexpectedly"),
                Ok(Err(err)) => return Err(err.into()),
                Err(err) => bail!("gRPC server task failed: {err}"),
            }
        }
    }
    Ok(())
}

/// What the mode decides: where objects come from, who may use the CA, and what runs beside
/// the pipeline.
struct Mode {
    source: ModeSource,
    pipeline: Pipeline,
    authenticator: Arc<dyn Authenticator>,
    authorizer: Arc<dyn Authorizer>,
    writers: Option<KubeWriters>,
    /// Kubernetes mode: where the mesh roots are always published (the roots themselves are
    /// known once the CA is loaded).
    roots_home: Option<(::kube::Client, Vec<String>)>,
}

/// The source of either mode.
#[derive(Debug)]
enum ModeSource {
    Folder(FolderSource),
    Kube(TrackIdentities<KubeSource>),
}

impl Source for ModeSource {
    async fn next_snapshot(&mut self) -> Option<Snapshot> {
        match self {
            Self::Folder(source) => source.next_snapshot().await,
            Self::Kube(source) => source.next_snapshot().await,
        }
    }
}

fn local_mode(
    args: &Args,
    config_dir: &Path,
    debounce: Duration,
    pipeline: Pipeline,
) -> anyhow::Result<Mode> {
    let source = FolderSource::new(config_dir, debounce)
        .with_context(|| format!("watching {}", config_dir.display()))?;
    let tokens = match &args.node_tokens {
        Some(path) => NodeTokens::load(path)?,
        None => {
            tracing::warn!(
                "no --node-tokens: the CA and config distribution will refuse every caller"
            );
            NodeTokens::default()
        }
    };
    let static_tokens = Arc::new(StaticTokens::new());
    let pipeline = pipeline.with_tokens(tokens, static_tokens.clone());
    let authorizer = Arc::new(pipeline.authorizer());
    Ok(Mode {
        source: ModeSource::Folder(source),
        pipeline,
        authenticator: static_tokens,
        authorizer,
        writers: None,
        roots_home: None,
    })
}

fn kube_mode(
    args: &Args,
    client: ::kube::Client,
    debounce: Duration,
    pipeline: Pipeline,
) -> anyhow::Result<Mode> {
    // The template first: a broken one must stop the start, naming its file.
    let Some(dir) = &args.waypoint_template_dir else {
        bail!(
            "Kubernetes mode needs --waypoint-template-dir (the ambit-controller chart's \
             waypoint template ConfigMap)"
        );
    };
    let template = WaypointTemplate::load(dir)?;
    tracing::info!(dir = %dir.display(), files = ?template.files(), "waypoint template loaded");
    let deployer = WaypointDeployer::with_template(client.clone(), template, &args.trust_domain);
    let settings = AuthSettings {
        audiences: args.token_audiences.clone(),
        ztunnel_namespace: ztunnel_namespace(
            args.ztunnel_namespace.as_deref(),
            std::env::var("POD_NAMESPACE").ok().as_deref(),
        ),
        ztunnel_service_account: args.ztunnel_service_account.clone(),
        trust_domain: args.trust_domain.clone(),
    };
    tracing::info!(
        ztunnel = %format!("{}/{}", settings.ztunnel_namespace, settings.ztunnel_service_account),
        audiences = ?settings.audiences,
        "CA and config callers authenticate by TokenReview"
    );
    let identities = PodIdentities::new(args.trust_domain.clone());
    let source = KubeSource::start(
        client.clone(),
        KubeSourceConfig {
            debounce,
            ..KubeSourceConfig::default()
        },
    );
    let writers = KubeWriters::new(
        deployer,
        StatusWriter::new(client.clone(), DEFAULT_CONTROLLER_NAME),
    );
    // ztunnel mounts the roots in its namespace; the controller's own is where the chart
    // puts both (they differ only when --ztunnel-namespace says so).
    let own_namespace = ztunnel_namespace(None, std::env::var("POD_NAMESPACE").ok().as_deref());
    let roots_home = vec![own_namespace, settings.ztunnel_namespace.clone()];
    Ok(Mode {
        roots_home: Some((client.clone(), roots_home)),
        source: ModeSource::Kube(TrackIdentities::new(source, identities.clone())),
        pipeline,
        authenticator: Arc::new(TokenReviewAuthenticator::new(client, settings)),
        authorizer: Arc::new(identities),
        writers: Some(writers),
    })
}

/// ztunnel's namespace: the flag, else this pod's namespace (both charts install into one
/// namespace), else [`DEFAULT_ZTUNNEL_NAMESPACE`].
fn ztunnel_namespace(flag: Option<&str>, pod_namespace: Option<&str>) -> String {
    flag.or(pod_namespace.filter(|ns| !ns.is_empty()))
        .unwrap_or(DEFAULT_ZTUNNEL_NAMESPACE)
        .to_owned()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ztunnel_namespace_is_the_flag_else_the_pods_else_the_default() {
        assert_eq!(ztunnel_namespace(Some("mesh"), Some("ambit")), "mesh");
        assert_eq!(ztunnel_namespace(None, Some("ambit")), "ambit");
        assert_eq!(ztunnel_namespace(None, Some("")), DEFAULT_ZTUNNEL_NAMESPACE);
        assert_eq!(ztunnel_namespace(None, None), DEFAULT_ZTUNNEL_NAMESPACE);
    }

    fn parse(argv: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from([&["ambit-controller"], argv].concat())
    }

    #[test]
    fn exactly_one_mode_is_required() {
        assert!(
            parse(&["--kube", "--waypoint-template-dir=/t"])
                .unwrap()
                .kube
        );
        assert!(parse(&["--config-dir=/c", "--node-tokens=/t"]).is_ok());
        for (argv, expected) in [
            (&[][..], "--config-dir"),
            (&[][..], "--kube"),
            (&["--kube", "--config-dir=/c"][..], "cannot be used with"),
            // Bootstrap tokens are local mode's; Kubernetes mode uses TokenReview.
            (&["--kube", "--node-tokens=/t"][..], "--node-tokens"),
            // Waypoints deployed without the chart's template could not reach the controller.
            (&["--kube"][..], "--waypoint-template-dir"),
        ] {
            let error = parse(argv).unwrap_err().to_string();
            assert!(error.contains(expected), "{argv:?}: {error}");
        }
    }

    #[test]
    fn kubernetes_flags_default_to_the_charts_and_are_refused_in_local_mode() {
        let args = parse(&["--kube", "--waypoint-template-dir=/t"]).unwrap();
        assert_eq!(args.token_audiences, ["ambit"]);
        assert_eq!(args.ztunnel_service_account, "ztunnel");
        assert_eq!(args.ztunnel_namespace, None);
        let args = parse(&[
            "--kube",
            "--waypoint-template-dir=/t",
            "--token-audience=a",
            "--token-audience=b",
        ])
        .unwrap();
        assert_eq!(args.token_audiences, ["a", "b"]);
        for kube_only in [
            "--waypoint-template-dir=/t",
            "--ztunnel-namespace=x",
            "--ztunnel-service-account=x",
            "--token-audience=x",
        ] {
            let error = parse(&["--config-dir=/c", kube_only])
                .unwrap_err()
                .to_string();
            assert!(
                error.contains("cannot be used with"),
                "{kube_only}: {error}"
            );
        }
    }
}
