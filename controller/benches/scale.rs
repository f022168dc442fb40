//! Controller scale benchmark: a synthetic cluster (10 000 pods on 100 nodes, 1 000 services,
//! 500 authorization policies; `--quick` divides everything by 10).
//!
//! Measures, and prints as a table:
//! - parsing the YAML folder and the full translation, in this process;
//! - building every node's scope snapshot and the bytes one node's ztunnel receives;
//! - the real `ambit-controller` binary watching that folder with 100 simulated ztunnels
//!   subscribed (one gRPC stream each, node scope): the time from rewriting one pod's file to
//!   the moment the *last* ztunnel holds the change, over several rounds;
//! - the controller's RSS (now and peak) with every client connected.
//!
//! The one-pod latency includes the controller's quiet period (`--debounce-ms`, 100 ms by
//! default), which is there on purpose; the table shows it separately. There is no same-run
//! baseline that means anything for a control plane, so figures are absolute, next to the
//! goals of issue #5 (< 1 s to all ztunnels, RSS < 200 MB).
//!
//! Run: `cargo bench -p ambit-controller --bench scale [-- --quick]`.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ambit_api::ScopeKey;
use ambit_api::client::{ConfigClient, ConfigClientOptions, ControllerEndpoint};
use ambit_controller::local::load_dir;
use ambit_controller::scopes;
use ambit_controller::translate::{TranslateOptions, translate};
use anyhow::{Context, bail};

const DEBOUNCE_MS: u64 = 100;
const ROUNDS: usize = 5;

#[derive(Debug, Clone, Copy)]
struct Size {
    pods: usize,
    services: usize,
    nodes: usize,
    policies: usize,
    namespaces: usize,
}

fn main() -> anyhow::Result<()> {
    let quick = std::env::args().any(|arg| arg == "--quick");
    let size = if quick {
        Size {
            pods: 1_000,
            services: 100,
            nodes: 10,
            policies: 50,
            namespaces: 10,
        }
    } else {
        Size {
            pods: 10_000,
            services: 1_000,
            nodes: 100,
            policies: 500,
            namespaces: 50,
        }
    };
    let dir = tempfile::tempdir()?;
    let config_dir = dir.path().join("config");
    std::fs::create_dir(&config_dir)?;
    write_cluster(&config_dir, size)?;

    let mut table = Table::default();
    table.row(
        "synthetic cluster",
        format!(
            "{} pods, {} services, {} nodes, {} policies, {} namespaces",
            size.pods, size.services, size.nodes, size.policies, size.namespaces
        ),
    );

    // In process: parse, translate, build scopes.
    let started = Instant::now();
    let snapshot = load_dir(&config_dir);
    table.row("parse the YAML folder", format_duration(started.elapsed()));
    if !snapshot.errors.is_empty() {
        bail!("the synthetic cluster has errors: {:?}", snapshot.errors[0]);
    }
    let options = TranslateOptions::default();
    let started = Instant::now();
    let (config, errors) = translate(&snapshot.resources, &options);
    table.row("full translation", format_duration(started.elapsed()));
    if !errors.is_empty() {
        bail!("translation errors: {:?}", errors[0]);
    }
    if config.workloads.len() != size.pods {
        bail!(
            "{} workloads translated, expected {}",
            config.workloads.len(),
            size.pods
        );
    }
    let nodes = scopes::nodes_of(&config);
    let started = Instant::now();
    let built = scopes::build(&config, &nodes)?;
    table.row(
        "scope snapshots (every node)",
        format_duration(started.elapsed()),
    );
    let one_node = built
        .get(&ScopeKey::node("node-0"))
        .context("no scope for node-0")?;
    table.row(
        "bytes to one node's ztunnel (full sync)",
        format!(
            "{} in {} resources",
            format_bytes(one_node.payload_bytes()),
            one_node.len()
        ),
    );

    // The real binary, with a simulated ztunnel per node.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(against_the_binary(
        dir.path(),
        &config_dir,
        &nodes,
        size,
        &mut table,
    ))?;
    print!("{}", table.render());
    Ok(())
}

async fn against_the_binary(
    state: &Path,
    config_dir: &Path,
    nodes: &BTreeSet<String>,
    size: Size,
    table: &mut Table,
) -> anyhow::Result<()> {
    let ready_file = state.join("ready.json");
    let started = Instant::now();
    // The controller serves each node's scope only to that node's token.
    let tokens_file = state.join("tokens.yaml");
    let tokens: String = std::iter::once("nodes:\n".to_owned())
        .chain(
            nodes
                .iter()
                .map(|node| format!("  {node}: {}\n", bench_token(node))),
        )
        .collect();
    std::fs::write(&tokens_file, tokens).context("writing the token file")?;
    let controller = Controller::start(state, config_dir, &ready_file, &tokens_file)?;
    let bound = wait_for_ready_file(&ready_file, Duration::from_secs(120)).await?;
    let endpoint = ControllerEndpoint::tls(
        format!("https://{}", bound.grpc).parse()?,
        state.join("state").join("ca").join("root-cert.pem"),
        None,
    )?;
    // The ready file comes before the first translation; readiness waits for it.
    wait_until_ready(&bound.readiness, Duration::from_secs(120)).await?;
    let (rss, _) = controller.memory()?;
    table.row(
        "controller RSS, config translated, no client",
        format_bytes(rss),
    );

    let clients: Vec<ConfigClient> = nodes
        .iter()
        .map(|node| {
            let options =
                ConfigClientOptions::new(format!("bench/{node}")).with_token(&bench_token(node))?;
            Ok(ConfigClient::start(
                endpoint.clone(),
                ScopeKey::node(node),
                options,
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    for client in &clients {
        let mut config = client.config();
        tokio::time::timeout(
            Duration::from_secs(120),
            config.wait_for(|view| view.is_synced()),
        )
        .await
        .context("a simulated ztunnel got no config within 120 s")??;
    }
    table.row(
        format!("start → {} ztunnels in sync", clients.len()),
        format_duration(started.elapsed()),
    );
    let (rss, peak) = controller.memory()?;
    table.row(
        "controller RSS, all clients synced (now / peak)",
        format!("{} / {}", format_bytes(rss), format_bytes(peak)),
    );

    // One pod changes: its labels gain `round: N`. Every node scope carries every workload,
    // so every ztunnel must see it.
    let mut latencies = Vec::new();
    for round in 1..=ROUNDS {
        let marker = format!("r{round}");
        let waiting: Vec<_> = clients
            .iter()
            .map(|client| {
                let mut config = client.config();
                let marker = marker.clone();
                tokio::spawn(async move {
                    config
                        .wait_for(|view| {
                            view.workloads().any(|workload| {
                                workload.name() == "pod-0"
                                    && workload.labels().get("round") == Some(&marker)
                            })
                        })
                        .await
                        .map(|_| Instant::now())
                })
            })
            .collect();
        let changed = Instant::now();
        write_pod_file(config_dir, 0, size, &marker)?;
        let mut last = changed;
        for task in waiting {
            let seen = tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .context("a ztunnel did not see the change within 30 s")???;
            last = last.max(seen);
        }
        latencies.push(last - changed);
    }
    latencies.sort();
    table.row(
        format!(
            "one-pod change → all {} ztunnels (median of {ROUNDS}, min–max)",
            clients.len()
        ),
        format!(
            "{} ({}–{}), of which {DEBOUNCE_MS} ms debounce",
            format_duration(latencies[ROUNDS / 2]),
            format_duration(latencies[0]),
            format_duration(latencies[ROUNDS - 1])
        ),
    );
    let (rss, peak) = controller.memory()?;
    table.row(
        "controller RSS after the changes (now / peak)",
        format!("{} / {}", format_bytes(rss), format_bytes(peak)),
    );
    drop(clients);
    Ok(())
}

/// The controller process; killed on drop.
struct Controller {
    child: Child,
}

/// The bootstrap token of `node` (16 characters at least, as the controller requires).
fn bench_token(node: &str) -> String {
    format!("bench-token-0123-{node}")
}

impl Controller {
    fn start(
        state: &Path,
        config_dir: &Path,
        ready_file: &Path,
        tokens_file: &Path,
    ) -> anyhow::Result<Self> {
        let binary = env!("CARGO_BIN_EXE_ambit-controller");
        // The controller logs to stdout; shown only when asked for, beside the table.
        let (log_level, log_output) = match std::env::var("AMBIT_BENCH_LOG") {
            Ok(level) => (level, Stdio::inherit()),
            Err(_) => ("warn".to_owned(), Stdio::null()),
        };
        let child = Command::new(binary)
            .arg("--config-dir")
            .arg(config_dir)
            .arg("--state-dir")
            .arg(state.join("state"))
            .args(["--grpc-addr", "127.0.0.1:0", "--grpc-ip-san", "127.0.0.1"])
            .args(["--metrics-addr", "127.0.0.1:0"])
            .args(["--readiness-addr", "127.0.0.1:0"])
            .args(["--debounce-ms", &DEBOUNCE_MS.to_string()])
            .arg("--ready-file")
            .arg(ready_file)
            .arg("--node-tokens")
            .arg(tokens_file)
            .env("RUST_LOG", log_level)
            .stdout(log_output)
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {binary}"))?;
        Ok(Self { child })
    }

    /// `VmRSS` and `VmHWM` (peak) of the process, in bytes.
    fn memory(&self) -> anyhow::Result<(usize, usize)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let field = |name: &str| -> anyhow::Result<usize> {
            let line = status
                .lines()
                .find(|line| line.starts_with(name))
                .with_context(|| format!("no {name} in /proc/PID/status"))?;
            let kib: usize = line
                .split_whitespace()
                .nth(1)
                .context("malformed /proc/PID/status")?
                .parse()?;
            Ok(kib * 1024)
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Bound {
    grpc: String,
    readiness: String,
}

async fn wait_for_ready_file(path: &Path, limit: Duration) -> anyhow::Result<Bound> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            let ready: serde_json::Value = serde_json::from_str(&text)?;
            let address = |name: &str| {
                ready[name]
                    .as_str()
                    .map(str::to_owned)
                    .with_context(|| format!("no {name} address in the ready file"))
            };
            return Ok(Bound {
                grpc: address("grpc")?,
                readiness: address("readiness")?,
            });
        }
        if Instant::now() > deadline {
            bail!("the controller did not start within {limit:?}");
        }
        // The ready file is written once; polling a file is the only signal we get.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `/healthz/ready` until it answers 200 (after the first published translation).
async fn wait_until_ready(addr: &str, limit: Duration) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await {
            stream
                .write_all(b"GET /healthz/ready HTTP/1.0\r\nhost: bench\r\n\r\n")
                .await?;
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).await?;
            if answer.starts_with(b"HTTP/1.0 200") || answer.starts_with(b"HTTP/1.1 200") {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("the controller was not ready within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn write_cluster(dir: &Path, size: Size) -> anyhow::Result<()> {
    let mut text = String::new();
    for ns in 0..size.namespaces {
        writeln!(
            text,
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: ns-{ns}, labels: {{istio.io/dataplane-mode: ambient}}}}\n---"
        )?;
        writeln!(
            text,
            "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: sa, namespace: ns-{ns}}}\n---"
        )?;
    }
    std::fs::write(dir.join("00-namespaces.yaml"), &text)?;

    // Pod 0 lives alone in its file: the change rounds rewrite it.
    write_pod_file(dir, 0, size, "r0")?;
    let mut text = String::new();
    for pod in 1..size.pods {
        text.push_str(&pod_yaml(pod, size, None));
        text.push_str("---\n");
    }
    std::fs::write(dir.join("10-pods.yaml"), &text)?;

    let mut text = String::new();
    for service in 0..size.services {
        let ns = service % size.namespaces;
        let a = 96 + service / 65_536;
        let b = (service / 256) % 256;
        let c = service % 256;
        writeln!(
            text,
            "apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{service}, namespace: ns-{ns}}}\n\
             spec:\n  clusterIP: 10.{a}.{b}.{c}\n  selector: {{app: app-{service}}}\n  \
             ports: [{{name: http, port: 80, targetPort: 8080}}]\n---"
        )?;
    }
    std::fs::write(dir.join("20-services.yaml"), &text)?;

    let mut text = String::new();
    for policy in 0..size.policies {
        let service = policy % size.services;
        let ns = service % size.namespaces;
        let other = (ns + 1) % size.namespaces;
        writeln!(
            text,
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
             metadata: {{name: allow-{policy}, namespace: ns-{ns}}}\n\
             spec:\n  selector: {{matchLabels: {{app: app-{service}}}}}\n  action: ALLOW\n  \
             rules:\n  - from: [{{source: {{principals: [cluster.local/ns/ns-{other}/sa/sa]}}}}]\n    \
             to: [{{operation: {{ports: [\"8080\"]}}}}]\n---"
        )?;
    }
    std::fs::write(dir.join("30-policies.yaml"), &text)?;
    Ok(())
}

/// Pod `index`: service `index % services` (so pods spread over every service), namespace of
/// that service, node `index % nodes`.
fn pod_yaml(index: usize, size: Size, round: Option<&str>) -> String {
    let service = index % size.services;
    let ns = service % size.namespaces;
    let node = index % size.nodes;
    let ip = format!(
        "10.{}.{}.{}",
        1 + index / 65_536,
        (index / 256) % 256,
        index % 256
    );
    let round = round.map_or(String::new(), |round| format!(", round: {round}"));
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: pod-{index}, namespace: ns-{ns}, uid: uid-{index}, \
         labels: {{app: app-{service}{round}}}}}\n\
         spec:\n  nodeName: node-{node}\n  serviceAccountName: sa\n  \
         containers: [{{name: app, image: app, ports: [{{containerPort: 8080}}]}}]\n\
         status: {{phase: Running, podIP: {ip}}}\n"
    )
}

fn write_pod_file(dir: &Path, index: usize, size: Size, round: &str) -> anyhow::Result<()> {
    let path: PathBuf = dir.join(format!("05-pod-{index}.yaml"));
    // Write then rename: the watcher must never read half a file.
    let temporary = dir.join(format!(".pod-{index}.tmp"));
    std::fs::write(&temporary, pod_yaml(index, size, Some(round)))?;
    std::fs::rename(&temporary, &path)?;
    Ok(())
}

#[derive(Default)]
struct Table {
    rows: Vec<(String, String)>,
}

impl Table {
    fn row(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.rows.push((name.into(), value.into()));
    }

    fn render(&self) -> String {
        let width = self
            .rows
            .iter()
            .map(|(name, _)| name.len())
            .max()
            .unwrap_or(0);
        let mut out = String::from("\nambit-controller scale benchmark\n");
        for (name, value) in &self.rows {
            let _ = writeln!(out, "  {name:<width$}  {value}");
        }
        out
    }
}

fn format_duration(duration: Duration) -> String {
    if duration < Duration::from_millis(10) {
        format!("{:.2} ms", duration.as_secs_f64() * 1000.0)
    } else if duration < Duration::from_secs(10) {
        format!("{:.0} ms", duration.as_secs_f64() * 1000.0)
    } else {
        format!("{:.1} s", duration.as_secs_f64())
    }
}

fn format_bytes(bytes: usize) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}
