//! `ambit waypoint apply|delete|list`: the same Gateway (class `istio-waypoint`) sent to the
//! local mesh daemon, or server-side applied to a cluster ([`crate::cluster::waypoint`]);
//! [`crate::target`] chooses.

use std::path::Path;
use std::time::Duration;

use ambit_localmesh::daemon::{self, Request, Response};
use anyhow::{Result, bail};

use crate::args::{WaypointCommand, WaypointFor};
use crate::cluster::waypoint::{self as cluster, ApplyOptions};
use crate::local::state_dir;
use crate::table::Table;
use crate::target::{self, Target, TargetArgs};

const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// The class of waypoint Gateways.
pub const WAYPOINT_CLASS: &str = "istio-waypoint";
/// The Gateway label saying which traffic a waypoint handles.
pub const WAYPOINT_FOR_LABEL: &str = "istio.io/waypoint-for";
/// The namespace (or service, workload) label naming the waypoint to use.
pub const USE_WAYPOINT_LABEL: &str = "istio.io/use-waypoint";

/// The Gateway manifest for a waypoint.
pub fn gateway_yaml(namespace: &str, name: &str, waypoint_for: WaypointFor) -> String {
    let traffic = match waypoint_for {
        WaypointFor::Service => "service",
        WaypointFor::Workload => "workload",
        WaypointFor::All => "all",
        WaypointFor::None => "none",
    };
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
         metadata:\n  name: {name}\n  namespace: {namespace}\n  labels:\n    istio.io/waypoint-for: {traffic}\n\
         spec:\n  gatewayClassName: istio-waypoint\n  listeners:\n  - name: mesh\n    port: 15008\n    protocol: HBONE\n"
    )
}

/// Runs one `ambit waypoint` verb on the target `args` choose; `Ok(code)` is the exit code.
pub fn run(command: WaypointCommand, args: &TargetArgs) -> Result<u8> {
    let state = state_dir();
    match target::select(args, &state) {
        Target::Local(state) => run_local(command, &state),
        Target::Cluster => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let client = target::cluster_client(args, Some(&state)).await?;
                let out = run_cluster(&client, command).await?;
                print!("{out}");
                anyhow::Ok(0)
            })
        }
    }
}

/// Runs one verb against the cluster `client` talks to; returns what to print.
pub async fn run_cluster(
    client: &kube::Client,
    command: WaypointCommand,
) -> Result<String, crate::cluster::ClusterError> {
    match command {
        WaypointCommand::Apply {
            target,
            waypoint_for,
            enroll_namespace,
            wait,
            wait_timeout,
        } => {
            let options = ApplyOptions {
                namespace: target.namespace,
                name: target.name,
                waypoint_for,
                enroll_namespace,
                wait: wait.then_some(wait_timeout),
            };
            cluster::apply(client, &options).await
        }
        WaypointCommand::Delete {
            target,
            ignore_not_found,
        } => cluster::delete(client, &target.namespace, &target.name, ignore_not_found).await,
        WaypointCommand::List { namespace, .. } => {
            cluster::list(client, namespace.as_deref()).await
        }
    }
}

fn run_local(command: WaypointCommand, state: &Path) -> Result<u8> {
    match command {
        WaypointCommand::Apply {
            target,
            waypoint_for,
            enroll_namespace,
            ..
        } => {
            let yaml = gateway_yaml(&target.namespace, &target.name, waypoint_for);
            report(
                state,
                Request::Apply {
                    origin: format!("waypoint {}/{}", target.namespace, target.name),
                    text: yaml,
                },
            )?;
            if enroll_namespace {
                match daemon::call(
                    state,
                    &Request::Label {
                        namespace: target.namespace.clone(),
                        key: USE_WAYPOINT_LABEL.to_owned(),
                        value: Some(target.name.clone()),
                    },
                    CALL_TIMEOUT,
                )? {
                    Response::Ok => println!(
                        "namespace/{} labeled istio.io/use-waypoint={}",
                        target.namespace, target.name
                    ),
                    Response::Error { message } => bail!("{message}"),
                    other => bail!("unexpected answer: {other:?}"),
                }
            }
            Ok(0)
        }
        WaypointCommand::Delete {
            target,
            ignore_not_found,
        } => {
            let yaml = gateway_yaml(&target.namespace, &target.name, WaypointFor::Service);
            let request = Request::Delete {
                origin: format!("waypoint {}/{}", target.namespace, target.name),
                text: yaml,
            };
            match daemon::call(state, &request, CALL_TIMEOUT)? {
                // The daemon reports a missing object as `<key>: not found`.
                Response::Report { errors, .. }
                    if ignore_not_found
                        && errors
                            == [format!(
                                "Gateway {}/{}: not found",
                                target.namespace, target.name
                            )] =>
                {
                    println!(
                        "waypoint {}/{} not found; nothing to delete",
                        target.namespace, target.name
                    );
                    Ok(0)
                }
                response => {
                    print_report(response)?;
                    Ok(0)
                }
            }
        }
        WaypointCommand::List { namespace, .. } => {
            match daemon::call(state, &Request::GetWaypoints, CALL_TIMEOUT)? {
                Response::Table { header, rows } => {
                    let header: Vec<&str> = header.iter().map(String::as_str).collect();
                    let mut table = Table::new(&header);
                    for row in rows {
                        if namespace
                            .as_deref()
                            .is_none_or(|ns| row.first().is_some_and(|cell| cell == ns))
                        {
                            table.row(row);
                        }
                    }
                    print!("{}", table.render());
                    Ok(0)
                }
                Response::Error { message } => bail!("{message}"),
                other => bail!("unexpected answer: {other:?}"),
            }
        }
    }
}

fn report(state: &Path, request: Request) -> Result<()> {
    print_report(daemon::call(state, &request, CALL_TIMEOUT)?)
}

fn print_report(response: Response) -> Result<()> {
    match response {
        Response::Report { done, errors } => {
            for line in done {
                println!("{line}");
            }
            if !errors.is_empty() {
                bail!("{}", errors.join("\n"));
            }
            Ok(())
        }
        Response::Error { message } => bail!("{message}"),
        other => bail!("unexpected answer: {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateway_is_a_waypoint_the_local_mesh_accepts() {
        let yaml = gateway_yaml("shop", "wp", WaypointFor::All);
        let (objects, errors) = ambit_localmesh::objects::parse_documents("wp", &yaml);
        assert!(errors.is_empty(), "{errors:?}");
        assert!(objects[0].is_waypoint_gateway());
        assert_eq!(objects[0].key().to_string(), "Gateway shop/wp");
        assert_eq!(
            objects[0]
                .labels()
                .get("istio.io/waypoint-for")
                .map(String::as_str),
            Some("all")
        );
    }
}
