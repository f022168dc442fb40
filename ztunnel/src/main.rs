//! The `ztunnel` binary: command-line arguments, logging, then `app::run`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ambit_api::ControllerFlags;
use ambit_ztunnel::app::{ConfigSource, Options, run};
use anyhow::bail;
use clap::Parser;

/// Ambit's node-level L4 proxy.
#[derive(Debug, Parser)]
#[command(name = "ztunnel", version)]
struct Args {
    /// The controller's gRPC address (`https://host:15012`, with `--controller-ca-file`):
    /// config and certificates come from it.
    #[arg(
        long,
        conflicts_with = "config",
        required_unless_present = "config",
        requires = "token_file"
    )]
    controller: Option<http::Uri>,
    #[command(flatten)]
    controller_tls: ControllerFlags,
    /// File holding the bearer token the controller authenticates this node by, for the CA
    /// and the config stream (a projected service-account token, or a local bootstrap token);
    /// read before each request and reconnect.
    #[arg(long, requires = "controller")]
    token_file: Option<PathBuf>,
    /// Static config file (workloads, services, policies), watched and reloaded; instead of
    /// `--controller`, for tests and runs without a controller.
    #[arg(long, requires = "ca_dir")]
    config: Option<PathBuf>,
    /// With `--config`: CA directory in Istio's cacerts layout (root-cert.pem, ca-cert.pem,
    /// ca-key.pem, optional cert-chain.pem); ztunnel signs its own pods' certificates with it.
    #[arg(long, requires = "config")]
    ca_dir: Option<PathBuf>,
    /// This node's name.
    #[arg(long)]
    node: String,
    /// Trust domain of workload identities.
    #[arg(long, default_value = "cluster.local")]
    trust_domain: String,
    /// Unix socket the node agent enrolls pods through.
    #[arg(long)]
    node_agent_socket: Option<PathBuf>,
    /// Admin server address.
    #[arg(long, default_value = "127.0.0.1:15000")]
    admin_addr: SocketAddr,
    /// Prometheus metrics address.
    #[arg(long, default_value = "0.0.0.0:15020")]
    metrics_addr: SocketAddr,
    /// Readiness address (`/healthz/ready`).
    #[arg(long, default_value = "0.0.0.0:15021")]
    readiness_addr: SocketAddr,
    /// Seconds connections may finish after SIGTERM.
    #[arg(long, default_value_t = 5)]
    drain_seconds: u64,
    /// SOCKS5 listener address (in ztunnel's own namespace).
    #[arg(long, default_value_t = ambit_ztunnel::socks5::DEFAULT_ADDR)]
    socks5_addr: SocketAddr,
    /// Turn the SOCKS5 listener off.
    #[arg(long)]
    no_socks5: bool,
    /// Enrolled pod (NAMESPACE/NAME) that SOCKS5 clients send as when their own address is
    /// not an enrolled pod's; without it such requests are refused (reply 0x02).
    #[arg(long)]
    socks5_workload: Option<ambit_ztunnel::socks5::WorkloadRef>,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let logging = ambit_telemetry::init_logging("info", args.log_json)?;
    let source = match (args.controller, args.token_file, args.config, args.ca_dir) {
        (Some(address), Some(token_file), None, None) => ConfigSource::Controller {
            address: args.controller_tls.endpoint(&address)?,
            token_file,
        },
        (None, None, Some(config), Some(ca_dir)) => ConfigSource::File { config, ca_dir },
        // clap's rules make every other combination unreachable; say so rather than guess.
        _ => bail!("give either --controller and --token-file, or --config and --ca-dir"),
    };
    let options = Options {
        source,
        node: args.node,
        trust_domain: args.trust_domain,
        node_agent_socket: args.node_agent_socket,
        admin_addr: args.admin_addr,
        metrics_addr: args.metrics_addr,
        readiness_addr: args.readiness_addr,
        drain_grace: Duration::from_secs(args.drain_seconds),
        socks5: (!args.no_socks5).then(|| {
            let config = ambit_ztunnel::socks5::Socks5Config {
                default_workload: args.socks5_workload,
            };
            (args.socks5_addr, config)
        }),
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(options, logging))
}
