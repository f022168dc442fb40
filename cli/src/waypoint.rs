//! `ambit waypoint apply|delete|list` against the local mesh: the same Gateway (class
//! `istio-waypoint`) a user would apply on a cluster, sent to the local mesh daemon.
//! TODO(issue 6): against a cluster through kube-rs; today only local mode is served.

use std::path::Path;
use std::time::Duration;

use ambit_localmesh::daemon::{self, Request, Response};
use anyhow::{Result, bail};

use crate::args::{WaypointCommand, WaypointFor};
use crate::local::state_dir;
use crate::table::Table;

const CALL_TIMEOUT: Duration = Duration::from_secs(120);

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

/// Runs one `ambit waypoint` verb; `Ok(code)` is the exit code.
pub fn run(command: WaypointCommand) -> Result<u8> {
    let state = state_dir();
    match command {
        WaypointCommand::Apply {
            target,
            waypoint_for,
            enroll_namespace,
        } => {
            let yaml = gateway_yaml(&target.namespace, &target.name, waypoint_for);
            report(
                &state,
                Request::Apply {
                    origin: format!("waypoint {}/{}", target.namespace, target.name),
                    text: yaml,
                },
            )?;
            if enroll_namespace {
                match daemon::call(
                    &state,
                    &Request::Label {
                        namespace: target.namespace.clone(),
                        key: "istio.io/use-waypoint".to_owned(),
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
        WaypointCommand::Delete { target } => {
            let yaml = gateway_yaml(&target.namespace, &target.name, WaypointFor::Service);
            report(
                &state,
                Request::Delete {
                    origin: format!("waypoint {}/{}", target.namespace, target.name),
                    text: yaml,
                },
            )?;
            Ok(0)
        }
        WaypointCommand::List { namespace } => {
            match daemon::call(&state, &Request::GetWaypoints, CALL_TIMEOUT)? {
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
    match daemon::call(state, &request, CALL_TIMEOUT)? {
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
