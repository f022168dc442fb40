//! Waypoint request benchmark: the real `waypoint` binary (HBONE in, HBONE out) against the
//! upstream reached directly and against nginx as a TLS reverse proxy, in the same run so
//! the ratios compare like with like on a noisy machine.
//!
//! - direct:   load generator → TCP → echo upstream (h1 or h2c)
//! - waypoint: load generator → HBONE (mTLS, h2 CONNECT) → waypoint → HBONE → bench ztunnel →
//!   upstream
//! - nginx:    load generator → TLS (h1 or h2) → nginx → TLS (mTLS, kept alive) → bench TLS
//!   terminator → upstream
//!
//! Both proxies therefore do TLS on both sides, and the hop after them (bench ztunnel or TLS
//! terminator) runs in this process. Figures per protocol at a fixed concurrency: requests/s,
//! p50 and p99 latency; then the waypoint's RSS idle and its peak under load. nginx comes from
//! the Debian package (`/usr/sbin/nginx`); without it its column says so. Run with
//! `cargo bench -p ambit-waypoint --bench proxy` (add `-- --quick` for a short run).

#[path = "../tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ambit_hbone::{
    ByteCounters, ConnectRequest, InboundRequest, Pool, PoolConfig, Responder, Server,
    ServerConfig, Target,
};
use ambit_identity::tls::FixedCertificate;
use ambit_identity::{CaOptions, CertificateAuthority, SpiffeId, TrustBundle};
use anyhow::{Context, Result, bail};
use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{PrivateKeyDer, ServerName};
use serde_json::json;
use support::{Behavior, Upstream, id};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Requests in flight at any time, for every path.
const CONCURRENCY: usize = 32;
/// h2 streams per connection (h1: one request per connection at a time).
const H2_STREAMS_PER_CONNECTION: usize = 8;
const SERVICE_VIP: &str = "10.96.0.10";
const NGINX: &str = "/usr/sbin/nginx";
/// Upper bound for the whole run, so a hang never leaves processes behind.
const RUN_TIMEOUT: Duration = Duration::from_secs(300);
/// `/proc` CPU times are in clock ticks of 10 ms (USER_HZ = 100 on Linux).
const MICROS_PER_TICK: f64 = 10_000.0;

/// How long each measurement runs.
struct Plan {
    warmup: Duration,
    measure: Duration,
}

/// Where the load goes.
enum Via {
    Direct(SocketAddr),
    Waypoint {
        pool: Pool,
        waypoint: SocketAddr,
    },
    Nginx {
        addr: SocketAddr,
        tls: Arc<rustls::ClientConfig>,
    },
}

/// One connection's request sender.
#[derive(Clone)]
enum Sender {
    H1(Arc<tokio::sync::Mutex<http1::SendRequest<Empty<Bytes>>>>),
    H2(http2::SendRequest<Empty<Bytes>>),
}

/// The figures of one path and protocol.
#[derive(Clone, Copy)]
struct Figures {
    requests_per_s: f64,
    /// CPU time the proxy's processes spent per request (user + system), if measured.
    cpu_us_per_request: Option<f64>,
    p50: Duration,
    p99: Duration,
}

/// A child process stopped on drop: by `stop` if given (nginx's master must stop its
/// workers, which a kill would orphan), else killed.
struct Process {
    child: Child,
    stop: Option<Command>,
}

fn main() -> Result<()> {
    let quick = std::env::args().any(|arg| arg == "--quick");
    let plan = if quick {
        Plan {
            warmup: Duration::from_millis(300),
            measure: Duration::from_secs(1),
        }
    } else {
        Plan {
            warmup: Duration::from_secs(1),
            measure: Duration::from_secs(4),
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let dir = std::env::temp_dir().join(format!("ambit-waypoint-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = runtime.block_on(async {
        tokio::time::timeout(RUN_TIMEOUT, run(&dir, &plan))
            .await
            .context("the benchmark timed out")?
    });
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run(dir: &Path, plan: &Plan) -> Result<()> {
    let ca = Arc::new(CertificateAuthority::generate(
        "cluster.local",
        CaOptions::default(),
    )?);
    let bundle = ca.trust_bundle()?;
    let upstream = Upstream::start("echo", Behavior::Echo).await;
    let ztunnel = start_ztunnel(&ca, &bundle).await?;
    let (waypoint, waypoint_addr) = start_waypoint(dir, &ca, ztunnel, upstream.addr.port()).await?;
    let nginx = match Path::new(NGINX).exists() {
        true => Some(start_nginx(dir, &ca, &bundle, upstream.addr).await?),
        false => None,
    };
    let idle_rss = rss_kib(waypoint.child.id())?;

    let client_tls = {
        let (ca, bundle) = (ca.clone(), bundle.clone());
        move |source: &SpiffeId, expected: &[SpiffeId]| {
            let cert = ca.issue_workload(source, Duration::from_secs(3600))?;
            let config = ambit_identity::tls::client_config(
                Arc::new(FixedCertificate(Arc::new(cert))),
                &bundle,
                expected.to_vec(),
            )?;
            Ok(config)
        }
    };
    let pool = Pool::new(Arc::new(client_tls), PoolConfig::default());
    let mut rows = Vec::new();
    let mut peak_rss = 0;
    for h2 in [false, true] {
        let direct = load(&Via::Direct(upstream.addr), h2, plan, None).await?;
        let sampler = RssSampler::start(waypoint.child.id());
        let through_waypoint = load(
            &Via::Waypoint {
                pool: pool.clone(),
                waypoint: waypoint_addr,
            },
            h2,
            plan,
            Some(waypoint.child.id()),
        )
        .await?;
        peak_rss = peak_rss.max(sampler.stop().await);
        let through_nginx = match &nginx {
            Some((process, addr, tls)) => Some(
                load(
                    &Via::Nginx {
                        addr: *addr,
                        tls: tls.clone(),
                    },
                    h2,
                    plan,
                    Some(process.child.id()),
                )
                .await?,
            ),
            None => None,
        };
        rows.push((h2, direct, through_waypoint, through_nginx));
    }
    print_table(&rows, idle_rss, peak_rss, nginx.is_some());
    drop(nginx);
    drop(waypoint);
    Ok(())
}

// ─── Setup ─────────────────────────────────────────────────────────────────────────────────

fn certificate(ca: &CertificateAuthority, sa: &str) -> Result<Arc<FixedCertificate>> {
    Ok(Arc::new(FixedCertificate(Arc::new(
        ca.issue_workload(&id(sa), Duration::from_secs(3600))?,
    ))))
}

/// An HBONE server forwarding each tunnel to 127.0.0.1 at the target's port.
async fn start_ztunnel(ca: &CertificateAuthority, bundle: &TrustBundle) -> Result<SocketAddr> {
    let tls = ambit_identity::tls::server_config(certificate(ca, "backend")?, bundle)?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = Server::new(tls, forward_to_target, ServerConfig::default());
    tokio::spawn(async move {
        server
            .serve(listener, ambit_hbone::DrainSignal::never())
            .await
    });
    Ok(addr)
}

async fn forward_to_target(request: InboundRequest, responder: Responder) {
    let Target::Socket(addr) = request.target().clone() else {
        responder.reject(StatusCode::BAD_REQUEST);
        return;
    };
    let local = SocketAddr::from(([127, 0, 0, 1], addr.port()));
    match TcpStream::connect(local).await {
        Ok(mut tcp) => {
            let _ = tcp.set_nodelay(true);
            let Ok(mut stream) = responder.accept(HeaderMap::new()) else {
                return;
            };
            let _ =
                ambit_hbone::copy_bidirectional(&mut stream, &mut tcp, &ByteCounters::default())
                    .await;
        }
        Err(_) => responder.reject(StatusCode::SERVICE_UNAVAILABLE),
    }
}

/// The release `waypoint` binary with a config naming one service on the upstream's port.
async fn start_waypoint(
    dir: &Path,
    ca: &CertificateAuthority,
    ztunnel: SocketAddr,
    upstream_port: u16,
) -> Result<(Process, SocketAddr)> {
    let ca_dir = dir.join("cacerts");
    std::fs::create_dir_all(&ca_dir)?;
    let material = ca.to_material();
    std::fs::write(ca_dir.join("root-cert.pem"), &material.root_cert)?;
    std::fs::write(ca_dir.join("ca-cert.pem"), &material.signing_cert)?;
    std::fs::write(ca_dir.join("ca-key.pem"), &material.signing_key)?;
    if let Some(chain) = &material.cert_chain {
        std::fs::write(ca_dir.join("cert-chain.pem"), chain)?;
    }
    let config = json!({
        "waypoint": { "name": "waypoint", "namespace": "test" },
        "endpointHbonePort": ztunnel.port(),
        "services": [support::service("cart", SERVICE_VIP, &[(Some("http"), 80, upstream_port)], &["cart-1"])],
        "workloads": [support::workload("cart-1")],
    });
    let config_path = dir.join("waypoint.yaml");
    std::fs::write(&config_path, config.to_string())?;
    let listen = free_port().await?;
    let child = Command::new(env!("CARGO_BIN_EXE_waypoint"))
        .arg("--config")
        .arg(&config_path)
        .args(["--identity", "spiffe://cluster.local/ns/test/sa/waypoint"])
        .arg("--ca-dir")
        .arg(&ca_dir)
        .args(["--listen", &listen.to_string()])
        .args(["--admin-addr", "127.0.0.1:0"])
        .args(["--metrics-addr", "127.0.0.1:0"])
        .args(["--readiness-addr", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .context("starting the waypoint binary")?;
    let process = Process { child, stop: None };
    wait_for_listener(listen).await?;
    Ok((process, listen))
}

/// nginx (TLS listener, h1 and h2) proxying over kept-alive mTLS to a TLS terminator in front
/// of the upstream.
async fn start_nginx(
    dir: &Path,
    ca: &CertificateAuthority,
    bundle: &TrustBundle,
    upstream: SocketAddr,
) -> Result<(Process, SocketAddr, Arc<rustls::ClientConfig>)> {
    let terminator = start_tls_terminator(ca, bundle, upstream).await?;
    let nginx_cert = ca.issue_workload(&id("nginx"), Duration::from_secs(3600))?;
    let cert_path = dir.join("nginx-cert.pem");
    let key_path = dir.join("nginx-key.pem");
    let root_path = dir.join("root-cert.pem");
    std::fs::write(&cert_path, nginx_cert.chain_pem())?;
    std::fs::write(&key_path, key_pem(nginx_cert.private_key())?)?;
    std::fs::write(&root_path, ca.root_pem())?;
    let listen = free_port().await?;
    let d = dir.display();
    let conf = format!(
        r#"daemon off;
worker_processes 2;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    # The load generator keeps its connections for the whole run.
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    upstream backend {{ server {terminator}; keepalive 64; keepalive_requests 100000000; }}
    server {{
        listen {listen} ssl http2;
        ssl_protocols TLSv1.3;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{
            proxy_pass https://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_ssl_protocols TLSv1.3;
            proxy_ssl_certificate {cert};
            proxy_ssl_certificate_key {key};
            proxy_ssl_session_reuse on;
            proxy_ssl_verify off;
        }}
    }}
}}
"#,
        cert = cert_path.display(),
        key = key_path.display(),
    );
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf)?;
    let child = Command::new(NGINX)
        .arg("-c")
        .arg(&conf_path)
        .arg("-e")
        .arg(dir.join("nginx-error.log"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting nginx")?;
    let mut stop = Command::new(NGINX);
    stop.arg("-c")
        .arg(&conf_path)
        .arg("-e")
        .arg(dir.join("nginx-error.log"))
        .args(["-s", "stop"]);
    stop.stdout(Stdio::null()).stderr(Stdio::null());
    let process = Process {
        child,
        stop: Some(stop),
    };
    wait_for_listener(listen).await?;
    let mut tls = (*ambit_identity::tls::client_config(
        certificate(ca, "client")?,
        bundle,
        vec![id("nginx")],
    )?)
    .clone();
    tls.alpn_protocols.clear();
    Ok((process, listen, Arc::new(tls)))
}

/// Accepts mTLS (the HBONE server config, so the same crypto as the waypoint's next hop)
/// and copies bytes to `upstream`.
async fn start_tls_terminator(
    ca: &CertificateAuthority,
    bundle: &TrustBundle,
    upstream: SocketAddr,
) -> Result<SocketAddr> {
    let mut config =
        (*ambit_identity::tls::server_config(certificate(ca, "backend")?, bundle)?).clone();
    // nginx speaks HTTP/1.1 upstream without ALPN.
    config.alpn_protocols.clear();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = tcp.set_nodelay(true);
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = plain.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    Ok(addr)
}

/// PEM of a private key, for nginx.
fn key_pem(key: &PrivateKeyDer<'_>) -> Result<String> {
    let label = match key {
        PrivateKeyDer::Pkcs8(_) => "PRIVATE KEY",
        PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
        PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
        _ => bail!("unknown private key format"),
    };
    let body = base64::engine::general_purpose::STANDARD.encode(key.secret_der());
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|chunk| std::str::from_utf8(chunk).unwrap_or_default())
        .collect();
    Ok(format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    ))
}

async fn free_port() -> Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0").await?.local_addr()?)
}

/// Waits until something accepts on `addr` (a child process starting).
async fn wait_for_listener(addr: SocketAddr) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("nothing listens on {addr}")
}

impl Drop for Process {
    fn drop(&mut self) {
        let stopped = self
            .stop
            .take()
            .and_then(|mut stop| stop.status().ok())
            .is_some_and(|status| status.success());
        if !stopped {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

// ─── Load ──────────────────────────────────────────────────────────────────────────────────

impl Via {
    fn name(&self) -> &'static str {
        match self {
            Via::Direct(_) => "direct",
            Via::Waypoint { .. } => "waypoint",
            Via::Nginx { .. } => "nginx",
        }
    }

    /// One connection (h1) or one h2 connection.
    async fn connect(&self, h2: bool) -> Result<Sender> {
        match self {
            Via::Direct(addr) => {
                let tcp = TcpStream::connect(addr).await?;
                tcp.set_nodelay(true)?;
                Sender::handshake(tcp, h2).await
            }
            Via::Waypoint { pool, waypoint } => {
                let request = ConnectRequest::new(
                    id("client"),
                    vec![id("waypoint")],
                    *waypoint,
                    format!("{SERVICE_VIP}:80").parse::<Target>()?,
                );
                Sender::handshake(pool.connect(request).await?, h2).await
            }
            Via::Nginx { addr, tls } => {
                let mut config = (**tls).clone();
                config.alpn_protocols = vec![if h2 {
                    b"h2".to_vec()
                } else {
                    b"http/1.1".to_vec()
                }];
                let tcp = TcpStream::connect(addr).await?;
                tcp.set_nodelay(true)?;
                let stream = TlsConnector::from(Arc::new(config))
                    .connect(ServerName::try_from("nginx.test")?, tcp)
                    .await?;
                Sender::handshake(stream, h2).await
            }
        }
    }
}

impl Sender {
    async fn handshake<I>(io: I, h2: bool) -> Result<Self>
    where
        I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let io = TokioIo::new(io);
        if h2 {
            let (send, connection) = http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(connection);
            Ok(Self::H2(send))
        } else {
            let (send, connection) = http1::handshake(io).await?;
            tokio::spawn(connection);
            Ok(Self::H1(Arc::new(tokio::sync::Mutex::new(send))))
        }
    }

    /// One GET, body read; fails unless 200.
    async fn get(&self) -> Result<()> {
        let response = match self {
            Self::H1(send) => {
                let request = Request::get("/bench")
                    .header("host", "cart.test")
                    .body(Empty::new())?;
                let mut send = send.lock().await;
                send.ready().await?;
                send.send_request(request).await?
            }
            Self::H2(send) => {
                let request = Request::get("https://cart.test/bench").body(Empty::new())?;
                let mut send = send.clone();
                send.ready().await?;
                send.send_request(request).await?
            }
        };
        let status = response.status();
        response.into_body().collect().await?;
        if status != StatusCode::OK {
            bail!("status {status}");
        }
        Ok(())
    }
}

/// Keeps [`CONCURRENCY`] requests in flight on `path` for the warm-up, then measures.
async fn load(path: &Via, h2: bool, plan: &Plan, proxy: Option<u32>) -> Result<Figures> {
    let name = path.name();
    let connections = if h2 {
        CONCURRENCY / H2_STREAMS_PER_CONNECTION
    } else {
        CONCURRENCY
    };
    let mut senders = Vec::with_capacity(CONCURRENCY);
    for _ in 0..connections {
        let sender = path.connect(h2).await?;
        let per_connection = if h2 { H2_STREAMS_PER_CONNECTION } else { 1 };
        senders.extend(std::iter::repeat_n(sender, per_connection));
    }
    let start = Instant::now();
    let measure_from = start + plan.warmup;
    let end = measure_from + plan.measure;
    let completed = Arc::new(AtomicU64::new(0));
    // The proxy's CPU time over exactly the measured window.
    let cpu = proxy.map(|pid| {
        tokio::spawn(async move {
            tokio::time::sleep_until(measure_from.into()).await;
            let before = cpu_ticks(pid);
            tokio::time::sleep_until(end.into()).await;
            cpu_ticks(pid).saturating_sub(before)
        })
    });
    let mut workers = Vec::with_capacity(CONCURRENCY);
    for sender in senders {
        let completed = completed.clone();
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let sent = Instant::now();
                if sent >= end {
                    return Ok::<_, anyhow::Error>(latencies);
                }
                sender
                    .get()
                    .await
                    .with_context(|| format!("{name} h2={h2}"))?;
                if sent >= measure_from {
                    latencies.push(sent.elapsed());
                    completed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await??);
    }
    latencies.sort_unstable();
    if latencies.is_empty() {
        bail!("no request completed");
    }
    let completed = completed.load(Ordering::Relaxed);
    let cpu_us_per_request = match cpu {
        Some(task) => Some(task.await? as f64 * MICROS_PER_TICK / completed as f64),
        None => None,
    };
    Ok(Figures {
        requests_per_s: completed as f64 / plan.measure.as_secs_f64(),
        cpu_us_per_request,
        p50: percentile(&latencies, 50),
        p99: percentile(&latencies, 99),
    })
}

/// User + system clock ticks of `pid` and its children processes (nginx's workers).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = |pid: &str| -> Option<(u32, u64)> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name: state ppid ... utime (14th) stime (15th).
        let fields: Vec<&str> = text.rsplit_once(") ")?.1.split_whitespace().collect();
        let ppid = fields.get(1)?.parse().ok()?;
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        Some((ppid, utime + stime))
    };
    let own = stat(&pid.to_string()).map_or(0, |(_, ticks)| ticks);
    let children: u64 = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| stat(entry.file_name().to_str()?))
        .filter(|(ppid, _)| *ppid == pid)
        .map(|(_, ticks)| ticks)
        .sum();
    own + children
}

fn percentile(sorted: &[Duration], pct: usize) -> Duration {
    sorted[(sorted.len() * pct / 100).min(sorted.len() - 1)]
}

// ─── Memory ────────────────────────────────────────────────────────────────────────────────

/// Resident memory of process `pid`, from `/proc`.
fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")
}

/// Samples a process's RSS every 100 ms and keeps the peak.
struct RssSampler {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<u64>,
}

impl RssSampler {
    fn start(pid: u32) -> Self {
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut peak = 0;
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tokio::select! {
                    _ = &mut stopped => return peak,
                    _ = tick.tick() => peak = peak.max(rss_kib(pid).unwrap_or(0)),
                }
            }
        });
        Self { stop, task }
    }

    async fn stop(self) -> u64 {
        let _ = self.stop.send(());
        self.task.await.unwrap_or(0)
    }
}

// ─── Report ────────────────────────────────────────────────────────────────────────────────

fn print_table(
    rows: &[(bool, Figures, Figures, Option<Figures>)],
    idle_rss: u64,
    peak_rss: u64,
    have_nginx: bool,
) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!();
    println!("waypoint benchmark: {CONCURRENCY} requests in flight, GET with an empty body");
    println!(
        "{:<6} {:<9} {:>10} {:>9} {:>9} {:>12} {:>12} {:>12}",
        "proto", "path", "req/s", "p50 ms", "p99 ms", "rate/nginx", "p99/nginx", "proxy CPU/req"
    );
    for (h2, direct, waypoint, nginx) in rows {
        let proto = if *h2 { "h2" } else { "http/1" };
        let line = |name: &str, f: &Figures| {
            let (rate, p99) = match nginx {
                Some(n) => (
                    format!("{:.2}", f.requests_per_s / n.requests_per_s),
                    format!("{:.2}", ms(f.p99) / ms(n.p99)),
                ),
                None => ("-".into(), "-".into()),
            };
            let cpu = f
                .cpu_us_per_request
                .map_or_else(|| "-".to_owned(), |us| format!("{us:.1} us"));
            println!(
                "{proto:<6} {name:<9} {:>10.0} {:>9.3} {:>9.3} {rate:>12} {p99:>12} {cpu:>12}",
                f.requests_per_s,
                ms(f.p50),
                ms(f.p99),
            );
        };
        line("direct", direct);
        line("waypoint", waypoint);
        match nginx {
            Some(n) => line("nginx", n),
            None => println!("{proto:<6} nginx     (not measured: {NGINX} is not installed)"),
        }
        println!(
            "{proto:<6} waypoint/direct rate {:.2}",
            waypoint.requests_per_s / direct.requests_per_s
        );
    }
    if !have_nginx {
        println!("nginx columns are empty: install the Debian package `nginx` to compare");
    }
    println!(
        "waypoint RSS: idle {:.1} MiB, peak under load {:.1} MiB",
        idle_rss as f64 / 1024.0,
        peak_rss as f64 / 1024.0
    );
}
