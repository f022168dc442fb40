//! `echo-server`: answers HTTP/1.1, h2c, gRPC-shaped and WebSocket requests with a JSON
//! description of itself and of the request. See `ambit_sample_apps::echo`.

use std::net::SocketAddr;
use std::time::Duration;

use ambit_sample_apps::client::Target;
use ambit_sample_apps::duration::parse_duration;
use ambit_sample_apps::echo::{EchoConfig, EchoServer};
use anyhow::{Context, Result};
use clap::Parser;
use http::StatusCode;

/// HTTP/1.1 + h2c + gRPC-shaped + WebSocket echo server for Ambit demos and tests.
#[derive(Debug, Parser)]
#[command(name = "echo-server")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:8080")]
    addr: SocketAddr,
    /// Reported as `version` in every answer.
    #[arg(long, default_value = "v1")]
    version: String,
    /// Fraction of requests (0 to 1) answered with --fail-status.
    #[arg(long, default_value_t = 0.0)]
    fail_ratio: f64,
    /// Status of injected failures (4xx or 5xx).
    #[arg(long, default_value = "503", value_parser = parse_status)]
    fail_status: StatusCode,
    /// Delay added before every answer (e.g. 200ms, 1.5s).
    #[arg(long, default_value = "0", value_parser = parse_duration)]
    delay: Duration,
    /// Seed of the failure draws, for reproducible runs.
    #[arg(long)]
    seed: Option<u64>,
    /// URL called on every request (repeatable), answers embedded under `calls`; a failed
    /// call turns the answer into 502, as bookinfo's productpage shows an error.
    #[arg(long = "call", value_parser = Target::parse)]
    calls: Vec<Target>,
    /// Limit of each --call request.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    call_timeout: Duration,
    /// Pod name reported in answers.
    #[arg(long, env = "POD_NAME")]
    pod_name: Option<String>,
    /// Pod namespace reported in answers.
    #[arg(long, env = "POD_NAMESPACE")]
    pod_namespace: Option<String>,
}

fn parse_status(text: &str) -> Result<StatusCode, String> {
    text.parse::<u16>()
        .ok()
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or_else(|| format!("{text:?} is not an HTTP status code"))
}

#[tokio::main]
async fn main() -> Result<()> {
    ambit_sample_apps::init_logging();
    let args = Args::parse();
    let server = EchoServer::new(EchoConfig {
        version: args.version,
        pod_name: args.pod_name,
        pod_namespace: args.pod_namespace,
        fail_ratio: args.fail_ratio,
        fail_status: args.fail_status,
        delay: args.delay,
        seed: args.seed,
        calls: args.calls,
        call_timeout: args.call_timeout,
    })?;
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("binding {}", args.addr))?;
    println!("listening on {}", listener.local_addr()?);
    server.serve(listener).await?;
    Ok(())
}
