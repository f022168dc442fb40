//! The command line, as clap parses it. Every verb of issue 6 is declared here with its flags,
//! so `ambit --help` shows the whole surface; the ones not built yet say so when run.
//!
//! `waypoint` and `ztunnel-config` work against local mode or a cluster; the global
//! `--local`, `--cluster`, `--kubeconfig` and `--context` flags ([`TargetArgs`]) choose.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use crate::target::TargetArgs;
use crate::ztunnel_config::{Output, Resource};

/// Ambit: a sidecarless service mesh. Run it on one machine with `ambit local`, inspect
/// proxies, manage waypoints.
#[derive(Debug, Parser)]
#[command(
    name = "ambit",
    version,
    after_help = "Target of `waypoint` and `ztunnel-config`: the local mesh when its daemon is \
                  running (`ambit local up`; state in $AMBIT_LOCAL_DIR, default \
                  /var/run/ambit-local), else the cluster of $KUBECONFIG or ~/.kube/config (or \
                  the in-cluster service account). --local or --cluster (implied by --kubeconfig \
                  and --context) choose explicitly."
)]
pub struct Cli {
    /// Local mode or a cluster (for `waypoint` and `ztunnel-config`).
    #[command(flatten)]
    pub target: TargetArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Refuses target flags on verbs that only run on this machine (`check`, `local`, `demo`,
    /// `install`): they would be silently ignored otherwise.
    pub fn validate(&self) -> Result<(), String> {
        let verb = match &self.command {
            Command::ZtunnelConfig(args)
                if self.target.local && (args.node.is_some() || args.pod.is_some()) =>
            {
                return Err("--node and --pod read a cluster's ztunnel; drop --local".to_owned());
            }
            Command::Waypoint(_) | Command::ZtunnelConfig(_) => return Ok(()),
            Command::Check(_) => "check",
            Command::Local(_) => "local",
            Command::Demo(_) => "demo",
            Command::Install(_) => "install",
        };
        if self.target.any() {
            return Err(format!(
                "--local, --cluster, --kubeconfig and --context apply to `waypoint` and \
                 `ztunnel-config`, not to `{verb}`"
            ));
        }
        Ok(())
    }
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Pre-flight checks for local mode: root, network namespaces, veth, nftables,
    /// forwarding, free ports. Exits 1 if any fails.
    Check(CheckArgs),
    /// A mesh on this machine, without Kubernetes (needs root).
    #[command(subcommand)]
    Local(LocalCommand),
    /// Bring up local mode, run the sample app through mTLS, policy, routing and retries,
    /// report, tear down.
    Demo(DemoArgs),
    /// Deploy, remove and list waypoints (local mode or a cluster; see the target flags).
    #[command(subcommand)]
    Waypoint(WaypointCommand),
    /// Show what a ztunnel holds: workloads, services, policies, certificates, connections.
    /// Reads the admin port at --admin, or a cluster's ztunnel with --node, --pod or a
    /// cluster flag, through a port-forward to its admin port (127.0.0.1:15000 in the pod, as
    /// `kubectl port-forward`; needs `create` on `pods/portforward`).
    ZtunnelConfig(ZtunnelConfigArgs),
    /// Print the manifests the Helm charts would install.
    Install(InstallArgs),
}

/// `ambit check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Check these ports instead of 15001-15021 and 15080 (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub ports: Vec<u16>,
}

/// `ambit local …`.
#[derive(Debug, Subcommand)]
pub enum LocalCommand {
    /// Start the controller and N nodes (a ztunnel each).
    Up {
        /// Number of nodes.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=20))]
        nodes: u8,
    },
    /// Apply Kubernetes YAML: Namespaces, Pods, Deployments, Services, mesh kinds.
    Apply {
        /// A file or a directory of YAML files (repeatable).
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
    },
    /// Delete what the YAML describes.
    Delete {
        /// A file or a directory of YAML files (repeatable).
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
    },
    /// List objects.
    Get {
        /// What to list.
        kind: GetKind,
        /// Only this namespace (all when omitted).
        #[arg(short = 'n', long)]
        namespace: Option<String>,
    },
    /// Run a command inside a pod's network namespace.
    Exec {
        /// The pod, as NAMESPACE/POD.
        pod: String,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Print a pod's output.
    Logs {
        /// The pod, as NAMESPACE/POD.
        pod: String,
        /// Keep printing as the pod writes.
        #[arg(short = 'f', long)]
        follow: bool,
    },
    /// Set or remove (KEY-) a label; on a namespace, enrolls or unenrolls its pods live.
    Label {
        /// Kind of object (only `ns` for now).
        kind: LabelKind,
        /// Its name.
        name: String,
        /// KEY=VALUE to set, KEY- to remove.
        #[arg(required = true)]
        labels: Vec<String>,
    },
    /// Stop everything and remove the namespaces (also after a crash).
    Down,
    /// The daemon `up` starts (internal).
    #[command(hide = true)]
    Serve {
        /// Number of nodes.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=20))]
        nodes: u8,
    },
}

/// Kinds `ambit local get` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GetKind {
    /// Pods with their node, IP and state.
    Pods,
    /// Services with their VIPs.
    Services,
    /// Waypoints and what they serve.
    Waypoints,
}

/// Kinds `ambit local label` changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LabelKind {
    /// A namespace.
    #[value(alias = "namespace")]
    Ns,
}

/// `ambit demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Leave local mode running at the end instead of tearing it down.
    #[arg(long)]
    pub keep: bool,
}

/// `ambit waypoint …`.
#[derive(Debug, Subcommand)]
pub enum WaypointCommand {
    /// Create a waypoint Gateway (class istio-waypoint) in a namespace.
    Apply {
        #[command(flatten)]
        target: WaypointTarget,
        /// Which traffic the waypoint handles (istio.io/waypoint-for).
        #[arg(long = "for", value_enum, default_value_t = WaypointFor::Service)]
        waypoint_for: WaypointFor,
        /// Also label the namespace istio.io/use-waypoint=<name>.
        #[arg(long)]
        enroll_namespace: bool,
        /// Cluster: wait for the Gateway's Programmed condition (local mode: the apply
        /// already returns once the waypoint runs).
        #[arg(long)]
        wait: bool,
        /// How long --wait waits, in seconds.
        #[arg(long, default_value = "120", value_parser = parse_seconds, requires = "wait")]
        wait_timeout: Duration,
    },
    /// Delete a waypoint (exits 1 if it does not exist, unless --ignore-not-found).
    Delete {
        #[command(flatten)]
        target: WaypointTarget,
        /// A waypoint that does not exist is not an error.
        #[arg(long)]
        ignore_not_found: bool,
    },
    /// List waypoints.
    List {
        /// Only this namespace (all when omitted).
        #[arg(short = 'n', long, conflicts_with = "all_namespaces")]
        namespace: Option<String>,
        /// Every namespace (the default; for kubectl habits).
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
}

/// Which waypoint.
#[derive(Debug, Args)]
pub struct WaypointTarget {
    /// Namespace of the waypoint.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// Name of the waypoint Gateway.
    #[arg(long, default_value = "waypoint")]
    pub name: String,
}

/// `istio.io/waypoint-for` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WaypointFor {
    /// Traffic addressed to services.
    Service,
    /// Traffic addressed to workloads.
    Workload,
    /// Both.
    All,
    /// Neither.
    None,
}

/// `ambit ztunnel-config`.
#[derive(Debug, Args)]
pub struct ZtunnelConfigArgs {
    /// What to show.
    pub resource: Resource,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Local mode: the ztunnel's admin address.
    #[arg(long, default_value = "127.0.0.1:15000", conflicts_with_all = ["node", "pod"])]
    pub admin: SocketAddr,
    /// Cluster: the ztunnel of this node (implies the cluster).
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// Cluster: the ztunnel of this pod's node, as NAMESPACE/NAME (implies the cluster).
    #[arg(long, value_name = "NAMESPACE/NAME", value_parser = parse_pod, conflicts_with = "node")]
    pub pod: Option<(String, String)>,
    /// Cluster: the namespace of the ztunnel pods.
    #[arg(long, default_value = crate::cluster::ztunnel::DEFAULT_NAMESPACE, value_name = "NAMESPACE")]
    pub ztunnel_namespace: String,
    /// How long to wait for the admin server (through the port-forward on a cluster), in
    /// seconds.
    #[arg(long, default_value = "5", value_parser = parse_seconds)]
    pub timeout: Duration,
}

/// `ambit install`.
#[derive(Debug, Args)]
pub struct InstallArgs {
    /// Print the manifests instead of applying them.
    #[arg(long)]
    pub dry_run: bool,
    /// Values file: each chart's values under its name (`ambit-controller: {...}`).
    #[arg(short = 'f', long = "values")]
    pub values: Option<PathBuf>,
    /// The charts directory (the repository's `charts/`).
    #[arg(long, default_value = "charts")]
    pub charts: PathBuf,
    /// Namespace to install into.
    #[arg(short = 'n', long, default_value = "ambit-system")]
    pub namespace: String,
}

/// `NAMESPACE/NAME`, both parts non-empty.
fn parse_pod(text: &str) -> Result<(String, String), String> {
    match text.split_once('/') {
        Some((namespace, name))
            if !namespace.is_empty() && !name.is_empty() && !name.contains('/') =>
        {
            Ok((namespace.to_owned(), name.to_owned()))
        }
        _ => Err(format!("give the pod as NAMESPACE/NAME, got {text:?}")),
    }
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !(seconds > 0.0 && seconds <= 3600.0) {
        return Err(format!("{text} is not between 0 and 3600 seconds"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_verb_of_issue_6_parses() {
        for line in [
            "ambit check --ports 15001,15080",
            "ambit local up --nodes 3",
            "ambit local apply -f e2e/samples/bookinfo.yaml -f more/",
            "ambit local delete -f x.yaml",
            "ambit local get pods -n bookinfo",
            "ambit local exec default/curl -- load get http://productpage:9080/ -n 10",
            "ambit local logs default/curl -f",
            "ambit local label ns default istio.io/dataplane-mode=ambient",
            "ambit local down",
            "ambit demo",
            "ambit waypoint apply -n bookinfo --for all --enroll-namespace",
            "ambit waypoint delete -n bookinfo --name waypoint",
            "ambit waypoint list",
            "ambit waypoint list -A",
            "ambit --cluster waypoint apply -n shop --wait --wait-timeout 30",
            "ambit waypoint delete --ignore-not-found --context prod",
            "ambit --kubeconfig /tmp/kc waypoint list -n shop",
            "ambit --local waypoint list",
            "ambit ztunnel-config workloads --node node-a",
            "ambit ztunnel-config certificates --pod default/curl --ztunnel-namespace mesh",
            "ambit ztunnel-config workloads -o json --admin 127.0.0.1:15000",
            "ambit ztunnel-config connections --timeout 0.5",
            "ambit install --dry-run -f values.yaml",
        ] {
            let parsed = Cli::try_parse_from(line.split_whitespace());
            assert!(parsed.is_ok(), "{line}: {}", parsed.unwrap_err());
        }
    }

    #[test]
    fn bad_flags_are_refused() {
        for line in [
            "ambit local up --nodes 0",
            "ambit local exec default/curl",
            "ambit waypoint apply --for everything",
            "ambit ztunnel-config pods",
            "ambit ztunnel-config workloads --timeout 0",
            "ambit ztunnel-config workloads --admin localhost",
            "ambit waypoint apply --wait-timeout 30",
            "ambit waypoint apply --wait --wait-timeout 0",
            "ambit waypoint list -A -n shop",
            "ambit --local --cluster waypoint list",
            "ambit --local --context prod waypoint list",
            "ambit ztunnel-config workloads --pod curl",
            "ambit ztunnel-config workloads --pod default/",
            "ambit ztunnel-config workloads --pod /curl",
            "ambit ztunnel-config workloads --pod a/b/c",
            "ambit ztunnel-config workloads --node a --pod default/curl",
            "ambit ztunnel-config workloads --node a --admin 127.0.0.1:15000",
        ] {
            assert!(
                Cli::try_parse_from(line.split_whitespace()).is_err(),
                "{line}"
            );
        }
    }

    #[test]
    fn the_pod_flag_is_split_and_target_flags_are_checked_per_verb() {
        let cli = Cli::try_parse_from(
            "ambit ztunnel-config workloads --pod default/curl".split_whitespace(),
        )
        .unwrap();
        let Command::ZtunnelConfig(args) = &cli.command else {
            panic!("{cli:?}");
        };
        assert_eq!(args.pod, Some(("default".to_owned(), "curl".to_owned())));
        assert_eq!(args.ztunnel_namespace, "ambit-system");
        assert!(!cli.target.any());
        assert!(cli.validate().is_ok());

        for line in [
            "ambit --cluster ztunnel-config workloads",
            "ambit --context prod waypoint list",
            "ambit --local ztunnel-config workloads",
        ] {
            let cli = Cli::try_parse_from(line.split_whitespace()).unwrap();
            assert!(cli.validate().is_ok(), "{line}");
        }
        for line in [
            "ambit --cluster local get pods",
            "ambit --kubeconfig x check",
            "ambit demo --context prod",
            "ambit --local install --dry-run",
            "ambit --local ztunnel-config workloads --node a",
        ] {
            let cli = Cli::try_parse_from(line.split_whitespace()).unwrap();
            assert!(cli.validate().is_err(), "{line}");
        }
    }
}
