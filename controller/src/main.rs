//! The `ambit-controller` binary: arguments, logging, then `app::run`.

use ambit_controller::app::{Args, run};
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _logging = ambit_telemetry::init_logging("info", args.log_json)?;
    if let Err(err) = run(args).await {
        tracing::error!("{err:#}");
        return Err(err);
    }
    Ok(())
}
