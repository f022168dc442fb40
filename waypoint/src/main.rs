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
use ambit_waypoint::{ConfigWatcher, Waypoint, WaypointOptions};
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
    /// How often to check the config file for changes, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    reload_interval_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let identity = SpiffeId::parse(&args.identity).context("--identity")?;
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
    let (_watcher, config) =
        ConfigWatcher::start(args.config, Duration::from_millis(args.reload_interval_ms))
            .context("loading the config")?;
    let waypoint = Waypoint::start(
        WaypointOptions::new(identity, args.listen),
        config,
        certificate,
        bundle,
    )
    .await?;
    tokio::signal::ctrl_c()
        .await
        .context("waiting for ctrl-c")?;
    tracing::info!("draining");
    waypoint.shutdown().await;
    Ok(())
}
