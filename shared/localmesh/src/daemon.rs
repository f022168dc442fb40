//! `ambit local` across processes: `up` leaves a daemon holding the [`LocalMesh`], and the
//! other verbs (`apply`, `delete`, `get`, `label`, `down`, …) talk to it over a unix socket in
//! the state folder, one JSON request line and one JSON response line per connection.
//!
//! Only root can reach the socket (mode 0600 in a root-owned folder): whoever can talk to the
//! daemon can run processes in pod namespaces.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader as AsyncBufReader};
use tokio::net::UnixListener;
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::{ApplyReport, LocalMesh, MeshError};

/// The socket's name inside the state folder.
pub const SOCKET_NAME: &str = "ambit-local.sock";
/// The longest request accepted (a large multi-document apply fits easily).
const MAX_REQUEST: usize = 16 * 1024 * 1024;

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum Request {
    /// Apply a YAML stream.
    Apply {
        /// The file it came from (for error messages).
        origin: String,
        /// The YAML.
        text: String,
    },
    /// Delete the objects of a YAML stream.
    Delete {
        /// The file it came from.
        origin: String,
        /// The YAML.
        text: String,
    },
    /// Pods, with node, IP and enrollment.
    GetPods,
    /// Services with cluster IPs.
    GetServices,
    /// Waypoints.
    GetWaypoints,
    /// Set or remove a namespace label.
    Label {
        /// The namespace.
        namespace: String,
        /// The label key.
        key: String,
        /// The value; `None` removes the label.
        value: Option<String>,
    },
    /// Where a pod lives, for `exec` and `logs`.
    Pod {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// Stop everything and exit.
    Down,
}

/// What the daemon answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "camelCase")]
pub enum Response {
    /// Apply/delete outcome.
    Report {
        /// Done.
        done: Vec<String>,
        /// Refused, each with file, document and field.
        errors: Vec<String>,
    },
    /// A table: header, then rows.
    Table {
        /// Column names.
        header: Vec<String>,
        /// Rows.
        rows: Vec<Vec<String>>,
    },
    /// A pod's netns name and log file.
    Pod {
        /// `ip netns` name.
        netns: String,
        /// Log file of its process.
        log: PathBuf,
    },
    /// Done, nothing to show.
    Ok,
    /// Refused.
    Error {
        /// Why.
        message: String,
    },
}

/// The daemon could not be reached or answered nonsense.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No daemon listens (the mesh is not up).
    #[error("no local mesh is running (no daemon at {socket}); start one with `ambit local up`")]
    NotRunning {
        /// The socket tried.
        socket: PathBuf,
    },
    /// The conversation failed.
    #[error("talking to the local mesh daemon: {0}")]
    Io(#[from] std::io::Error),
    /// The answer was not understood.
    #[error("the local mesh daemon answered something unreadable: {0}")]
    Protocol(#[from] serde_json::Error),
}

/// The socket path for a state folder.
pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SOCKET_NAME)
}

/// Serves `mesh` on the state folder's socket until a `Down` request (which tears the mesh
/// down before answering) or `stop` is notified.
pub async fn serve(mesh: LocalMesh, stop: Arc<Notify>) -> Result<(), MeshError> {
    let socket = socket_path(&mesh.options().state_dir);
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket).map_err(|source| MeshError::Io {
        path: socket.clone(),
        source,
    })?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600)).map_err(
        |source| MeshError::Io {
            path: socket.clone(),
            source,
        },
    )?;
    info!(socket = %socket.display(), "local mesh daemon listening");
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.notified() => break,
        };
        let (stream, _) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                warn!(%err, "accept failed");
                continue;
            }
        };
        // One request at a time: the mesh serialises changes anyway, and `down` must not race
        // an apply.
        let (read, mut write) = stream.into_split();
        let response = match read_request(read).await {
            // The CLI's presence probe (`ambit` choosing local mode or a cluster) connects and
            // closes; nothing to answer, nothing wrong.
            Incoming::Probe => {
                debug!("a client connected and closed without a request (a presence probe)");
                continue;
            }
            Incoming::Request(Request::Down) => {
                drop(listener);
                let _ = std::fs::remove_file(&socket);
                let response = match mesh.down().await {
                    Ok(()) => Response::Ok,
                    Err(err) => Response::Error {
                        message: err.to_string(),
                    },
                };
                let _ = write_response(&mut write, &response).await;
                return Ok(());
            }
            Incoming::Request(request) => handle(&mesh, request).await,
            Incoming::Bad(message) => Response::Error { message },
        };
        if let Err(err) = write_response(&mut write, &response).await {
            warn!(%err, "answering a client failed");
        }
    }
    drop(listener);
    let _ = std::fs::remove_file(&socket);
    mesh.down().await
}

/// What a client's connection brought.
#[derive(Debug, PartialEq, Eq)]
enum Incoming {
    /// It closed before sending a byte.
    Probe,
    /// A request line.
    Request(Request),
    /// Something unreadable; the answer says what.
    Bad(String),
}

/// Reads the one request line of a connection.
async fn read_request(read: impl tokio::io::AsyncRead + Unpin) -> Incoming {
    let mut line = String::new();
    let mut reader = AsyncBufReader::new(read).take(MAX_REQUEST as u64);
    match reader.read_line(&mut line).await {
        Ok(0) => Incoming::Probe,
        Ok(_) => match serde_json::from_str::<Request>(&line) {
            Ok(request) => Incoming::Request(request),
            Err(err) => Incoming::Bad(format!("bad request: {err}")),
        },
        Err(err) => Incoming::Bad(format!("reading the request: {err}")),
    }
}

async fn write_response(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    response: &Response,
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(response).map_err(std::io::Error::other)?;
    line.push(b'\n');
    write.write_all(&line).await?;
    write.shutdown().await
}

async fn handle(mesh: &LocalMesh, request: Request) -> Response {
    match request {
        Request::Apply { origin, text } => report(mesh.apply(&origin, &text).await),
        Request::Delete { origin, text } => report(mesh.delete(&origin, &text).await),
        Request::GetPods => Response::Table {
            header: ["NAMESPACE", "NAME", "NODE", "IP", "MESH", "PROCESS"]
                .map(str::to_owned)
                .to_vec(),
            rows: mesh
                .pods()
                .await
                .into_iter()
                .map(|pod| {
                    vec![
                        pod.namespace,
                        pod.name,
                        pod.node,
                        pod.ip.to_string(),
                        if pod.enrolled { "ambient" } else { "-" }.to_owned(),
                        match pod.running {
                            Some(true) => "running",
                            Some(false) => "exited",
                            None => "-",
                        }
                        .to_owned(),
                    ]
                })
                .collect(),
        },
        Request::GetServices => Response::Table {
            header: ["NAMESPACE", "NAME", "CLUSTER-IP"]
                .map(str::to_owned)
                .to_vec(),
            rows: mesh
                .services()
                .await
                .into_iter()
                .map(|service| {
                    vec![
                        service.namespace,
                        service.name,
                        service
                            .cluster_ip
                            .map_or_else(|| "None".to_owned(), |ip| ip.to_string()),
                    ]
                })
                .collect(),
        },
        Request::GetWaypoints => Response::Table {
            // The cluster's `waypoint list` columns where they apply (PROCESS for PROGRAMMED).
            header: ["NAMESPACE", "NAME", "FOR", "ADDRESS", "PROCESS"]
                .map(str::to_owned)
                .to_vec(),
            rows: mesh
                .waypoints()
                .await
                .into_iter()
                .map(|waypoint| {
                    vec![
                        waypoint.namespace,
                        waypoint.name,
                        waypoint.waypoint_for,
                        waypoint
                            .address
                            .map_or_else(|| "-".to_owned(), |ip| ip.to_string()),
                        if waypoint.running {
                            "running"
                        } else {
                            "exited"
                        }
                        .to_owned(),
                    ]
                })
                .collect(),
        },
        Request::Label {
            namespace,
            key,
            value,
        } => match mesh
            .label_namespace(&namespace, &key, value.as_deref())
            .await
        {
            Ok(()) => Response::Ok,
            Err(err) => Response::Error {
                message: err.to_string(),
            },
        },
        Request::Pod { namespace, name } => match mesh.pod(&namespace, &name) {
            Some(pod) => Response::Pod {
                netns: pod.netns().name().to_owned(),
                log: mesh.log_path(&namespace, &name),
            },
            None => Response::Error {
                message: format!("no pod {namespace}/{name}"),
            },
        },
        Request::Down => Response::Error {
            message: "down is handled by the server loop".to_owned(),
        },
    }
}

fn report(report: ApplyReport) -> Response {
    Response::Report {
        done: report.done,
        errors: report.errors,
    }
}

/// Sends one request to the daemon of `state_dir` and returns its answer. Blocking; `timeout`
/// bounds the whole exchange (an apply that starts processes takes a few seconds).
pub fn call(
    state_dir: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<Response, ClientError> {
    let socket = socket_path(state_dir);
    let mut stream = match UnixStream::connect(&socket) {
        Ok(stream) => stream,
        Err(err)
            if matches!(
                err.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(ClientError::NotRunning { socket });
        }
        Err(err) => return Err(err.into()),
    };
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer)?;
    Ok(serde_json::from_str(&answer)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_responses_have_a_stable_json_shape() {
        let request = Request::Label {
            namespace: "shop".into(),
            key: "istio.io/dataplane-mode".into(),
            value: Some("ambient".into()),
        };
        let json = serde_json::to_string(&request).unwrap();
        assert_eq!(
            json,
            r#"{"op":"label","namespace":"shop","key":"istio.io/dataplane-mode","value":"ambient"}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&json).unwrap(), request);
        let down: Request = serde_json::from_str(r#"{"op":"down"}"#).unwrap();
        assert_eq!(down, Request::Down);
        assert!(serde_json::from_str::<Request>(r#"{"op":"format-disk"}"#).is_err());
        let response = Response::Error {
            message: "no".into(),
        };
        assert_eq!(
            serde_json::to_string(&response).unwrap(),
            r#"{"result":"error","message":"no"}"#
        );
    }

    #[tokio::test]
    async fn a_connection_closed_before_any_byte_is_a_probe_not_a_bad_request() {
        let (client, server) = tokio::io::duplex(64);
        drop(client);
        assert_eq!(read_request(server).await, Incoming::Probe);

        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b"{\"op\":\"getPods\"}\n").await.unwrap();
        drop(client);
        assert_eq!(
            read_request(server).await,
            Incoming::Request(Request::GetPods)
        );

        // A client that sends something, even a bare newline, gets told it is wrong.
        for sent in [&b"\n"[..], b"{\"op\":\"format-disk\"}\n", b"{\"op\""] {
            let (mut client, server) = tokio::io::duplex(64);
            client.write_all(sent).await.unwrap();
            drop(client);
            let incoming = read_request(server).await;
            assert!(
                matches!(&incoming, Incoming::Bad(message) if message.starts_with("bad request:")),
                "{sent:?}: {incoming:?}"
            );
        }
    }

    #[test]
    fn a_missing_daemon_is_reported_as_not_running() {
        let dir = std::env::temp_dir().join(format!("ambit-daemon-none-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let err = call(&dir, &Request::GetPods, Duration::from_secs(1)).unwrap_err();
        assert!(matches!(err, ClientError::NotRunning { .. }), "{err}");
        assert!(err.to_string().contains("ambit local up"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
