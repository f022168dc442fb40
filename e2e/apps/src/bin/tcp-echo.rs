//! `tcp-echo`: echoes the bytes of every connection, after an optional banner.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use clap::Parser;

/// TCP echo server for Ambit demos and tests.
#[derive(Debug, Parser)]
#[command(name = "tcp-echo")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:9000")]
    addr: SocketAddr,
    /// Text written to each connection before the echoed bytes (e.g. "v1 ").
    #[arg(long)]
    banner: Option<String>,
}

#[tokio::main]
async fn main() -> Result<()> {
    ambit_sample_apps::init_logging();
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("binding {}", args.addr))?;
    println!("listening on {}", listener.local_addr()?);
    ambit_sample_apps::tcp_echo::serve(listener, args.banner).await?;
    Ok(())
}
