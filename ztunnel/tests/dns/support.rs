//! A DNS proxy on loopback sockets, a fake upstream resolver, and clients that speak to them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ambit_ztunnel::dns::{
    DnsConfig, DnsMetrics, DnsProxy, MeshNames, PlainSockets, StaticMeshNames, UpstreamSockets,
};
use anyhow::{Context, Result, bail};
use futures_util::future::BoxFuture;
use hickory_proto::op::{Edns, Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// Upper bound for any single wait in these tests.
pub(crate) const WAIT: Duration = Duration::from_secs(5);
/// The pod's namespace in every test.
pub(crate) const NAMESPACE: &str = "bookinfo";
pub(crate) const REVIEWS_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 96, 0, 20));
pub(crate) const REVIEWS_V6: IpAddr =
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0x10, 0x96, 0, 0, 0, 0, 0x20));
pub(crate) const RATINGS_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 96, 0, 21));
pub(crate) const EXTERNAL_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));
/// What the fake upstream answers for A queries.
pub(crate) const UPSTREAM_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 53);

/// A running DNS proxy; stops when dropped.
pub(crate) struct Proxy {
    pub(crate) udp: SocketAddr,
    pub(crate) tcp: SocketAddr,
    pub(crate) metrics: Arc<DnsMetrics>,
    task: JoinHandle<()>,
}

/// How the fake upstream behaves.
#[derive(Clone)]
pub(crate) enum Mode {
    /// Answers every query at once.
    Answer,
    /// Never answers.
    Silent,
    /// Answers UDP with an empty truncated reply, TCP with `records` A records.
    TruncateUdp { records: u8 },
    /// Answers only once `open` is notified.
    Gated { open: Arc<Notify> },
}

/// A fake upstream resolver on 127.0.0.1, UDP and TCP on the same port.
pub(crate) struct FakeUpstream {
    pub(crate) addr: SocketAddr,
    pub(crate) udp_queries: Arc<AtomicUsize>,
    pub(crate) tcp_queries: Arc<AtomicUsize>,
    /// Ids of the queries it received, in order.
    pub(crate) ids: Arc<Mutex<Vec<u16>>>,
    /// Notified on every query received.
    pub(crate) received: Arc<Notify>,
    tasks: Vec<JoinHandle<()>>,
}

/// [`UpstreamSockets`] that counts the sockets it makes.
#[derive(Debug, Default)]
pub(crate) struct CountingSockets {
    pub(crate) made: AtomicUsize,
}

pub(crate) fn mesh_names() -> StaticMeshNames {
    StaticMeshNames::new()
        .with(
            "reviews.bookinfo.svc.cluster.local",
            [REVIEWS_V4, REVIEWS_V6],
        )
        .with("ratings.bookinfo.svc.cluster.local", [RATINGS_V4])
        .with("api.external.example", [EXTERNAL_V4])
}

pub(crate) fn config(upstreams: Vec<SocketAddr>) -> DnsConfig {
    let mut config = DnsConfig::new(NAMESPACE, upstreams);
    config.upstream_timeout = Duration::from_millis(300);
    config
}

impl Proxy {
    pub(crate) async fn start(config: DnsConfig) -> Result<Self> {
        Self::start_with(config, Arc::new(mesh_names()), Arc::new(PlainSockets)).await
    }

    pub(crate) async fn start_with(
        config: DnsConfig,
        names: Arc<dyn MeshNames>,
        sockets: Arc<dyn UpstreamSockets>,
    ) -> Result<Self> {
        let udp = UdpSocket::bind("127.0.0.1:0").await?;
        let tcp = TcpListener::bind("127.0.0.1:0").await?;
        let (udp_addr, tcp_addr) = (udp.local_addr()?, tcp.local_addr()?);
        let metrics = Arc::new(DnsMetrics::default());
        let proxy = DnsProxy::new(config, names, sockets, Arc::clone(&metrics))?;
        let task = tokio::spawn(async move { proxy.serve(udp, tcp).await });
        Ok(Self {
            udp: udp_addr,
            tcp: tcp_addr,
            metrics,
            task,
        })
    }

    /// True while the serving task has neither finished nor panicked.
    pub(crate) fn is_running(&self) -> bool {
        !self.task.is_finished()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeUpstream {
    pub(crate) async fn start(mode: Mode) -> Result<Self> {
        let (udp, tcp) = bind_same_port().await?;
        let mut upstream = Self {
            addr: udp.local_addr()?,
            udp_queries: Arc::default(),
            tcp_queries: Arc::default(),
            ids: Arc::default(),
            received: Arc::default(),
            tasks: Vec::new(),
        };
        let udp_task = tokio::spawn(upstream.clone_state().serve_udp(udp, mode.clone()));
        let tcp_task = tokio::spawn(upstream.clone_state().serve_tcp(tcp, mode));
        upstream.tasks = vec![udp_task, tcp_task];
        Ok(upstream)
    }

    fn clone_state(&self) -> Self {
        Self {
            addr: self.addr,
            udp_queries: Arc::clone(&self.udp_queries),
            tcp_queries: Arc::clone(&self.tcp_queries),
            ids: Arc::clone(&self.ids),
            received: Arc::clone(&self.received),
            tasks: Vec::new(),
        }
    }

    async fn serve_udp(self, socket: UdpSocket, mode: Mode) {
        let socket = Arc::new(socket);
        let mut buffer = vec![0; 65535];
        while let Ok((len, from)) = socket.recv_from(&mut buffer).await {
            let Ok(query) = Message::from_vec(&buffer[..len]) else {
                continue;
            };
            self.udp_queries.fetch_add(1, Ordering::SeqCst);
            self.record(&query);
            let reply = match &mode {
                Mode::TruncateUdp { .. } => {
                    let mut reply = answer(&query, 0);
                    reply.metadata.truncation = true;
                    reply
                }
                _ => answer(&query, 1),
            };
            let mode = mode.clone();
            let socket = Arc::clone(&socket);
            tokio::spawn(async move {
                if wait_for_mode(&mode).await
                    && let Ok(bytes) = reply.to_vec()
                {
                    let _ = socket.send_to(&bytes, from).await;
                }
            });
        }
    }

    async fn serve_tcp(self, listener: TcpListener, mode: Mode) {
        while let Ok((mut stream, _)) = listener.accept().await {
            let state = self.clone_state();
            let mode = mode.clone();
            tokio::spawn(async move {
                while let Ok(query) = read_framed(&mut stream).await {
                    state.tcp_queries.fetch_add(1, Ordering::SeqCst);
                    state.record(&query);
                    let records = match mode {
                        Mode::TruncateUdp { records } => records,
                        _ => 1,
                    };
                    if !wait_for_mode(&mode).await {
                        return;
                    }
                    let reply = answer(&query, records);
                    if write_framed(&mut stream, &reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    }

    fn record(&self, query: &Message) {
        self.ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(query.metadata.id);
        self.received.notify_one();
    }

    pub(crate) fn queries(&self) -> usize {
        self.udp_queries.load(Ordering::SeqCst) + self.tcp_queries.load(Ordering::SeqCst)
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl UpstreamSockets for CountingSockets {
    fn udp(&self, upstream: SocketAddr) -> std::io::Result<UdpSocket> {
        self.made.fetch_add(1, Ordering::SeqCst);
        PlainSockets.udp(upstream)
    }

    fn tcp(&self, upstream: SocketAddr) -> BoxFuture<'_, std::io::Result<TcpStream>> {
        self.made.fetch_add(1, Ordering::SeqCst);
        PlainSockets.tcp(upstream)
    }
}

/// Waits as `mode` says before answering; false if it never answers.
async fn wait_for_mode(mode: &Mode) -> bool {
    match mode {
        Mode::Silent => false,
        Mode::Gated { open } => {
            open.notified().await;
            // Let the next waiter through as well.
            open.notify_one();
            true
        }
        _ => true,
    }
}

/// The fake upstream's answer: `records` A records for A queries, none otherwise.
fn answer(query: &Message, records: u8) -> Message {
    let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
    reply.metadata.recursion_available = true;
    reply.add_queries(query.queries.iter().cloned());
    if let Some(question) = query.queries.first()
        && question.query_type() == RecordType::A
    {
        for i in 0..records {
            let [a, b, c, d] = UPSTREAM_V4.octets();
            reply.add_answer(Record::from_rdata(
                question.name().clone(),
                300,
                RData::A(A(Ipv4Addr::new(a, b, c, d.wrapping_add(i)))),
            ));
        }
    }
    reply
}

/// A UDP socket and a TCP listener on the same loopback port.
async fn bind_same_port() -> Result<(UdpSocket, TcpListener)> {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").await?;
        if let Ok(tcp) = TcpListener::bind(udp.local_addr()?).await {
            return Ok((udp, tcp));
        }
    }
    bail!("no loopback port free for both UDP and TCP")
}

/// A recursive query for `name`.
pub(crate) fn query(id: u16, name: &str, kind: RecordType) -> Message {
    let mut message = Message::query();
    message.metadata.id = id;
    message.metadata.recursion_desired = true;
    let name = Name::from_ascii(name).unwrap_or_else(|err| panic!("test name {name}: {err}"));
    message.add_query(Query::query(name, kind));
    message
}

/// `message` with an EDNS record advertising `payload` bytes.
pub(crate) fn with_edns(mut message: Message, payload: u16) -> Message {
    let mut edns = Edns::new();
    edns.set_max_payload(payload);
    message.set_edns(edns);
    message
}

/// A client socket on loopback.
pub(crate) async fn client() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|err| panic!("binding a loopback client: {err}"))
}

/// Receives the next DNS message on `socket`.
pub(crate) async fn recv(socket: &UdpSocket) -> Result<Message> {
    let mut buffer = vec![0; 65535];
    let len = timeout(WAIT, socket.recv(&mut buffer))
        .await
        .context("no DNS reply in time")??;
    Ok(Message::from_vec(&buffer[..len])?)
}

/// Sends `message` over UDP from a fresh socket and returns the reply.
pub(crate) async fn ask_udp(server: SocketAddr, message: &Message) -> Result<Message> {
    let socket = client().await;
    socket.send_to(&message.to_vec()?, server).await?;
    let reply = recv(&socket).await?;
    check_reply(&reply, message)?;
    Ok(reply)
}

/// Sends `message` over a new TCP connection and returns the reply.
pub(crate) async fn ask_tcp(server: SocketAddr, message: &Message) -> Result<Message> {
    let mut stream = timeout(WAIT, TcpStream::connect(server)).await??;
    write_framed(&mut stream, message).await?;
    let reply = timeout(WAIT, read_framed(&mut stream))
        .await
        .context("no DNS reply in time")??;
    check_reply(&reply, message)?;
    Ok(reply)
}

fn check_reply(reply: &Message, query: &Message) -> Result<()> {
    if reply.metadata.message_type != MessageType::Response {
        bail!("not a response: {reply}");
    }
    if reply.metadata.id != query.metadata.id {
        bail!(
            "reply id {} for query {}",
            reply.metadata.id,
            query.metadata.id
        );
    }
    if reply.queries != query.queries {
        bail!(
            "reply question {:?} differs from {:?}",
            reply.queries,
            query.queries
        );
    }
    Ok(())
}

pub(crate) async fn write_framed(stream: &mut TcpStream, message: &Message) -> Result<()> {
    let bytes = message.to_vec()?;
    stream.write_u16(u16::try_from(bytes.len())?).await?;
    stream.write_all(&bytes).await?;
    Ok(())
}

pub(crate) async fn read_framed(stream: &mut TcpStream) -> Result<Message> {
    let len = stream.read_u16().await?;
    let mut buffer = vec![0; usize::from(len)];
    stream.read_exact(&mut buffer).await?;
    Ok(Message::from_vec(&buffer)?)
}

/// The addresses in the A/AAAA records of `reply`, in order.
pub(crate) fn addresses(reply: &Message) -> Vec<IpAddr> {
    reply
        .answers
        .iter()
        .filter_map(|record| match &record.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
            _ => None,
        })
        .collect()
}

pub(crate) fn assert_code(reply: &Message, code: ResponseCode) {
    assert_eq!(reply.metadata.response_code, code, "{reply}");
}
