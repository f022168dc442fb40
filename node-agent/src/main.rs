//! The `ambit-node-agent` binary: flags, logging, the Kubernetes client, then `app::run`
//! until SIGTERM or SIGINT.

use ambit_node_agent::app::{Args, run};
use anyhow::Context;
use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _logging = ambit_telemetry::init_logging("info", args.log_json)?;
    let options = args.options()?;
    let mut terminate = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let client = kube::Client::try_default()
        .await
        .context("no Kubernetes client configuration (in-cluster or KUBECONFIG)")?;
    let shutdown = async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    };
    if let Err(err) = run(options, client, shutdown).await {
        tracing::error!("{err:#}");
        return Err(err.into());
    }
    Ok(())
}
