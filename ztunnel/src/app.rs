//! All of ztunnel's wiring, in one place: controller (or config file + CA dir) → state and
//! certificates, node-agent socket → enrollment, admin/metrics/readiness servers, and SIGTERM
//! drain.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use ambit_api::{ConfigClient, ConfigClientOptions, ControllerEndpoint, GrpcIssuer, ScopeKey};
use ambit_policy::Authorizer;
use ambit_runtime::{AdminServer, ControlRuntime, Ready, Shutdown, serve_metrics, serve_readiness};
use ambit_state::{Snapshot, StateStore};
use ambit_telemetry::{LogHandle, MetricsRegistry};
use anyhow::{Context, Result};
use tracing::{info, warn};

use crate::certs::{PodCertificates, load_ca};
use crate::observe::Telemetry;
use crate::pods::{PodManager, node_resolvers};
use crate::proxy::ProxyInputs;

/// Where config and certificates come from.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    /// The controller: config over its gRPC stream for this node, certificates from its CA.
    Controller {
        /// The controller's gRPC server and how to secure the connection.
        address: ControllerEndpoint,
        /// The bearer token the controller authenticates this node by (CA and config stream);
        /// read before each request and reconnect.
        token_file: PathBuf,
    },
    /// A static config file, watched, and CA material signing in-process (tests, no controller).
    File {
        /// The config file.
        config: PathBuf,
        /// CA material in Istio's `cacerts` layout.
        ca_dir: PathBuf,
    },
}

/// What the command line decided.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where config and certificates come from.
    pub source: ConfigSource,
    /// This node's name: the controller scopes config and certificates to it.
    pub node: String,
    /// Trust domain of pod identities.
    pub trust_domain: String,
    /// Where the node agent connects, if anywhere.
    pub node_agent_socket: Option<PathBuf>,
    /// Admin server address (keep it on localhost).
    pub admin_addr: SocketAddr,
    /// Prometheus metrics address.
    pub metrics_addr: SocketAddr,
    /// Readiness address.
    pub readiness_addr: SocketAddr,
    /// How long connections may finish after SIGTERM.
    pub drain_grace: Duration,
    /// SOCKS5 listener address (`None`: no SOCKS5) and settings.
    pub socks5: Option<(SocketAddr, crate::socks5::Socks5Config)>,
}

/// Runs ztunnel until SIGTERM/SIGINT (or admin `/quitquitquit`) and the drain are over.
pub async fn run(options: Options, logging: LogHandle) -> Result<()> {
    let shutdown = Shutdown::new(options.drain_grace).context("installing signal handlers")?;
    let ready = Ready::new();
    let config_ready = ready.register("config");
    let certificates_ready = ready.register("certificates");

    // Kept to the end: dropping the client stops the subscription.
    let mut _config_client = None;
    let (state, certs) = match &options.source {
        ConfigSource::File { config, ca_dir } => {
            let text = std::fs::read_to_string(config)
                .with_context(|| format!("reading {}", config.display()))?;
            let snapshot = crate::config::parse(&text)
                .with_context(|| format!("config {}", config.display()))?;
            let state = Arc::new(StateStore::new(snapshot));
            tokio::spawn(crate::config::watch(config.clone(), state.clone(), text));
            config_ready.done();
            let ca = load_ca(ca_dir, &options.trust_domain)?;
            let bundle = ca.trust_bundle().context("trust bundle")?;
            (state, PodCertificates::new(Arc::new(ca), bundle))
        }
        ConfigSource::Controller {
            address,
            token_file,
        } => {
            let client = ConfigClient::start(
                address.clone(),
                ScopeKey::node(&options.node),
                // The same token as the CA's: the controller gives a node only its own scope.
                ConfigClientOptions::new(format!("ztunnel/{}", options.node))
                    .with_token_file(token_file),
            );
            let state = Arc::new(StateStore::new(Snapshot::default()));
            tokio::spawn(crate::config::follow_controller(
                client.config(),
                state.clone(),
                move || config_ready.done(),
            ));
            _config_client = Some(client);
            info!(controller = %address.uri(), tls = address.is_tls(), "config and certificates from the controller");
            let issuer = GrpcIssuer::with_token_file(address, token_file);
            (
                state,
                PodCertificates::from_controller(issuer, &options.trust_domain),
            )
        }
    };
    let root_namespace = state.load().root_namespace().to_owned();
    let certs = Arc::new(certs);

    let mut registry = MetricsRegistry::new();
    // Every proxied connection is a task the SIGTERM drain waits for.
    let telemetry = Telemetry::new(&mut registry).with_drain(shutdown.watch());
    let inputs = Arc::new(ProxyInputs {
        state: state.clone(),
        certs: certs.clone(),
        authorizer: Authorizer::new(root_namespace),
        trust_domain: options.trust_domain.clone(),
        next_endpoint: AtomicUsize::new(0),
        telemetry: telemetry.clone(),
    });
    let pods = Arc::new(PodManager::new(inputs.clone(), node_resolvers()));
    if let Some((addr, config)) = options.socks5.clone() {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding SOCKS5 {addr}"))?;
        tokio::spawn(crate::socks5::serve(listener, config, inputs, pods.clone()));
    }
    {
        // On drain, HBONE servers send GOAWAY and stop accepting.
        let (mut watch, pods) = (shutdown.watch(), pods.clone());
        tokio::spawn(async move {
            watch.draining().await;
            pods.drain_all().await;
        });
    }

    match &options.node_agent_socket {
        Some(path) => {
            // A socket file left by a previous run would make bind fail.
            if path.exists() {
                std::fs::remove_file(path)
                    .with_context(|| format!("removing stale socket {}", path.display()))?;
            }
            let server = ambit_cni::server::Server::bind(path)
                .with_context(|| format!("node-agent socket {}", path.display()))?;
            tokio::spawn(server.serve_ztunnel(pods.clone()));
            // Ready once the agent's first snapshot is served, certificates included.
            let mut synced = pods.synced();
            tokio::spawn(async move {
                if synced.wait_for(|synced| *synced).await.is_ok() {
                    certificates_ready.done();
                }
            });
        }
        None => {
            warn!("no --node-agent-socket: no pod will be enrolled");
            certificates_ready.done();
        }
    }

    let control = ControlRuntime::start("ztunnel-control").context("control runtime")?;
    let admin = AdminServer::new(shutdown.trigger())
        .logging(logging)
        .config_dump({
            let state = state.clone();
            move || {
                let snapshot = state.load();
                fn dump<T: serde::Serialize>(items: &[Arc<T>]) -> Vec<&T> {
                    items.iter().map(Arc::as_ref).collect()
                }
                serde_json::json!({
                    "version": state.version(),
                    "workloads": dump(snapshot.workloads()),
                    "services": dump(snapshot.services()),
                    "authorizationPolicies": dump(snapshot.policies()),
                    "peerAuthentications": dump(snapshot.peer_authentications()),
                })
            }
        })
        .certs({
            let certs = certs.clone();
            move || {
                let ids: Vec<String> = certs.identities().iter().map(ToString::to_string).collect();
                serde_json::json!({ "identities": ids })
            }
        })
        .connections({
            let live = telemetry.live().clone();
            move || live.dump()
        });
    let admin_listener = bind(options.admin_addr)?;
    let metrics_listener = bind(options.metrics_addr)?;
    let readiness_listener = bind(options.readiness_addr)?;
    let registry = Arc::new(registry);
    control.spawn(admin.serve(admin_listener, shutdown.watch()));
    control.spawn(serve_metrics(metrics_listener, registry, shutdown.watch()));
    control.spawn(serve_readiness(readiness_listener, ready, shutdown.watch()));
    info!(node = %options.node, "ztunnel started");

    let report = shutdown.run().await;
    pods.unenroll_all().await;
    info!(?report, "ztunnel stopped");
    Ok(())
}

fn bind(addr: SocketAddr) -> Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}
