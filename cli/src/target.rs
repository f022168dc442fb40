//! Which mesh a verb talks to: the local mesh daemon on this machine, or a Kubernetes cluster.
//!
//! Without flags, local mode wins when its daemon is present (its socket accepts a
//! connection, or exists but is root's), and the cluster of the usual kubeconfig
//! (`$KUBECONFIG`, `~/.kube/config`, or the in-cluster service account) is used otherwise.
//! `--local` and `--cluster` force one side; `--kubeconfig` and `--context` imply `--cluster`.

use std::io::ErrorKind;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use ambit_localmesh::daemon::socket_path;
use clap::Args;
use kube::config::{KubeConfigOptions, Kubeconfig};

/// The global flags that choose the target.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Target (waypoint, ztunnel-config)")]
pub struct TargetArgs {
    /// Talk to the local mesh daemon (`ambit local up`) even when a cluster is configured.
    #[arg(long, global = true, conflicts_with_all = ["cluster", "kubeconfig", "context"])]
    pub local: bool,
    /// Talk to the Kubernetes cluster even when a local mesh is running.
    #[arg(long, global = true)]
    pub cluster: bool,
    /// The kubeconfig file of the cluster (implies --cluster; default: $KUBECONFIG, then
    /// ~/.kube/config, then the in-cluster service account).
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (implies --cluster; default: the current context).
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
}

impl TargetArgs {
    /// Whether any flag asks for the cluster.
    pub fn wants_cluster(&self) -> bool {
        self.cluster || self.kubeconfig.is_some() || self.context.is_some()
    }

    /// Whether any target flag was given at all.
    pub fn any(&self) -> bool {
        self.local || self.wants_cluster()
    }
}

/// Where a verb goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The local mesh daemon whose state folder this is.
    Local(PathBuf),
    /// The cluster of the kubeconfig (or in-cluster config).
    Cluster,
}

/// Why no target could be used.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// No local mesh and no cluster configuration.
    #[error(
        "no local mesh is running (no daemon socket in {state}) and no cluster is configured \
         ({reason}); start a local mesh with `ambit local up`, or point at a cluster with \
         --kubeconfig/--context or $KUBECONFIG"
    )]
    Neither {
        /// The local state folder looked at.
        state: String,
        /// Why the kubeconfig could not be loaded.
        reason: String,
    },
    /// The cluster configuration could not be loaded.
    #[error("loading the cluster configuration: {0}")]
    Config(String),
    /// A client could not be built from it.
    #[error("connecting to the cluster: {0}")]
    Client(#[from] kube::Error),
}

/// Whether a local mesh daemon is present in `state`: its socket accepts a connection, or
/// exists but only root may use it (the daemon's error then says so, rather than silently
/// going to a cluster). A socket left by a crashed daemon does not count. The probe is a bare
/// connect-and-close, which the daemon takes for a probe (it logs it at debug, answers nothing).
pub fn local_daemon_present(state: &Path) -> bool {
    match UnixStream::connect(socket_path(state)) {
        Ok(_) => true,
        Err(error) => error.kind() == ErrorKind::PermissionDenied,
    }
}

/// Chooses the target for `args`, looking for a daemon in `state` unless a flag decides.
pub fn select(args: &TargetArgs, state: &Path) -> Target {
    if args.local {
        return Target::Local(state.to_owned());
    }
    if !args.wants_cluster() && local_daemon_present(state) {
        return Target::Local(state.to_owned());
    }
    Target::Cluster
}

/// A client for the cluster `args` names. `fell_back_from` is the local state folder when
/// the cluster was chosen only because no local mesh runs there: a missing kubeconfig then
/// says both sides are missing.
pub async fn cluster_client(
    args: &TargetArgs,
    fell_back_from: Option<&Path>,
) -> Result<kube::Client, TargetError> {
    let config = match cluster_config(args).await {
        Ok(config) => config,
        Err(reason) if !args.wants_cluster() && fell_back_from.is_some() => {
            return Err(TargetError::Neither {
                state: fell_back_from
                    .map(|state| state.display().to_string())
                    .unwrap_or_default(),
                reason,
            });
        }
        Err(reason) => return Err(TargetError::Config(reason)),
    };
    Ok(kube::Client::try_from(config)?)
}

async fn cluster_config(args: &TargetArgs) -> Result<kube::Config, String> {
    let options = KubeConfigOptions {
        context: args.context.clone(),
        ..KubeConfigOptions::default()
    };
    if let Some(path) = &args.kubeconfig {
        let kubeconfig = Kubeconfig::read_from(path)
            .map_err(|error| format!("reading {}: {error}", path.display()))?;
        return kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(|error| format!("{}: {error}", path.display()));
    }
    if args.context.is_some() {
        return kube::Config::from_kubeconfig(&options)
            .await
            .map_err(|error| error.to_string());
    }
    kube::Config::infer()
        .await
        .map_err(|error| error.to_string())
}

#[cfg(test)]
mod tests {
    use ambit_localmesh::daemon::SOCKET_NAME;

    use super::*;

    fn empty_state() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ambit-target-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn flags_decide_before_the_daemon_is_looked_for() {
        let state = empty_state();
        let local = TargetArgs {
            local: true,
            ..TargetArgs::default()
        };
        assert_eq!(select(&local, &state), Target::Local(state.clone()));
        let context = TargetArgs {
            context: Some("prod".to_owned()),
            ..TargetArgs::default()
        };
        assert!(context.wants_cluster());
        assert_eq!(select(&context, &state), Target::Cluster);
        // No daemon in an empty folder: the cluster.
        assert_eq!(select(&TargetArgs::default(), &state), Target::Cluster);
    }

    #[test]
    fn a_listening_daemon_socket_means_local_and_a_stale_one_does_not() {
        let state = empty_state().join("daemon");
        let _ = std::fs::remove_dir_all(&state);
        std::fs::create_dir_all(&state).unwrap();
        let listener = std::os::unix::net::UnixListener::bind(state.join(SOCKET_NAME)).unwrap();
        assert!(local_daemon_present(&state));
        assert_eq!(
            select(&TargetArgs::default(), &state),
            Target::Local(state.clone())
        );
        let cluster = TargetArgs {
            cluster: true,
            ..TargetArgs::default()
        };
        assert_eq!(select(&cluster, &state), Target::Cluster);
        // The socket file outlives its listener, as after a crash.
        drop(listener);
        assert!(state.join(SOCKET_NAME).exists());
        assert!(!local_daemon_present(&state));
        std::fs::remove_dir_all(&state).unwrap();
    }
}
