//! The `ambit-node-agent` process: flags, their validation, and [`run`], which wires the
//! state file, the watches, the plugin socket, the netns scan and the ztunnel link together.

use std::collections::BTreeSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ambit_cni::server::{Server, ServerError};
use clap::Parser;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{error, info};

use crate::agent::{Agent, AgentTimeouts};
use crate::netns::NetnsScanner;
use crate::state::StateFile;
use crate::ztunnel::{self, LinkConfig, LinkStatus};

/// Name of the state file when `--state-file` is not given: next to the plugin socket.
pub const DEFAULT_STATE_FILE: &str = "node-agent-state.json";

/// Where containerd and CRI-O bind-mount the pods' network namespaces.
pub const DEFAULT_NETNS_DIR: &str = "/var/run/netns";

/// The node agent between the CNI plugin and ztunnel: resolves each reported pod through the
/// Kubernetes API, decides whether it is in the ambient mesh and tells ztunnel.
#[derive(Debug, Clone, Parser)]
#[command(name = "ambit-node-agent", version)]
pub struct Args {
    /// This node's name (the pods watched are those with `spec.nodeName` equal to it).
    #[arg(long)]
    pub node: String,
    /// Unix socket the CNI plugin (`ambit-cni`) connects to.
    #[arg(long)]
    pub listen: PathBuf,
    /// ztunnel's node-agent socket (`ztunnel --node-agent-socket`).
    #[arg(long)]
    pub ztunnel_socket: PathBuf,
    /// Where the known pods are persisted [default: node-agent-state.json next to --listen].
    #[arg(long)]
    pub state_file: Option<PathBuf>,
    /// How long a CNI ADD waits for its pod to appear in the pod watch, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    pub pod_wait_ms: u64,
    /// How long a CNI ADD of an enrolled pod waits for ztunnel to confirm it, in milliseconds.
    #[arg(long, default_value_t = 6000)]
    pub enroll_timeout_ms: u64,
    /// Folder of the pods' network namespaces, scanned for pods the plugin never reported
    /// (those that ran before the agent first did).
    #[arg(long, default_value = DEFAULT_NETNS_DIR)]
    pub netns_dir: PathBuf,
    /// Namespaces the plugin does not report (its `excludeNamespaces`), comma-separated:
    /// their pods are not looked for by the scan either.
    #[arg(long, value_delimiter = ',')]
    pub exclude_namespaces: Vec<String>,
    /// Log as JSON lines.
    #[arg(long)]
    pub log_json: bool,
}

/// Validated settings of [`run`].
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// This node's name.
    pub node: String,
    /// The plugin socket.
    pub listen: PathBuf,
    /// The state file.
    pub state_file: PathBuf,
    /// CNI request deadlines.
    pub timeouts: AgentTimeouts,
    /// The ztunnel link.
    pub link: LinkConfig,
    /// The folder the netns scan reads.
    pub netns_dir: PathBuf,
    /// Namespaces whose pods the scan skips.
    pub exclude_namespaces: BTreeSet<String>,
}

/// A flag that does not make sense.
#[derive(Debug, thiserror::Error)]
#[error("--{flag}: {message}")]
pub struct ArgsError {
    flag: &'static str,
    message: String,
}

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The plugin socket could not be bound.
    #[error("cannot listen on {path}: {source}")]
    Listen {
        /// The socket path.
        path: PathBuf,
        /// The failure.
        #[source]
        source: ServerError,
    },
    /// A task that must run for the agent's lifetime ended.
    #[error("the {0} ended unexpectedly")]
    TaskEnded(&'static str),
}

impl Args {
    /// Checks the flags and derives the defaults.
    pub fn options(&self) -> Result<AgentOptions, ArgsError> {
        let fail = |flag, message: String| Err(ArgsError { flag, message });
        if let Err(message) = node_name(&self.node) {
            return fail("node", message);
        }
        socket_path("listen", &self.listen)?;
        socket_path("ztunnel-socket", &self.ztunnel_socket)?;
        if self.listen == self.ztunnel_socket {
            return fail(
                "ztunnel-socket",
                "must differ from --listen (the agent serves one, ztunnel the other)".into(),
            );
        }
        let state_file = match &self.state_file {
            Some(path) if !path.is_absolute() => {
                return fail("state-file", format!("{} is not absolute", path.display()));
            }
            Some(path) => path.clone(),
            None => match self.listen.parent() {
                Some(dir) => dir.join(DEFAULT_STATE_FILE),
                None => return fail("listen", "has no parent folder".into()),
            },
        };
        if !self.netns_dir.is_absolute() {
            return fail(
                "netns-dir",
                format!("{} is not absolute", self.netns_dir.display()),
            );
        }
        if let Some(bad) = self.exclude_namespaces.iter().find(|ns| !is_dns_label(ns)) {
            return fail(
                "exclude-namespaces",
                format!("{bad:?} is not a namespace name (lowercase letters, digits and '-')"),
            );
        }
        for (flag, value) in [
            ("pod-wait-ms", self.pod_wait_ms),
            ("enroll-timeout-ms", self.enroll_timeout_ms),
        ] {
            if value == 0 {
                return fail(flag, "must be at least 1".into());
            }
        }
        Ok(AgentOptions {
            node: self.node.clone(),
            listen: self.listen.clone(),
            state_file,
            timeouts: AgentTimeouts {
                pod_wait: Duration::from_millis(self.pod_wait_ms),
                enroll_wait: Duration::from_millis(self.enroll_timeout_ms),
            },
            link: LinkConfig::new(&self.ztunnel_socket),
            netns_dir: self.netns_dir.clone(),
            exclude_namespaces: self.exclude_namespaces.iter().cloned().collect(),
        })
    }
}

/// A Kubernetes node name: a DNS subdomain.
fn node_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty (is NODE_NAME set from spec.nodeName?)".into());
    }
    if name.len() > 253 {
        return Err(format!("{} bytes long, the limit is 253", name.len()));
    }
    if name.split('.').all(is_dns_label) {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a node name (lowercase letters, digits, '-' and '.')"
        ))
    }
}

/// An RFC 1123 label (a namespace name, a part of a node name): lowercase letters, digits
/// and '-', 1 to 63 of them, a letter or digit at both ends.
fn is_dns_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

fn socket_path(flag: &'static str, path: &Path) -> Result<(), ArgsError> {
    // sun_path holds 108 bytes, the terminating NUL included.
    let message = if !path.is_absolute() {
        format!("{} is not absolute", path.display())
    } else if path.as_os_str().len() > 107 {
        format!(
            "{} is longer than a unix socket path may be",
            path.display()
        )
    } else {
        return Ok(());
    };
    Err(ArgsError { flag, message })
}

/// Runs the agent until `shutdown` resolves: reloads the state file, serves the plugin
/// socket, watches the API through `client` and keeps ztunnel in sync.
pub async fn run(
    options: AgentOptions,
    client: kube::Client,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let state = StateFile::new(&options.state_file);
    let persisted = match state.load() {
        Ok(pods) => pods,
        // Refusing to start would block every pod of the node; the file is rewritten on the
        // next change.
        Err(e) => {
            error!(error = %e, "state file unreadable; starting without the pods it held");
            Vec::new()
        }
    };
    let (link_status, link_rx) = watch::channel(LinkStatus::default());
    let (agent, desired) = Agent::new(
        options.timeouts.clone(),
        Some(state),
        link_rx,
        options.exclude_namespaces.clone(),
    );
    let restored = persisted.len();
    agent
        .restore(persisted, |netns| Path::new(netns).exists())
        .await;
    let kept = agent.known_count().await;
    info!(
        node = options.node,
        restored,
        kept,
        state_file = %options.state_file.display(),
        "state reloaded"
    );

    let server = Server::bind(&options.listen).map_err(|source| RunError::Listen {
        path: options.listen.clone(),
        source,
    })?;
    let mut tasks = JoinSet::new();
    tasks.spawn(async move {
        ztunnel::run(options.link, desired, link_status).await;
        "ztunnel link"
    });
    tasks.spawn({
        let (client, node, agent) = (client.clone(), options.node.clone(), agent.clone());
        async move {
            crate::kube::watch_pods(client, node, agent).await;
            "pod watch"
        }
    });
    tasks.spawn({
        let agent = agent.clone();
        async move {
            crate::kube::watch_namespaces(client, agent).await;
            "namespace watch"
        }
    });
    tasks.spawn({
        let (agent, scanner) = (agent.clone(), NetnsScanner::new(&options.netns_dir));
        async move {
            crate::discovery::run(agent, scanner).await;
            "netns scan"
        }
    });
    tasks.spawn({
        let handler: Arc<Agent> = agent.clone();
        async move {
            server.serve_agent(handler).await;
            "plugin socket server"
        }
    });
    info!(listen = %options.listen.display(), "node agent running");
    tokio::select! {
        () = shutdown => {
            info!("node agent stopping");
            Ok(())
        }
        ended = tasks.join_next() => {
            let name = match ended {
                Some(Ok(name)) => name,
                _ => "agent task",
            };
            Err(RunError::TaskEnded(name))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    fn parse(extra: &[&str]) -> Result<AgentOptions, String> {
        let mut argv = vec!["ambit-node-agent"];
        for base in [
            "--node=worker-1.example",
            "--listen=/var/run/ambit/cni.sock",
            "--ztunnel-socket=/var/run/ambit/ztunnel.sock",
        ] {
            let flag = &base[..base.find('=').unwrap() + 1];
            if !extra.iter().any(|e| e.starts_with(flag)) {
                argv.push(base);
            }
        }
        argv.extend_from_slice(extra);
        let args = Args::try_parse_from(argv).map_err(|e| e.to_string())?;
        args.options().map_err(|e| e.to_string())
    }

    #[test]
    fn the_chart_flags_are_accepted_with_defaults() {
        let options = parse(&[]).unwrap();
        assert_eq!(options.node, "worker-1.example");
        assert_eq!(
            options.state_file,
            Path::new("/var/run/ambit/node-agent-state.json")
        );
        assert_eq!(
            options.link.socket,
            Path::new("/var/run/ambit/ztunnel.sock")
        );
        assert_eq!(options.timeouts.pod_wait, Duration::from_secs(3));
        assert_eq!(options.netns_dir, Path::new("/var/run/netns"));
        assert!(options.exclude_namespaces.is_empty());
        let options = parse(&["--exclude-namespaces=ambit-system,kube-system"]).unwrap();
        assert_eq!(
            options.exclude_namespaces.iter().collect::<Vec<_>>(),
            ["ambit-system", "kube-system"]
        );
    }

    #[test]
    fn bad_flags_are_refused_naming_the_flag() {
        for (extra, flag) in [
            (&["--node="][..], "--node"),
            (&["--node=Worker_1"], "--node"),
            (&["--listen=cni.sock"], "--listen"),
            (
                &["--ztunnel-socket=/var/run/ambit/cni.sock"],
                "--ztunnel-socket",
            ),
            (&["--state-file=state.json"], "--state-file"),
            (&["--pod-wait-ms=0"], "--pod-wait-ms"),
            (&["--enroll-timeout-ms=0"], "--enroll-timeout-ms"),
            (&["--netns-dir=netns"], "--netns-dir"),
            (
                &["--exclude-namespaces=kube-system,Kube"],
                "--exclude-namespaces",
            ),
        ] {
            let error = parse(extra).unwrap_err();
            assert!(error.contains(flag), "{extra:?}: {error}");
        }
        let long = format!("--listen=/{}", "x".repeat(120));
        assert!(parse(&[&long]).unwrap_err().contains("--listen"));
        assert!(parse(&["--state-file=/data/agent.json"]).is_ok());
    }
}
