//! The `ambit` binary: parses the command line and runs the verb. See the crate docs for the
//! exit codes.

use std::process::ExitCode;

use ambit_cli::NotImplemented;
use ambit_cli::args::{Cli, Command};
use ambit_cli::check::{self, CheckOptions};
use ambit_cli::ztunnel_config;
use clap::Parser;

const FAILURE: u8 = 1;
const NOT_IMPLEMENTED: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let verb = match cli.command {
        Command::Check(args) => {
            let options = if args.ports.is_empty() {
                CheckOptions::default()
            } else {
                CheckOptions { ports: args.ports }
            };
            let report = check::run(&options);
            print!("{}", report.render());
            return if report.failed() {
                ExitCode::from(FAILURE)
            } else {
                ExitCode::SUCCESS
            };
        }
        Command::ZtunnelConfig(args) => return ztunnel_config(args),
        Command::Local(command) => return exit_code(ambit_cli::local::run(command)),
        Command::Demo(args) => return exit_code(ambit_cli::demo::run(args.keep)),
        Command::Waypoint(command) => return exit_code(ambit_cli::waypoint::run(command)),
        Command::Install(args) if args.dry_run => {
            return exit_code(
                ambit_cli::install::render(&args.charts, args.values.as_deref(), &args.namespace)
                    .map(|manifests| {
                        print!("{manifests}");
                        0
                    }),
            );
        }
        Command::Install(_) => "install (without --dry-run)",
    };
    eprintln!("ambit: {}", NotImplemented { verb });
    ExitCode::from(NOT_IMPLEMENTED)
}

/// A verb's outcome as the process exit code; errors are printed with their causes.
fn exit_code(outcome: anyhow::Result<u8>) -> ExitCode {
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("ambit: {error:#}");
            ExitCode::from(FAILURE)
        }
    }
}

fn ztunnel_config(args: ambit_cli::args::ZtunnelConfigArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ambit: starting the runtime: {error}");
            return ExitCode::from(FAILURE);
        }
    };
    let shown = runtime.block_on(ztunnel_config::show(
        args.admin,
        args.resource,
        args.output,
        args.timeout,
    ));
    match shown {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("ambit: {error}");
            ExitCode::from(FAILURE)
        }
    }
}
