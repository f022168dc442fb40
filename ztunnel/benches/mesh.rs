//! Mesh benchmark: the real `ztunnel` binary, one per node, in a two-node netns cluster (root).
//!
//! The same two pods (client `demo/a` on node a, server `demo/b` on node b) are measured twice in
//! one run, so the ratios compare like with like on a noisy machine:
//!
//! - direct: client pod → TCP → server pod (before the pods are enrolled)
//! - mesh:   client pod → ztunnel a (15001) → HBONE → ztunnel b (15008) → server pod
//!
//! Figures: single-stream and 4-stream bulk throughput, 64-byte ping-pong p50/p99, new
//! connections per second (connect + one round trip + close), and each ztunnel's RSS idle and
//! while 1000 idle connections are open through it. Run with
//! `cargo bench -p ambit-ztunnel --bench mesh` (add `-- --quick` for a short run); cargo builds
//! the release `ztunnel` binary for the bench.

#[path = "../tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use ambit_identity::{CaOptions, CertificateAuthority};
use ambit_localnet::Netns;
use anyhow::{Context, Result, bail, ensure};
use support::ztunnel::{Ztunnel, enroll, start_ztunnel_logging, workload_yaml};
use support::{Bed, app_connect, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The server pod's echo port (ping-pong, connection rate, held connections).
const ECHO_PORT: u16 = 7000;
/// The server pod's sink port: reads to EOF, then answers with the byte count.
const SINK_PORT: u16 = 7001;
const CHUNK: usize = 64 * 1024;
const MESSAGE: usize = 64;
const STREAMS: usize = 4;
const HELD_CONNECTIONS: usize = 1000;
const CONNECTION_BATCHES: usize = 5;
/// Upper bound for the whole run, so a hang never leaves the cluster behind.
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

/// How much work each measurement does.
struct Plan {
    bulk_time: Duration,
    bulk_runs: usize,
    round_trips: usize,
    warmup_round_trips: usize,
    connections: usize,
}

/// The figures for one path.
struct Figures {
    single_mib_s: f64,
    multi_mib_s: f64,
    p50: Duration,
    p99: Duration,
    connections_per_s: f64,
}

/// One ztunnel's memory and file descriptors at a moment.
#[derive(Clone, Copy)]
struct Usage {
    rss_kib: u64,
    fds: usize,
}

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                bulk_time: Duration::from_millis(500),
                bulk_runs: 1,
                round_trips: 2_000,
                warmup_round_trips: 200,
                connections: 300,
            }
        } else {
            Self {
                bulk_time: Duration::from_secs(2),
                bulk_runs: 3,
                round_trips: 20_000,
                warmup_round_trips: 2_000,
                connections: 2_000,
            }
        }
    }
}

/// VmRSS and open descriptors of a running ztunnel, from /proc.
fn usage(ztunnel: &Ztunnel) -> Result<Usage> {
    let pid = ztunnel.pid().context("ztunnel exited")?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmRSS in /proc/<pid>/status")?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count();
    Ok(Usage { rss_kib, fds })
}

fn main() -> Result<()> {
    let quick = std::env::args().any(|arg| arg == "--quick");
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "the mesh benchmark builds network namespaces and must run as root \
             (e.g. `sudo -E cargo bench -p ambit-ztunnel --bench mesh`)"
        );
    }
    let binary = Path::new(env!("CARGO_BIN_EXE_ztunnel"));
    if !binary.exists() {
        bail!(
            "ztunnel binary not found at {}; run `cargo build --release -p ambit-ztunnel` first",
            binary.display()
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let plan = Plan::new(quick);
        let bed = Bed::new("zt-bench").await?;
        let dir = std::env::temp_dir().join(format!("ambit-zt-bench-{}", bed.cluster.prefix()));
        let outcome = tokio::time::timeout(RUN_TIMEOUT, run(&bed, &dir, &plan))
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("benchmark timed out after {RUN_TIMEOUT:?}")));
        let _ = std::fs::remove_dir_all(&dir);
        let torn_down = bed.teardown().await;
        outcome.and(torn_down)
    })
}

/// Measures both paths and prints the table; ztunnels are killed when this returns.
async fn run(bed: &Bed, dir: &Path, plan: &Plan) -> Result<()> {
    let echo_addr = SocketAddr::from((bed.b.ip(), ECHO_PORT));
    let sink_addr = SocketAddr::from((bed.b.ip(), SINK_PORT));
    let echo = bed.b.netns().bind_tcp(echo_addr)?;
    let sink = bed.b.netns().bind_tcp(sink_addr)?;
    let _servers = (
        tokio::spawn(serve(echo, echo_connection)),
        tokio::spawn(serve(sink, sink_connection)),
    );
    let client = bed.a.netns();

    eprintln!("measuring direct pod → pod ...");
    let direct = measure(client, echo_addr, sink_addr, plan).await?;

    std::fs::create_dir_all(dir)?;
    let ca = CertificateAuthority::generate("cluster.local", CaOptions::default())?;
    ambit_ztunnel::certs::write_ca(&ca, &dir.join("ca"))?;
    let mut yaml = String::from("workloads:\n");
    yaml.push_str(&workload_yaml(&bed.a, "uid-a"));
    yaml.push_str(&workload_yaml(&bed.b, "uid-b"));
    std::fs::write(dir.join("config.yaml"), yaml)?;
    let node_a = bed.cluster.node("a").context("node a")?;
    let node_b = bed.cluster.node("b").context("node b")?;
    // Per-connection logging would be measured too; keep only warnings.
    let zt_a = start_ztunnel_logging(&node_a, dir, "warn").await?;
    let zt_b = start_ztunnel_logging(&node_b, dir, "warn").await?;
    enroll(&zt_a, &bed.a, "uid-a").await?;
    enroll(&zt_b, &bed.b, "uid-b").await?;
    let idle = (usage(&zt_a)?, usage(&zt_b)?);

    eprintln!("measuring through the mesh ...");
    let mesh = measure(client, echo_addr, sink_addr, plan).await?;

    eprintln!("holding {HELD_CONNECTIONS} connections ...");
    let held = hold_connections(client, echo_addr, HELD_CONNECTIONS).await?;
    let loaded = (usage(&zt_a)?, usage(&zt_b)?);
    // Each held connection has a socket in both ztunnels: proof the traffic went through them.
    for (name, before, after) in [("a", idle.0, loaded.0), ("b", idle.1, loaded.1)] {
        ensure!(
            after.fds >= before.fds + HELD_CONNECTIONS,
            "ztunnel {name} holds {} descriptors with {HELD_CONNECTIONS} connections open \
             (idle: {}): the traffic is not going through it",
            after.fds,
            before.fds
        );
    }
    drop(held);

    print_table(&direct, &mesh, idle, loaded, plan);
    Ok(())
}

async fn measure(
    client: &Netns,
    echo: SocketAddr,
    sink: SocketAddr,
    plan: &Plan,
) -> Result<Figures> {
    let mut single = Vec::new();
    let mut multi = Vec::new();
    for _ in 0..plan.bulk_runs {
        single.push(throughput(client, sink, 1, plan.bulk_time).await?);
        multi.push(throughput(client, sink, STREAMS, plan.bulk_time).await?);
    }
    let (p50, p99) = ping_pong(client, echo, plan).await?;
    let connections_per_s = connection_rate(client, echo, plan.connections).await?;
    Ok(Figures {
        single_mib_s: median(&mut single),
        multi_mib_s: median(&mut multi),
        p50,
        p99,
        connections_per_s,
    })
}

/// Aggregate MiB/s of `streams` connections each writing for `duration`, counted by the sink.
async fn throughput(
    client: &Netns,
    sink: SocketAddr,
    streams: usize,
    duration: Duration,
) -> Result<f64> {
    let mut connections = Vec::with_capacity(streams);
    for _ in 0..streams {
        connections.push(connect(client, sink).await?);
    }
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = connections
        .into_iter()
        .map(|stream| tokio::spawn(send_until(stream, deadline)))
        .collect();
    let mut total = 0;
    for task in tasks {
        total += task.await??;
    }
    let elapsed = start.elapsed().as_secs_f64();
    Ok(total as f64 / elapsed / (1024.0 * 1024.0))
}

/// Writes until `deadline`, half-closes, and returns the byte count the sink acknowledges.
async fn send_until(mut stream: TcpStream, deadline: Instant) -> Result<u64> {
    let chunk = vec![0x5a; CHUNK];
    let mut sent = 0u64;
    while Instant::now() < deadline {
        within("bulk write", stream.write_all(&chunk)).await??;
        sent += CHUNK as u64;
    }
    stream.shutdown().await?;
    let mut ack = [0; 8];
    within("sink acknowledgement", stream.read_exact(&mut ack)).await??;
    let received = u64::from_be_bytes(ack);
    ensure!(received == sent, "sink received {received} of {sent} bytes");
    Ok(received)
}

/// p50 and p99 of 64-byte round trips on one connection.
async fn ping_pong(client: &Netns, echo: SocketAddr, plan: &Plan) -> Result<(Duration, Duration)> {
    let mut stream = connect(client, echo).await?;
    let message = [0x42; MESSAGE];
    let mut reply = [0; MESSAGE];
    let mut samples = Vec::with_capacity(plan.round_trips);
    for round in 0..plan.warmup_round_trips + plan.round_trips {
        let start = Instant::now();
        stream.write_all(&message).await?;
        within("echo", stream.read_exact(&mut reply)).await??;
        if round >= plan.warmup_round_trips {
            samples.push(start.elapsed());
        }
    }
    ensure!(reply == message, "echo corrupted the message");
    samples.sort_unstable();
    Ok((percentile(&samples, 50), percentile(&samples, 99)))
}

/// Sequential connections per second (connect, one 64-byte round trip, close): the median of
/// [`CONNECTION_BATCHES`] batches, so one burst of load from elsewhere does not set the figure.
async fn connection_rate(client: &Netns, echo: SocketAddr, count: usize) -> Result<f64> {
    let message = [0x17; MESSAGE];
    let batch = count.div_ceil(CONNECTION_BATCHES);
    let mut rates = Vec::with_capacity(CONNECTION_BATCHES);
    for _ in 0..CONNECTION_BATCHES {
        let start = Instant::now();
        for _ in 0..batch {
            let mut stream = connect(client, echo).await?;
            stream.write_all(&message).await?;
            let mut reply = [0; MESSAGE];
            within("echo", stream.read_exact(&mut reply)).await??;
            ensure!(reply == message, "echo corrupted the message");
        }
        rates.push(batch as f64 / start.elapsed().as_secs_f64());
    }
    Ok(median(&mut rates))
}

/// Opens `count` connections, each proven end to end by one round trip, and keeps them open.
async fn hold_connections(
    client: &Netns,
    echo: SocketAddr,
    count: usize,
) -> Result<Vec<TcpStream>> {
    let mut held = Vec::with_capacity(count);
    for _ in 0..count {
        let mut stream = connect(client, echo).await?;
        stream.write_all(b"x").await?;
        let mut reply = [0; 1];
        within("echo", stream.read_exact(&mut reply)).await??;
        held.push(stream);
    }
    Ok(held)
}

async fn connect(client: &Netns, to: SocketAddr) -> Result<TcpStream> {
    let stream = app_connect(client, to)
        .await
        .with_context(|| format!("connecting to {to}"))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Accepts forever, running `handle` on each connection.
async fn serve<F, Fut>(listener: TcpListener, handle: F)
where
    F: Fn(TcpStream) -> Fut,
    Fut: std::future::Future<Output = std::io::Result<()>> + Send + 'static,
{
    while let Ok((stream, _)) = listener.accept().await {
        let _ = stream.set_nodelay(true);
        tokio::spawn(handle(stream));
    }
}

async fn echo_connection(mut stream: TcpStream) -> std::io::Result<()> {
    let mut buf = vec![0; CHUNK];
    loop {
        let read = stream.read(&mut buf).await?;
        if read == 0 {
            return Ok(());
        }
        stream.write_all(&buf[..read]).await?;
    }
}

async fn sink_connection(mut stream: TcpStream) -> std::io::Result<()> {
    let mut buf = vec![0; CHUNK];
    let mut total = 0u64;
    loop {
        let read = stream.read(&mut buf).await?;
        if read == 0 {
            break;
        }
        total += read as u64;
    }
    stream.write_all(&total.to_be_bytes()).await
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_unstable_by(f64::total_cmp);
    values[values.len() / 2]
}

fn percentile(sorted: &[Duration], pct: usize) -> Duration {
    let index = (sorted.len() * pct / 100).min(sorted.len() - 1);
    sorted[index]
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn print_table(
    direct: &Figures,
    mesh: &Figures,
    idle: (Usage, Usage),
    loaded: (Usage, Usage),
    plan: &Plan,
) {
    println!();
    println!(
        "ztunnel mesh benchmark ({} s bulk runs × {}, {} round trips, {} connections)",
        plan.bulk_time.as_secs_f64(),
        plan.bulk_runs,
        plan.round_trips,
        plan.connections
    );
    println!();
    println!("| metric | direct | mesh | mesh / direct |");
    println!("|---|---:|---:|---:|");
    let row = |name: &str, direct: f64, mesh: f64, unit: &str| {
        println!(
            "| {name} | {direct:.1} {unit} | {mesh:.1} {unit} | {:.2} |",
            mesh / direct
        );
    };
    row(
        "1-stream throughput",
        direct.single_mib_s,
        mesh.single_mib_s,
        "MiB/s",
    );
    row(
        "4-stream throughput",
        direct.multi_mib_s,
        mesh.multi_mib_s,
        "MiB/s",
    );
    row(
        "64 B ping-pong p50",
        micros(direct.p50),
        micros(mesh.p50),
        "µs",
    );
    row(
        "64 B ping-pong p99",
        micros(direct.p99),
        micros(mesh.p99),
        "µs",
    );
    row(
        "new connections",
        direct.connections_per_s,
        mesh.connections_per_s,
        "/s",
    );
    println!();
    println!(
        "added p50 latency: {:.1} µs (p99: {:.1} µs)",
        micros(mesh.p50) - micros(direct.p50),
        micros(mesh.p99) - micros(direct.p99)
    );
    println!();
    println!("| ztunnel RSS | idle | {HELD_CONNECTIONS} open connections |");
    println!("|---|---:|---:|");
    for (name, idle, loaded) in [
        ("a (client node)", idle.0, loaded.0),
        ("b (server node)", idle.1, loaded.1),
    ] {
        println!(
            "| {name} | {:.1} MiB | {:.1} MiB |",
            mib(idle.rss_kib),
            mib(loaded.rss_kib)
        );
    }
}
