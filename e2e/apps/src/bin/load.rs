//! `load`: a curl-like client (`load once URL`) and load generator (`load get URL -n N -c C`).
//!
//! Exit codes: 0 when every request got an HTTP response (whatever its status, unless
//! `--fail`), 1 when any request failed at the transport level, 2 on bad flags, 3 with
//! `--fail` when a status was 400 or above.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use ambit_sample_apps::client::{Client, Protocol, Target};
use ambit_sample_apps::duration::parse_duration;
use ambit_sample_apps::load::{LoadOptions, VersionField, parse_headers, run};
use clap::{Args, Parser, Subcommand};

/// HTTP client and load generator for Ambit demos and tests.
#[derive(Debug, Parser)]
#[command(name = "load")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Send N GET requests over C connections and print status, version and latency tables.
    Get {
        #[command(flatten)]
        common: Common,
        /// Total number of requests.
        #[arg(short = 'n', long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
        requests: u32,
        /// Connections sending at once.
        #[arg(short = 'c', long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
        concurrency: u32,
        /// Open a new connection for every request (spreads them under L4 balancing).
        #[arg(long)]
        no_keepalive: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Dotted path of the JSON field the VERSION table counts, e.g.
        /// calls.0.body.version for the service productpage called.
        #[arg(long, default_value = "version", value_parser = VersionField::parse)]
        version_field: VersionField,
    },
    /// Send one GET request and print the response body.
    Once {
        #[command(flatten)]
        common: Common,
        /// Print the status line and headers to stderr.
        #[arg(short = 'v', long)]
        verbose: bool,
    },
}

#[derive(Debug, Args)]
struct Common {
    /// http:// URL to request.
    #[arg(value_parser = Target::parse)]
    url: Target,
    /// Header to add, as name:value (repeatable).
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// Per-request limit, connect included.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
    /// Speak HTTP/2 without TLS (prior knowledge) instead of HTTP/1.1.
    #[arg(long)]
    h2c: bool,
    /// Exit 3 if any response has a status of 400 or more.
    #[arg(long)]
    fail: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    ambit_sample_apps::init_logging();
    let cli = Cli::parse();
    match cli.command {
        Command::Get {
            common,
            requests,
            concurrency,
            no_keepalive,
            json,
            version_field,
        } => {
            let headers = match parse_headers(&common.headers) {
                Ok(headers) => headers,
                Err(error) => return usage_error(&error),
            };
            let report = run(LoadOptions {
                target: common.url,
                headers,
                requests,
                concurrency,
                timeout: common.timeout,
                protocol: protocol(common.h2c),
                keepalive: !no_keepalive,
                version_field,
            })
            .await;
            if json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.render());
            }
            if report.transport_errors > 0 {
                ExitCode::from(1)
            } else if common.fail && report.statuses.keys().any(|status| *status >= 400) {
                ExitCode::from(3)
            } else {
                ExitCode::SUCCESS
            }
        }
        Command::Once { common, verbose } => {
            let headers = match parse_headers(&common.headers) {
                Ok(headers) => headers,
                Err(error) => return usage_error(&error),
            };
            let mut client = Client::new(common.url, protocol(common.h2c), common.timeout);
            match client.get(&headers).await {
                Ok(reply) => {
                    if verbose {
                        eprintln!("< {}", reply.status);
                        for (name, value) in &reply.headers {
                            eprintln!("< {name}: {}", String::from_utf8_lossy(value.as_bytes()));
                        }
                    }
                    let mut stdout = std::io::stdout().lock();
                    let written = stdout
                        .write_all(&reply.body)
                        .and_then(|()| {
                            if reply.body.ends_with(b"\n") {
                                Ok(())
                            } else {
                                stdout.write_all(b"\n")
                            }
                        })
                        .and_then(|()| stdout.flush());
                    if let Err(error) = written {
                        eprintln!("load: writing the body: {error}");
                        return ExitCode::from(1);
                    }
                    if common.fail && reply.status.as_u16() >= 400 {
                        eprintln!("load: server answered {}", reply.status);
                        return ExitCode::from(3);
                    }
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("load: {error}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

fn protocol(h2c: bool) -> Protocol {
    if h2c { Protocol::H2c } else { Protocol::Http1 }
}

fn usage_error(error: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("load: {error}");
    ExitCode::from(2)
}
