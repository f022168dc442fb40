//! Forwarding to the upstream resolvers: UDP first, TCP when the UDP answer is truncated.
//!
//! Every query gets a fresh socket from [`UpstreamSockets`] (a new source port each time) and
//! an id of our own, and only an answer with that id and the same question is accepted, so a
//! stray or spoofed datagram cannot answer for the resolver.

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use hickory_proto::op::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tracing::debug;

use super::message::{MAX_UDP_PAYLOAD, upstream_answer, upstream_query};
use super::metrics::Failure;

/// Makes the sockets the proxy queries upstream resolvers with.
///
/// Inside a pod's network namespace they must carry ztunnel's mark, or the pod's rules would
/// capture them and send them back to the proxy.
pub trait UpstreamSockets: Send + Sync + fmt::Debug {
    /// A bound UDP socket of `upstream`'s family; the proxy connects it to `upstream`.
    fn udp(&self, upstream: SocketAddr) -> io::Result<UdpSocket>;

    /// A TCP connection to `upstream`.
    fn tcp(&self, upstream: SocketAddr) -> BoxFuture<'_, io::Result<TcpStream>>;
}

/// [`UpstreamSockets`] as the current network namespace makes them, without marks.
#[derive(Debug, Default, Clone, Copy)]
pub struct PlainSockets;

/// How a query reaches the upstream resolvers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    /// UDP, retried once over TCP when the answer is truncated.
    Udp,
    /// TCP only, for clients that asked over TCP.
    Tcp,
}

/// Sends queries to the upstream resolvers in order until one answers.
#[derive(Debug, Clone)]
pub(crate) struct Forwarder {
    upstreams: Vec<SocketAddr>,
    timeout: Duration,
    sockets: Arc<dyn UpstreamSockets>,
}

impl UpstreamSockets for PlainSockets {
    fn udp(&self, upstream: SocketAddr) -> io::Result<UdpSocket> {
        let any = match upstream {
            SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
        };
        let socket = std::net::UdpSocket::bind(any)?;
        socket.set_nonblocking(true)?;
        UdpSocket::from_std(socket)
    }

    fn tcp(&self, upstream: SocketAddr) -> BoxFuture<'_, io::Result<TcpStream>> {
        Box::pin(TcpStream::connect(upstream))
    }
}

impl Forwarder {
    /// Forwards to `upstreams` in order, giving each `timeout` for the whole exchange.
    pub(crate) fn new(
        upstreams: Vec<SocketAddr>,
        timeout: Duration,
        sockets: Arc<dyn UpstreamSockets>,
    ) -> Self {
        Self {
            upstreams,
            timeout,
            sockets,
        }
    }

    /// The first valid answer to `query` from an upstream, with the upstream's id (the caller
    /// restores the client's). The error says why none came.
    pub(crate) async fn forward(
        &self,
        query: &Message,
        transport: Transport,
    ) -> Result<Message, Failure> {
        let mut failure = Failure::UpstreamError;
        for &upstream in &self.upstreams {
            let sent = upstream_query(query, rand::random());
            let exchange = async {
                match transport {
                    Transport::Udp => self.exchange_udp(upstream, &sent).await,
                    Transport::Tcp => self.exchange_tcp(upstream, &sent).await,
                }
            };
            match tokio::time::timeout(self.timeout, exchange).await {
                Ok(Ok(answer)) => return Ok(answer),
                Ok(Err(err)) => {
                    debug!(%upstream, error = %err, "upstream DNS resolver failed");
                    failure = Failure::UpstreamError;
                }
                Err(_elapsed) => {
                    debug!(%upstream, timeout = ?self.timeout, "upstream DNS resolver timed out");
                    failure = Failure::UpstreamTimeout;
                }
            }
        }
        Err(failure)
    }

    async fn exchange_udp(&self, upstream: SocketAddr, sent: &Message) -> io::Result<Message> {
        let packet = sent.to_vec().map_err(invalid_data)?;
        let socket = self.sockets.udp(upstream)?;
        socket.connect(upstream).await?;
        socket.send(&packet).await?;
        // One byte more than an answer may be, so an oversized one shows as such.
        let mut buffer = vec![0; MAX_UDP_PAYLOAD + 1];
        let answer = loop {
            let len = socket.recv(&mut buffer).await?;
            if len > MAX_UDP_PAYLOAD {
                debug!(%upstream, len, "ignoring an answer larger than we asked for");
                continue;
            }
            if let Some(answer) = upstream_answer(&buffer[..len], sent) {
                break answer;
            }
            debug!(%upstream, "ignoring a datagram that does not answer our query");
        };
        if !answer.metadata.truncation {
            return Ok(answer);
        }
        match self.exchange_tcp(upstream, sent).await {
            Ok(full) => Ok(full),
            Err(err) => {
                // The truncated answer still tells the client to try TCP itself.
                debug!(%upstream, error = %err, "TCP retry of a truncated answer failed");
                Ok(answer)
            }
        }
    }

    async fn exchange_tcp(&self, upstream: SocketAddr, sent: &Message) -> io::Result<Message> {
        let packet = sent.to_vec().map_err(invalid_data)?;
        let len = u16::try_from(packet.len()).map_err(invalid_data)?;
        let mut stream = self.sockets.tcp(upstream).await?;
        let mut framed = Vec::with_capacity(packet.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&packet);
        stream.write_all(&framed).await?;
        let len = usize::from(stream.read_u16().await?);
        let mut buffer = vec![0; len];
        stream.read_exact(&mut buffer).await?;
        upstream_answer(&buffer, sent).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "TCP answer does not match the query",
            )
        })
    }
}

fn invalid_data(err: impl std::error::Error + Send + Sync + 'static) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, err)
}
