//! The `ambit` binary: parses the command line and runs the verb. See the crate docs for the
//! exit codes.

use std::process::ExitCode;

use ambit_cli::NotImplemented;
use ambit_cli::args::{Cli, Command, TargetArgs, ZtunnelConfigArgs};
use ambit_cli::check::{self, CheckOptions};
use ambit_cli::cluster::ztunnel::{self as cluster_ztunnel, ZtunnelOn};
use ambit_cli::{target, ztunnel_config};
use clap::Parser;

const FAILURE: u8 = 1;
const NOT_IMPLEMENTED: u8 = 2;
const USAGE: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(message) = cli.validate() {
        eprintln!("ambit: {message}");
        return ExitCode::from(USAGE);
    }
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
        Command::ZtunnelConfig(args) => return ztunnel_config(args, &cli.target),
        Command::Local(command) => return exit_code(ambit_cli::local::run(command)),
        Command::Demo(args) => return exit_code(ambit_cli::demo::run(args.keep)),
        Command::Waypoint(command) => {
            return exit_code(ambit_cli::waypoint::run(command, &cli.target));
        }
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

/// `ambit ztunnel-config`: a cluster's ztunnel when `--node`, `--pod` or a cluster flag says
/// so, else the admin address (`--admin`) as in local mode.
fn ztunnel_config(args: ZtunnelConfigArgs, target: &TargetArgs) -> ExitCode {
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
    let on_cluster =
        !target.local && (target.wants_cluster() || args.node.is_some() || args.pod.is_some());
    let shown: anyhow::Result<String> = runtime.block_on(async {
        if !on_cluster {
            return Ok(
                ztunnel_config::show(args.admin, args.resource, args.output, args.timeout).await?,
            );
        }
        let on = match (args.node, args.pod) {
            (Some(node), _) => ZtunnelOn::Node(node),
            (None, Some((namespace, name))) => ZtunnelOn::PodsNode(namespace, name),
            (None, None) => ZtunnelOn::Only,
        };
        let client = target::cluster_client(target, None).await?;
        Ok(cluster_ztunnel::show(
            &client,
            &args.ztunnel_namespace,
            &on,
            args.resource,
            args.output,
            args.timeout,
        )
        .await?)
    });
    match shown {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("ambit: {error:#}");
            ExitCode::from(FAILURE)
        }
    }
}
