//! HBONE benchmark: bulk throughput and 64-byte ping-pong latency over loopback for three paths,
//! measured in one run so the ratios compare like with like on a noisy machine:
//!
//! - direct: client → TCP → upstream
//! - tls:    client → TLS 1.3 (the mesh's rustls configs) → upstream terminating TLS itself
//! - hbone:  client → pool → HBONE (mTLS + h2 CONNECT) → HBONE server → TCP → upstream
//!
//! The upstream is in-process: a sink that acknowledges the byte count (throughput) or an echo
//! (latency). Run with `cargo bench -p ambit-hbone --bench hbone`; `-- --quick` shortens it.

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ambit_hbone::{
    ByteCounters, ClientTlsProvider, ConnectRequest, Drain, Handler, InboundRequest, Pool,
    PoolConfig, Responder, Server, ServerConfig, Target, copy_bidirectional,
};
use ambit_identity::tls::FixedCertificate;
use ambit_identity::{CaOptions, CertificateAuthority, SpiffeId, TrustBundle, WorkloadCertificate};
use futures_util::future::BoxFuture;
use http::HeaderMap;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

type BoxError = Box<dyn StdError + Send + Sync>;
type Result<T> = std::result::Result<T, BoxError>;

const CHUNK: usize = 64 * 1024;
const MESSAGE: usize = 64;

/// How much work each measurement does.
struct Plan {
    bulk_bytes: u64,
    bulk_runs: usize,
    round_trips: usize,
    warmup_round_trips: usize,
}

/// The figures for one path.
struct Figures {
    throughput_mib_s: f64,
    p50: Duration,
    p99: Duration,
}

/// Everything the three paths need: certificates, the upstream servers and the HBONE pieces.
struct Bed {
    sink: SocketAddr,
    echo: SocketAddr,
    tls_sink: SocketAddr,
    tls_echo: SocketAddr,
    hbone: SocketAddr,
    client_tls: Arc<rustls::ClientConfig>,
    pool: Pool,
    client_id: SpiffeId,
    server_id: SpiffeId,
    _drain: Drain,
}

/// Connects upstream to the CONNECT target and splices the tunnel to it.
struct Forward;

/// The pool's TLS: one fixed client certificate.
struct BenchTls {
    cert: Arc<WorkloadCertificate>,
    bundle: TrustBundle,
}

impl Handler for Forward {
    fn handle(&self, request: InboundRequest, responder: Responder) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let Target::Socket(addr) = *request.target() else {
                responder.reject(http::StatusCode::BAD_REQUEST);
                return;
            };
            let Ok(mut upstream) = TcpStream::connect(addr).await else {
                responder.reject(http::StatusCode::SERVICE_UNAVAILABLE);
                return;
            };
            let _ = upstream.set_nodelay(true);
            let Ok(mut tunnel) = responder.accept(HeaderMap::new()) else {
                return;
            };
            let counters = ByteCounters::default();
            let _ = copy_bidirectional(&mut tunnel, &mut upstream, &counters).await;
        })
    }
}

impl ClientTlsProvider for BenchTls {
    fn client_config(
        &self,
        _source: &SpiffeId,
        expected: &[SpiffeId],
    ) -> std::result::Result<Arc<rustls::ClientConfig>, BoxError> {
        Ok(ambit_identity::tls::client_config(
            Arc::new(FixedCertificate(self.cert.clone())),
            &self.bundle,
            expected.to_vec(),
        )?)
    }
}

fn main() -> Result<()> {
    let quick = std::env::args().any(|arg| arg == "--quick");
    let plan = if quick {
        Plan {
            bulk_bytes: 32 << 20,
            bulk_runs: 1,
            round_trips: 2_000,
            warmup_round_trips: 200,
        }
    } else {
        Plan {
            bulk_bytes: 256 << 20,
            bulk_runs: 3,
            round_trips: 20_000,
            warmup_round_trips: 2_000,
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(plan))
}

async fn run(plan: Plan) -> Result<()> {
    let bed = Bed::start().await?;
    let mut rows = Vec::new();
    for path in ["direct", "tls", "hbone"] {
        let figures = bed.measure(path, &plan).await?;
        rows.push((path, figures));
    }
    print_table(&rows, &plan);
    Ok(())
}

impl Bed {
    async fn start() -> Result<Self> {
        let ca = CertificateAuthority::generate("cluster.local", CaOptions::default())?;
        let bundle = ca.trust_bundle()?;
        let client_id = SpiffeId::new("cluster.local", "bench", "client")?;
        let server_id = SpiffeId::new("cluster.local", "bench", "server")?;
        let ttl = Duration::from_secs(3600);
        let client_cert = Arc::new(ca.issue_workload(&client_id, ttl)?);
        let server_cert = Arc::new(ca.issue_workload(&server_id, ttl)?);

        let server_tls =
            ambit_identity::tls::server_config(Arc::new(FixedCertificate(server_cert)), &bundle)?;
        let client_tls = ambit_identity::tls::client_config(
            Arc::new(FixedCertificate(client_cert.clone())),
            &bundle,
            vec![server_id.clone()],
        )?;

        let sink = spawn_plain(serve_sink).await?;
        let echo = spawn_plain(serve_echo).await?;
        let tls_sink = spawn_tls(server_tls.clone(), serve_sink).await?;
        let tls_echo = spawn_tls(server_tls.clone(), serve_echo).await?;

        let drain = Drain::new();
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let hbone = listener.local_addr()?;
        let server = Server::new(server_tls, Forward, ServerConfig::default());
        let signal = drain.signal();
        tokio::spawn(async move { server.serve(listener, signal).await });

        let pool = Pool::new(
            Arc::new(BenchTls {
                cert: client_cert,
                bundle,
            }),
            PoolConfig::default(),
        );
        Ok(Self {
            sink,
            echo,
            tls_sink,
            tls_echo,
            hbone,
            client_tls,
            pool,
            client_id,
            server_id,
            _drain: drain,
        })
    }

    async fn measure(&self, path: &str, plan: &Plan) -> Result<Figures> {
        let mut throughputs = Vec::new();
        for _ in 0..plan.bulk_runs {
            let mut stream = self.open(path, self.sink, self.tls_sink).await?;
            throughputs.push(bulk(&mut stream, plan.bulk_bytes).await?);
        }
        throughputs.sort_by(f64::total_cmp);
        let throughput_mib_s = throughputs[throughputs.len() / 2];

        let mut stream = self.open(path, self.echo, self.tls_echo).await?;
        let mut samples = ping_pong(&mut stream, plan.warmup_round_trips, plan.round_trips).await?;
        samples.sort();
        Ok(Figures {
            throughput_mib_s,
            p50: percentile(&samples, 50),
            p99: percentile(&samples, 99),
        })
    }

    /// Opens a client stream to the upstream by `path`.
    async fn open(
        &self,
        path: &str,
        plain_upstream: SocketAddr,
        tls_upstream: SocketAddr,
    ) -> Result<Box<dyn Duplex>> {
        Ok(match path {
            "direct" => {
                let stream = TcpStream::connect(plain_upstream).await?;
                stream.set_nodelay(true)?;
                Box::new(stream)
            }
            "tls" => {
                let stream = TcpStream::connect(tls_upstream).await?;
                stream.set_nodelay(true)?;
                let name = ServerName::IpAddress(tls_upstream.ip().into());
                Box::new(
                    TlsConnector::from(self.client_tls.clone())
                        .connect(name, stream)
                        .await?,
                )
            }
            "hbone" => {
                let request = ConnectRequest::new(
                    self.client_id.clone(),
                    vec![self.server_id.clone()],
                    self.hbone,
                    Target::Socket(plain_upstream),
                );
                Box::new(self.pool.connect(request).await?)
            }
            other => return Err(format!("unknown path {other}").into()),
        })
    }
}

trait Duplex: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Duplex for T {}

/// Sends `bytes`, half-closes, and waits for the sink's count; returns MiB/s.
async fn bulk(stream: &mut Box<dyn Duplex>, bytes: u64) -> Result<f64> {
    let chunk = vec![0xa5u8; CHUNK];
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < bytes {
        let n = (bytes - sent).min(CHUNK as u64) as usize;
        stream.write_all(&chunk[..n]).await?;
        sent += n as u64;
    }
    stream.shutdown().await?;
    let received = stream.read_u64().await?;
    let elapsed = started.elapsed();
    if received != bytes {
        return Err(format!("sink counted {received} bytes, {bytes} were sent").into());
    }
    Ok(bytes as f64 / (1024.0 * 1024.0) / elapsed.as_secs_f64())
}

/// Times `round_trips` 64-byte echoes after `warmup` untimed ones.
async fn ping_pong(
    stream: &mut Box<dyn Duplex>,
    warmup: usize,
    round_trips: usize,
) -> Result<Vec<Duration>> {
    let message = [0x5au8; MESSAGE];
    let mut reply = [0u8; MESSAGE];
    let mut samples = Vec::with_capacity(round_trips);
    for i in 0..warmup + round_trips {
        let started = Instant::now();
        stream.write_all(&message).await?;
        stream.flush().await?;
        stream.read_exact(&mut reply).await?;
        if i >= warmup {
            samples.push(started.elapsed());
        }
        if reply != message {
            return Err("echo returned different bytes".into());
        }
    }
    Ok(samples)
}

fn percentile(sorted: &[Duration], pct: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = (sorted.len() * pct / 100).min(sorted.len() - 1);
    sorted[index]
}

/// Reads until EOF, then answers with the number of bytes read.
async fn serve_sink<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) -> Result<()> {
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    stream.write_u64(total).await?;
    stream.shutdown().await?;
    Ok(())
}

/// Echoes everything back until EOF.
async fn serve_echo<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) -> Result<()> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        stream.write_all(&buf[..n]).await?;
        stream.flush().await?;
    }
    stream.shutdown().await?;
    Ok(())
}

async fn spawn_plain<F, Fut>(serve: F) -> Result<SocketAddr>
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(serve(stream));
        }
    });
    Ok(addr)
}

async fn spawn_tls<F, Fut>(config: Arc<rustls::ServerConfig>, serve: F) -> Result<SocketAddr>
where
    F: Fn(tokio_rustls::server::TlsStream<TcpStream>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let acceptor = TlsAcceptor::from(config);
    let serve = Arc::new(serve);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let acceptor = acceptor.clone();
            let serve = serve.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(stream).await {
                    let _ = serve(tls).await;
                }
            });
        }
    });
    Ok(addr)
}

fn print_table(rows: &[(&str, Figures)], plan: &Plan) {
    let Some((_, direct)) = rows.iter().find(|(path, _)| *path == "direct") else {
        return;
    };
    println!(
        "HBONE benchmark: {} MiB bulk per run (median of {}), {} round trips of {MESSAGE} bytes",
        plan.bulk_bytes >> 20,
        plan.bulk_runs,
        plan.round_trips
    );
    println!();
    println!("| path   | throughput MiB/s | × direct | p50 µs | × direct | p99 µs | × direct |");
    println!("|--------|-----------------:|---------:|-------:|---------:|-------:|---------:|");
    for (path, figures) in rows {
        println!(
            "| {path:<6} | {:>16.0} | {:>8.2} | {:>6.1} | {:>8.2} | {:>6.1} | {:>8.2} |",
            figures.throughput_mib_s,
            figures.throughput_mib_s / direct.throughput_mib_s,
            micros(figures.p50),
            micros(figures.p50) / micros(direct.p50),
            micros(figures.p99),
            micros(figures.p99) / micros(direct.p99),
        );
    }
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}
